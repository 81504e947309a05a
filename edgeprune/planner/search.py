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
from edgeprune.limits import Costs, Limits
from edgeprune.planner.space import Candidate, SearchSpace


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
    storage: str | None = None,
    study_name: str | None = None,
) -> list[Visit]:
    """Optuna NSGA-II over keep ratios per bucket, (target, scheme), importance criterion and threads: maximise proxy
    accuracy, minimise predicted latency, with the budgets as constraints (Optuna's constrained dominance). Returns
    every trial.

    With `storage` (`sqlite:///search.db`, or any database URL Optuna takes, e.g. `postgresql://...` for workers on
    several machines) the study lives there and is loaded if it exists, so workers running the same search share
    one study: each adds `trials` trials, its sampler learns from every trial in the study, and the visits returned
    include the other workers' trials (their costs and proxy accuracy recomputed here, with this worker's
    callables). `study_name` defaults to a digest of the space, budgets and margin, so the same search meets the
    same study and another search never reuses it. The sampler's seed is `seed` plus the trials already in the
    study (a resumed or late worker does not repeat the first worker's proposals); with no other worker the search
    is as deterministic as without storage."""
    import re

    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise MissingDependencyError("optuna", extra="planner") from exc
    if trials < 1:
        raise ConfigError(f"optuna trials {trials} must be >= 1")
    pairs = [(t, sc) for t in space.targets for sc in space.schemes]
    visits: list[Visit] = []

    def candidate(params: dict) -> Candidate:
        target, scheme = pairs[params["pair"]]
        keep = tuple(params[b.name] for b in space.buckets)
        return Candidate(keep, scheme, target, params["importance"], params["threads"])

    def objective(trial: "optuna.Trial") -> tuple[float, float]:
        for b in space.buckets:
            trial.suggest_categorical(b.name, list(space.keep_grid))
        trial.suggest_categorical("pair", list(range(len(pairs))))
        trial.suggest_categorical("importance", list(space.importances))
        trial.suggest_categorical("threads", list(space.threads))
        cand = candidate(trial.params)
        c = costs(cand)
        acc = proxy(cand)
        visits.append(Visit(cand, c, acc, trial.number))
        for name, ratio in c.ratios(limits).items():  # feasible when every constraint is <= 0
            trial.set_constraint(name, ratio - (1.0 - margin))
        return acc, c.latency_ms

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=seed))
    else:
        name = study_name or _study_name(space, limits, margin)
        for attempt in range(4):
            try:
                study = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name=name,
                                            load_if_exists=True)
                done = len(study.get_trials(deepcopy=False))
                break
            except Exception as exc:  # noqa: BLE001 - optuna and SQLAlchemy raise many types for a bad URL or database
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                # workers opening a new database at once race to create its tables, or to create the study
                if attempt < 3 and re.search(r"already exists|database is locked|UNIQUE constraint", detail):
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise ConfigError(f"--storage '{storage}' cannot be opened as an Optuna study '{name}' ({detail}); "
                                  "give sqlite:///PATH/TO/FILE.db in an existing folder or a database URL Optuna "
                                  "accepts (postgresql://USER@HOST/DB)") from None
        study.sampler = optuna.samplers.NSGAIISampler(seed=seed + done)
    for start in space.starts():  # seed the population with the dense plans (the criterion changes nothing there)
        if start.importance != space.importances[0]:
            continue
        study.enqueue_trial({**{b.name: 1.0 for b in space.buckets}, "pair": pairs.index((start.target, start.scheme)),
                             "importance": start.importance, "threads": start.threads}, skip_if_exists=True)
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    told = 0
    for _ in range(2 * trials):  # a trial lost to another worker does not count; the bound stops a livelock
        if told == trials or (deadline is not None and told and time.monotonic() >= deadline):
            break
        told += _run_trial(study, objective, visits)
    if storage is not None:  # the other workers' trials, evaluated with this worker's callables
        mine = {v.step for v in visits}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.number not in mine:
                cand = candidate(t.params)
                visits.append(Visit(cand, costs(cand), proxy(cand), t.number))
        visits.sort(key=lambda v: v.step)
    return visits


def _run_trial(study: "optuna.Study", objective, visits: list[Visit]) -> bool:
    """Ask, evaluate and tell one trial; False when another worker told it first. SQLite cannot lock a row, so two
    workers can both pop the same enqueued trial: the first record stands and the loser drops its visit."""
    import optuna

    trial = study.ask()
    try:
        values = objective(trial)
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise
    try:
        study.tell(trial, values)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        if not next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).state.is_finished():
            raise
        visits[:] = [v for v in visits if v.step != trial.number]
        return False
    return True


def _study_name(space: SearchSpace, limits: Limits, margin: float) -> str:
    """A name that only the same search (space, budgets, margin) produces."""
    import hashlib
    import json

    key = json.dumps({
        "buckets": [[b.name, list(b.roots)] for b in space.buckets], "schemes": space.schemes,
        "targets": space.targets, "importances": space.importances, "threads": space.threads,
        "keep_grid": space.keep_grid, "limits": [limits.latency_ms, limits.model_size_mb, limits.peak_memory_mb,
                                                 limits.energy_mj], "margin": margin,
    }, sort_keys=True)
    return "edgeprune-" + hashlib.sha256(key.encode()).hexdigest()[:16]
