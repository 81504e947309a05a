"""validate(): measure already-built artifacts on a runner (host, a phone over adb, a board over ssh) and judge
them against their device's budget. Each validation is appended to the device's manifest.

Every measurement's outputs on the eval inputs are compared with the **host reference**: the same artifact's outputs
on this host's runtime, recorded once per manifest entry (`host_reference`: an .npy under `host_reference/`, an .npz
of every output by key for a model with several, with its sha256, the artifact's sha256 it was recorded for, and the
inputs' sha256), at the first validation that needs it. The comparison (max abs diff per output, top-1 agreement for
class logits; `device_parity` in the validation record) is the verdict's
`output_parity` check: beyond the scheme's tolerance (`DEVICE_PARITY`) it fails with the figure, whoever is at fault:
a device computing wrong answers (an emulator on the wrong CPU model, a broken kernel) or an artifact that changed.

A measurement from an emulated device (`extra["emulated"]`, e.g. `qemu cortex-a76`, which the ssh and adb runners read
from the device) is recorded as such; its latency, memory and energy checks are `unverified`, "not measured:
emulated device", since emulated time is no device's latency.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune._io import atomic_write_bytes, atomic_write_json, sha256_file
from edgeprune.data import load_data
from edgeprune.errors import ConfigError
from edgeprune.judge import judge, top1
from edgeprune.manifest_schema import check_manifest
from edgeprune.outputs import artifact_keys
from edgeprune.profiles import Budget, DeviceProfile, load_profile
from edgeprune.runners.base import Runner, measure_in_blocks
from edgeprune.stats import wilson_interval
from edgeprune.types import (
    SINGLE_OUTPUT_KEY,
    Artifact,
    BudgetCheck,
    Dataset,
    Measurement,
    Plan,
    Quality,
    TensorSpec,
    Verdict,
)

DEVICE_PARITY = {"fp32": (1e-3, 0.99), "fp16": (2e-2, 0.98), "int8": (0.10, 0.98), "int8-dynamic": (0.10, 0.98)}
"""Scheme -> (max abs diff from the host reference, as a fraction of the reference outputs' range (at least 1), and
the least top-1 agreement with it). fp32 differs between x86 and ARM kernels by rounding only (about 1e-6 on the
digits model and mobilenet_v2); XNNPACK's int8 (ExecuTorch, LiteRT) matched exactly. The wrong answers qemu's default
CPU model gave (-0.087 against -1.389, 16% of the range) fail. So did onnxruntime's int8 with 8-bit weights on an
x86 AVX2 host (5% to 22% of the range from its ARM kernels), which is why ONNX int8 weights are 7-bit
(export/onnx.REDUCE_RANGE_WHY)."""
REFERENCE_DIR = "host_reference"


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
        if not isinstance(manifest, dict) or manifest.get("schema_version") != 1:
            version = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise ConfigError(f"'{folder / 'manifest.json'}' has schema_version {version!r}; this edgeprune reads 1")
        check_manifest(manifest, str(folder / "manifest.json"))
        builds.append(DeviceBuild(folder, manifest))
    return builds


def _artifact(folder: Path, entry: dict[str, Any]) -> Artifact:
    name = Path(entry["path"])
    if name.is_absolute() or ".." in name.parts or (folder / name).resolve().parent != folder.resolve():
        raise ConfigError(f"manifest in '{folder}' names artifact '{entry['path']}' outside its folder; refused "
                          "(an artifact path is a file name inside the device folder)")
    path = folder / name
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


def _logits(entry: dict[str, Any], measurement: Measurement) -> np.ndarray:
    """The measured output top-1 accuracy is read from: the build's class-logits output (none: an empty array);
    manifests written before outputs had keys: the first output."""
    built = entry["quality"]
    if "class_logits" not in built:
        return measurement.outputs
    key = built["class_logits"]
    if key is None:
        return np.empty((0,), dtype=np.float32)
    if key in measurement.named_outputs:
        return measurement.named_outputs[key]
    keys = artifact_keys([TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in entry["outputs"]])
    return measurement.outputs if keys and keys[0] == key else np.empty((0,), dtype=np.float32)


def _quality(entry: dict[str, Any], measurement: Measurement, labels: np.ndarray | None) -> Quality:
    """Eval accuracy through the runtime on the runner's machine, with the build's reference and parity.

    Without labels, without outputs (a native benchmark binary) or without a class-logits output, accuracy is not
    measured here: None.
    """
    built = entry["quality"]
    outputs = _logits(entry, measurement)
    measured = labels is not None and outputs.size > 0
    return Quality(
        kind=built["kind"],
        samples=len(measurement.outputs),
        reference_accuracy=built["reference_accuracy"] if measured else None,
        artifact_accuracy=float((top1(outputs) == labels).mean()) if measured else None,
        parity_metric=built["parity_metric"],
        parity_value=built["parity_value"],
        parity_limit=built["parity_limit"],
        parity_passed=built["parity_passed"],
        split=built.get("split", "test"),
        reference_accuracy_ci95=(tuple(built["reference_accuracy_ci95"])
                                 if measured and built.get("reference_accuracy_ci95") else None),
        artifact_accuracy_ci95=(wilson_interval(int((top1(outputs) == labels).sum()), len(outputs))
                                if measured else None),
        class_logits=built.get("class_logits"),
    )


def _eval_data(manifest: dict[str, Any]) -> Dataset:
    """The eval split the build used, regenerated from the manifest's data source."""
    source = manifest["data"]["source"]
    return load_data(None if source == "generated" else source, tuple(manifest["model"]["input_shape"]),
                     seed=manifest["data"].get("split_seed") or 0)


