"""build(): the only module that calls every stage.

profiles + model spec + data -> prune -> export (per target) -> measure -> judge -> manifests + build.json.
Everything the user gave is validated before anything is written. Each device's folder is assembled in a
staging folder and moved into place whole, so an app build never picks up a half-written one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgeprune
from edgeprune._deps import package_version
from edgeprune._io import atomic_write_json
from edgeprune._progress import Steps
from edgeprune._torch import torch_threads
from edgeprune.cost import predict
from edgeprune.data import check_inputs, load_data
from edgeprune.errors import ConfigError, ParityError
from edgeprune.export import ExportResult, get_exporter, missing_toolchain
from edgeprune.judge import assess_quality, judge
from edgeprune.modelspec import resolve_model
from edgeprune.profiles import DeviceProfile, load_profile
from edgeprune.prune import as_tensor, prune
from edgeprune.recover import RecoveryConfig, RecoverySummary, distill
from edgeprune.runners import get_runner
from edgeprune.types import ARTIFACT_SUFFIX, SCHEMES, TARGETS, Dataset, Measurement, ModelSpec, Plan, PruneSummary, Quality, Verdict

MANIFEST_SCHEMA_VERSION = 1
BUILD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BuildRequest:
    """Everything `edgeprune build` was asked to do."""

    model: str
    out: Path
    devices: tuple[str, ...] = ("host",)
    targets: tuple[str, ...] = ()
    """Empty: for each device, every target it supports whose toolchain is installed and can do `quant`."""
    prune: float = 0.0
    """Fraction of prunable channels removed (0 = none)."""
    quant: str = "fp32"
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    data: str | None = None
    budget_overrides: dict[str, float | None] = field(default_factory=dict)
    round_to: int = 8
    importance: str = "l2"
    finetune_epochs: int = 10
    """Epochs of distillation fine-tuning after pruning (needs labelled train data; 0 = BN recalibration only)."""
    runs: int = 50
    warmup: int = 10
    seed: int = 0
    on: str = "host"
    """Where artifacts are measured: host, adb, adb:SERIAL or ssh:user@host[:port]."""
    remote_python: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    adb_port: int = 5037


@dataclass(frozen=True)
class ArtifactReport:
    target: str
    file: str
    export: ExportResult
    measurement: Measurement
    quality: Quality
    verdict: Verdict
    predicted: dict[str, Any]


@dataclass(frozen=True)
class BuildResult:
    summary: dict[str, Any]
    passed: bool


def _check_out_dir(out: Path) -> None:
    """Refuse an output folder that cannot be written, before any work is done."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"output path '{out}' is not a folder ('{probe}' is a file); choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder '{out}' cannot be written ('{probe}' is read-only); choose another --out")


def _validate(request: BuildRequest) -> tuple[list[DeviceProfile], dict[str, tuple[str, ...]], dict[str, str]]:
    """Check every input before any work; returns the profiles, the targets per device and the skipped targets."""
    if request.quant not in SCHEMES:
        raise ConfigError(f"--quant {request.quant} is unknown; choose one of: {', '.join(SCHEMES)}")
    if not 0.0 <= request.prune < 1.0:
        raise ConfigError(f"--prune {request.prune} is out of range; give the fraction of channels to remove, in [0, 1)")
    if request.runs < 1 or request.warmup < 0:
        raise ConfigError(f"--runs {request.runs} / --warmup {request.warmup}: need runs >= 1 and warmup >= 0")
    if request.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs {request.finetune_epochs} must be >= 0")
    if request.on == "adb:all":
        raise ConfigError("--on adb:all measures a finished build on every attached device: use 'edgeprune validate DIST --on adb:all'")
    if len(set(request.devices)) != len(request.devices):
        raise ConfigError(f"--device given twice: {', '.join(request.devices)}; name each device once")
    profiles = [load_profile(d).with_budget(**request.budget_overrides) for d in request.devices]
    targets_by_device, skipped = _select_targets(request, profiles)
    _check_out_dir(request.out)
    return profiles, targets_by_device, skipped


