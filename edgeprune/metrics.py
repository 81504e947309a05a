"""Metrics: a model's outputs and the labels of a batch -> a number with a direction, tallied over a split with a
95% confidence interval.

Built in (each needs labels):

- `top1` (classification): outputs (N, C) class scores, labels (N,) class ids; the fraction whose argmax is the
  label. Interval: Wilson's, per sample.
- `miou` (segmentation): outputs (N, C, H, W) per-pixel class logits, labels (N, H, W) class ids (pixels labelled
  outside 0..C-1, such as 255 for "void", are ignored); per class IoU = TP / (TP + FP + FN) from the confusion matrix
  summed over the split, averaged over the classes present in the labels or the predictions. Interval: bootstrap
  over images.
- `map50`, `map50_95` (detection): COCO box mAP at IoU 0.5, and averaged over IoU 0.5:0.95, by torchmetrics'
  `MeanAveragePrecision` on the faster-coco-eval backend. Outputs are *decoded* detections, one dict per image with
  `boxes` (K, 4; x1, y1, x2, y2), `scores` (K,) and `labels` (K,); a detector's raw heads become these through its
  `postprocess` (`edgeprune.vision_heads.postprocess_of(module)`, which `evaluate` takes as `postprocess=`). Labels
  are one dict per image with `boxes` and `labels`. Interval: bootstrap over images (`DETECTION_RESAMPLES`, fewer
  than the others, since each resample is a whole COCO evaluation).
- `mae`, `rmse` (regression): outputs and labels of one shape; mean absolute / root mean squared error over every
  element. Lower is better. Interval: bootstrap over samples.

A model with several outputs (a dict or tuple) is scored on the one named by `get_metric(..., output=)`, or on its
only output.

A user metric is `pkg.module:callable`, called as `fn(outputs, labels)` on one batch (outputs as the model returns
them: a tensor, or a dict / tuple of tensors; labels as the data holds them, None on unlabelled data) and returning
a number. The callable declares, as attributes:

- `higher_is_better` (bool): absent means True, and the result records that the direction was a default, not a
  declaration (`direction: "default"`);
- `needs_labels` (bool, default True): False lets it score unlabelled data.

Its value over a split is the mean of its batch values weighted by batch size, so it should return a mean over its
batch's samples (an accuracy, a mean error); its interval bootstraps over batches (evaluate in batches of one sample
to bootstrap over samples). A callable that raises, or returns anything but a finite number, is a `ConfigError`
naming it.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeprune import stats
from edgeprune._deps import require
from edgeprune.errors import ConfigError

BUILT_IN = ("top1", "miou", "map50", "map50_95", "mae", "rmse")
TASK_METRIC = {"classification": "top1", "segmentation": "miou", "detection": "map50", "regression": "rmse"}
"""The metric a model is judged by when the user names none, by the `task` its module declares."""
DETECTION_RESAMPLES = 200
"""Bootstrap resamples for detection metrics: each is one COCO evaluation (about 0.1 s per 300 images)."""
COCO_BACKEND = "faster_coco_eval"


@dataclass(frozen=True)
class Metric:
    """A metric by name: what it scores, which way is better, and whether the direction was declared."""

    name: str
    task: str
    """classification | segmentation | detection | regression | user"""
    higher_is_better: bool
    direction: str = "built-in"
    """built-in | declared (a user callable's attribute) | default (a user callable that declares none: True)"""
    needs_labels: bool = True
    output: str | int | None = None
    """Which output of a multi-output model the metric scores (dict key or index); None: the only one."""
    fn: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    def tally(self) -> Tally:
        kind = {"classification": _Top1Tally, "segmentation": _MiouTally, "detection": _DetectionTally,
                "regression": _ErrorTally, "user": _UserTally}[self.task]
        return kind(self)


@dataclass(frozen=True)
class MetricResult:
    """A metric over a split: value, 95% interval, and over how many items (samples, images or batches)."""

    metric: str
    value: float
    ci95: tuple[float, float]
    n: int
    items: str
    higher_is_better: bool
    direction: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "ci95": list(self.ci95), "n": self.n,
                "items": self.items, "higher_is_better": self.higher_is_better, "direction": self.direction,
                "method": self.method}


