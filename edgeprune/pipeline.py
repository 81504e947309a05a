"""build(): the only module that calls every stage.

profiles + model spec + data -> prune -> export (per target) -> measure -> judge -> manifests + build.json.
Everything the user gave is validated before anything is written. The whole output folder (device folders,
build.json, report.html) is assembled in a staging folder beside it and swapped in at once (`_io.open_staging`), so
an app build never sees a mix of old and new, and a failed or killed build leaves the previous output as it was.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgeprune
from edgeprune._cores import usable_cores
from edgeprune._deps import package_version
from edgeprune._io import atomic_write_json, open_staging, raise_if_no_space
from edgeprune._progress import Steps
from edgeprune._runlog import LOG_NAME
from edgeprune._torch import torch_threads
from edgeprune.cost import predict
from edgeprune.data import check_inputs, dataset_from_arrays, load_data
from edgeprune.errors import ConfigError, ParityError
from edgeprune.export import ExportResult, get_exporter, missing_toolchain
from edgeprune.judge import assess_quality, assess_shift, judge
from edgeprune.metrics import Metric, Tally
from edgeprune.modelspec import resolve_model, spec_from_module
from edgeprune.outputs import ModelOutputs, describe, require_single, run_rows
from edgeprune.profiles import DeviceProfile, load_profile
from edgeprune.evaluator import check_criteria, planner_for
from edgeprune.planner.journal import Journal
from edgeprune.planner.settings import PlanSettings
from edgeprune.planner.recipe import make_recipe, write_plan_yaml
from edgeprune.prune import as_tensor
from edgeprune.recover import RecoverySummary
from edgeprune.report import write_report
from edgeprune.runners import get_runner
from edgeprune.runners.base import measure_in_blocks
from edgeprune.schedule import final_epochs, prune_and_recover, step_epochs
from edgeprune.scoring import MetricArg, metric_quality, resolve_metric, score_outputs
from edgeprune.shifts import shifted
from edgeprune.target_specs import recorded_distributions
from edgeprune.types import ARTIFACT_SUFFIX, SCHEMES, TARGETS, Dataset, Measurement, ModelSpec, Plan, PruneSummary, Quality, Verdict
from edgeprune.vision_heads import postprocess_of

MANIFEST_SCHEMA_VERSION = 1
BUILD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BuildRequest:
    """Everything `edgeprune build` was asked to do."""

    model: str | torch.nn.Module
    """A model spec string, or a module in memory (the Python API; its input shape from `input_shape`)."""
    out: Path
    devices: tuple[str, ...] = ("host",)
    targets: tuple[str, ...] = ()
    """Empty: for each device, every target it supports whose toolchain is installed and can do `quant`."""
    prune: float = 0.0
    """Fraction of prunable channels removed (0 = none)."""
    quant: str = "fp32"
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    data: str | tuple[np.ndarray, np.ndarray | None] | None = None
    """A data spec string, or arrays in memory: (x, y), y None for unlabelled data."""
    budget_overrides: dict[str, float | None] = field(default_factory=dict)
    round_to: int = 8
    importance: str = "l2"
    finetune_epochs: int = 10
    """Epochs of distillation fine-tuning after pruning (needs labelled train data; 0 = BN recalibration only)."""
    finetune_threads: int | None = None
    """torch threads of that fine-tune; None: every usable core (`apply` replays the thread count a plan recorded,
    since the last bits of the weights may depend on it)."""
    threads: int | None = None
    """Threads a fixed plan runs (and is measured) with; None: each profile's `default_threads`."""
    runs: int = 50
    warmup: int = 10
    blocks: int = 3
    """Measurement blocks of `runs` each; latency p50/p90 are the blocks' medians (`measure_in_blocks`)."""
    seed: int = 0
    on: str = "host"
    """Where artifacts are measured: host, adb, adb:SERIAL or ssh:user@host[:port]."""
    remote_python: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    adb_port: int = 5037
    plan_settings: PlanSettings | None = None
    """Set: search for the plan that meets each device's budgets (prune/quant are then ignored)."""
    layer_keep_ratios: dict[str, float] = field(default_factory=dict)
    """A fixed plan's per-module keep ratios (from a plan.yaml replayed by `edgeprune apply`)."""
    head_keep_ratio: float = 1.0
    """A fixed plan's share of attention heads kept (transformer encoders; `edgeprune.structure`)."""
    mlp_keep_ratio: float = 1.0
    """A fixed plan's share of transformer MLP hidden neurons kept."""
    keep_blocks: int | None = None
    """A fixed plan's encoder blocks kept per stack (None: all)."""
    prune_steps: int = 1
    """A fixed plan's pruning steps (> 1: iterative, a brief fine-tune between steps; `edgeprune.schedule`)."""

    def fixed_plan(self, target: str) -> Plan:
        """The fixed plan (prune, quant, per-layer and structure keeps) for `target`."""
        return Plan(target=target, scheme=self.quant, keep_ratio=round(1.0 - self.prune, 6),
                    layer_keep_ratios=dict(self.layer_keep_ratios), importance=self.importance,
                    round_to=self.round_to, seed=self.seed, head_keep_ratio=self.head_keep_ratio,
                    mlp_keep_ratio=self.mlp_keep_ratio, keep_blocks=self.keep_blocks, prune_steps=self.prune_steps)

    @property
    def prunes(self) -> bool:
        """Whether the fixed plan removes anything (channels, heads, neurons or blocks)."""
        return self.fixed_plan(TARGETS[0]).prunes
    expected_channels: dict[str, tuple[int, int]] | None = None
    """A replayed plan's recorded channel counts: the pruned model must have exactly these."""
    plan_only: bool = False
    """`edgeprune plan`: search and write plan.yaml per device and plan.json, no artifacts."""
    command: tuple[str, ...] = ()
    """What was run, as build.json records it (the CLI's arguments without secrets' paths, or the API call)."""
    resume: bool = False
    """Continue a planned build that crashed or was killed from its journal (`journal_folder(out)`)."""
    metric: MetricArg = None
    """The metric the build is judged by: a built-in name or 'pkg.module:callable' (optionally '@OUTPUT'), a
    `metrics.Metric`, or a callable fn(outputs, labels) -> float; None: the one the model's task implies
    (`scoring.resolve_metric`)."""


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
class DeviceResult:
    """One device's outcome: its plan and, unless only planned, its artifacts with their measurements and verdicts."""

    device: str
    folder: Path
    plan: Plan
    artifacts: tuple[ArtifactReport, ...]
    passed: bool
    planning: dict[str, Any] | None = None

    def artifact(self, target: str) -> ArtifactReport:
        """The artifact built for `target` (ConfigError naming the targets built when there is none)."""
        for rep in self.artifacts:
            if rep.target == target:
                return rep
        raise ConfigError(f"device '{self.device}' has no '{target}' artifact; built: "
                          f"{', '.join(r.target for r in self.artifacts) or 'none (plan only)'}")


