"""`edgeprune calibrate`: time the calibration suite on a device's runtimes, fit, write a calibrated profile.

    profile = run_calibration(host_profile(), targets=("executorch", "tflite"), minutes=8, out_path="my-host.yaml")
    profile = run_calibration(load_profile("pixel-8"), ["executorch"], 8, "pixel-8-mine.yaml",
                              runner=get_runner("adb:SERIAL"))

Where the suite is timed is a small "timer" (`InProcessTimer`, `RunnerTimer`); everything else is one loop:

- this machine (no `runner`, or the HostRunner): in-process, through the runtime sessions the HostRunner uses,
  with per-run wall and CPU times, plus ETDump per-operator timings for ExecuTorch;
- a phone over adb or a board over ssh (`runner=` an AdbRunner / SshRunner, `edgeprune calibrate --on ...`): the
  suite networks are exported here and each timing round is one `Runner.measure` there, which gives whole-model
  statistics (p50 of the round's runs) and the runtime versions the device reports; no per-operator timings. The
  profile's `default_threads` is used as is (not capped at this machine's cores).

What it does, in order:

1. Reads the measurement table beside `out_path` (`my-host.calibration.jsonl`); with `resume=True` every record
   measured earlier in the same place with the same suite version, thread count and runtime versions is kept, and
   only networks not yet measured are timed (an interruption loses at most the networks still waiting for their
   later rounds).
2. Noise check: exports the suite's reference network once and times it in `noise.rounds` rounds spread over the
   run (three at the start, more between networks, one at the end). If the fastest half of the rounds disagree by
   more than `max_spread_pct`, it stops with `CalibrationNoiseError` stating the spread, and writes no profile (the
   table is kept).
3. Times suite networks (`calibration/suite.yaml`) round-robin over the (target, scheme) pairs until the time
   budget is spent: export with edgeprune's own exporter, time with the timer in `timing.rounds` rounds spread over
   the run (in process: the same `session.run` the HostRunner times, and for ExecuTorch also each operator with
   ETDump + Inspector). The fitted latency is the latency without competing work: `fast_ms` of all runs in
   process, the fastest round's p50 through a runner.
4. Fits the coefficients (`edgeprune.cost.fit`), estimates their accuracy by cross-validation over networks, and
   writes the profile YAML atomically with `cost_model.status: calibrated`, the date, runner and where it ran,
   runtime versions, thread count, noise spread, accuracy and the table's name and sha256. Nothing is written
   before that: an interrupted or failed run (a device lost mid-run: `DeviceError`) leaves only the table.

This module is the part of `edgeprune.cost` that drives exporters, runtime sessions and runners (calibration is a
measuring stage); prediction never imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import yaml

from edgeprune._cores import usable_cores
from edgeprune._deps import package_version
from edgeprune._io import atomic_write_bytes, native_stderr_silenced
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.export import get_exporter
from edgeprune.profiles import DeviceProfile
from edgeprune.types import SCHEMES, Artifact, Plan

from edgeprune.cost import table as _table
from edgeprune.cost.suite import build_network, load_suite, network_spec, reference_spec

if TYPE_CHECKING:
    from edgeprune.runners.base import Runner

DEFAULT_TARGETS = ("executorch", "tflite")
DEFAULT_SCHEMES = ("fp32", "int8")
DEFAULT_MINUTES = 8.0
"""Measuring budget of a default run; with the fit and the first-export warm-up the run stays under 10 minutes."""
FIT_RESERVE_S = 20.0


class CalibrationNoiseError(DeviceError):
    """The machine's timings are too noisy to fit a cost model that would be as accurate as it claims."""


def runtime_versions(targets: Sequence[str]) -> dict[str, str | None]:
    """Versions of the runtimes (and converters) whose speed the coefficients describe."""
    dists = {"executorch": ("executorch",), "tflite": ("ai-edge-litert", "litert-torch"), "onnx": ("onnxruntime",)}
    out: dict[str, str | None] = {"torch": package_version("torch")}
    for t in targets:
        for d in dists.get(t, ()):
            out[d] = package_version(d)
    return out


