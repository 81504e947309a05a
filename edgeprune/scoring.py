"""The metric a build is judged by, and its score on the test split.

`resolve_metric` picks the metric: the user's (`--metric` / `metric=`: a built-in name or `pkg.module:callable`,
optionally `@OUTPUT` to name the output it scores), else the one the model's declared `task` implies (a detector's
map50, a segmenter's miou), else top-1 when a metric budget asks for one on class labels, else none (top-1 is then
reported as before, from the class-logits output). `score_outputs` runs it over a split's outputs, and
`metric_quality` compares an artifact's outputs with the unpruned model's on the same samples.

Outputs reach the metric as the model returns them: a tensor for a one-output model, else a dict of tensors by
output key; a detector's raw heads are decoded by its `postprocess` first (detection metrics only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from edgeprune.errors import ConfigError
from edgeprune.metrics import BUILT_IN, Metric, Tally, get_metric, metric_for, metric_from_callable, paired_drop
from edgeprune.types import SINGLE_OUTPUT_KEY, MetricQuality

EVAL_BATCH = 64
"""Samples per metric call for the built-in metrics (their intervals resample samples or images, not batches)."""
USER_BATCH = 1
"""Samples per call of a user metric: its interval resamples batches, so one sample each resamples samples."""

MetricArg = str | Metric | Callable[..., Any] | None


def resolve_metric(metric: MetricArg, module: torch.nn.Module, output_keys: tuple[str, ...], *, labelled: bool,
                   budget_needs_one: bool) -> Metric | None:
    """The metric to score, checked against the model's outputs and the data (ConfigError naming the fix)."""
    if isinstance(metric, Metric):
        chosen = metric
    elif isinstance(metric, str):
        name, _, output = metric.partition("@")
        chosen = get_metric(name, output=output or None)
    elif metric is not None:
        chosen = metric_from_callable(metric)
    elif getattr(module, "task", "classification") != "classification":
        chosen = metric_for(module)
    elif budget_needs_one:
        chosen = get_metric("top1")
    else:
        return None
    if chosen.needs_labels and not labelled:
        raise ConfigError(f"metric '{chosen.name}' needs labels but the data is unlabelled; give labelled data "
                          "(--data: a .npz with y, a class folder, or an example)")
    several = len(output_keys) > 1
    if chosen.output is not None and str(chosen.output) not in output_keys:
        raise ConfigError(f"metric '{chosen.name}@{chosen.output}': the model has no output '{chosen.output}'; its "
                          f"outputs: {', '.join(output_keys)}")
    if several and chosen.output is None and chosen.task not in ("detection", "user"):
        raise ConfigError(f"metric '{chosen.name}' scores one output but the model returns {', '.join(output_keys)};"
                          f" name the one to score: --metric {chosen.name}@{output_keys[0]}")
    return chosen


def _batches(outputs: dict[str, np.ndarray], labels: Any, size: int) -> Iterator[tuple[Any, Any]]:
    n = len(next(iter(outputs.values())))
    for at in range(0, n, size):
        part = {k: torch.from_numpy(np.ascontiguousarray(v[at : at + size])) for k, v in outputs.items()}
        yield (part[SINGLE_OUTPUT_KEY] if list(part) == [SINGLE_OUTPUT_KEY] else part,
               None if labels is None else labels[at : at + size])


def score_outputs(metric: Metric, outputs: dict[str, np.ndarray], labels: Any, *,
                  postprocess: Callable[[Any], Any] | None = None, source: str = "the test split") -> Tally:
    """A tally of `metric` over a split's outputs (by output key) and labels."""
    if labels is not None and len(labels) != len(next(iter(outputs.values()))):
        raise ConfigError(f"{source}: {len(labels)} labels for {len(next(iter(outputs.values())))} samples; "
                          "each sample needs one label")
    decode = postprocess if metric.task == "detection" else None
    tally = metric.tally()
    for batch, batch_labels in _batches(outputs, labels, USER_BATCH if metric.task == "user" else EVAL_BATCH):
        tally.add(decode(batch) if decode is not None else batch, batch_labels, source=source)
    return tally


def metric_quality(metric: Metric, reference: Tally, outputs: dict[str, np.ndarray], labels: Any, *,
                   postprocess: Callable[[Any], Any] | None = None, seed: int = 0) -> MetricQuality:
    """The artifact's `outputs` scored and compared with the unpruned model's `reference` tally (same samples)."""
    artifact = score_outputs(metric, outputs, labels, postprocess=postprocess)
    ref, art = reference.result(seed=seed), artifact.result(seed=seed)
    drop, drop_ci = paired_drop(reference, artifact, seed=seed)
    return MetricQuality(
        metric=metric.name, higher_is_better=metric.higher_is_better, direction=metric.direction,
        output=None if metric.output is None else str(metric.output), items=ref.items, n=ref.n,
        reference_value=ref.value, reference_ci95=ref.ci95, artifact_value=art.value, artifact_ci95=art.ci95,
        drop=drop, drop_ci95=drop_ci, method=ref.method,
    )


__all__ = ("BUILT_IN", "MetricArg", "metric_quality", "resolve_metric", "score_outputs")
