"""What the planner is handed instead of doing the work itself: an evaluator (prunes, fine-tunes and scores
candidates; `edgeprune.evaluator.CandidateEvaluator`) and a measurer (exports a plan and measures it on the device's
runner; the pipeline's)."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch

from edgeprune.planner.results import Tuned
from edgeprune.profiles import Budget
from edgeprune.types import ChannelGroup, Measurement, Plan

MeasureFn = Callable[[Plan, torch.nn.Module], Measurement]
"""Exports `model` with the plan's target and scheme and measures it on the device's runner."""


class Score(Protocol):
    """What the evaluator's scores are (higher is better): top-1 accuracy, or a metric oriented so."""

    @property
    def top1(self) -> bool: ...

    @property
    def name(self) -> str: ...
    """'accuracy' or the metric's name, for messages."""

    @property
    def unit(self) -> str: ...
    """The unit of a drop: 'points' or the metric's name."""

    @property
    def drop_scale(self) -> float: ...
    """From a score difference to `unit` (100 for top-1: a fraction to points)."""

    def max_drop(self, budget: Budget) -> float | None: ...


class Evaluator(Protocol):
    dense: torch.nn.Module
    example: torch.Tensor
    dense_accuracy: float
    """The unpruned model's score on the validation split (`score`): top-1 (agreement with itself when unlabelled:
    1.0), or the metric's value (negated when lower is better)."""
    score: Score
    dense_class_accuracy: dict[int, float] | None
    """The unpruned model's top-1 per class on the validation split (None: no class labels, or a metric)."""
    dense_shift_accuracy: float | None
    """The unpruned model's top-1 on the shifted validation inputs (None: the robustness guard is off)."""
    labelled: bool
    sensitivity_samples: int

    @property
    def workers(self) -> int: ...

    def channel_groups(self) -> list[ChannelGroup]: ...

    def encoder_structure(self) -> dict: ...

    def architecture(self, plan: Plan) -> torch.nn.Module: ...

    def sensitivity_scores(self, plans: Sequence[Plan]) -> list[float]: ...

    def tune(self, plan: Plan, epochs: int) -> Tuned: ...

    def tune_many(self, plans: Sequence[Plan], epochs: int) -> list[Tuned]: ...

    def class_drops(self, tuned: Tuned) -> dict[int, tuple[float, float, float]] | None: ...

    def tuned_record(self, tuned: Tuned) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def tuned_from_record(self, plan: Plan, state: dict[str, torch.Tensor], facts: dict[str, Any]) -> Tuned: ...