def _inputs_sha256(inputs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float32).tobytes()).hexdigest()


def _entry_keys(entry: dict[str, Any]) -> list[str]:
    return artifact_keys([TensorSpec(**{**t, "shape": tuple(t["shape"])}) for t in entry["outputs"]])


def record_host_reference(folder: Path, entry: dict[str, Any], inputs: np.ndarray, measurement: Measurement,
                          recorded_by: str) -> dict[str, Any]:  # fmt: skip
    """Keep `measurement`'s outputs (a host run of the entry's artifact on `inputs`) as the entry's host reference:
    `host_reference/<artifact>.npy` (one output) or `.npz` (every output by key), described in
    `entry["host_reference"]`. The caller writes the manifest."""
    buf = io.BytesIO()
    several = len(measurement.named_outputs) > 1
    if several:
        np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in measurement.named_outputs.items()})
    else:
        np.save(buf, np.asarray(measurement.outputs, dtype=np.float32), allow_pickle=False)
    rel = f"{REFERENCE_DIR}/{entry['path']}{'.npz' if several else '.npy'}"
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / rel, buf.getvalue())
    entry["host_reference"] = {
        "path": rel,
        "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "artifact_sha256": entry["sha256"],
        "inputs_sha256": _inputs_sha256(inputs),
        "rows": int(len(inputs)),
        "where": measurement.where,
        "machine": platform.machine(),
        "runner": measurement.runner,
        "runtime_versions": measurement.runtime_versions,
        "recorded_by": recorded_by,
        "recorded_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return entry["host_reference"]


def _reference_map(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return {keys[0] if keys else SINGLE_OUTPUT_KEY: loaded}
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def host_reference(build: DeviceBuild, entry: dict[str, Any], artifact: Artifact, inputs: np.ndarray,
                   measurement: Measurement) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """The entry's recorded host reference for `inputs`, every output by key; recorded now (from `measurement` when
    it ran on the host, else from one host run) when the entry has none or its inputs changed."""
    keys = _entry_keys(entry)
    rec = entry.get("host_reference")
    if rec and rec.get("inputs_sha256") == _inputs_sha256(inputs):
        path = build.folder / rec["path"]
        if not path.is_file() or sha256_file(path) != rec["sha256"]:
            raise ConfigError(f"host reference '{path}' is missing or changed since it was recorded; remove the "
                              f"'host_reference' entry of {entry['path']} in the manifest to record it again")  # fmt: skip
        return _reference_map(path, keys), rec
    if measurement.where != "host" or len(measurement.outputs) != len(inputs):
        from edgeprune.runners.host import HostRunner

        measurement = HostRunner().measure(artifact, inputs, warmup=0, runs=1, threads=1)
    rec = record_host_reference(build.folder, entry, inputs, measurement, "edgeprune validate")
    if len(measurement.named_outputs) > 1:
        return {k: np.asarray(v, dtype=np.float32) for k, v in measurement.named_outputs.items()}, rec
    return {keys[0] if keys else SINGLE_OUTPUT_KEY: np.asarray(measurement.outputs, dtype=np.float32)}, rec


def _device_parity_one(scheme: str, outputs: np.ndarray, reference: np.ndarray, top1_judged: bool) -> dict[str, Any]:
    if outputs.shape != reference.shape:
        return {"passed": False, "max_abs_diff": None, "note": f"outputs of shape {tuple(outputs.shape)} against the "
                f"host reference's {tuple(reference.shape)}"}  # fmt: skip
    frac, min_agreement = DEVICE_PARITY.get(scheme, DEVICE_PARITY["fp32"])
    diff = float(np.max(np.abs(outputs.astype(np.float64) - reference.astype(np.float64))))
    limit = frac * max(1.0, float(np.ptp(reference)))
    found: dict[str, Any] = {"max_abs_diff": diff, "max_abs_diff_limit": limit}
    passed = diff <= limit
    if top1_judged:
        agreement = float((top1(outputs) == top1(reference)).mean())
        found |= {"top1_agreement": agreement, "top1_agreement_min": min_agreement}
        passed = passed and agreement >= min_agreement
    return {"passed": bool(passed), **found, "samples": int(len(outputs))}


def device_parity(scheme: str, outputs: np.ndarray | dict[str, np.ndarray],
                  reference: np.ndarray | dict[str, np.ndarray], class_logits: str | None = None) -> dict[str, Any]:
    """Compare a device's outputs with the host reference against the scheme's tolerance (`DEVICE_PARITY`): max abs
    diff per output; top-1 agreement too for a lone output (as always) or the declared class-logits output. With
    several outputs, each is compared by key (`outputs`: its own figures) and the worst stands for them all."""
    if not isinstance(reference, dict) or len(reference) == 1:
        out = outputs if not isinstance(outputs, dict) else next(iter(outputs.values()), np.empty((0,)))
        ref = reference if not isinstance(reference, dict) else next(iter(reference.values()))
        if out.size == 0:
            return {"passed": None, "note": "not compared: the runner returned no outputs (a native benchmark program)"}
        return _device_parity_one(scheme, out, ref, True)
    outs = outputs if isinstance(outputs, dict) else {}
    if not outs:
        return {"passed": None, "note": "not compared: the runner brought back the first output only, the artifact "
                                        f"has {len(reference)} ({', '.join(reference)})"}
    per = []
    for key, ref in reference.items():
        if key not in outs:
            per.append({"output": key, "passed": False, "max_abs_diff": None, "note": "not returned by the runner"})
            continue
        per.append({"output": key, **_device_parity_one(scheme, outs[key], ref, key == class_logits)})
    worst = max(per, key=lambda p: -1.0 if p["max_abs_diff"] is None else p["max_abs_diff"] / p["max_abs_diff_limit"])
    failed = next((p for p in per if not p["passed"]), None)
    stand = failed or worst
    summary: dict[str, Any] = {"passed": failed is None, "max_abs_diff": stand["max_abs_diff"],
                               "max_abs_diff_limit": stand.get("max_abs_diff_limit"), "output": stand["output"],
                               "samples": int(len(next(iter(outs.values())))), "outputs": per}
    if failed is not None and failed.get("note"):
        summary["note"] = f"output '{failed['output']}' {failed['note']}"
    return summary


def _parity_check(parity: dict[str, Any], where: str) -> BudgetCheck:
    if parity["passed"] is None:
        return BudgetCheck("output_parity", "max abs diff", None, None, "unverified", parity["note"])
    if parity.get("max_abs_diff") is None:
        return BudgetCheck("output_parity", "max abs diff", None, None, "fail", parity["note"])
    output = f"output '{parity['output']}' " if "output" in parity else ""
    agreement = (f", top-1 agreement {parity['top1_agreement']:.2%} (at least {parity['top1_agreement_min']:.0%})"
                 if "top1_agreement" in parity else "")
    note = (f"{where} against the host reference on {parity['samples']} eval inputs: {output}max abs diff "
            f"{parity['max_abs_diff']:.3g} (limit {parity['max_abs_diff_limit']:.3g}){agreement}"
            + (f"; {parity['note']}" if parity.get("note") else ""))  # fmt: skip
    return BudgetCheck("output_parity", "max abs diff", parity["max_abs_diff"], parity["max_abs_diff_limit"],
                       "pass" if parity["passed"] else "fail", note)  # fmt: skip


def _record(build: DeviceBuild, entry: dict[str, Any], measurement: Measurement, labels: np.ndarray | None,
            reference: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Judge one measurement against the build's device budget and its outputs against the host reference, and
    append it to the manifest entry."""
    quality = _quality(entry, measurement, labels)
    verdict = judge(_profile(build.manifest), measurement, quality)
    checks = list(verdict.checks)
    parity = None
    if reference is not None:
        measured = measurement.named_outputs or measurement.outputs
        parity = device_parity(entry["scheme"], measured, reference[0], entry["quality"].get("class_logits"))
        parity["reference"] = reference[1]["path"]
        if reference[1]["artifact_sha256"] != entry["sha256"]:
            parity["note"] = (f"the host reference was recorded for artifact sha256 {reference[1]['artifact_sha256'][:12]}…, "
                              f"the artifact now is {entry['sha256'][:12]}…")  # fmt: skip
        checks.append(_parity_check(parity, measurement.where))
    verdict = Verdict(device=verdict.device, checks=tuple(checks))
    record = {
        "validated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measured": measurement.to_dict(),
        "accuracy": quality.artifact_accuracy,
        **({"emulated": measurement.extra["emulated"]} if measurement.extra.get("emulated") else {}),
        **({"device_parity": parity} if parity is not None else {}),
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
            reference = host_reference(build, entry, artifact, data.eval_x, measurement)
            results.append(_record(build, entry, measurement, data.eval_y, reference))
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
        reference = host_reference(build, entry, res.artifact, data.eval_x, res.measurement)
        results.append(_record(build, entry, res.measurement, data.eval_y, reference))
    for build in builds.values():
        atomic_write_json(build.folder / "manifest.json", build.manifest)
    return results, notes
