"""Frozen types handed from one pipeline stage to the next. Every quantity carries its unit in its name.

    ModelSpec + Dataset + Plan -> prune -> export -> Artifact -> runner -> Measurement -> judge -> Verdict

`DeviceProfile` and `Budget` are pydantic models and live in `profiles.py`, since they are parsed from YAML.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeprune.target_specs import TARGET_SPECS

if TYPE_CHECKING:
    import torch

TARGETS: tuple[str, ...] = tuple(TARGET_SPECS)
"""Target names, from the registry of target specs (`target_specs.py`)."""
SCHEMES: tuple[str, ...] = ("fp32", "fp16", "int8", "int8-dynamic")
"""Quantisation schemes. `int8` is static (calibrated) int8; `int8-dynamic` quantises activations at run time."""

ARTIFACT_SUFFIX = {name: spec.suffix for name, spec in TARGET_SPECS.items()}

Status = Literal["pass", "fail", "unverified"]

SINGLE_OUTPUT_KEY = "output"
"""The key of a model's output when forward returns one tensor (`outputs.py` names the outputs of a structure)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime sees it.

    `scale`/`zero_point` are set for quantised (int8) I/O tensors: real = scale * (q - zero_point).
    `name` is the runtime's name for the tensor; `key` (outputs only) is the output's place in what the model's
    forward returns ('output' for a lone tensor, a dict key, an index, 'heads.box' one level down: `outputs.py`).
    An artifact lists its outputs in that flattening order, whatever order the runtime keeps them in.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.key is not None:
            out["key"] = self.key
        if self.scale is not None:
            out.update(scale=self.scale, zero_point=self.zero_point)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to transform: the module (eval mode), its batch-1 input shape, and where it came from."""

    spec: str
    name: str
    module: torch.nn.Module = field(repr=False, compare=False)
    input_shape: tuple[int, ...]
    preprocessing: str
    """How raw inputs become the float32 tensor the model takes (recorded in the manifest)."""
    default_data: str | None = None
    """Data spec used when the user gives none (e.g. 'examples:digits')."""
    weights: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32 arrays shaped (N, *input_shape[1:]) and labels of one kind (class ids, masks, float values
    or an object array of detection dicts: `edgeprune.data.label_kind`), in three disjoint splits.

    - train (`train_x/train_y`): what fine-tuning learns from; `calib_x` (int8 / BatchNorm calibration) is a subset
      of it, since calibration fits the model to data as training does;
    - validation (`val_x/val_y`): what every planner choice is scored on (sensitivity, ranking, thread count);
    - test (`eval_x/eval_y`): held out from every choice, only reported (the manifest's accuracies and the accuracy
      budget's verdict).

    Unlabelled data has `eval_y` (and `train_y`, `val_y`) None: accuracy is then agreement with the unpruned model.
    """

    source: str
    calib_x: np.ndarray = field(repr=False, compare=False)
    eval_x: np.ndarray = field(repr=False, compare=False)
    """The test split."""
    eval_y: np.ndarray | None = field(repr=False, compare=False)
    train_x: np.ndarray | None = field(default=None, repr=False, compare=False)
    train_y: np.ndarray | None = field(default=None, repr=False, compare=False)
    num_classes: int | None = None
    val_x: np.ndarray | None = field(default=None, repr=False, compare=False)
    val_y: np.ndarray | None = field(default=None, repr=False, compare=False)
    split_seed: int | None = None
    """The seed the split was drawn with (None: a fixed split); `validate` redraws the same test split from it."""

    @property
    def labelled(self) -> bool:
        return self.eval_y is not None

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "labelled": self.labelled,
            "split_seed": self.split_seed,
            "train": 0 if self.train_x is None else len(self.train_x),
            "calibration": len(self.calib_x),
            "calibration_from": "train" if self.train_x is not None else "its own samples",
            "validation": 0 if self.val_x is None else len(self.val_x),
            "test": len(self.eval_x),
            "num_classes": self.num_classes,
        }