def _check(profile: DeviceProfile, targets: Sequence[str], schemes: Sequence[str], minutes: float,
           where: str = "host") -> None:
    if where == "host" and not profile.is_host:
        raise DeviceError(
            f"profile '{profile.name}' describes another device; calibrating it needs measurements on that device: "
            "measure there with --on adb:SERIAL (a phone) or --on ssh:user@host[:port] (a board), or use --device "
            "host (a phone's profile stays 'estimated' until it is calibrated on the phone)"
        )
    if where != "host" and profile.is_host:
        raise ConfigError(
            f"--device host describes this machine, but the measurements would be taken on {where}: name the "
            "profile of that device (--device pixel-8, or a profile YAML from `edgeprune profile draft`)"
        )
    from edgeprune.export import missing_toolchain

    for t in targets:
        if t not in profile.supported_targets:
            raise ConfigError(f"target '{t}' is not supported by profile '{profile.name}'; it supports: "
                              f"{', '.join(profile.supported_targets)}")
        missing = missing_toolchain(t)
        if missing is not None:
            raise missing
    for s in schemes:
        if s not in SCHEMES:
            raise ConfigError(f"scheme '{s}' is unknown; choose from {', '.join(SCHEMES)}")
    if not minutes > 0:
        raise ConfigError(f"--minutes {minutes} must be > 0")


def _same_setup(rec: dict[str, Any], suite_version: int, threads: int, versions: Mapping[str, str | None],
                where: str = "host") -> bool:
    if rec.get("suite_version") != suite_version or rec.get("threads") != threads or rec.get("where") != where:
        return False
    mine = rec.get("calibration_versions") or {}
    return all(mine.get(k) == v for k, v in versions.items() if k in mine)


def default_targets(profile: DeviceProfile) -> tuple[str, ...]:
    """The profile's XNNPACK targets whose toolchains are installed (ONNX only when asked for)."""
    from edgeprune.export import missing_toolchain

    return tuple(t for t in DEFAULT_TARGETS if t in profile.supported_targets and missing_toolchain(t) is None)