@dataclass(frozen=True)
class BuildResult:
    """What `build` returns: build.json's summary, the verdict, and the per-device results."""

    summary: dict[str, Any]
    passed: bool
    devices: dict[str, DeviceResult] = field(default_factory=dict)
    out: Path | None = None


def _check_out_dir(out: Path) -> None:
    """Refuse, before any work is done, an output folder that cannot be written or replaced whole: a build swaps in a
    new folder and removes the old one with everything in it, so an existing folder must be empty or an edgeprune
    output (build.json or plan.json, or only device folders and a run log); anything else may be someone's files."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"output path '{out}' is not a folder ('{probe}' is a file); choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder '{out}' cannot be written ('{probe}' is read-only); choose another --out")
    if probe != out:
        return
    real = Path(os.path.realpath(out))
    if Path.cwd().resolve().is_relative_to(real) or os.path.ismount(real):
        raise ConfigError(f"output folder '{out}' is the current folder, one above it or a mount point; a build "
                          "replaces the whole folder: choose a folder inside it, such as --out dist/")
    if not os.access(real.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder '{out}' cannot be replaced: its parent '{real.parent}' is read-only (the "
                          "build is assembled beside it); choose another --out")
    foreign = _foreign_entries(real)
    if foreign:
        raise ConfigError(f"output folder '{out}' holds files edgeprune did not write ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}) and no build.json; a build replaces the whole "
                          "folder, so choose an empty or new --out")


def _foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that do not look like an edgeprune output's (none when it holds build.json or plan.json)."""
    entries = sorted(folder.iterdir())
    if any((folder / name).is_file() for name in ("build.json", "plan.json")):
        return []
    return [e.name for e in entries
            if not (e.name == LOG_NAME and e.is_file())
            and not (e.is_dir() and any((e / name).is_file() for name in ("manifest.json", "plan.yaml")))]


