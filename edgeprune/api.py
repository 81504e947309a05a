"""The Python API: the CLI's verbs as functions on in-memory objects.

    result = edgeprune.build(model, (x, y), devices=["pixel-8"], latency_ms=5, targets=["executorch"], out="dist/")
    result.devices["pixel-8"].artifacts[0].verdict.passed

Errors are the typed exceptions of `edgeprune.errors` (the CLI turns them into one-line messages and exit codes).
Third-party output (converter banners, library warnings) is kept in `<out>/edgeprune.log`, not printed;
`verbose=True` prints it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from edgeprune._progress import Steps
from edgeprune._runlog import keep_log, run_log
from edgeprune.errors import ConfigError
from edgeprune.pipeline import BuildRequest, BuildResult, build as _run_build
from edgeprune.planner.recipe import read_plan_yaml
from edgeprune.profiles import DeviceProfile, load_profile
from edgeprune.scoring import MetricArg
from edgeprune.planner.settings import PlanSettings

ModelArg = Union[str, torch.nn.Module]
"""A model spec ('examples:digits', 'torchvision:NAME', 'timm:NAME', 'pkg.module:factory') or a module."""
DataArg = Union[str, Path, tuple, None]
"""A data spec or path, (x, y) arrays (y None for unlabelled data), or None (the example's data or generated inputs)."""


@dataclass(frozen=True)
class FixedPlan:
    """A plan given by hand: prune a fraction of channels, quantise with one scheme (no search)."""

    prune: float = 0.0
    """Fraction of prunable channels removed, in [0, 1)."""
    quant: str = "fp32"
    importance: str = "l2"
    round_to: int = 8
    finetune_epochs: int = 10
    threads: int | None = None
    """Threads the artifact runs (and is measured) with; None: each profile's `default_threads`."""
    keep_heads: float = 1.0
    """Share of attention heads kept in every layer of a transformer encoder (`edgeprune.structure`)."""
    keep_mlp: float = 1.0
    """Share of transformer MLP hidden neurons kept."""
    keep_blocks: int | None = None
    """Encoder blocks kept per stack (None: all)."""
    prune_steps: int = 1
    """Steps the channels are removed in, with a brief fine-tune between them (1: one-shot; `edgeprune.schedule`)."""


@dataclass(frozen=True)
class Measure:
    """Where and how artifacts are measured."""

    on: str = "host"
    """host, adb, adb:SERIAL or ssh:user@host[:port] (validate also takes adb:all)."""
    runs: int = 50
    warmup: int = 10
    blocks: int = 3
    remote_python: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    adb_port: int = 5037


@dataclass(frozen=True)
class ValidationReport:
    """What `validate` measured: one record per artifact (also appended to its manifest) and devices not measured."""

    records: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    where: str

    @property
    def passed(self) -> bool:
        return all(r["verdict"]["passed"] for r in self.records)


def _budgets(latency_ms: float | None, size_mb: float | None, memory_mb: float | None, energy_mj: float | None,
             max_accuracy_drop_pts: float | None, max_metric_drop: float | None = None,
             max_class_drop_pts: float | None = None,
             max_shift_drop_pts: float | None = None) -> dict[str, float | None]:
    budgets = {"latency_ms": latency_ms, "model_size_mb": size_mb, "peak_memory_mb": memory_mb, "energy_mj": energy_mj}
    for name, value in budgets.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{name}={value} must be a positive number")
    if max_accuracy_drop_pts is not None and not max_accuracy_drop_pts >= 0:
        raise ConfigError(f"max_accuracy_drop_pts={max_accuracy_drop_pts} must be >= 0 (points of accuracy)")
    if max_metric_drop is not None and not max_metric_drop >= 0:
        raise ConfigError(f"max_metric_drop={max_metric_drop} must be >= 0 (in the metric's units)")
    for name, points in (("max_class_drop_pts", max_class_drop_pts), ("max_shift_drop_pts", max_shift_drop_pts)):
        if points is not None and not points >= 0:
            raise ConfigError(f"{name}={points} must be >= 0 (points of top-1 accuracy)")
    return budgets | {"max_accuracy_drop_pct": max_accuracy_drop_pts, "max_metric_drop": max_metric_drop,
                      "max_class_drop_pts": max_class_drop_pts, "max_shift_drop_pts": max_shift_drop_pts}


def _data(data: DataArg) -> str | tuple | None:
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, Path):
        return str(data)
    if isinstance(data, tuple):
        return data
    if isinstance(data, np.ndarray):
        return (data, None)
    raise ConfigError(f"data is a {type(data).__name__}; give a spec or path, (x, y) numpy arrays, or None")


