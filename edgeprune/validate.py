"""validate(): measure already-built artifacts on a runner (host, a phone over adb, a board over ssh) and judge
them against their device's budget. Each validation is appended to the device's manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune._io import atomic_write_json, sha256_file
from edgeprune.data import load_data
from edgeprune.errors import ConfigError
from edgeprune.judge import judge, top1
from edgeprune.profiles import Budget, DeviceProfile, load_profile
from edgeprune.runners.base import Runner, measure_in_blocks
from edgeprune.types import Artifact, Dataset, Measurement, Plan, Quality, TensorSpec


@dataclass(frozen=True)
class DeviceBuild:
    """One device folder of a build: its manifest and where it lives."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def device(self) -> str:
        return self.manifest["device"]["name"]


def find_builds(path: Path) -> list[DeviceBuild]:
    """Device folders under `path`: `path` itself if it holds a manifest.json, else its subfolders that do."""
    if not path.is_dir():
        raise ConfigError(f"'{path}' is not a folder; give a build output folder such as dist/ or dist/host")
    folders = [path] if (path / "manifest.json").is_file() else sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
    if not folders:
        raise ConfigError(f"no manifest.json in '{path}' or its subfolders; run 'edgeprune build --out {path}' first")
    builds = []
    for folder in folders:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"'{folder / 'manifest.json'}' is not valid JSON (line {exc.lineno}); rebuild it") from None
        if manifest.get("schema_version") != 1:
            raise ConfigError(f"'{folder / 'manifest.json'}' has schema_version {manifest.get('schema_version')!r}; this edgeprune reads 1")
        builds.append(DeviceBuild(folder, manifest))
    return builds


def _artifact(folder: Path, entry: dict[str, Any]) -> Artifact:
    path = folder / entry["path"]
    if not path.is_file():
        raise ConfigError(f"artifact '{path}' named in the manifest is missing; rebuild it")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ConfigError(f"artifact '{path}' changed since it was built (sha256 {digest[:12]}…, manifest {entry['sha256'][:12]}…); rebuild it")
    return Artifact(
        path=path,
        target=entry["target"],
        scheme=entry["scheme"],
        size_bytes=entry["size_bytes"],
        sha256=entry["sha256"],
        inputs=tuple(TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in entry["inputs"]),
        outputs=tuple(TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in entry["outputs"]),
        plan=Plan(**entry["plan"]),
        lowering=entry.get("lowering", {}),
    )


def _profile(manifest: dict[str, Any]) -> DeviceProfile:
    """The device's profile with the budget the build judged against (command-line overrides included)."""
    profile = load_profile(manifest["device"]["name"])
    budget = {k: v for k, v in manifest["budget"].items() if k != "energy_limit_mj"}
    return profile.model_copy(update={"budget": Budget.model_validate(budget)})


def _quality(entry: dict[str, Any], outputs: np.ndarray, labels: np.ndarray | None) -> Quality:
    """Eval accuracy through the runtime on the runner's machine, with the build's reference and parity.

    Without labels, or without outputs (a native benchmark binary), accuracy is not measured here: None.
    """
    built = entry["quality"]
    measured = labels is not None and outputs.size > 0
    return Quality(
        kind=built["kind"],
        samples=len(outputs),
        reference_accuracy=built["reference_accuracy"] if measured else None,
        artifact_accuracy=float((top1(outputs) == labels).mean()) if measured else None,
        parity_metric=built["parity_metric"],
        parity_value=built["parity_value"],
        parity_limit=built["parity_limit"],
        parity_passed=built["parity_passed"],
    )


def _eval_data(manifest: dict[str, Any]) -> Dataset:
    """The eval split the build used, regenerated from the manifest's data source."""
    source = manifest["data"]["source"]
    return load_data(None if source == "generated" else source, tuple(manifest["model"]["input_shape"]))