@dataclass(frozen=True)
class Plan:
    """What to do to the model: how much to prune, how to quantise, which target and thread count.

    `keep_ratio` is the global share of prunable channels kept (1.0 = no pruning);
    `layer_keep_ratios` overrides it per module name. A transformer encoder's structure (`edgeprune.structure`)
    shrinks first: `head_keep_ratio` of the attention heads, `mlp_keep_ratio` of the MLP hidden neurons, and
    `keep_blocks` encoder blocks per stack (None: all). `prune_steps` > 1 prunes iteratively: the channels go in that
    many equal steps with a brief fine-tune between them (`edgeprune.schedule`); 1 is one-shot.
    """

    target: str = "executorch"
    scheme: str = "fp32"
    keep_ratio: float = 1.0
    layer_keep_ratios: dict[str, float] = field(default_factory=dict)
    importance: str = "l2"
    round_to: int = 8
    threads: int = 1
    seed: int = 0
    head_keep_ratio: float = 1.0
    mlp_keep_ratio: float = 1.0
    keep_blocks: int | None = None
    prune_steps: int = 1

    @property
    def restructures(self) -> bool:
        """Whether whole heads, MLP neurons or blocks are removed."""
        return self.head_keep_ratio < 1.0 or self.mlp_keep_ratio < 1.0 or self.keep_blocks is not None

    @property
    def prunes(self) -> bool:
        """Whether the plan removes anything: channels, heads, MLP neurons or blocks."""
        return self.keep_ratio < 1.0 or any(k < 1.0 for k in self.layer_keep_ratios.values()) or self.restructures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels torch-pruning removes together, named by the layer whose outputs they are (the group's root).

    `macs` are the multiply-accumulates of every conv / linear layer the group touches, in the dense model;
    `order` is the root's position in the forward pass.
    """

    root: str
    channels: int
    macs: int
    order: int


@dataclass(frozen=True)
class PruneSummary:
    """What pruning did: the model before and after, and the channel counts per pruned layer."""

    keep_ratio: float
    importance: str
    round_to: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    channels: dict[str, tuple[int, int]]
    """module name -> (output channels before, after), for layers whose width changed."""
    bn_recalibrated_batches: int
    structure: dict[str, Any] = field(default_factory=dict)
    """What `edgeprune.structure` removed from a transformer encoder (blocks, heads, MLP widths); empty if nothing."""
    prune_steps: int = 1
    """Steps the channels were removed in (1: one-shot; a model torch-pruning traces only chain by chain is always
    pruned in one step)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = {k: list(v) for k, v in self.channels.items()}
        return out


@dataclass(frozen=True)
class Artifact:
    """An exported model file and the facts about how it was made."""

    path: Path
    target: str
    scheme: str
    size_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    plan: Plan
    lowering: dict[str, Any]
    """Target-specific lowering facts, e.g. the share of ops delegated to XNNPACK and those that were not."""
    export_s: float = 0.0

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


@dataclass(frozen=True)
class Measurement:
    """What a runner measured for one artifact on one machine.

    `outputs` holds the runtime's float outputs for every input it was given (row i for input i),
    so that accuracy and parity are computed by the judge, not by each runner. For a model with several outputs it is
    the first (in the artifact's output order) and `named_outputs` holds every output by its key, in that order.
    """

    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    runs: int
    warmup_runs: int
    threads: int
    size_bytes: int
    peak_memory_mb: float | None
    memory_method: str
    where: str
    """Where it ran: 'host', 'adb:SERIAL' or 'ssh:user@host'."""
    runner: str
    runtime_versions: dict[str, str]
    outputs: np.ndarray = field(repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)
    """Every timed run's latency, in order, where the runner returns them (empty otherwise); not in `to_dict`."""
    timing: dict[str, Any] = field(default_factory=dict)
    """What the timings say with their spread (`stats.timing_summary`): p50/p90 with 95% bootstrap intervals, the
    modes and whether there are several; empty for a single unsummarised block."""
    named_outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    """Every output by its key (`TensorSpec.key`), in the artifact's output order, rows as in `outputs`; empty where
    the runner brought back the first output only (then `outputs` is all there is)."""

    def output_map(self) -> dict[str, np.ndarray]:
        """Every output the runner brought back, by key: `named_outputs`, else `outputs` as the lone output."""
        return dict(self.named_outputs) if self.named_outputs else {SINGLE_OUTPUT_KEY: self.outputs}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, outputs=np.empty(0), named_outputs={}, samples_ms=()))
        out.pop("outputs")
        out.pop("named_outputs")
        out.pop("samples_ms")
        out["size_mb"] = round(self.size_bytes / 1e6, 6)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """A measurement read back from `to_dict`'s form (a journal): timings and figures, no outputs."""
        fields = {k: v for k, v in d.items() if k != "size_mb"}
        return cls(**fields, outputs=np.empty((0,), dtype=np.float32))


