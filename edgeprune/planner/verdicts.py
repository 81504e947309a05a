"""The planner's verdicts when no plan meets the budgets: measured (proven, or within noise) or predicted only,
each naming the binding budget, the closest plan and what would widen the search space."""

from __future__ import annotations

from typing import Any

from edgeprune.errors import BudgetInfeasibleError
from edgeprune.limits import Costs, Limits, within
from edgeprune.planner.results import RoundReport
from edgeprune.planner.search import Visit
from edgeprune.planner.settings import SCHEME_PREFERENCE, PlanSettings
from edgeprune.planner.space import Candidate, SearchSpace
from edgeprune.profiles import DeviceProfile


def widen(space: SearchSpace, profile: DeviceProfile, settings: PlanSettings) -> str:
    """What would widen the search space, in words."""
    ways = [f"a keep floor below {space.keep_grid[-1]:g} (the grid's sparsest ratio)"]
    schemes = [sc for sc in SCHEME_PREFERENCE if sc not in space.schemes]
    if schemes:
        ways.append(f"another scheme (--schemes with {', '.join(schemes)})")
    targets = [t for t in profile.supported_targets if t not in space.targets]
    if targets:
        ways.append(f"another target ({', '.join(targets)})")
    if settings.threads is not None:
        ways.append(f"more threads than --threads {settings.threads}")
    return "; ".join(ways)


def measured_infeasible(profile: DeviceProfile, space: SearchSpace, measured: dict[Candidate, dict[str, Any]],
                        limits: Limits, where: str, rounds: list[RoundReport],
                        settings: PlanSettings) -> BudgetInfeasibleError:
    """The verdict once the most aggressive plans were measured over the budget: the fastest measured plan, the
    tightest budget this space can meet, and what would widen it. Proven when every interval lies above."""
    percentile = profile.budget.latency_percentile
    parts, proven = [], True
    for name, unit, label in (("latency_ms", "ms", f"{percentile} latency"), ("model_size_mb", "MB", "size"),
                              ("peak_memory_mb", "MB", "peak memory")):
        limit = getattr(limits, name)
        values = {c: got[name] for c, got in measured.items() if got.get(name) is not None}
        if limit is None or not values:
            continue
        best = min(values, key=values.__getitem__)
        if within(values[best], limit):
            continue
        text = f"{label} {values[best]:.4g} {unit} > {limit:g} {unit} budget"
        if name == "latency_ms":
            low, point = measured[best]["latency_low_ms"], measured[best]["latency_point_ms"]
            text = f"{label} {point:.4g} ms (95% interval {low:.4g}..{values[best]:.4g} ms) > {limit:g} ms budget"
            if within(low, limit):
                proven = False
                text += " (within noise: the interval reaches the budget)"
        which = "fastest" if name == "latency_ms" else "smallest"
        parts.append(f"{which} measured plan {best.label()}: {text}; the tightest {label} budget this space "
                     f"meets is about {values[best]:.4g} {unit}")
    verdict = "proven by measurement" if proven else "measured, but within noise"
    why = "; ".join(parts) or "no single measured plan meets every budget at once"
    return with_rounds(BudgetInfeasibleError(
        f"device '{profile.name}': no plan meets the budget ({verdict} on {where}, the most aggressive plans "
        f"of the search space included): {why}; to widen the space: {widen(space, profile, settings)}"
    ), rounds, proven=proven)


def predicted_infeasible(profile: DeviceProfile, space: SearchSpace, visits: list[Visit], costs, limits: Limits,
                         where: str, rounds: list[RoundReport], settings: PlanSettings) -> BudgetInfeasibleError:
    """The verdict when nothing measured counts for the device (a phone planned on a laptop): predicted only."""
    return with_rounds(BudgetInfeasibleError(
        f"{infeasible_text(profile, visits, costs, limits, settings.margin)} (predicted, not proven: measurements on "
        f"{where} do not count for {profile.name}; validate on the device); to widen the space: "
        f"{widen(space, profile, settings)}"
    ), rounds, proven=False)


def infeasible_text(profile: DeviceProfile, visits: list[Visit], costs, limits: Limits, margin: float) -> str:
    """Which budget binds and by how much at best, with the closest plan."""
    parts = []
    for name, unit in (("latency_ms", "ms"), ("model_size_mb", "MB"), ("peak_memory_mb", "MB"), ("energy_mj", "mJ")):
        limit = getattr(limits, name)
        if limit is None:
            continue
        best = min(visits, key=lambda v: getattr(costs(v.candidate), name))
        value = getattr(costs(best.candidate), name)
        margin = margin
        if value > limit * (1 - margin):
            what = f"best {name.rsplit('_', 1)[0].replace('_', ' ')} {value:.4g} {unit}"
            if value > limit:
                parts.append(f"{what} > {limit:g} {unit} budget ({best.candidate.label()})")
            else:  # under the budget, but not by the margin a prediction needs to be trusted
                parts.append(f"{what} predicted, within the {limit:g} {unit} budget but not its {margin:.0%} "
                             f"prediction margin (<= {limit * (1 - margin):.4g} {unit}) ({best.candidate.label()})")
    closest = min(visits, key=lambda v: limits.excess(costs(v.candidate), margin))
    why = "; ".join(parts) or "no single plan meets every budget at once"
    return (f"device '{profile.name}': no plan meets the budget: {why}; closest plan {closest.candidate.label()} "
            f"at {costs_text(costs(closest.candidate))}")


def with_rounds(error: BudgetInfeasibleError, rounds: list[RoundReport], proven: bool) -> BudgetInfeasibleError:
    """`error` carrying the rounds that led to it (`rounds`, as dicts) and whether measurements prove it (`proven`;
    False for a verdict on predictions, or one within the measurements' noise)."""
    error.rounds = [r.to_dict() for r in rounds]
    error.proven = proven
    return error


def costs_text(c: Costs) -> str:
    return (f"{c.latency_ms:.4g} ms, {c.model_size_mb:.4g} MB, {c.peak_memory_mb:.4g} MB peak, "
            f"{c.energy_mj:.4g} mJ (predicted)")