def run_calibration(
    profile: DeviceProfile,
    targets: Sequence[str] | None = None,
    minutes: float = DEFAULT_MINUTES,
    out_path: str | Path = "host-calibrated.yaml",
    progress: Callable[[int, int], None] | None = None,
    resume: bool = True,
    *,
    schemes: Sequence[str] = DEFAULT_SCHEMES,
    threads: int | None = None,
    max_spread_pct: float | None = None,
    noise_pct: float = 0.0,
    suite_path: str | None = None,
    max_networks: int | None = None,
    runner: Runner | None = None,
) -> DeviceProfile:
    """Calibrate `profile` and write the calibrated profile to `out_path`; returns it.

    Without `runner` (or with the HostRunner) the suite is timed on this machine and `profile` must be the host's;
    with an AdbRunner / SshRunner it is timed on that device (`profile` is the device's, e.g. pixel-8) and the
    profile records the runner, where it ran and the runtime versions the device reported.

    `progress(done_s, total_s)` is called after every measurement. `noise_pct` > 0 multiplies every recorded
    latency by a random factor in [1 - noise_pct/100, 1 + noise_pct/100]: synthetic jitter, to exercise the noise
    check. `max_spread_pct` overrides the suite's noise limit. `max_networks` caps the suite networks timed
    (for tests); the time budget still applies. `threads` overrides the profile's `default_threads` (capped at
    this machine's cores when timing here).
    """
    from edgeprune.cost.fit import fit_profile_cost_model

    if runner is not None and runner.where == "host":
        runner = None  # the HostRunner: time in process (per-run CPU times and ETDump profiles)
    where = "host" if runner is None else runner.where
    targets = tuple(targets) if targets else default_targets(profile)
    if not targets:
        raise ConfigError(f"no target to calibrate for profile '{profile.name}': none of "
                          f"{', '.join(DEFAULT_TARGETS)} has its toolchain installed")
    schemes = tuple(schemes)
    _check(profile, targets, schemes, minutes, where)
    out_path = Path(out_path)
    if out_path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out '{out_path}' must name a .yaml file")
    if not out_path.parent.exists():
        raise ConfigError(f"--out folder '{out_path.parent}' does not exist")
    suite = load_suite(suite_path)
    noise = suite["noise"]
    limit = float(max_spread_pct if max_spread_pct is not None else noise["max_spread_pct"])
    if runner is None:
        threads = int(threads or min(profile.default_threads, usable_cores()))
        timer: _Timer = InProcessTimer(targets, threads)
    else:
        threads = int(threads or profile.default_threads)
        timer = RunnerTimer(runner, threads)
    timer.preflight(profile)  # an unreachable device fails here, before anything is exported or written
    table_path = _table.table_path_for(out_path)
    existing = _table.read_table(table_path)
    if not resume and existing:
        table_path.unlink()
        existing = []
    # What earlier runs measured here is kept once the timer knows the runtime versions (after its first round).
    kept: list[dict[str, Any]] = []
    done: set[tuple[str, str, str]] = set()

    def resume_from_table() -> None:
        versions = timer.versions()
        kept.extend(r for r in existing
                    if r.get("kind") == "suite" and _same_setup(r, suite["suite_version"], threads, versions, where))
        done.update((r["network"], r["target"], r["scheme"]) for r in kept)

    jitter = random.Random(12345)

    def record(rec: dict[str, Any]) -> dict[str, Any]:
        if noise_pct:
            f = 1.0 + jitter.uniform(-noise_pct, noise_pct) / 100.0
            for k in ("latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_mean_ms"):
                if k in rec:
                    rec[k] = rec[k] * f
        return rec

    budget_s = minutes * 60.0
    start = time.perf_counter()
    deadline = start + max(budget_s - FIT_RESERVE_S, budget_s * 0.5)
    pairs = [(t, s) for t in targets for s in schemes]
    timing = suite["timing"]
    warmup, runs, rounds = int(timing["warmup"]), int(timing["runs"]), int(timing.get("rounds", 1))

    from edgeprune._torch import torch_threads

    ref_rounds: list[float] = []
    ref_target, ref_scheme = pairs[0]
    pending: list[dict[str, Any]] = []  # measured networks waiting for their later timing rounds

    def finish(p: dict[str, Any]) -> None:
        rec = finalize_record(p["record"], p["rounds"])
        rec = record(rec)
        _table.append_record(table_path, rec)
        kept.append(rec)
        done.add((rec["network"], rec["target"], rec["scheme"]))
        shutil.rmtree(p["dir"], ignore_errors=True)

    def later_rounds(final: bool) -> None:
        """One more timing round for every pending network (spreading each network's rounds over time)."""
        for p in list(pending):
            if len(p["rounds"]) < rounds:
                p["rounds"].append(timer.round(p["artifact"], p["x"], warmup, runs))
                if "ops" in p["record"]:
                    more = timer.ops(p["artifact"], p["x"], runs)
                    if more:
                        p["record"]["ops"] = merge_ops(p["record"]["ops"], more)
            if len(p["rounds"]) >= rounds or final:
                pending.remove(p)
                finish(p)

    with torch_threads(1), tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as tmp:
        ref_model, ref_x = build_network(reference_spec(suite))
        ref_art = export_network(ref_model, ref_x, ref_target, ref_scheme, threads, Path(tmp))

        def reference_round() -> None:
            r = timer.round(ref_art, ref_x, warmup, runs * 2)
            rec = record({"latency_ms": r.fast_ms(threads), "latency_p50_ms": r.p50_ms})
            ref_rounds.append(rec["latency_ms"])
            _table.append_record(table_path, {
                "kind": "reference", "network": reference_spec(suite)["name"], "target": ref_target,
                "scheme": ref_scheme, "threads": threads, "suite_version": suite["suite_version"],
                "latency_ms": round(rec["latency_ms"], 5), "latency_p50_ms": round(rec["latency_p50_ms"], 5),
                "time_utc": _table.now_utc(), "calibration_versions": timer.versions(), "where": where,
            })

        def check_noise(final: bool) -> float:
            spread = noise_spread_pct(ref_rounds)
            if spread > limit:
                raise CalibrationNoiseError(
                    f"{timer.name} is too noisy to calibrate: the reference network's p50 latency spread "
                    f"{spread:.1f}% (fastest half of {len(ref_rounds)} rounds: "
                    f"{', '.join(f'{v:.3f}' for v in sorted(ref_rounds))} ms), above the {limit:g}% limit; "
                    f"no profile was written (measurements kept in {table_path.name}); rerun on a quieter machine "
                    "or close other work" + ("" if final else " (stopped early)")
                )
            return spread

        try:
            for _ in range(3):
                reference_round()
            check_noise(final=False)
            resume_from_table()
            rounds_left = max(0, int(noise["rounds"]) - 4)
            next_round_at = start + budget_s / (rounds_left + 1) if rounds_left else float("inf")

            i = 0
            while time.perf_counter() < deadline:
                if max_networks is not None and i >= max_networks:
                    break
                spec = network_spec(suite, i)
                todo = [(t, s) for (t, s) in pairs if (spec["name"], t, s) not in done]
                if todo:
                    model, x = build_network(spec, seed=i)
                    for t, s in todo:
                        if time.perf_counter() >= deadline:
                            break
                        work = Path(tempfile.mkdtemp(dir=tmp))
                        t0 = time.perf_counter()
                        art = export_network(model, x, t, s, threads, work)
                        export_s = time.perf_counter() - t0
                        first = timer.round(art, x, warmup, runs)
                        rec = base_record(art, threads, first, export_s, where)
                        ops = timer.ops(art, x, runs)
                        if ops is not None:
                            rec["ops"] = ops
                        rec |= {"kind": "suite", "network": spec["name"], "index": i, "spec": spec,
                                "suite_version": suite["suite_version"], "calibration_versions": timer.versions(),
                                "time_utc": _table.now_utc()}
                        later_rounds(final=False)
                        pending.append({"record": rec, "rounds": [first], "artifact": art, "x": x, "dir": work})
                        if progress is not None:
                            progress(int(time.perf_counter() - start), int(budget_s))
                        if rounds_left and time.perf_counter() >= next_round_at:
                            reference_round()
                            check_noise(final=False)
                            rounds_left -= 1
                            next_round_at = time.perf_counter() + (deadline - time.perf_counter()) / (rounds_left + 1)
                i += 1
            for _ in range(rounds):
                if pending:
                    later_rounds(final=False)
            later_rounds(final=True)
            reference_round()
            spread = check_noise(final=True)
        finally:
            # An interruption keeps every network that was timed at least once.
            for p in pending:
                finish(p)
            pending.clear()

    versions = timer.versions()
    # Records of a resumed run whose runtime versions turned out to differ (a target first timed in this run) are
    # not mixed into the fit.
    kept = [r for r in kept if _same_setup(r, suite["suite_version"], threads, versions, where)]
    if not kept:
        raise ConfigError(
            f"the {minutes:g}-minute budget ran out before any suite network was measured on {where} (the noise "
            f"check alone took {time.perf_counter() - start:.0f} s); no profile was written (measurements kept in "
            f"{table_path.name}); give it more time with --minutes"
        )
    feedback = [r for r in _table.read_table(_table.feedback_path(profile.name))
                if r.get("threads") == threads and r.get("where") == where
                and _versions_match(r.get("runtime_versions"), versions)]
    elapsed = time.perf_counter() - start
    cost_model = fit_profile_cost_model(
        kept + feedback,
        targets=targets,
        schemes=schemes,
        threads=threads,
        provenance={
            "date": _table.now_utc(),
            "runner": timer.describe(),
            "runtime_versions": {k: v for k, v in versions.items() if v},
            "noise_spread_pct": round(spread, 2),
            "table": table_path.name,
            "table_sha256": _sha256(table_path),
            "calibration_s": round(elapsed, 1),
            "networks": len({r["network"] for r in kept}),
            "feedback_records": len(feedback),
        },
        host_profile=profile,
    )
    if timer.method is not None:
        cost_model = cost_model.model_copy(update={"method": timer.method})
    calibrated = profile.model_copy(update={"cost_model": cost_model})
    data = calibrated.model_dump(mode="json", exclude_none=False)
    header = (f"# Calibrated by edgeprune on {cost_model.date} on {where} ({cost_model.runner}).\n"
              f"# Measurements: {table_path.name} (same folder).\n")
    atomic_write_bytes(out_path, (header + yaml.safe_dump(data, sort_keys=False, width=120)).encode())
    if progress is not None:
        progress(int(budget_s), int(budget_s))
    return calibrated


