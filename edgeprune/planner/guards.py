"""The class and robustness guards (`max_class_drop_pts`, `max_shift_drop_pts`) as the planner applies them: on the
validation split, against the unpruned model, a class's loss judged with its paired 95% interval.

The evaluator passed in needs `class_drops(tuned)`, `dense_class_accuracy` and `dense_shift_accuracy`
(`edgeprune.evaluator.CandidateEvaluator`)."""

from __future__ import annotations

from typing import Any

from edgeprune.planner.results import Tuned
from edgeprune.profiles import Budget

ClassDrop = tuple[int, float, float, float]
"""(class, top-1 points lost, low, high of its paired 95% interval)."""


def breaks_class_guard(drop: tuple[float, float, float], limit_pts: float) -> bool:
    """Whether a class's top-1 drop (points, with its paired 95% interval) breaks the class guard: over `limit_pts`
    and a real loss (the interval lies above 0). A drop over the limit that cannot be told from no loss at all (one
    or two lost samples of a rare class: with 5 samples, one is 20 points) is within noise: the plan stays, and the
    test split's verdict marks the guard within noise."""
    return drop[0] > limit_pts + 1e-9 and drop[1] > 0


def worst_class(evaluator: Any, tuned: Tuned, limit_pts: float | None) -> ClassDrop | None:
    """The class that lost the most top-1 on the validation split vs the unpruned model, with the paired 95%
    interval of its loss; of the classes that break the class guard at `limit_pts` if any do. Without per-sample
    figures (a journal of an older run) the interval is the point itself. None: no per-class figures (no class
    labels, or a metric)."""
    drops = evaluator.class_drops(tuned)
    if drops is None:
        dense = evaluator.dense_class_accuracy
        if dense is None or tuned.class_accuracy is None:
            return None
        points = {c: 100.0 * (a - tuned.class_accuracy.get(c, 0.0)) for c, a in dense.items()}
        drops = {c: (d, d, d) for c, d in points.items()}
    breaking = {c: d for c, d in drops.items() if limit_pts is not None and breaks_class_guard(d, limit_pts)}
    pool = breaking or drops
    worst = max(pool, key=lambda c: (pool[c][0], -c))
    return (worst, *pool[worst])


def shift_drop(evaluator: Any, tuned: Tuned) -> float | None:
    """Top-1 points lost on the shifted validation inputs vs the unpruned model (None: the guard is off)."""
    dense = evaluator.dense_shift_accuracy
    return None if dense is None or tuned.shift_accuracy is None else 100.0 * (dense - tuned.shift_accuracy)


def binding_guard(evaluator: Any, budget: Budget, tuned: Tuned) -> str | None:
    """What `tuned` breaks of the class and robustness guards, with the fix, as words; None when it meets both
    (a guard that is not set or cannot be told is met)."""
    worst = worst_class(evaluator, tuned, budget.max_class_drop_pts)
    limit = budget.max_class_drop_pts
    if worst is not None and limit is not None and breaks_class_guard(worst[1:], limit):
        return (f"the class guard binds: class {worst[0]} loses {worst[1]:.2f} points of top-1 on the validation "
                f"split (95% interval {worst[2]:.3g}..{worst[3]:.3g}) > {limit:g} allowed; loosen the latency/size "
                "budgets or allow a larger class drop")
    shift, max_shift = shift_drop(evaluator, tuned), budget.max_shift_drop_pts
    if shift is not None and max_shift is not None and shift > max_shift + 1e-9:
        return (f"the robustness guard binds: top-1 on shifted validation inputs drops {shift:.2f} points > "
                f"{max_shift:g} allowed; loosen the latency/size budgets or allow a larger shift drop")
    return None


def meets_guards(evaluator: Any, budget: Budget, tuned: Tuned) -> bool:
    """Whether `tuned` meets the class and robustness guards (`binding_guard` finds nothing)."""
    return binding_guard(evaluator, budget, tuned) is None
