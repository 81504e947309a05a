"""Sharing fine-tuned models between the devices of a run: which already fine-tuned model a device may take
instead of fine-tuning its own, and which of several equally accurate plans serves the most devices. Equal means
within noise: the paired 95% interval of two models' validation top-1 difference (Newcombe's, over the same samples)
reaches 0."""

from __future__ import annotations

from typing import Callable, Sequence

from edgeprune.planner.results import Tuned
from edgeprune.planner.space import Candidate
from edgeprune.stats import paired_difference_interval


def fleet_wide_choice(best: Tuned, options: Sequence[tuple[Tuned, Candidate]],
                      fits: Callable[[Candidate], int]) -> Candidate | None:
    """Of `options` (pruned candidates after the same brief fine-tune), those that `best` (the most accurate) does
    not beat beyond noise (`not_beaten`), the one whose model fits the most of the fleet's other devices (`fits`),
    then the most accurate. None without per-sample outcomes (a metric) or options."""
    if best.val_correct is None:
        return None
    close = [(fits(cand), tuned.accuracy, cand) for tuned, cand in options if not_beaten(best, tuned)]
    return max(close, key=lambda t: t[:2])[2] if close else None


def not_beaten(best: Tuned, other: Tuned) -> bool:
    """Whether `best` is not more accurate than `other` beyond noise: the paired 95% interval of their validation
    top-1 difference (Newcombe's, over the same samples) reaches 0."""
    if other.val_correct is None or len(other.val_correct) != len(best.val_correct):
        return False
    return paired_difference_interval(best.val_correct, other.val_correct)[1] <= 0


def reusable_within_noise(best: Tuned, inherited: Sequence[tuple[Tuned, Tuned, Candidate]]
                          ) -> tuple[Candidate, float] | None:
    """Of `inherited` (a model's full fine-tune, its brief fine-tune, its candidate here), one whose brief fine-tune
    `best` (this device's best candidate after the same brief fine-tune) does not beat (`not_beaten`); of several,
    the most accurate by its full fine-tune, with that accuracy. None without per-sample outcomes (a metric)."""
    if best.val_correct is None:
        return None
    found = [(full.accuracy, cand) for full, brief, cand in inherited if not_beaten(best, brief)]
    if not found:
        return None
    accuracy, cand = max(found, key=lambda t: t[0])
    return cand, accuracy