# ------------------------------------------------------------------------------------------------ timers
# Where the suite is timed. One round = `runs` timed inferences of one artifact after `warmup` untimed ones.


@dataclass(frozen=True)
class TimedRound:
    """One timing round of one artifact."""

    p50_ms: float
    runs: int
    runner: str
    runtime_versions: Mapping[str, str | None]
    peak_memory_mb: float | None = None
    memory_method: str = ""
    samples: tuple[tuple[float, float], ...] = ()
    """(wall ms, process CPU ms) per run; empty when the timer reports statistics only (a remote runner)."""

    def fast_ms(self, threads: int) -> float:
        """The round's latency without competing work: `fast_ms` of its runs, or its p50 without per-run times."""
        return fast_ms([self.samples], threads) if self.samples else self.p50_ms


class _Timer:
    """Times artifacts somewhere: `round` (one timing round), `ops` (a per-operator profile, or None)."""

    where: str
    name: str
    method: str | None = None
    """The cost model's `method` when it differs from the fit's own description (None: keep the fit's)."""

    def preflight(self, profile: DeviceProfile) -> None:
        """Check that the machine is there (and is the device `profile` describes), before anything is exported."""

    def round(self, artifact: Artifact, x: torch.Tensor, warmup: int, runs: int) -> TimedRound:
        raise NotImplementedError

    def ops(self, artifact: Artifact, x: torch.Tensor, runs: int) -> list[list[Any]] | None:
        return None

    def versions(self) -> dict[str, str | None]:
        """The runtime versions the coefficients describe (those known so far)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The cost model's `runner`: what measured, and where."""
        raise NotImplementedError