def get_metric(spec: str, *, output: str | int | None = None) -> Metric:
    """A built-in metric by name, or a user metric from 'pkg.module:callable' (see the module docstring)."""
    text = str(spec).strip()
    if text in ("top1",):
        return Metric("top1", "classification", True, output=output)
    if text == "miou":
        return Metric("miou", "segmentation", True, output=output)
    if text in ("map50", "map50_95"):
        return Metric(text, "detection", True, output=output)
    if text in ("mae", "rmse"):
        return Metric(text, "regression", False, output=output)
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"metric '{text}' is unknown; built in: {', '.join(BUILT_IN)}; or give pkg.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing the user's module is theirs to fix
        raise ConfigError(f"metric '{text}': module '{module_name}' does not import ({_reason(exc)}); "
                          "check the name and that it is on the Python path") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"metric '{text}': module '{module_name}' has no callable '{attr}'")
    return metric_from_callable(fn, name=text, output=output)


def metric_from_callable(fn: Callable[..., Any], *, name: str | None = None, output: str | int | None = None) -> Metric:
    """A user metric from a callable in memory (the API's `metric=`); it declares `higher_is_better` and
    `needs_labels` as attributes, as a `pkg.module:callable` one does."""
    if not callable(fn):
        raise ConfigError(f"metric {fn!r} is not callable; give a function fn(outputs, labels) -> float, a built-in "
                          f"name ({', '.join(BUILT_IN)}) or 'pkg.module:callable'")
    text = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
    declared = getattr(fn, "higher_is_better", None)
    if declared is not None and not isinstance(declared, bool):
        raise ConfigError(f"metric '{text}': higher_is_better is {declared!r}; set it to True or False")
    needs_labels = getattr(fn, "needs_labels", True)
    if not isinstance(needs_labels, bool):
        raise ConfigError(f"metric '{text}': needs_labels is {needs_labels!r}; set it to True or False")
    return Metric(text, "user", True if declared is None else declared,
                  direction="default" if declared is None else "declared", needs_labels=needs_labels,
                  output=output, fn=fn)


def metric_for(module: torch.nn.Module) -> Metric:
    """The built-in metric for the `task` a module declares (classification when it declares none)."""
    task = getattr(module, "task", "classification")
    if task not in TASK_METRIC:
        raise ConfigError(f"model task '{task}' has no default metric; name one ({', '.join(BUILT_IN)}) or give "
                          "pkg.module:callable")
    return get_metric(TASK_METRIC[task])


def evaluate(metric: Metric, batches: Iterable[tuple[Any, Any]], *, postprocess: Callable[[Any], Any] | None = None,
             source: str = "the data", seed: int = 0, resamples: int | None = None) -> MetricResult:
    """Score `metric` over (outputs, labels) batches; `postprocess` turns raw outputs into what it takes first
    (a detector's decoding: `edgeprune.vision_heads.postprocess_of(module)`). `resamples` overrides the bootstrap's
    count (the metric's own default when None)."""
    tally = metric.tally()
    for outputs, labels in batches:
        tally.add(postprocess(outputs) if postprocess is not None else outputs, labels, source=source)
    return tally.result(seed=seed, resamples=resamples)