def _validate(request: BuildRequest) -> tuple[list[DeviceProfile], dict[str, tuple[str, ...]], dict[str, str]]:
    """Check every input before any work; returns the profiles, the targets per device and the skipped targets."""
    if request.quant not in SCHEMES:
        raise ConfigError(f"--quant {request.quant} is unknown; choose one of: {', '.join(SCHEMES)}")
    if request.plan_settings is not None:
        request.plan_settings.check()
        check_criteria(request.plan_settings.importances)
    if not 0.0 <= request.prune < 1.0:
        raise ConfigError(f"--prune {request.prune} is out of range; give the fraction of channels to remove, in [0, 1)")
    if request.prune_steps < 1:
        raise ConfigError(f"--prune-steps {request.prune_steps} must be at least 1 (1 prunes in one shot)")
    if request.runs < 1 or request.warmup < 0 or request.blocks < 1:
        raise ConfigError(f"--runs {request.runs} / --warmup {request.warmup} / --blocks {request.blocks}: need "
                          "runs >= 1, warmup >= 0 and blocks >= 1")
    if request.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs {request.finetune_epochs} must be >= 0")
    if request.threads is not None and request.threads < 1:
        raise ConfigError(f"--threads {request.threads} must be >= 1")
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
    schemes = request.plan_settings.schemes if request.plan_settings is not None else (request.quant,)
    if request.targets:
        for target in request.targets:
            for scheme in schemes:
                get_exporter(target).check_scheme(scheme)
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
        elif not set(schemes) <= set(get_exporter(target).schemes):
            skipped[target] = f"target '{target}' cannot do --quant {', '.join(schemes)}"
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