def _call_text(verb: str, model: ModelArg, devices: Sequence[str]) -> tuple[str, ...]:
    name = model if isinstance(model, str) else type(model).__name__
    return (f"edgeprune.{verb}(model={name!r}, devices={list(devices)!r})",)


def _run(request: BuildRequest, progress: bool, verbose: bool) -> BuildResult:
    """Run the build (the pipeline writes report.html into the output it swaps in) and keep the run's log at
    `<out>/edgeprune.log`, also after a failed build: the previous output's other files stay as they were."""
    log_folder: Path | None = request.out
    with run_log(verbose) as term:
        try:
            return _run_build(request, Steps(enabled=progress, file=term.err))
        except ConfigError:
            log_folder = None  # bad input: nothing is written, not even the log
            raise
        finally:
            keep_log(term, log_folder, create=True)


def build(
    model: ModelArg,
    data: DataArg = None,
    *,
    devices: Sequence[str] = ("host",),
    out: str | Path = "dist",
    targets: Sequence[str] = (),
    latency_ms: float | None = None,
    size_mb: float | None = None,
    memory_mb: float | None = None,
    energy_mj: float | None = None,
    max_accuracy_drop_pts: float | None = None,
    metric: MetricArg = None,
    max_metric_drop: float | None = None,
    max_class_drop_pts: float | None = None,
    max_shift_drop_pts: float | None = None,
    plan: FixedPlan | PlanSettings | None = None,
    measure: Measure = Measure(),
    input_shape: Sequence[int] | None = None,
    weights: str | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = False,
    verbose: bool = False,
    _command: tuple[str, ...] = (),
    _plan_only: bool = False,
) -> BuildResult:
    """Build `model` for each device: export to `targets` (default: every target the device supports whose toolchain
    is installed), measure, judge against the device's budgets (overridden by the keyword budgets).

    `plan`: a `FixedPlan` (prune/quantise as given), or `PlanSettings` / None to search for the most accurate plan
    that meets every budget. Returns the per-device artifacts, measurements and verdicts; files land in `out`.
    `resume`: a search journals its work beside `out` (`out.journal`); after a crash, the same call with
    `resume=True` continues from there instead of starting again.
    `metric`: what the build is judged by on the test split (manifest `quality.metric`, with intervals): a built-in
    name (top1, miou, map50, map50_95, mae, rmse), 'pkg.module:callable', either with '@OUTPUT' to name the output
    scored, or a callable fn(outputs, labels) -> float; None: the one the model's task implies.
    `max_metric_drop`: the largest loss of that metric allowed vs the unpruned model, in its units.
    `max_class_drop_pts`: the largest top-1 loss allowed on any one class (the class guard), in points.
    `max_shift_drop_pts`: the largest top-1 loss allowed on shifted test inputs (the robustness guard), in points."""
    if plan is not None and not isinstance(plan, (FixedPlan, PlanSettings)):
        raise ConfigError(f"plan is a {type(plan).__name__}; give edgeprune.FixedPlan(...), edgeprune.PlanSettings(...) "
                          "or None (search)")
    if isinstance(devices, str):
        devices = (devices,)
    fixed = plan if isinstance(plan, FixedPlan) else None
    if _plan_only and fixed is not None:
        raise ConfigError("plan() searches for a plan; give PlanSettings or None, not a FixedPlan")
    request = BuildRequest(
        model=model,
        out=Path(out),
        devices=tuple(devices),
        targets=tuple(targets),
        prune=fixed.prune if fixed else 0.0,
        quant=fixed.quant if fixed else "fp32",
        weights=weights,
        input_shape=tuple(int(d) for d in input_shape) if input_shape is not None else None,
        data=_data(data),
        budget_overrides=_budgets(latency_ms, size_mb, memory_mb, energy_mj, max_accuracy_drop_pts, max_metric_drop,
                                  max_class_drop_pts, max_shift_drop_pts),
        metric=metric,
        round_to=fixed.round_to if fixed else 8,
        head_keep_ratio=fixed.keep_heads if fixed else 1.0,
        mlp_keep_ratio=fixed.keep_mlp if fixed else 1.0,
        keep_blocks=fixed.keep_blocks if fixed else None,
        prune_steps=fixed.prune_steps if fixed else 1,
        importance=fixed.importance if fixed else "l2",
        finetune_epochs=fixed.finetune_epochs if fixed else (plan.finetune_epochs if plan else 10),
        threads=fixed.threads if fixed else (plan.threads if plan else None),
        runs=measure.runs,
        warmup=measure.warmup,
        blocks=measure.blocks,
        seed=seed,
        on=measure.on,
        remote_python=measure.remote_python,
        identity_file=measure.identity_file,
        known_hosts=measure.known_hosts,
        adb_port=measure.adb_port,
        plan_settings=None if fixed else (plan or PlanSettings(seed=seed)),
        plan_only=_plan_only,
        resume=resume,
        command=_command or _call_text("plan" if _plan_only else "build", model, devices),
    )
    return _run(request, progress, verbose)