def paired_drop(reference: Tally, artifact: Tally, *, seed: int = 0,
                resamples: int | None = None) -> tuple[float, tuple[float, float]]:
    """How much worse `artifact` scores than `reference` on the same items (positive: worse; in the metric's
    units), with its 95% percentile-bootstrap interval: each resample draws the items once for both tallies, so
    what the two share cancels (a paired interval, much narrower than the two intervals side by side)."""
    metric = reference.metric
    if reference.n != artifact.n:
        raise ConfigError(f"metric '{metric.name}': the reference scored {reference.n} {reference.items} but the "
                          f"artifact {artifact.n}; score both on the same split")
    sign = 1.0 if metric.higher_is_better else -1.0

    def drop(idx: np.ndarray) -> float:
        return sign * (reference._statistic(idx) - artifact._statistic(idx))

    value = sign * (reference.value() - artifact.value())
    low, high = stats.bootstrap_interval(reference.n, drop, resamples=resamples or reference.resamples, seed=seed)
    return value, (low, high)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _count(value: Any) -> int:
    return len(value) if not isinstance(value, (np.ndarray, torch.Tensor)) else int(value.shape[0])


class Tally:
    """Adds batches of one metric; `result()` gives its value over them with a 95% interval."""

    items = "samples"

    def __init__(self, metric: Metric):
        self.metric = metric

    @property
    def n(self) -> int:
        raise NotImplementedError

    def add(self, outputs: Any, labels: Any, *, source: str = "the data") -> None:
        m = self.metric
        if labels is None and m.needs_labels:
            raise ConfigError(f"metric '{m.name}' needs labels but {source} is unlabelled; give labelled data "
                              "(a .npz with y, a class folder, or an example)")
        self._add(outputs, labels)

    def _add(self, outputs: Any, labels: Any) -> None:
        raise NotImplementedError

    def value(self) -> float:
        if self.n == 0:
            raise ConfigError(f"metric '{self.metric.name}' has no {self.items} to score")
        return self._statistic(np.arange(self.n))

    def _statistic(self, idx: np.ndarray) -> float:
        raise NotImplementedError

    resamples = stats.BOOTSTRAP_RESAMPLES

    def interval(self, *, seed: int = 0, resamples: int | None = None) -> tuple[float, float]:
        return stats.bootstrap_interval(self.n, self._statistic, resamples=resamples or self.resamples, seed=seed)

    def method(self, resamples: int | None = None) -> str:
        return f"percentile bootstrap over {self.items}, {resamples or self.resamples} resamples"

    def result(self, *, seed: int = 0, resamples: int | None = None) -> MetricResult:
        value = self.value()
        low, high = self.interval(seed=seed, resamples=resamples)
        m = self.metric
        return MetricResult(m.name, value, (low, high), self.n, self.items, m.higher_is_better, m.direction,
                            self.method(resamples))

    def _one_output(self, outputs: Any) -> np.ndarray:
        """The tensor this metric scores among a model's outputs."""
        m = self.metric
        if isinstance(outputs, Mapping) or (isinstance(outputs, (list, tuple)) and not _is_detections(outputs)):
            names = list(outputs.keys()) if isinstance(outputs, Mapping) else list(range(len(outputs)))
            if m.output is not None:
                if m.output not in names:
                    raise ConfigError(f"metric '{m.name}': the model has no output {m.output!r}; its outputs: {names}")
                return _array(outputs[m.output])
            if len(names) != 1:
                raise ConfigError(f"metric '{m.name}' scores one output but the model returns {names}; name the one "
                                  "to score (output=...)")
            return _array(outputs[names[0]])
        return _array(outputs)

    def _check_count(self, n_out: int, labels: Any) -> None:
        n_lab = _count(labels)
        if n_lab != n_out:
            raise ConfigError(f"metric '{self.metric.name}': labels for {n_lab} samples but outputs for {n_out}; "
                              "each sample needs one label")


class _Top1Tally(Tally):
    def __init__(self, metric: Metric):
        super().__init__(metric)
        self.correct: list[np.ndarray] = []

    @property
    def n(self) -> int:
        return sum(len(c) for c in self.correct)

    def _add(self, outputs: Any, labels: Any) -> None:
        scores, y = self._one_output(outputs), _array(labels).reshape(-1)
        if scores.ndim != 2:
            raise ConfigError(f"metric 'top1' takes class scores shaped (N, C); the output is shaped {scores.shape}")
        self._check_count(len(scores), y)
        self.correct.append(scores.argmax(1) == y)

    def _statistic(self, idx: np.ndarray) -> float:
        return float(np.concatenate(self.correct)[idx].mean())

    def interval(self, *, seed: int = 0, resamples: int | None = None) -> tuple[float, float]:
        right = int(np.concatenate(self.correct).sum())
        return stats.wilson_interval(right, self.n)

    def method(self, resamples: int | None = None) -> str:
        return "Wilson score interval over samples"