def _outputs(fn: Any, x: np.ndarray, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Float32 outputs of a PyTorch callable over `x`, row by row (exported graphs take batch 1), by key."""
    return run_rows(fn, x, keys)


@dataclass
class _Assignment:
    """What one device gets: a (pruned, recovered) model, its plan and the targets to export it to."""

    model: torch.nn.Module
    plan: Plan
    targets: tuple[str, ...]
    prune_summary: PruneSummary
    recovery: RecoverySummary | None
    planning: dict[str, Any] | None = None
    measurement: Measurement | None = None
    """The planner's last measurement of the chosen plan (timing only)."""
    threads: int | None = None
    """Threads the plan runs with (None: the device profile's `default_threads`)."""

    def threads_on(self, prof: DeviceProfile) -> int:
        return self.threads or prof.default_threads


def build(request: BuildRequest, steps: Steps | None = None) -> BuildResult:
    """Build every requested device: a fixed plan (`prune`/`quant`), or the plan the planner finds for each
    device's budgets (`plan_settings`)."""
    steps = steps or Steps(enabled=False)
    profiles, targets_by_device, skipped = _validate(request)
    with torch_threads(1):
        return _build(request, steps, profiles, targets_by_device, skipped)


def _fixed_plan(request: BuildRequest, spec: ModelSpec, dataset: Dataset, steps: Steps,
                targets: tuple[str, ...]) -> tuple[torch.nn.Module, Plan, PruneSummary, RecoverySummary | None]:
    plan = request.fixed_plan(targets[0])
    label = f"keep {plan.keep_ratio:.0%} of channels" if not plan.layer_keep_ratios else "per-layer keep ratios"
    epochs = request.finetune_epochs if request.prunes else 0
    if plan.prune_steps > 1:
        label += (f", in {plan.prune_steps} steps with {step_epochs(epochs, plan.prune_steps)}-epoch fine-tunes "
                  f"between and {final_epochs(epochs, plan.prune_steps)} after")
    # prune (BatchNorm re-estimated) and fine-tune on the threads the planner's own fine-tunes use, so that a
    # replayed plan gives its weights bit for bit
    with torch_threads(request.finetune_threads or usable_cores()):
        recovering = f" and recovering accuracy ({epochs} epochs of distillation)" if epochs else ""
        with steps.step(f"Pruning ({label}){recovering}", total=max(1, epochs)) as update:
            pruned, summary, recovery = prune_and_recover(
                spec.module, torch.zeros(spec.input_shape), as_tensor(dataset.calib_x), plan, dataset, epochs,
                request.seed, threads=request.finetune_threads, progress=update)
        if request.expected_channels is not None and summary.channels != request.expected_channels:
            diff = sorted(set(summary.channels.items()) ^ set(request.expected_channels.items()))
            raise ConfigError(
                f"the plan replays to a different architecture (first difference: module '{diff[0][0]}'); "
                "was the plan made with other weights or another edgeprune version? Plan again with 'edgeprune plan'"
            )
        return pruned, plan, summary, recovery


class _Exports:
    """Exports and measurements shared between devices and planning rounds, kept in the staging folder."""

    def __init__(self, staging: Path, example: torch.Tensor, calib: torch.Tensor, dataset: Dataset, runner: Any,
                 request: BuildRequest, steps: Steps, outputs: ModelOutputs):
        self.staging, self.example, self.calib, self.dataset = staging, example, calib, dataset
        self.runner, self.request, self.steps, self.outputs = runner, request, steps, outputs
        self._exports: dict[tuple[int, str, str], tuple[ExportResult, dict[str, np.ndarray]]] = {}
        self._measured: dict[tuple[int, str, str, int, bool], Measurement] = {}
        self._keep: list[torch.nn.Module] = []  # the models the cache keys' ids refer to stay alive

    def export(self, model: torch.nn.Module, plan: Plan) -> tuple[ExportResult, dict[str, np.ndarray]]:
        key = (id(model), plan.target, plan.scheme)
        if key not in self._exports:
            self._keep.append(model)
            with self.steps.step(f"Exporting {plan.target} ({plan.scheme})"):
                path = self.staging / f"export-{len(self._exports)}{ARTIFACT_SUFFIX[plan.target]}"
                result = get_exporter(plan.target).export(model, self.example, self.calib, plan, path)
                self._exports[key] = (result, _outputs(result.reference.all, self.dataset.eval_x, self.outputs.keys))
        return self._exports[key]

    def measure(self, model: torch.nn.Module, plan: Plan, threads: int, timing_only: bool = False) -> Measurement:
        """The runner's measurement; `timing_only` feeds it a few inputs (planning rounds need latency only)."""
        result, _ = self.export(model, plan)
        key = (id(model), plan.target, plan.scheme, threads, timing_only)
        if key not in self._measured:
            inputs = self.dataset.eval_x[:4] if timing_only else self.dataset.eval_x
            runs, blocks = self.request.runs, self.request.blocks
            with self.steps.step(f"Measuring {plan.target} ({plan.scheme}) on {self.runner.where} "
                                 f"({threads} threads, {blocks} x {runs} runs)"):
                self._measured[key] = measure_in_blocks(self.runner, result.artifact, inputs, threads=threads,
                                                        warmup=self.request.warmup, runs=runs, blocks=blocks)
        return self._measured[key]


@dataclass(frozen=True)
class _TestScores:
    """What each artifact is scored by on the test split beside top-1 and parity: the build's metric (with the
    unpruned model's tally to compare with) and, for the robustness guard, top-1 on the shifted test inputs."""

    labels: Any
    metric: Metric | None = None
    dense_metric: Tally | None = None
    postprocess: Any = None
    shifted_x: np.ndarray | None = None
    shift_names: tuple[str, ...] = ()
    dense_shifted: dict[str, np.ndarray] | None = None
    seed: int = 0

    @classmethod
    def of(cls, spec: ModelSpec, dataset: Dataset, metric: Metric | None, outputs: ModelOutputs,
           dense_outputs: dict[str, np.ndarray], shift_guard: bool, seed: int) -> _TestScores:
        postprocess = postprocess_of(spec.module)
        dense_metric = score_outputs(metric, dense_outputs, dataset.eval_y, postprocess=postprocess) if metric else None
        shifted_x, names = shifted(dataset.eval_x) if shift_guard else (None, [])
        dense_shifted = _outputs(spec.module, shifted_x, outputs.keys) if shifted_x is not None else None
        return cls(dataset.eval_y, metric, dense_metric, postprocess, shifted_x, tuple(names), dense_shifted, seed)

    def add(self, quality: Quality, measurement: Measurement, rerun: Any, steps: Steps) -> Quality:
        """`quality` with the metric and the shifted-input figures; `rerun(x)` runs the artifact on inputs `x`."""
        if self.metric is not None and self.dense_metric is not None:
            quality = replace(quality, metric=metric_quality(self.metric, self.dense_metric, measurement.output_map(),
                                                             self.labels, postprocess=self.postprocess, seed=self.seed))
        logits = quality.class_logits
        if self.shifted_x is not None and self.dense_shifted is not None and logits is not None:
            with steps.step(f"Scoring the artifact on {len(self.shifted_x)} shifted test inputs"):
                ran = rerun(self.shifted_x)
            quality = replace(quality, shift=assess_shift(self.shift_names, self.dense_shifted[logits],
                                                          ran.output_map()[logits], self.labels))
        return quality


def _threads(threads: int, runner: Any) -> int:
    """`threads`, capped at this machine's cores when the runner is the host."""
    if runner.where == "host":
        threads = min(threads, usable_cores())
    return threads


def _planned(request: BuildRequest, spec: ModelSpec, dataset: Dataset, steps: Steps, profiles: list[DeviceProfile],
             targets_by_device: dict[str, tuple[str, ...]], exports: _Exports, journal: Journal,
             metric: Metric | None, shift_guard: bool) -> dict[str, _Assignment]:
    """Plan every device (one Planner, so the sensitivity analysis and fine-tuned models are shared), journalling
    what the search computes so that `resume` continues a crashed build."""
    assert request.plan_settings is not None

    def measure(plan: Plan, model: torch.nn.Module) -> Measurement:
        return exports.measure(model, plan, _threads(plan.threads, exports.runner), timing_only=True)

    out = {}
    with planner_for(spec, dataset, request.plan_settings, steps, journal, metric, shift_guard) as planner:
        if journal.resumed:
            steps.note(f"Resuming from the journal {journal.folder} ({journal.entries()} evaluations recorded)")
        for prof in profiles:
            chosen = planner.plan_device(prof, targets_by_device[prof.name], measure, exports.runner.where,
                                         fleet=profiles)
            plan = chosen.plan
            out[prof.name] = _Assignment(chosen.tuned.model, plan, (plan.target,), chosen.tuned.summary,
                                         chosen.tuned.recovery, chosen.report(), chosen.measurement, plan.threads)
    return out


def journal_folder(out: Path) -> Path:
    """Where a planned build journals its search: beside the output folder (`dist` -> `dist.journal`), so that the
    output can be swapped whole while the journal outlives a crash. Removed when the build succeeds."""
    out = Path(out).absolute()
    return out.parent / f"{out.name}.journal"


def _fingerprint(request: BuildRequest, spec: ModelSpec, dataset: Dataset, profiles: list[DeviceProfile],
                 targets_by_device: dict[str, tuple[str, ...]]) -> str:
    """A digest of everything a planned search depends on: a journal is resumed only with the same one."""
    digest = hashlib.sha256()
    for name, tensor in spec.module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for array in (dataset.calib_x, dataset.val_x, dataset.val_y, dataset.train_x, dataset.train_y):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    assert request.plan_settings is not None
    settings = {k: v for k, v in asdict(request.plan_settings).items()
                if k not in ("executor", "workers", "ray_address")}  # where work runs does not change its results
    facts = {"model": spec.name, "input_shape": list(spec.input_shape), "settings": settings,
             "profiles": [p.model_dump(mode="json") for p in profiles], "targets": targets_by_device,
             "seed": request.seed, "on": request.on, "runs": [request.runs, request.warmup, request.blocks],
             "metric": _metric_name(request.metric), "version": edgeprune.__version__}
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _metric_name(metric: Any) -> str | None:
    """What the planner scores by, for the journal's fingerprint (a callable by its qualified name)."""
    if metric is None or isinstance(metric, str):
        return metric
    if isinstance(metric, Metric):
        return f"{metric.name}@{metric.output}"
    return f"{getattr(metric, '__module__', '?')}:{getattr(metric, '__qualname__', type(metric).__name__)}"


def _model_spec(request: BuildRequest, steps: Steps) -> ModelSpec:
    if isinstance(request.model, str):
        with steps.step(f"Loading model {request.model}") as update:
            return resolve_model(request.model, weights=request.weights, input_shape=request.input_shape,
                                 progress=update)
    if request.weights is not None:
        raise ConfigError("weights are given with an in-memory model; load them into the module yourself "
                          "(module.load_state_dict(torch.load(path, weights_only=True)))")
    return spec_from_module(request.model, input_shape=request.input_shape)


def _dataset(request: BuildRequest, spec: ModelSpec) -> Dataset:
    if isinstance(request.data, tuple):
        if len(request.data) != 2:
            raise ConfigError(f"data is a tuple of {len(request.data)}; give (x, y) arrays, y None for unlabelled data")
        x, y = request.data
        return dataset_from_arrays(x, y, spec.input_shape, seed=request.seed)
    return load_data(request.data or spec.default_data, spec.input_shape, seed=request.seed)


def _build(
    request: BuildRequest,
    steps: Steps,
    profiles: list[DeviceProfile],
    targets_by_device: dict[str, tuple[str, ...]],
    skipped: dict[str, str],
) -> BuildResult:
    targets = tuple(t for t in TARGETS if any(t in chosen for chosen in targets_by_device.values()))
    spec = _model_spec(request, steps)
    model_outputs = describe(spec.module, torch.zeros(spec.input_shape))  # non-tensor outputs refused here
    if request.plan_settings is not None:
        require_single(model_outputs, "planning", spec.module)
    elif request.prunes:
        require_single(model_outputs, "pruning", spec.module)
    dataset = _dataset(request, spec)
    check_inputs(dataset.calib_x, spec.input_shape, "calibration data")
    check_inputs(dataset.eval_x, spec.input_shape, "eval data")
    for key, flag in (("max_accuracy_drop_pct", "--max-accuracy-drop"), ("max_class_drop_pts", "--max-class-drop"),
                      ("max_shift_drop_pts", "--max-shift-drop")):
        if request.budget_overrides.get(key) is not None and not dataset.labelled:
            raise ConfigError(f"{flag} needs labelled eval data; pass --data (a .npz with x and y, or an image folder)")
    metric = resolve_metric(request.metric, spec.module, model_outputs.keys, labelled=dataset.labelled,
                            budget_needs_one=any(p.budget.max_metric_drop is not None for p in profiles))

    example = torch.zeros(spec.input_shape)
    calib = as_tensor(dataset.calib_x)
    dense_outputs = _outputs(spec.module, dataset.eval_x, model_outputs.keys)
    shift_guard = dataset.labelled and any(p.budget.max_shift_drop_pts is not None for p in profiles)
    scores = _TestScores.of(spec, dataset, metric, model_outputs, dense_outputs, shift_guard, request.seed)
    runner = get_runner(request.on, python=request.remote_python, identity_file=request.identity_file,
                        known_hosts=request.known_hosts, adb_port=request.adb_port)

    staging = open_staging(request.out)  # the whole output folder is assembled aside and swapped in at the end
    journal: Journal | None = None  # a planned build's search journal (for --resume)
    try:
        exports = _Exports(staging.scratch, example, calib, dataset, runner, request, steps, model_outputs)
        if request.plan_settings is None:
            pruned, plan, summary, recovery = _fixed_plan(request, spec, dataset, steps, targets)
            assignments = {p.name: _Assignment(pruned, plan, targets_by_device[p.name], summary, recovery,
                                               threads=request.threads) for p in profiles}
        else:
            journal = Journal(journal_folder(request.out), _fingerprint(request, spec, dataset, profiles,
                                                                         targets_by_device), request.resume)
            assignments = _planned(request, spec, dataset, steps, profiles, targets_by_device, exports, journal,
                                   metric, shift_guard)
        if request.plan_only:
            assert journal is not None  # plan_only implies plan_settings
            planned = _write_plans(request, spec, dataset, profiles, assignments, staging.folder, skipped, journal)
            staging.swap_in()
            journal.remove()
            return planned

        device_reports: dict[str, list[ArtifactReport]] = {}
        for prof in profiles:
            job = assignments[prof.name]
            threads = _threads(job.threads_on(prof), runner)
            reports = []
            for target in job.targets:
                plan = Plan(**{**job.plan.to_dict(), "target": target})
                result, reference = exports.export(job.model, plan)
                measurement = exports.measure(job.model, plan, threads)
                quality = assess_quality(plan.scheme, measurement.output_map(), reference, dense_outputs,
                                         dataset.eval_y, class_logits=model_outputs.class_logits)
                quality = scores.add(quality, measurement, lambda x: runner.measure(
                    result.artifact, x, warmup=0, runs=1, threads=threads, energy=False), steps)
                if not quality.parity_passed:
                    raise ParityError(
                        f"target '{target}' scheme '{plan.scheme}': runtime outputs disagree with the PyTorch model "
                        f"({quality.parity_failure})"
                    )
                file = f"model{ARTIFACT_SUFFIX[target]}"
                predicted = predict(prof, job.model, example, target, plan.scheme, job.threads_on(prof)).to_dict()
                verdict = judge(prof, measurement, quality)
                reports.append(ArtifactReport(target, file, result, measurement, quality, verdict, predicted))
            device_reports[prof.name] = reports

        device_summaries = []
        for prof in profiles:
            job, reports = assignments[prof.name], device_reports[prof.name]
            device_dir = staging.folder / prof.name
            device_dir.mkdir()
            for rep in reports:
                shutil.copyfile(rep.export.artifact.path, device_dir / rep.file)
            manifest = _manifest(prof, spec, dataset, job.prune_summary, job.recovery, reports, job.threads_on(prof))
            atomic_write_json(device_dir / "manifest.json", manifest)
            if job.planning is not None:
                write_plan_yaml(device_dir / "plan.yaml", _recipe(spec, prof, job, reports[0].measurement))
            device_summaries.append(
                {
                    "device": prof.name,
                    "dir": prof.name,
                    "passed": manifest["passed"],
                    "unverified": sorted({c.name for r in reports for c in r.verdict.checks if c.status == "unverified"}),
                    "plan": job.plan.to_dict(),
                    "planning": job.planning,
                    "artifacts": [_artifact_summary(r) for r in reports],
                }
            )
        passed = all(d["passed"] for d in device_summaries)
        first = assignments[profiles[0].name]
        summary = _run_header(spec, dataset, request.command) | {
            "mode": "fixed plan" if request.plan_settings is None else "planned for the budgets",
            "plan": first.plan.to_dict() | {"targets": list(targets)},
            "skipped_targets": skipped,
            "pruning": first.prune_summary.to_dict(),
            "recovery": first.recovery.to_dict() if first.recovery else None,
            "seeds": _seeds(dataset, first.plan, first.recovery),
            "versions": _versions(),
            "journal": journal.summary() if journal is not None else None,
            "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
            "devices": device_summaries,
            "passed": passed,
        }
        atomic_write_json(staging.folder / "build.json", summary)
        write_report(staging.folder)
        staging.swap_in()  # build.json, report.html and every device folder replace the old output in one step
    except Exception as exc:
        raise_if_no_space(exc, request.out)
        raise
    finally:
        staging.discard()

    if journal is not None:
        journal.remove()  # the build is whole: nothing left to resume
    results = {
        d["device"]: DeviceResult(d["device"], request.out / d["dir"], assignments[d["device"]].plan,
                                  tuple(device_reports[d["device"]]), d["passed"], d["planning"])
        for d in device_summaries
    }
    return BuildResult(summary=summary, passed=passed, devices=results, out=request.out)


def _recipe(spec: ModelSpec, prof: DeviceProfile, job: _Assignment, measured: Measurement | None) -> dict[str, Any]:
    return make_recipe(
        model=_model_block(spec), device=prof.name, plan=job.plan, channels=job.prune_summary.channels,
        # without the fine-tune's wall time (build.json has it): the same inputs and seed give the same plan.yaml
        recovery={k: v for k, v in job.recovery.to_dict().items() if k != "seconds"} if job.recovery else None,
        predicted=(job.planning or {}).get("chosen", {}).get("predicted"),
        measured=None if measured is None else {
            "latency_p50_ms": measured.latency_p50_ms, "latency_p90_ms": measured.latency_p90_ms,
            "size_bytes": measured.size_bytes, "peak_memory_mb": measured.peak_memory_mb, "where": measured.where,
        },
    )


def _write_plans(request: BuildRequest, spec: ModelSpec, dataset: Dataset, profiles: list[DeviceProfile],
                 assignments: dict[str, _Assignment], folder: Path, skipped: dict[str, str],
                 journal: Journal) -> BuildResult:
    """`edgeprune plan`: each device's plan.yaml and plan.json beside them, written into `folder` (the staging
    folder the caller swaps in)."""
    devices = []
    for prof in profiles:
        job = assignments[prof.name]
        device_dir = folder / prof.name
        device_dir.mkdir()
        write_plan_yaml(device_dir / "plan.yaml", _recipe(spec, prof, job, job.measurement))
        devices.append({"device": prof.name, "dir": prof.name, "plan": job.plan.to_dict(), "planning": job.planning})
    first = assignments[profiles[0].name]
    summary = _run_header(spec, dataset, request.command) | {
        "skipped_targets": skipped,
        "seeds": _seeds(dataset, first.plan, first.recovery),
        "versions": _versions(),
        "journal": journal.summary(),
        "devices": devices,
        "passed": True,
    }
    atomic_write_json(folder / "plan.json", summary)
    results = {p.name: DeviceResult(p.name, request.out / p.name, assignments[p.name].plan, (), True,
                                    assignments[p.name].planning) for p in profiles}
    return BuildResult(summary=summary, passed=True, devices=results, out=request.out)


def _run_header(spec: ModelSpec, dataset: Dataset, command: tuple[str, ...]) -> dict[str, Any]:
    """The first keys of build.json and plan.json: what ran, on which model and data."""
    return {
        "schema_version": BUILD_SCHEMA_VERSION,
        "edgeprune_version": edgeprune.__version__,
        "created_utc": _now(),
        "command": list(command),
        "model": _model_block(spec),
        "data": dataset.summary(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str | None]:
    dists = ("torch", "torchao", "torch-pruning", *recorded_distributions())
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
        "accuracy_split": q.split,
        "reference_accuracy": q.reference_accuracy,
        "artifact_accuracy": q.artifact_accuracy,
        "artifact_accuracy_ci95": q.to_dict()["artifact_accuracy_ci95"],
        "latency_p50_ci95_ms": m.timing.get("p50_ci95_ms"),
        "timing_multimodal": m.timing.get("multimodal"),
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
    threads: int,
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
                "plan": art.plan.to_dict() | {"threads": threads},
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
            "ram_gb": profile.ram_gb,
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
        "seeds": _seeds(dataset, reports[0].export.artifact.plan, recovery),
        "versions": _versions(),
        "artifacts": artifacts,
        "passed": all(r.verdict.passed for r in reports),
    }


def _seeds(dataset: Dataset, plan: Plan, recovery: RecoverySummary | None) -> dict[str, int | None]:
    """The seeds that decide the artifacts: the data split's, the plan's (pruning and, for a planned build, the
    search) and the fine-tune's (None where none ran). The same inputs and seeds give the same artifacts wherever the
    runtime's converter is deterministic (tests/test_determinism.py)."""
    return {"split": dataset.split_seed, "plan": plan.seed, "recovery": recovery.config.seed if recovery else None}