def plan(model: ModelArg, data: DataArg = None, **options: Any) -> BuildResult:
    """Search the plan that meets each device's budgets and write `out/<device>/plan.yaml` (no artifacts); takes
    `build`'s keywords (`plan` must be `PlanSettings` or None)."""
    return build(model, data, _plan_only=True, **options)


def apply(
    plan_file: str | Path,
    model: ModelArg,
    data: DataArg = None,
    *,
    out: str | Path = "dist",
    devices: Sequence[str] | None = None,
    measure: Measure = Measure(),
    input_shape: Sequence[int] | None = None,
    weights: str | None = None,
    progress: bool = False,
    verbose: bool = False,
    _command: tuple[str, ...] = (),
) -> BuildResult:
    """Replay a plan.yaml on `model`: the same architecture (checked against the recorded channel counts), scheme,
    target and threads, and with the same data and seed the same fine-tuned weights."""
    recipe = read_plan_yaml(Path(plan_file))
    devices = tuple(devices or ([recipe.device] if recipe.device else ["host"]))
    request = BuildRequest(
        model=model,
        out=Path(out),
        devices=devices,
        targets=(recipe.plan.target,),
        quant=recipe.plan.scheme,
        weights=weights,
        input_shape=tuple(int(d) for d in input_shape) if input_shape is not None else None,
        data=_data(data),
        layer_keep_ratios=dict(recipe.plan.layer_keep_ratios),
        head_keep_ratio=recipe.plan.head_keep_ratio,
        mlp_keep_ratio=recipe.plan.mlp_keep_ratio,
        keep_blocks=recipe.plan.keep_blocks,
        prune_steps=recipe.plan.prune_steps,
        expected_channels=recipe.channels,
        importance=recipe.plan.importance,
        round_to=recipe.plan.round_to,
        seed=recipe.plan.seed,
        finetune_epochs=recipe.finetune_epochs,
        finetune_threads=recipe.finetune_threads,
        threads=recipe.plan.threads,
        runs=measure.runs,
        warmup=measure.warmup,
        blocks=measure.blocks,
        on=measure.on,
        remote_python=measure.remote_python,
        identity_file=measure.identity_file,
        known_hosts=measure.known_hosts,
        adb_port=measure.adb_port,
        command=_command or (f"edgeprune.apply({str(plan_file)!r})",),
    )
    return _run(request, progress, verbose)


def validate(path: str | Path, *, measure: Measure = Measure(), threads: int | None = None,
             verbose: bool = False) -> ValidationReport:
    """Measure the built artifacts under `path` (a dist/ folder or one device's folder) where `measure.on` says,
    judge them against their device's budgets, and append each result to its manifest."""
    from edgeprune.runners import get_runner
    from edgeprune.validation import validate as _validate, validate_on_attached

    path = Path(path)
    log_folder: Path | None = path if path.is_dir() else None
    with run_log(verbose) as term:
        try:
            if measure.on == "adb:all":
                records, notes = validate_on_attached(path, adb_port=measure.adb_port, python=measure.remote_python,
                                                      runs=measure.runs, warmup=measure.warmup, threads=threads,
                                                      blocks=measure.blocks)
                return ValidationReport(tuple(records), tuple(notes), "every attached device")
            runner = get_runner(measure.on, python=measure.remote_python, identity_file=measure.identity_file,
                                known_hosts=measure.known_hosts, adb_port=measure.adb_port)
            records = _validate(path, runner, runs=measure.runs, warmup=measure.warmup, threads=threads,
                                blocks=measure.blocks)
            return ValidationReport(tuple(records), (), runner.where)
        except ConfigError:
            log_folder = None
            raise
        finally:
            keep_log(term, log_folder)


__all__ = ["FixedPlan", "Measure", "PlanSettings", "ValidationReport", "build", "plan", "apply", "validate",
           "load_profile", "DeviceProfile", "BuildResult"]