def _select_targets(
    request: BuildRequest, profiles: list[DeviceProfile]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Targets asked for must work on every device; by default each device gets every target it supports
    whose toolchain is installed and which can do the scheme (the others are reported as skipped)."""
    skipped: dict[str, str] = {}
    if request.targets:
        for target in request.targets:
            get_exporter(target).check_scheme(request.quant)
            for prof in profiles:
                if target not in prof.supported_targets:
                    raise ConfigError(
                        f"device '{prof.name}' does not support target '{target}'; it supports: "
                        f"{', '.join(prof.supported_targets)}"
                    )
        return {p.name: tuple(request.targets) for p in profiles}, skipped
    usable = []
    for target in TARGETS:
        missing = missing_toolchain(target)
        if missing is not None:
            skipped[target] = str(missing)
        elif request.quant not in get_exporter(target).schemes:
            skipped[target] = f"target '{target}' cannot do --quant {request.quant}"
        else:
            usable.append(target)
    by_device = {}
    for prof in profiles:
        chosen = tuple(t for t in usable if t in prof.supported_targets)
        if not chosen:
            reasons = "; ".join(skipped.get(t, f"'{t}' unsupported by the device") for t in prof.supported_targets)
            raise ConfigError(f"no target can be built for device '{prof.name}': {reasons}")
        by_device[prof.name] = chosen
    return by_device, skipped


def _outputs(fn: Any, x: np.ndarray) -> np.ndarray:
    """Float32 outputs of a PyTorch callable over `x`, row by row (exported graphs take batch 1)."""
    with torch.no_grad():
        return np.stack([fn(as_tensor(x[i : i + 1])).float().numpy()[0] for i in range(len(x))])


def _recover(
    pruned: torch.nn.Module, spec: ModelSpec, dataset: Dataset, request: BuildRequest, steps: Steps
) -> RecoverySummary | None:
    """Distillation fine-tune of the pruned model when there is something to recover and labels to do it with."""
    if request.prune == 0.0 or request.finetune_epochs == 0 or dataset.train_x is None or dataset.train_y is None:
        return None
    config = RecoveryConfig(epochs=request.finetune_epochs, seed=request.seed)
    with steps.step(f"Recovering accuracy ({config.epochs} epochs of distillation)", total=config.epochs) as update:
        return distill(pruned, spec.module, dataset.train_x, dataset.train_y, config, progress=update)


def build(request: BuildRequest, steps: Steps | None = None) -> BuildResult:
    """Prune, export, measure and judge one fixed plan for every requested device and target."""
    steps = steps or Steps(enabled=False)
    profiles, targets_by_device, skipped = _validate(request)
    with torch_threads(1):
        return _build(request, steps, profiles, targets_by_device, skipped)


def _build(
    request: BuildRequest,
    steps: Steps,
    profiles: list[DeviceProfile],
    targets_by_device: dict[str, tuple[str, ...]],
    skipped: dict[str, str],
) -> BuildResult:
    targets = tuple(t for t in TARGETS if any(t in chosen for chosen in targets_by_device.values()))
    with steps.step(f"Loading model {request.model}") as update:
        spec = resolve_model(request.model, weights=request.weights, input_shape=request.input_shape, progress=update)
    dataset = load_data(request.data or spec.default_data, spec.input_shape, seed=request.seed)
    check_inputs(dataset.calib_x, spec.input_shape, "calibration data")
    check_inputs(dataset.eval_x, spec.input_shape, "eval data")
    if request.budget_overrides.get("max_accuracy_drop_pct") is not None and not dataset.labelled:
        raise ConfigError("--max-accuracy-drop needs labelled eval data; pass --data (a .npz with x and y, or an image folder)")

    example = torch.zeros(spec.input_shape)
    calib = as_tensor(dataset.calib_x)
    dense_outputs = _outputs(spec.module, dataset.eval_x)
    base_plan = Plan(
        target=targets[0],
        scheme=request.quant,
        keep_ratio=round(1.0 - request.prune, 6),
        importance=request.importance,
        round_to=request.round_to,
        seed=request.seed,
    )
    with steps.step(f"Pruning (keep {base_plan.keep_ratio:.0%} of channels)"):
        pruned, prune_summary = prune(spec.module, example, calib, base_plan)
    recovery = _recover(pruned, spec, dataset, request, steps)

    request.out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=request.out, prefix=".staging-"))
    try:
        exports: dict[str, ExportResult] = {}
        references: dict[str, np.ndarray] = {}
        for target in targets:
            with steps.step(f"Exporting {target} ({request.quant})"):
                plan = Plan(**{**base_plan.to_dict(), "target": target})
                path = staging / f"export{ARTIFACT_SUFFIX[target]}"
                exports[target] = get_exporter(target).export(pruned, example, calib, plan, path)
                references[target] = _outputs(exports[target].reference, dataset.eval_x)

        runner = get_runner(request.on, python=request.remote_python, identity_file=request.identity_file,
                            known_hosts=request.known_hosts, adb_port=request.adb_port)
        measured: dict[tuple[str, int], Measurement] = {}
        device_reports: dict[str, list[ArtifactReport]] = {}
        for prof in profiles:
            threads = prof.default_threads
            if runner.where == "host":
                threads = min(threads, os.cpu_count() or 1)
            reports = []
            for target in targets_by_device[prof.name]:
                result = exports[target]
                key = (target, threads)
                if key not in measured:
                    with steps.step(f"Measuring {target} on {runner.where} ({threads} threads, {request.runs} runs)"):
                        measured[key] = runner.measure(
                            result.artifact, dataset.eval_x, warmup=request.warmup, runs=request.runs, threads=threads
                        )
                measurement = measured[key]
                quality = assess_quality(
                    request.quant, measurement.outputs, references[target], dense_outputs, dataset.eval_y
                )
                if not quality.parity_passed:
                    raise ParityError(
                        f"target '{target}' scheme '{request.quant}': runtime outputs disagree with the PyTorch model "
                        f"({quality.parity_metric} {quality.parity_value:.6g}, limit {quality.parity_limit:.6g})"
                    )
                file = f"model{ARTIFACT_SUFFIX[target]}"
                predicted = predict(prof, pruned, example, target, request.quant, prof.default_threads).to_dict()
                verdict = judge(prof, measurement, quality)
                reports.append(ArtifactReport(target, file, result, measurement, quality, verdict, predicted))
            device_reports[prof.name] = reports

        device_summaries = []
        for prof in profiles:
            reports = device_reports[prof.name]
            device_dir = staging / prof.name
            device_dir.mkdir()
            for rep in reports:
                shutil.copyfile(rep.export.artifact.path, device_dir / rep.file)
            manifest = _manifest(prof, spec, dataset, prune_summary, recovery, reports)
            atomic_write_json(device_dir / "manifest.json", manifest)
            device_summaries.append(
                {
                    "device": prof.name,
                    "dir": prof.name,
                    "passed": manifest["passed"],
                    "unverified": sorted({c.name for r in reports for c in r.verdict.checks if c.status == "unverified"}),
                    "artifacts": [_artifact_summary(r) for r in reports],
                }
            )
        for prof in profiles:  # move each finished device folder into place, replacing an older one whole
            final = request.out / prof.name
            if final.exists():  # the older folder goes into staging, which is removed below
                os.replace(final, staging / f".old-{prof.name}")
            os.replace(staging / prof.name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    passed = all(d["passed"] for d in device_summaries)
    summary = {
        "schema_version": BUILD_SCHEMA_VERSION,
        "edgeprune_version": edgeprune.__version__,
        "created_utc": _now(),
        "command": sys.argv,
        "model": _model_block(spec),
        "data": dataset.summary(),
        "plan": base_plan.to_dict() | {"targets": list(targets)},
        "skipped_targets": skipped,
        "pruning": prune_summary.to_dict(),
        "recovery": recovery.to_dict() if recovery else None,
        "versions": _versions(),
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "devices": device_summaries,
        "passed": passed,
    }
    atomic_write_json(request.out / "build.json", summary)
    return BuildResult(summary=summary, passed=passed)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str | None]:
    dists = ("torch", "executorch", "torchao", "torch-pruning", "litert-torch", "ai-edge-litert", "onnxruntime", "onnx")
    return {"edgeprune": edgeprune.__version__, "python": platform.python_version()} | {d: package_version(d) for d in dists}


def _model_block(spec: ModelSpec) -> dict[str, Any]:
    return {
        "spec": spec.spec,
        "name": spec.name,
        "weights": spec.weights,
        "input_shape": list(spec.input_shape),
        "preprocessing": spec.preprocessing,
    }


def _artifact_summary(rep: ArtifactReport) -> dict[str, Any]:
    m, q = rep.measurement, rep.quality
    return {
        "target": rep.target,
        "file": rep.file,
        "scheme": rep.export.artifact.scheme,
        "size_bytes": rep.export.artifact.size_bytes,
        "latency_p50_ms": round(m.latency_p50_ms, 4),
        "predicted_latency_p50_ms": rep.predicted["latency_p50_ms"],
        "cost_model_status": rep.predicted["status"],
        "peak_memory_mb": None if m.peak_memory_mb is None else round(m.peak_memory_mb, 3),
        "accuracy_kind": q.kind,
        "reference_accuracy": q.reference_accuracy,
        "artifact_accuracy": q.artifact_accuracy,
        "passed": rep.verdict.passed,
        "checks": {c.name: c.status for c in rep.verdict.checks},
    }


def _manifest(
    profile: DeviceProfile,
    spec: ModelSpec,
    dataset: Dataset,
    prune_summary: PruneSummary,
    recovery: RecoverySummary | None,
    reports: list[ArtifactReport],
) -> dict[str, Any]:
    artifacts = []
    for rep in reports:
        art = rep.export.artifact
        artifacts.append(
            {
                "path": rep.file,
                "target": art.target,
                "scheme": art.scheme,
                "sha256": art.sha256,
                "size_bytes": art.size_bytes,
                "inputs": [t.to_dict() for t in art.inputs],
                "outputs": [t.to_dict() for t in art.outputs],
                "plan": art.plan.to_dict() | {"threads": profile.default_threads},
                "lowering": art.lowering,
                "export_s": round(art.export_s, 3),
                "quality": rep.quality.to_dict(),
                "predicted": rep.predicted,
                "measured": rep.measurement.to_dict(),
                "verdict": rep.verdict.to_dict(),
            }
        )
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "edgeprune_version": edgeprune.__version__,
        "created_utc": _now(),
        "device": {
            "name": profile.name,
            "display_name": profile.display_name,
            "platform": profile.platform,
            "soc": profile.soc,
            "abi": profile.abi,
            "tier": profile.tier,
        },
        "model": _model_block(spec),
        "data": dataset.summary(),
        "pruning": prune_summary.to_dict(),
        "recovery": recovery.to_dict() if recovery else None,
        "budget": profile.budget.model_dump() | {"energy_limit_mj": profile.energy_limit_mj},
        "artifacts": artifacts,
        "passed": all(r.verdict.passed for r in reports),
    }
