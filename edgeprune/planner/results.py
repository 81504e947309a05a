"""What planning hands back: fine-tuned candidates (`Tuned`), the rounds of the closed loop (`RoundReport`) and
the plan chosen for one device (`DevicePlan`), with their report form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgeprune.limits import Costs
from edgeprune.planner.sensitivity import Sensitivity
from edgeprune.planner.space import Candidate, SearchSpace
from edgeprune.types import Measurement, PruneSummary

if TYPE_CHECKING:  # the evaluator hands these in; the planner only carries them
    from edgeprune.recover import RecoverySummary


@dataclass
class Tuned:
    """A pruned, fine-tuned model and its accuracy on the whole validation split (tier 3)."""

    model: torch.nn.Module
    accuracy: float
    summary: PruneSummary
    recovery: RecoverySummary | None
    class_accuracy: dict[int, float] | None = None
    """Top-1 per class on the validation split (None: no class labels, or judged by another metric)."""
    shift_accuracy: float | None = None
    """Top-1 on the shifted validation inputs (None: the robustness guard is off)."""
    schedules: dict[str, float] | None = None
    """Validation score of each pruning schedule tried for the final fine-tune ('one-shot', 'iterative-3', ...),
    when the planner compared them (`Planner.final`); None when only one-shot ran."""
    val_correct: np.ndarray | None = None
    """Whether each validation sample is classified right (top-1), for the class guard's paired intervals (None: no
    class labels, or judged by another metric)."""


@dataclass
class RoundReport:
    round: int
    candidate: str
    predicted: dict[str, float]
    measured: dict[str, float | None]
    met: bool
    action: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class DevicePlan:
    """The plan chosen for one device, with how it was found."""

    device: str
    candidate: Candidate
    space: SearchSpace
    tuned: Tuned
    costs: Costs
    rounds: list[RoundReport]
    front: list[dict[str, Any]]
    visited: int
    finetuned: list[dict[str, Any]]
    seconds: float
    measurement: Measurement | None = None
    final_finetune_s: float = 0.0
    """Of `seconds`, the time spent fine-tuning chosen plans in full (the rest is the search)."""
    sensitivity: dict[str, Sensitivity] = field(default_factory=dict)
    """The proxy's per-stage sensitivity, per importance criterion searched."""
    dropped: list[str] = field(default_factory=list)
    """(target, scheme, threads) left out of the search, and why."""

    @property
    def plan(self):
        """The candidate's plan, with the pruning schedule its final fine-tune used (`Planner.final`)."""
        return dataclasses.replace(self.space.to_plan(self.candidate), prune_steps=self.tuned.summary.prune_steps)

    def report(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "chosen": candidate_dict(self.candidate, self.space) | {
                "accuracy": self.tuned.accuracy, "predicted": costs_dict(self.costs),
                "prune_steps": self.tuned.summary.prune_steps,
                **({"schedules_validation": self.tuned.schedules} if self.tuned.schedules else {})},
            "buckets": {b.name: list(b.roots) for b in self.space.buckets},
            "rounds": [r.to_dict() for r in self.rounds],
            "finetuned": self.finetuned,
            "pareto_front": self.front,
            "visited": self.visited,
            "seconds": round(self.seconds, 2),
            "final_finetune_s": round(self.final_finetune_s, 2),
            "searched": {"importance": list(self.space.importances), "threads": list(self.space.threads),
                         "dropped": self.dropped},
            "sensitivity": {name: sens.to_dict(self.space) for name, sens in self.sensitivity.items()},
        }


def candidate_dict(c: Candidate, space: SearchSpace) -> dict[str, Any]:
    return {"target": c.target, "scheme": c.scheme, "importance": c.importance, "threads": c.threads,
            "keep": {b.name: k for b, k in zip(space.buckets, c.keep)}}


def costs_dict(c: Costs) -> dict[str, float]:
    return {k: round(v, 5) for k, v in c.__dict__.items()}
