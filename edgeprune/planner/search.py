"""Search strategies over a `SearchSpace`: a greedy NetAdapt-style descent, an Optuna NSGA-II search, and the
uniform walk (one keep ratio everywhere) whose answer the planner always ranks beside theirs.

Each sees a candidate only through two callables: `costs(candidate) -> Costs` (predicted, already corrected by
what was measured) and `proxy(candidate) -> accuracy` (the sensitivity proxy). Each returns the candidates it
visited; `feasible` and the Pareto front pick from those.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

from edgeprune.errors import ConfigError, MissingDependencyError
from edgeprune.planner.space import Candidate, SearchSpace


@dataclass(frozen=True)
class Costs:
    """Costs of one candidate on one device: each is the figure the budget of the same name judges."""

    latency_ms: float
    model_size_mb: float
    peak_memory_mb: float
    energy_mj: float

    def ratios(self, limits: Limits) -> dict[str, float]:
        """Cost / budget for every budget that is set (1.0 = exactly at the limit)."""
        out = {}
        for name in ("latency_ms", "model_size_mb", "peak_memory_mb", "energy_mj"):
            limit = getattr(limits, name)
            if limit is not None:
                out[name] = getattr(self, name) / limit
        return out


@dataclass(frozen=True)
class Limits:
    """The budgets a plan must meet (None: no limit); the latency limit is for the profile's percentile."""

    latency_ms: float | None = None
    model_size_mb: float | None = None
    peak_memory_mb: float | None = None
    energy_mj: float | None = None

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
        """Every budget met with `margin` to spare (0.05: within 95% of each limit)."""
        return all(r <= 1.0 - margin for r in costs.ratios(self).values())


@dataclass(frozen=True)
class Visit:
    """A candidate the search looked at, with what it predicted for it."""

    candidate: Candidate
    costs: Costs
    proxy_accuracy: float
    step: int


CostFn = Callable[[Candidate], Costs]
ProxyFn = Callable[[Candidate], float]


def greedy(
    space: SearchSpace,
    start: Candidate,
    costs: CostFn,
    proxy: ProxyFn,
    limits: Limits,
    margin: float = 0.0,
    extra_steps: int = 4,
) -> list[Visit]:
    """NetAdapt-style descent from `start`: each step makes one bucket one grid step sparser, choosing the bucket
    that loses the least proxy accuracy per unit of the binding budget saved (per predicted ms once every budget is
    met). It stops `extra_steps` steps after the first plan that meets every budget (those sparser plans are the
    fallbacks the closed loop tightens to) or at the end of the grid. Returns the path, start first."""
    current = start
    path = [Visit(current, costs(current), proxy(current), 0)]
    met_at: int | None = 0 if limits.met(path[0].costs, margin) else None
    step = 0
    while met_at is None or step - met_at < extra_steps:
        here = path[-1]
        excess = limits.excess(here.costs, margin)
        best: tuple[float, Visit] | None = None
        for bucket in range(len(space.buckets)):
            nxt = space.step_down(current, bucket)
            if nxt is None:
                continue
            c = costs(nxt)
            if excess > 0:
                saved = excess - limits.excess(c, margin)
            else:
                saved = (here.costs.latency_ms - c.latency_ms) / max(here.costs.latency_ms, 1e-9)
            lost = max(0.0, here.proxy_accuracy - proxy(nxt))
            score = (lost + 1e-6) / saved if saved > 1e-9 else math.inf
            visit = Visit(nxt, c, proxy(nxt), step + 1)
            if best is None or score < best[0] or (score == best[0] and c.latency_ms < best[1].costs.latency_ms):
                best = (score, visit)
        if best is None:
            break
        step += 1
        current = best[1].candidate
        path.append(best[1])
        if met_at is None and limits.met(best[1].costs, margin):
            met_at = step
    return path


UNIFORM_STEP = 0.05
"""Step of the uniform walk's keep ratio (finer than the per-bucket grid: one ratio is a one-dimensional search)."""


def is_uniform(candidate: Candidate) -> bool:
    """One keep ratio for every bucket (the unpruned model included)."""
    return len(set(candidate.keep)) <= 1


def uniform(
    space: SearchSpace,
    start: Candidate,
    costs: CostFn,
    proxy: ProxyFn,
    limits: Limits,
    margin: float = 0.0,
    step: float = UNIFORM_STEP,
) -> list[Visit]:
    """Uniform pruning from `start`, the field's standard baseline: one keep ratio for every bucket, from 1.0 down in
    `step`s to the grid's sparsest ratio, stopping at the first (densest) ratio that meets every budget. Returns the
    path, start first."""
    path: list[Visit] = []
    lowest = space.keep_grid[-1]
    for i in range(int(round((1.0 - lowest) / step)) + 1):
        keep = max(lowest, round(1.0 - i * step, 6))
        cand = replace(start, keep=tuple(keep for _ in space.buckets))
        visit = Visit(cand, costs(cand), proxy(cand), i)
        path.append(visit)
        if limits.met(visit.costs, margin):
            break
    return path


def optuna_search(
    space: SearchSpace,
    costs: CostFn,
    proxy: ProxyFn,
    limits: Limits,
    margin: float = 0.0,
    trials: int = 200,
    time_budget_s: float | None = None,
    seed: int = 0,
) -> list[Visit]:
    """Optuna NSGA-II over keep ratios per bucket, (target, scheme), importance criterion and threads: maximise proxy
    accuracy, minimise predicted latency, with the budgets as constraints (Optuna's constrained dominance). Returns
    every trial."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise MissingDependencyError("optuna", extra="planner") from exc
    if trials < 1:
        raise ConfigError(f"optuna trials {trials} must be >= 1")
    pairs = [(t, sc) for t in space.targets for sc in space.schemes]
    visits: list[Visit] = []

    def objective(trial: "optuna.Trial") -> tuple[float, float]:
        keep = tuple(trial.suggest_categorical(b.name, list(space.keep_grid)) for b in space.buckets)
        target, scheme = pairs[trial.suggest_categorical("pair", list(range(len(pairs))))]
        importance = trial.suggest_categorical("importance", list(space.importances))
        threads = trial.suggest_categorical("threads", list(space.threads))
        cand = Candidate(keep, scheme, target, importance, threads)
        c = costs(cand)
        acc = proxy(cand)
        visits.append(Visit(cand, c, acc, trial.number))
        for name, ratio in c.ratios(limits).items():  # feasible when every constraint is <= 0
            trial.set_constraint(name, ratio - (1.0 - margin))
        return acc, c.latency_ms

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for start in space.starts():  # seed the population with the dense plans (the criterion changes nothing there)
        if start.importance != space.importances[0]:
            continue
        study.enqueue_trial({**{b.name: 1.0 for b in space.buckets}, "pair": pairs.index((start.target, start.scheme)),
                             "importance": start.importance, "threads": start.threads})
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    study.optimize(objective, n_trials=trials, timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    return visits