_SESSION_RUNNER = {"executorch": "executorch.runtime", "tflite": "ai_edge_litert.Interpreter",
                   "onnx": "onnxruntime.InferenceSession"}


class InProcessTimer(_Timer):
    """This machine, in process: the runtime session the HostRunner uses (per-run wall and CPU times), plus ETDump
    per-operator profiles of ExecuTorch programs."""

    where = "host"
    name = "this machine"

    def __init__(self, targets: Sequence[str], threads: int):
        self.threads = threads
        self._versions = runtime_versions(targets)

    def round(self, artifact: Artifact, x: torch.Tensor, warmup: int, runs: int) -> TimedRound:
        samples, (peak_mb, method) = time_round(artifact, x, self.threads, warmup, runs)
        return TimedRound(
            p50_ms=float(np.percentile([w for w, _ in samples], 50)), runs=len(samples),
            runner=_SESSION_RUNNER[artifact.target], runtime_versions=runtime_versions([artifact.target]),
            peak_memory_mb=peak_mb, memory_method=method, samples=tuple(samples),
        )

    def ops(self, artifact: Artifact, x: torch.Tensor, runs: int) -> list[list[Any]] | None:
        if artifact.target != "executorch":
            return None
        return etdump_ops(artifact, x, self.threads, warmup=2, runs=runs)

    def versions(self) -> dict[str, str | None]:
        return dict(self._versions)

    def describe(self) -> str:
        return "host runtime sessions (the HostRunner's session.run), per-operator ETDump + Inspector for executorch"