def _record(build: DeviceBuild, entry: dict[str, Any], measurement: Measurement, labels: np.ndarray | None) -> dict[str, Any]:
    """Judge one measurement against the build's device budget and append it to the manifest entry."""
    quality = _quality(entry, measurement.outputs, labels)
    verdict = judge(_profile(build.manifest), measurement, quality)
    record = {
        "validated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measured": measurement.to_dict(),
        "accuracy": quality.artifact_accuracy,
        "verdict": verdict.to_dict(),
    }
    entry.setdefault("validations", []).append(record)
    return {"device": build.device, "artifact": entry["path"], **record}


def _check_counts(runs: int, warmup: int, blocks: int) -> None:
    if runs < 1 or warmup < 0 or blocks < 1:
        raise ConfigError(f"--runs {runs} / --warmup {warmup} / --blocks {blocks}: need runs >= 1, warmup >= 0 "
                          "and blocks >= 1")


def validate(path: Path, runner: Runner, *, runs: int = 50, warmup: int = 10, threads: int | None = None,
             blocks: int = 3) -> list[dict[str, Any]]:
    """Measure every artifact under `path` on `runner` (`blocks` blocks of `runs`, see `measure_in_blocks`), judge
    it, and append the result to its manifest."""
    _check_counts(runs, warmup, blocks)
    results = []
    for build in find_builds(path):
        data = _eval_data(build.manifest)
        for entry in build.manifest["artifacts"]:
            # the plan's thread count (what the app runs with), else the profile's
            n_threads = threads or entry.get("plan", {}).get("threads") or _profile(build.manifest).default_threads
            if runner.where == "host":
                n_threads = min(n_threads, os.cpu_count() or 1)
            artifact = _artifact(build.folder, entry)
            measurement = measure_in_blocks(runner, artifact, data.eval_x, warmup=warmup, runs=runs, threads=n_threads,
                                            blocks=blocks)
            results.append(_record(build, entry, measurement, data.eval_y))
        atomic_write_json(build.folder / "manifest.json", build.manifest)
    return results


def validate_on_attached(
    path: Path, *, adb_host: str = "127.0.0.1", adb_port: int = 5037, python: str | None = None,
    runs: int = 50, warmup: int = 10, threads: int | None = None, blocks: int = 3,
) -> tuple[list[dict[str, Any]], list[str]]:
    """`--on adb:all`: every attached device measures, in parallel, the artifacts built for the profile it matches.

    Returns the results and one line per device that was not measured (no matching build, or a failure).
    """
    from edgeprune.runners.adb import AdbPool, list_connected, match_jobs

    _check_counts(runs, warmup, blocks)
    builds = {b.device: b for b in find_builds(path)}
    sources = {(b.manifest["data"]["source"], tuple(b.manifest["model"]["input_shape"])) for b in builds.values()}
    if len(sources) != 1:
        raise ConfigError(f"'{path}' holds builds of different models or data; validate one build folder at a time")
    data = _eval_data(next(iter(builds.values())).manifest)
    entries = {}  # artifact path -> (build, manifest entry)
    by_profile: dict[str, list[Artifact]] = {}
    for name, build in builds.items():
        for entry in build.manifest["artifacts"]:
            artifact = _artifact(build.folder, entry)
            entries[artifact.path] = (build, entry)
            by_profile.setdefault(name, []).append(artifact)
    devices = list_connected(adb_host, adb_port)
    jobs, unmatched = match_jobs(by_profile, devices)
    notes = [f"{d.serial}: {'state ' + d.state if d.state != 'device' else 'no build for profile ' + str(d.matched_profile)}"
             for d in unmatched]
    pool = AdbPool(sorted({j.serial for j in jobs}), adb_host=adb_host, adb_port=adb_port, python=python)
    results = []
    for res in pool.run(jobs, data.eval_x, warmup=warmup, runs=runs, threads=threads, blocks=blocks):
        if res.measurement is None:
            notes.append(f"{res.serial}: {res.artifact.path.name}: {res.error}")
            continue
        build, entry = entries[res.artifact.path]
        results.append(_record(build, entry, res.measurement, data.eval_y))
    for build in builds.values():
        atomic_write_json(build.folder / "manifest.json", build.manifest)
    return results, notes