class _MiouTally(Tally):
    items = "images"

    def __init__(self, metric: Metric):
        super().__init__(metric)
        self.confusion: list[np.ndarray] = []  # one (C, C) matrix per image: rows label, columns prediction
        self._stacked = np.zeros((0, 0, 0), dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self.confusion)

    def _add(self, outputs: Any, labels: Any) -> None:
        logits, masks = self._one_output(outputs), _array(labels)
        if logits.ndim != 4:
            raise ConfigError(f"metric 'miou' takes per-pixel class logits shaped (N, C, H, W); the output is shaped "
                              f"{logits.shape}")
        if masks.shape != (logits.shape[0], *logits.shape[2:]):
            raise ConfigError(f"metric 'miou': masks shaped {masks.shape} do not match logits {logits.shape}; "
                              f"expected ({logits.shape[0]}, {logits.shape[2]}, {logits.shape[3]})")
        classes = logits.shape[1]
        if self.confusion and self.confusion[0].shape[0] != classes:
            raise ConfigError(f"metric 'miou': a batch has {classes} classes, earlier ones "
                              f"{self.confusion[0].shape[0]}; score one model's outputs per tally")
        pred = logits.argmax(1)
        for p, t in zip(pred, masks.astype(np.int64)):
            valid = (t >= 0) & (t < classes)
            flat = t[valid] * classes + p[valid]
            self.confusion.append(np.bincount(flat, minlength=classes * classes).reshape(classes, classes))

    def _statistic(self, idx: np.ndarray) -> float:
        if len(self._stacked) != self.n:
            self._stacked = np.stack(self.confusion)
        total = self._stacked[idx].sum(0)
        tp = np.diag(total).astype(np.float64)
        union = total.sum(0) + total.sum(1) - tp
        present = union > 0
        return float(np.mean(tp[present] / union[present])) if present.any() else math.nan


class _ErrorTally(Tally):
    def __init__(self, metric: Metric):
        super().__init__(metric)
        self.sums: list[np.ndarray] = []  # per sample: summed |error| (mae) or error^2 (rmse)
        self.sizes: list[np.ndarray] = []  # per sample: elements

    @property
    def n(self) -> int:
        return sum(len(s) for s in self.sums)

    def _add(self, outputs: Any, labels: Any) -> None:
        pred = self._one_output(outputs).astype(np.float64)
        target = _array(labels).astype(np.float64)
        if target.shape != pred.shape and target.size == pred.size and len(target) == len(pred):
            target = target.reshape(pred.shape)  # (N,) labels for (N, 1) outputs
        if target.shape != pred.shape:
            raise ConfigError(f"metric '{self.metric.name}': labels shaped {target.shape} do not match outputs "
                              f"shaped {pred.shape}")
        err = (pred - target).reshape(len(pred), -1)
        self.sums.append(np.abs(err).sum(1) if self.metric.name == "mae" else (err * err).sum(1))
        self.sizes.append(np.full(len(pred), err.shape[1], dtype=np.float64))

    def _statistic(self, idx: np.ndarray) -> float:
        mean = float(np.concatenate(self.sums)[idx].sum() / np.concatenate(self.sizes)[idx].sum())
        return mean if self.metric.name == "mae" else math.sqrt(mean)


def _is_detections(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(d, Mapping) and {"boxes", "labels"} <= set(d) for d in value)