class RunnerTimer(_Timer):
    """Another machine through a `Runner` (a phone over adb, a board over ssh): each round is one
    `Runner.measure` of the artifact exported here; whole-model statistics only (the round's p50), and the runtime
    versions as the runner reports them. The adb runner's energy runs are switched off unless asked for: energy is
    not part of the cost model, and they would double every round."""

    def __init__(self, runner: Runner, threads: int):
        self.runner = runner
        self.threads = threads
        self.where = runner.where
        self.name = runner.where
        if getattr(runner, "energy", False) is None:
            runner.energy = False  # type: ignore[attr-defined]
        self._versions: dict[str, str | None] = {}
        self._runners: list[str] = []
        self._machine = ""
        self.method = (f"roofline of the profile's CPU description, with per-group multipliers and per-inference "
                       f"overhead fitted on whole-model p50 latencies of the calibration suite measured on "
                       f"{self.where} (edgeprune.cost.fit; no per-operator timings from a remote runner)")

    def preflight(self, profile: DeviceProfile) -> None:
        """adb: the device is attached (else `DeviceError` naming the serial), and is not, by its model name,
        another built-in profile's phone. ssh: the board is read once (one ssh command, with ssh's own
        ConnectTimeout; the measurements reuse what it read), so an unreachable board is a `DeviceError` naming it
        before the reference network is exported."""
        if not self.where.startswith("adb:"):
            facts = getattr(self.runner, "facts", None)
            if callable(facts):
                facts()
            return
        from edgeprune.profiles import builtin_profiles
        from edgeprune.runners.adb import read_device

        runner: Any = self.runner
        info = read_device(runner.serial, runner.adb_host, runner.adb_port, timeout_s=min(runner.timeout_s, 30.0))
        self._machine = _machine_text(info.to_dict())
        other = info.matched_profile
        if info.match_kind == "model" and other and other != profile.name and profile.name in builtin_profiles():
            raise ConfigError(
                f"device {runner.serial} is a {info.display_name} (profile '{other}'), not a '{profile.name}': its "
                f"timings would calibrate the wrong phone; use --device {other}, or a profile YAML of your own"
            )

    def round(self, artifact: Artifact, x: torch.Tensor, warmup: int, runs: int) -> TimedRound:
        m = self.runner.measure(artifact, x.numpy().astype(np.float32), warmup=warmup, runs=runs, threads=self.threads)
        self._versions.update(m.runtime_versions)
        if m.runner not in self._runners:
            self._runners.append(m.runner)
        if not self._machine:
            self._machine = _machine_text(m.extra.get("device") or m.extra.get("machine") or {})
        return TimedRound(p50_ms=float(m.latency_p50_ms), runs=int(m.runs), runner=m.runner,
                          runtime_versions=dict(m.runtime_versions), peak_memory_mb=m.peak_memory_mb,
                          memory_method=m.memory_method)

    def versions(self) -> dict[str, str | None]:
        return dict(self._versions)

    def describe(self) -> str:
        machine = f" ({self._machine})" if self._machine else ""
        return (f"{type(self.runner).__name__} on {self.where}{machine}: {'; '.join(self._runners) or 'no runs'}; "
                "whole-model p50 per round, no per-operator timings")


def _machine_text(info: Mapping[str, Any]) -> str:
    """A short description of the device a runner reports: 'Pixel 8, Google Tensor G3' or 'Linux aarch64'."""
    parts = [info.get("model"), info.get("soc")] if info.get("model") or info.get("soc") else \
        [info.get("system"), info.get("machine")]
    return ", ".join(str(p) for p in parts if p)


