"""What the planner is handed instead of doing the work itself: an evaluator (prunes, fine-tunes and scores
candidates; `edgeprune.evaluator.CandidateEvaluator`) and a measurer (exports a plan and measures it on the device's
runner; the pipeline's)."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch

from edgeprune.planner.results import Tuned
from edgeprune.types import ChannelGroup, Measurement, Plan

MeasureFn = Callable[[Plan, torch.nn.Module], Measurement]
"""Exports `model` with the plan's target and scheme and measures it on the device's runner."""


class Evaluator(Protocol):
    dense: torch.nn.Module
    example: torch.Tensor
    dense_accuracy: float
    """Top-1 of the unpruned model on the validation split (agreement with itself when unlabelled: 1.0)."""
    labelled: bool
    sensitivity_samples: int

    @property
    def workers(self) -> int: ...

    def channel_groups(self) -> list[ChannelGroup]: ...

    def architecture(self, plan: Plan) -> torch.nn.Module: ...

    def sensitivity_scores(self, plans: Sequence[Plan]) -> list[float]: ...

    def tune(self, plan: Plan, epochs: int) -> Tuned: ...

    def tune_many(self, plans: Sequence[Plan], epochs: int) -> list[Tuned]: ...

    def tuned_record(self, tuned: Tuned) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def tuned_from_record(self, plan: Plan, state: dict[str, torch.Tensor], facts: dict[str, Any]) -> Tuned: ...
