"""Budget arithmetic, in one place: what a plan costs (`Costs`), the budgets it must meet (`Limits`, read from a
device profile), and how a figure is held against a limit, for predictions (with a margin), measurements (with
headroom) and the final verdict (`judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from edgeprune.profiles import DeviceProfile

COST_NAMES = ("latency_ms", "model_size_mb", "peak_memory_mb", "energy_mj")
"""Every budgeted cost, named as the budget that judges it."""


def measured_on_device(profile: DeviceProfile, where: str) -> bool:
    """Whether a figure measured at `where` ('host', 'adb:SERIAL', 'ssh:...') is one of `profile`'s device."""
    return where == "host" if profile.is_host else where != "host"


def within(value: float, limit: float, headroom: float = 0.0) -> bool:
    """`value` meets `limit` with `headroom` to spare (0.05: at most 95% of the limit)."""
    return value <= limit * (1.0 - headroom)


@dataclass(frozen=True)
class Costs:
    """Costs of one candidate on one device: each is the figure the budget of the same name judges."""

    latency_ms: float
    model_size_mb: float
    peak_memory_mb: float
    energy_mj: float

    def ratios(self, limits: Limits) -> dict[str, float]:
        """Cost / budget for every budget that is set (1.0 = exactly at the limit)."""
        return {name: getattr(self, name) / limit for name, limit in limits.set_limits().items()}


@dataclass(frozen=True)
class Limits:
    """The budgets a plan must meet (None: no limit); the latency limit is for the profile's percentile."""

    latency_ms: float | None = None
    model_size_mb: float | None = None
    peak_memory_mb: float | None = None
    energy_mj: float | None = None

    @classmethod
    def of(cls, profile: DeviceProfile) -> Limits:
        b = profile.budget
        return cls(b.latency_ms, b.model_size_mb, b.peak_memory_mb, profile.energy_limit_mj)

    def set_limits(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COST_NAMES if getattr(self, name) is not None}

    def binding(self, costs: Costs) -> tuple[str, float]:
        """(budget, cost / limit) of the tightest budget; ('', 0.0) when no budget is set."""
        ratios = costs.ratios(self)
        if not ratios:
            return "", 0.0
        name = max(ratios, key=ratios.__getitem__)
        return name, ratios[name]

    def excess(self, costs: Costs, margin: float = 0.0) -> float:
        """How far over its budgets a plan is: the sum of (cost / limit) above 1 - margin; 0 when all are met."""
        return sum(max(0.0, r - (1.0 - margin)) for r in costs.ratios(self).values())

    def met(self, costs: Costs, margin: float = 0.0) -> bool:
        """Every budget met by predicted `costs` with `margin` to spare (0.05: within 95% of each limit)."""
        return all(r <= 1.0 - margin for r in costs.ratios(self).values())

    def met_measured(self, figures: Mapping[str, Any], headroom: float = 0.0) -> bool:
        """Whether measured `figures` (latency, size, memory; a missing one is not held against its budget) meet
        the budgets, the latency with `headroom` to spare (the build measures again, and a plan accepted at 99% of
        its budget would then miss it half the time). Energy is modelled from latency, so it is not re-checked."""
        for name in ("latency_ms", "model_size_mb", "peak_memory_mb"):
            limit, value = getattr(self, name), figures.get(name)
            if limit is not None and value is not None:
                if not within(value, limit, headroom if name == "latency_ms" else 0.0):
                    return False
        return True