# ------------------------------------------------------------------------------------------------ measuring
# The only place in edgeprune.cost that drives exporters and the host runner: calibration is a measuring stage.


def export_network(
    model: torch.nn.Module, example: torch.Tensor, target: str, scheme: str, threads: int, workdir: Path
) -> Artifact:
    """Export one network for (target, scheme) into `workdir` with edgeprune's own exporter."""
    gen = torch.Generator().manual_seed(1)
    calib = torch.cat([example, torch.randn(3, *example.shape[1:], generator=gen)])
    plan = Plan(target=target, scheme=scheme, threads=threads)
    suffix = get_exporter(target).suffix
    path = Path(workdir) / f"net-{target}-{scheme}{suffix}"
    with _quiet():
        return get_exporter(target).export(model, example, calib, plan, path).artifact


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Converters print progress to stdout and native libraries log to stderr: keep both out of the terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    real = sys.stdout
    try:
        os.dup2(devnull, 1)
        sys.stdout = io.StringIO()
        with native_stderr_silenced():
            yield
    finally:
        sys.stdout = real
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


FAST_PERCENTILE = 10.0


def fast_ms(rounds: Sequence[Sequence[tuple[float, float]]], threads: int) -> float:
    """The latency a network is fitted on, from (wall ms, process CPU ms) per run, pooled over rounds.

    One thread: the median CPU time per run (or the fastest round's median wall time, if lower). The inference runs
    on one core, so its CPU time is its latency when no other process competes for that core, and unlike wall time
    it does not grow when the machine is shared.
    Several threads: the `FAST_PERCENTILE` of wall time (CPU time no longer maps to latency): on a quiet machine
    runs barely vary and it equals the p50; on a shared one it is the run least disturbed by other work.
    Either way this is what the cost model predicts: the device's latency without competing work.
    """
    wall = [w for r in rounds for w, _ in r]
    if threads == 1:
        cpu = [c for r in rounds for _, c in r]
        fastest_round = min(float(np.percentile([w for w, _ in r], 50)) for r in rounds if r)
        return float(min(np.percentile(cpu, 50), fastest_round))
    return float(np.percentile(wall, FAST_PERCENTILE))


def time_round(
    artifact: Artifact, example: torch.Tensor, threads: int, warmup: int, runs: int
) -> tuple[list[tuple[float, float]], tuple[float | None, str]]:
    """One timing round through the host runtime session, exactly as the HostRunner times (session.run of a batch-1
    input): ([(wall ms, process CPU ms) per run], (peak memory MB, method))."""
    from edgeprune.runners.runtimes import open_session

    x = example.numpy().astype(np.float32)
    with native_stderr_silenced():
        session = open_session(artifact, threads)
    try:
        for _ in range(warmup):
            session.run(x)
        samples = []
        for _ in range(runs):
            c0, t0 = time.process_time(), time.perf_counter()
            session.run(x)
            t1, c1 = time.perf_counter(), time.process_time()
            samples.append(((t1 - t0) * 1e3, (c1 - c0) * 1e3))
        return samples, session.memory()
    finally:
        session.close()