def _boxes_dict(d: Mapping[str, Any], with_scores: bool) -> dict[str, torch.Tensor]:
    out = {"boxes": torch.as_tensor(_array(d["boxes"]), dtype=torch.float32).reshape(-1, 4),
           "labels": torch.as_tensor(_array(d["labels"]), dtype=torch.int64).reshape(-1)}
    if with_scores:
        out["scores"] = torch.as_tensor(_array(d["scores"]), dtype=torch.float32).reshape(-1)
    return out


class _DetectionTally(Tally):
    items = "images"
    resamples = DETECTION_RESAMPLES

    def __init__(self, metric: Metric):
        super().__init__(metric)
        self.preds: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, torch.Tensor]] = []

    @property
    def n(self) -> int:
        return len(self.preds)

    def _add(self, outputs: Any, labels: Any) -> None:
        name = self.metric.name
        if not (_is_detections(outputs) and all("scores" in d for d in outputs)):
            what = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ConfigError(f"metric '{name}' takes decoded detections (per image: boxes, scores, labels), not raw "
                              f"outputs ({what}); decode them with the model's postprocess "
                              "(edgeprune.vision_heads.postprocess_of(module))")
        targets = list(labels) if isinstance(labels, (list, tuple, np.ndarray)) else labels
        if not _is_detections(targets):
            raise ConfigError(f"metric '{name}' takes labels as one dict per image with 'boxes' (K, 4) and 'labels' "
                              "(K,)")
        self._check_count(len(outputs), targets)
        self.preds += [_boxes_dict(d, True) for d in outputs]
        self.targets += [_boxes_dict(d, False) for d in targets]

    def _statistic(self, idx: np.ndarray) -> float:
        require(COCO_BACKEND, extra="vision")
        detection = require("torchmetrics.detection", extra="vision")
        if not any(len(self.targets[i]["labels"]) for i in idx):
            return math.nan  # mAP is undefined without ground truth
        tm = detection.MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=COCO_BACKEND)
        tm.update([self.preds[i] for i in idx], [self.targets[i] for i in idx])
        result = tm.compute()
        return float(result["map_50"] if self.metric.name == "map50" else result["map"])

    def value(self) -> float:
        value = super().value()
        if math.isnan(value):
            raise ConfigError(f"metric '{self.metric.name}': the labels hold no ground-truth boxes, so mAP is "
                              "undefined; give labels with boxes")
        return value


class _UserTally(Tally):
    items = "batches"

    def __init__(self, metric: Metric):
        super().__init__(metric)
        self.values: list[float] = []
        self.weights: list[int] = []

    @property
    def n(self) -> int:
        return len(self.values)

    def _add(self, outputs: Any, labels: Any) -> None:
        m = self.metric
        size = _batch_size(outputs, labels)
        try:
            raw = m.fn(outputs, labels)
        except Exception as exc:  # the user's code: report it in one line, naming the callable
            raise ConfigError(f"metric '{m.name}' raised {_reason(exc)} on a batch of {size} samples; fix the "
                              "callable") from None
        self.values.append(_number(raw, m.name))
        self.weights.append(size)

    def _statistic(self, idx: np.ndarray) -> float:
        w = np.asarray(self.weights, dtype=np.float64)[idx]
        return float(np.sum(np.asarray(self.values)[idx] * w) / np.sum(w))


def _batch_size(outputs: Any, labels: Any) -> int:
    if labels is not None:
        return _count(labels)
    first = outputs
    while isinstance(first, (Mapping, list, tuple)) and len(first):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    return int(first.shape[0]) if hasattr(first, "shape") and len(first.shape) else 1


def _number(value: Any, name: str) -> float:
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, np.ndarray) and value.size == 1):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"metric '{name}' returned {type(value).__name__} ({str(value)[:40]!r}), not a number; "
                          "return a float")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"metric '{name}' returned {value}; return a finite number")
    return value


__all__: Sequence[str] = ("BUILT_IN", "Metric", "MetricResult", "Tally", "evaluate", "get_metric", "metric_for",
                          "metric_from_callable", "paired_drop")