@dataclass(frozen=True)
class OutputParity:
    """One output of an artifact against the PyTorch model it came from, on the test inputs (`judge.output_parity`).

    `relative_error` is `max_abs_error` over the reference's largest magnitude; `sqnr_db` is
    10·log10(Σ reference² / Σ (output − reference)²), read as `judge.SQNR_CEILING_DB` when the difference is below
    float32 resolution; `top1_agreement` is set for the class-logits output only. `limits` names each figure judged
    and its limit; `failure` says which one failed, naming the output ('' when passed).
    """

    output: str
    shape: tuple[int, ...]
    max_abs_error: float
    relative_error: float
    sqnr_db: float
    top1_agreement: float | None
    class_logits: bool
    limits: dict[str, float]
    passed: bool
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


@dataclass(frozen=True)
class ClassAccuracy:
    """Top-1 on the test samples of one class: the unpruned model's, the artifact's, and the drop in points with its
    paired 95% interval (Newcombe's, over that class's samples)."""

    label: int
    samples: int
    reference_accuracy: float
    artifact_accuracy: float
    drop_pts: float
    drop_ci95_pts: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drop_ci95_pts"] = [round(float(v), 4) for v in self.drop_ci95_pts]
        return out


@dataclass(frozen=True)
class ShiftQuality:
    """Top-1 on the test split with every corruption of `shifts.py` applied (pooled over the corruptions): the
    unpruned model's, the artifact's through its runtime, and the drop in points with its paired 95% interval."""

    corruptions: tuple[str, ...]
    samples: int
    """Shifted samples in all: the test split's size times the number of corruptions."""
    reference_accuracy: float
    artifact_accuracy: float
    drop_pts: float
    drop_ci95_pts: tuple[float, float]
    per_corruption: dict[str, tuple[float, float]]
    """corruption -> (unpruned, artifact) top-1."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drop_ci95_pts"] = [round(float(v), 4) for v in self.drop_ci95_pts]
        out["per_corruption"] = {k: [round(a, 6), round(b, 6)] for k, (a, b) in self.per_corruption.items()}
        return out


@dataclass(frozen=True)
class MetricQuality:
    """The build's metric on the test split: the unpruned PyTorch model's and the artifact's (through its runtime),
    each with a 95% interval, and the loss between them with a paired 95% interval (both scored on the same items;
    a percentile bootstrap that resamples the items once for both). `drop` is in the metric's units and positive
    when the artifact is worse (a lower mIoU, a higher RMSE)."""

    metric: str
    higher_is_better: bool
    direction: str
    """built-in | declared | default (a user callable that does not say: higher taken as better)"""
    output: str | None
    """The output key the metric scored (None: the model's only output)."""
    items: str
    n: int
    reference_value: float
    reference_ci95: tuple[float, float]
    artifact_value: float
    artifact_ci95: tuple[float, float]
    drop: float
    drop_ci95: tuple[float, float]
    method: str
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("reference_ci95", "artifact_ci95", "drop_ci95"):
            out[key] = [round(float(v), 6) for v in out[key]]
        return out


@dataclass(frozen=True)
class Quality:
    """Accuracy of the reference model and of the artifact through its runtime on the test split, plus parity.

    `kind` is 'eval_accuracy' (top-1 on the labelled test split) with labelled data, or 'agreement_with_reference'
    on unlabelled inputs (then accuracies are top-1 agreement with the unpruned model, and no accuracy budget is
    judged). Each accuracy carries its 95% Wilson interval; the drop carries the paired (Newcombe) interval, in points.
    """

    kind: Literal["eval_accuracy", "agreement_with_reference"]
    samples: int
    reference_accuracy: float | None
    artifact_accuracy: float | None
    """None when the runner returned no outputs (a native benchmark binary on a phone)."""
    parity_metric: Literal["max_abs_diff", "top1_agreement", "relative_error", "sqnr_db"]
    parity_value: float
    parity_limit: float
    parity_passed: bool
    split: str = "test"
    reference_accuracy_ci95: tuple[float, float] | None = None
    artifact_accuracy_ci95: tuple[float, float] | None = None
    accuracy_drop_ci95_pct: tuple[float, float] | None = None
    outputs_parity: tuple[OutputParity, ...] = ()
    """Parity of every output, in the artifact's output order; `parity_*` above sum it up (the class-logits output's
    figure as before, else the worst output's, or the first failing one's)."""
    class_logits: str | None = None
    """The output top-1 accuracy and agreement are read from (None: none is class logits, no accuracy is measured)."""
    metric: MetricQuality | None = None
    """The build's metric (`--metric`, or the one the model's task implies), when one is scored."""
    per_class: tuple[ClassAccuracy, ...] = ()
    """Top-1 per class on the labelled test split (empty without labels or class logits)."""
    shift: ShiftQuality | None = None
    """Top-1 on shifted test inputs (the robustness guard's figure), when that guard is asked for."""

    @property
    def worst_class(self) -> ClassAccuracy | None:
        """The class that lost the most top-1 points (None without per-class figures)."""
        return max(self.per_class, key=lambda c: (c.drop_pts, -c.label)) if self.per_class else None

    @property
    def accuracy_drop_pct(self) -> float | None:
        if self.reference_accuracy is None or self.artifact_accuracy is None:
            return None
        return round(100.0 * (self.reference_accuracy - self.artifact_accuracy), 4)

    @property
    def parity_failure(self) -> str:
        """Why parity failed, naming the output and the figure ('' when it passed)."""
        failed = [p.failure for p in self.outputs_parity if not p.passed]
        if failed:
            return "; ".join(failed)
        if self.parity_passed:
            return ""
        return f"{self.parity_metric} {self.parity_value:.6g}, limit {self.parity_limit:.6g}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outputs_parity"] = [p.to_dict() for p in self.outputs_parity]
        out["metric"] = self.metric.to_dict() if self.metric is not None else None
        out["per_class"] = [c.to_dict() for c in self.per_class]
        out["shift"] = self.shift.to_dict() if self.shift is not None else None
        out["accuracy_drop_pct"] = self.accuracy_drop_pct
        for key in ("reference_accuracy_ci95", "artifact_accuracy_ci95", "accuracy_drop_ci95_pct"):
            out[key] = None if out[key] is None else [round(float(v), 6) for v in out[key]]
        return out


@dataclass(frozen=True)
class BudgetCheck:
    """One budget judged: the value, the limit, and pass / fail / unverified with a reason."""

    name: str
    unit: str
    value: float | None
    limit: float | None
    status: Status
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    device: str
    checks: tuple[BudgetCheck, ...]

    @property
    def passed(self) -> bool:
        """True when no budget failed (unverified budgets do not fail a build, but are reported)."""
        return all(c.status != "fail" for c in self.checks)

    @property
    def failed(self) -> tuple[BudgetCheck, ...]:
        return tuple(c for c in self.checks if c.status == "fail")

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}