def etdump_ops(artifact: Artifact, example: torch.Tensor, threads: int, warmup: int, runs: int) -> list[list[Any]]:
    """Per-operator timings of an ExecuTorch program from ETDump + Inspector: [[event name, us], ...] in
    execution order (XNNPACK operators, DELEGATE_CALL, portable operator calls, Method::execute); each event's
    time is the median of its samples after the first `warmup` executions (the same statistic as the CPU-time
    median the whole network is fitted on; profiles of later rounds are merged by their per-operator minimum).
    """
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    from edgeprune.runners.runtimes.executorch import set_threads

    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-etdump-"))
    try:
        with native_stderr_silenced():
            set_threads(threads)
            program = Runtime.get().load_program(str(artifact.path), enable_etdump=True, debug_buffer_size=0)
            method = program.load_method("forward")
            inp = (example.to(torch.float32),)
            for _ in range(warmup + runs):
                method.execute(inp)
            etdp = tmp / "run.etdp"
            program.write_etdump_result_to_file(str(etdp), str(tmp / "debug.bin"))
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inspector = Inspector(etdump_path=str(etdp))
        rows: list[list[Any]] = []
        for block in inspector.event_blocks:
            if block.name != "Execute":
                continue
            for ev in block.events:
                if ev.perf_data is None:
                    continue
                raw = list(ev.perf_data.raw)[warmup:] or list(ev.perf_data.raw)
                name = ev.name.split(" #")[0]
                rows.append([name, round(float(np.median(raw)) * 1e3, 3)])
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_ops(a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
    """Per-operator minimum of two ETDump profiles of the same program (each a round taken at another moment)."""
    if [n for n, _ in a] != [n for n, _ in b]:
        return a
    return [[n, min(x, y)] for (n, x), (_, y) in zip(a, b)]


def base_record(artifact: Artifact, threads: int, first: TimedRound, export_s: float, where: str = "host"
                ) -> dict[str, Any]:
    """The table fields of one exported network (no timings or provenance yet), with the runner, memory figure and
    runtime versions of its first timing round."""
    peak_mb = first.peak_memory_mb
    record: dict[str, Any] = {
        "target": artifact.target,
        "scheme": artifact.scheme,
        "threads": threads,
        "size_bytes": artifact.size_bytes,
        "peak_memory_mb": None if peak_mb is None else round(peak_mb, 4),
        "memory_method": first.memory_method,
        "runner": first.runner,
        "where": where,
        "runtime_versions": dict(first.runtime_versions),
        "export_s": round(export_s, 3),
    }
    if artifact.target == "executorch":
        record["planned_arena_bytes"] = artifact.lowering.get("planned_arena_bytes")
        record["non_delegated"] = artifact.lowering.get("non_delegated")
    return record


def finalize_record(record: dict[str, Any], rounds: Sequence[TimedRound]) -> dict[str, Any]:
    """Add the timings of all rounds: latency_ms (the fitted figure: `fast_ms` of all runs, or the fastest round's
    p50 when the timer gives statistics only), the per-round wall p50s (and CPU-time medians, in process), and
    latency_p50_ms (the fastest round's wall p50: a single runner measurement at best)."""
    p50s = [r.p50_ms for r in rounds]
    timed = {"latency_p50_ms": round(min(p50s), 5), "round_p50s_ms": [round(v, 5) for v in p50s]}
    if all(r.samples for r in rounds):
        cpus = [float(np.percentile([c for _, c in r.samples], 50)) for r in rounds]
        return record | {
            "latency_ms": round(fast_ms([r.samples for r in rounds], record["threads"]), 5),
            **timed,
            "round_cpu_ms": [round(v, 5) for v in cpus],
            "runs": sum(r.runs for r in rounds),
        }
    return record | {"latency_ms": round(min(p50s), 5), **timed, "runs": sum(r.runs for r in rounds)}


def _versions_match(recorded: dict[str, Any] | None, versions: dict[str, str | None]) -> bool:
    if not recorded:
        return False
    return all(recorded.get(k) == v for k, v in versions.items() if k in recorded and k != "torch")


def noise_spread_pct(values: list[float]) -> float:
    """Spread of the fastest half of the reference rounds: (max - min) / min in percent.

    Each network's latency is the fastest of its timing rounds, so what must be reproducible is the fast end of the
    distribution: occasional slow rounds (another process running) do not hurt, but fast rounds that disagree mean
    the machine itself is unsteady (frequency changes, constant contention), and then no fit is trustworthy.
    """
    if len(values) < 2:
        return 0.0
    fast = sorted(values)[: max(2, (len(values) + 1) // 2)]
    return 100.0 * (max(fast) - min(fast)) / min(fast) if min(fast) > 0 else 0.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).exists() else ""
