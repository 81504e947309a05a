"""Budget-driven planning: find the most accurate plan that meets a device's budgets (or the fastest one within an
accuracy drop), wiring the planner's search to pruning, recovery, the cost model and measurements.

A candidate is a keep ratio per stage, the importance criterion that picks the channels kept, a (target, scheme) and
the thread count. Every accuracy the planner chooses by is on the data's validation split; the test split is left
for the build's report. Fidelity tiers, cheapest first:

1. cost: every candidate the search visits is pruned (no recalibration) and its kernels traced once; the cost
   model predicts each (target, scheme, threads) from that trace, corrected by what was measured on the device so
   far (one correction per (target, scheme, threads), each anchored on the unpruned model);
2. proxy accuracy: a per-bucket sensitivity analysis per importance criterion (each stage pruned alone, BatchNorm
   recalibrated, scored on a validation subset), shared by every device of a fleet;
3. real accuracy: the best few candidates, and the densest uniform plan (one keep ratio everywhere) that fits,
   are pruned, fine-tuned briefly (`recover.recover`, `rank_epochs`) and scored on the validation split; the most
   accurate is then fine-tuned in full (`finetune_epochs`, the same `recover` that `edgeprune apply` replays).
   Fine-tuned models are cached by (keep ratios, criterion), so devices, schemes and thread counts share them. At
   equal accuracy the fewest threads win (cores left to the app);
4. measurement: the chosen plan is exported and measured on the device's runner at its thread count (when one can
   measure it), in blocks; the upper end of its latency's 95% interval must meet the budget with a little headroom.
   A miss is fed back into the correction and the plan re-chosen, `max_rounds` times. A thread count whose unpruned
   model measured no faster than with fewer threads is left out of the search.

Infeasible only when shown: where measurements count, "no plan meets the budget" (exit 3) comes only after the most
aggressive plan of the space (the smallest uniform keep ratio) was measured at every target, scheme and thread
count and none fit; if one fits, the search goes on, and a plan measured within its budget but inside the headroom
is returned, flagged in its round. Where nothing measured counts (a phone planned on a laptop), the verdict says it
is predicted. `BudgetInfeasibleError.rounds` carries the rounds, `.proven` whether measurements beyond noise back it.

Only `pipeline.py` calls this module; it hands in a `measure` callable that exports and measures a candidate.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgeprune._progress import Steps
from edgeprune.cost.features import lower, trace
from edgeprune.cost.model import predict_features
from edgeprune.errors import BudgetInfeasibleError, ConfigError
from edgeprune.judge import measured_on_device
from edgeprune.planner import pareto_front
from edgeprune.planner.search import Costs, Limits, Visit, greedy, is_uniform, optuna_search, uniform
from edgeprune.planner.sensitivity import Sensitivity, analyse
from edgeprune.planner.space import Candidate, SearchSpace, make_buckets, thread_options
from edgeprune.profiles import DeviceProfile
from edgeprune.prune import IMPORTANCE, as_tensor, channel_groups, prune, pruned_architecture, recalibrate_bn
from edgeprune.recover import RecoverySummary, recover
from edgeprune.types import Dataset, Measurement, ModelSpec, Plan, PruneSummary

SCHEME_PREFERENCE = ("fp32", "fp16", "int8-dynamic", "int8")
"""At equal estimated accuracy, the scheme that loses least to rounding wins."""
STRATEGIES = ("greedy", "optuna")
EXTRA_ROUNDS = 2
"""Rounds added when the rounds ran out but a measured plan of the space fits the budget (the correction then knows
the space's fastest plans, so a re-plan lands closer)."""
OBJECTIVES = ("accuracy", "latency")


@dataclass(frozen=True)
class PlanSettings:
    """How the search runs (`edgeprune plan` / budget-driven `edgeprune build` options)."""

    schemes: tuple[str, ...] = ("fp32", "int8")
    importances: tuple[str, ...] = ("l2", "fpgm")
    """Channel importance criteria searched (each gets its own sensitivity analysis)."""
    threads: int | None = None
    """Thread count of every plan; None searches 1, 2, 4, ... up to the device profile's `default_threads`."""
    strategy: str = "greedy"
    objective: str = "accuracy"
    """'accuracy': the most accurate plan within every budget; 'latency': the fastest within max_accuracy_drop_pct."""
    time_budget_s: float | None = None
    finetune_epochs: int = 10
    """Fine-tune epochs of the chosen plan (what `edgeprune apply` replays)."""
    rank_epochs: int = 3
    """Fine-tune epochs of each of the `top_k` candidates while ranking them (at most `finetune_epochs`)."""
    top_k: int = 3
    """Candidates fine-tuned briefly and evaluated per device before one is chosen."""
    margin: float = 0.05
    """Predicted costs must stay this share under each budget (room for measurement noise)."""
    max_rounds: int = 3
    sensitivity_samples: int = 512
    optuna_trials: int = 150
    seed: int = 0

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {self.strategy} is unknown; choose one of: {', '.join(STRATEGIES)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--minimize/objective {self.objective} is unknown; choose one of: {', '.join(OBJECTIVES)}")
        bad = [s for s in self.schemes if s not in SCHEME_PREFERENCE]
        if bad or not self.schemes:
            raise ConfigError(f"--schemes {','.join(self.schemes)}: choose from {', '.join(SCHEME_PREFERENCE)}")
        unknown = [i for i in self.importances if i not in IMPORTANCE]
        if unknown or not self.importances:
            raise ConfigError(f"--importance {','.join(self.importances)}: choose from {', '.join(IMPORTANCE)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"--time-budget {self.time_budget_s} must be a positive number of seconds")
        if not 1 <= self.max_rounds <= 10 or self.top_k < 1 or not 0 <= self.margin < 0.5:
            raise ConfigError("plan settings out of range: 1 <= max_rounds <= 10, top_k >= 1, 0 <= margin < 0.5")
        if self.rank_epochs < 0 or self.finetune_epochs < 0:
            raise ConfigError(f"--rank-epochs {self.rank_epochs} and --finetune-epochs {self.finetune_epochs} "
                              "must be >= 0")


MeasureFn = Callable[[Plan, torch.nn.Module], Measurement]
"""Exports `model` with the plan's target and scheme and measures it on the device's runner."""


class Correction:
    """Maps the cost model's prediction to what the device measured, per (target, scheme, threads), from the plans
    measured so far: linear between measured points, proportional to the nearest one outside them. Below the smallest
    measured plan, the line through the two smallest is used where it lies higher: a fixed per-inference cost (operator
    dispatch, thread wake-ups) that the prediction misses does not shrink with the model. The points are first made
    monotonic (pool-adjacent-violators): a smaller prediction never maps to a larger latency, so one noisy measurement
    (a pruned plan timed slower than the dense one) cannot make every pruned plan look slower."""

    def __init__(self) -> None:
        self.points: dict[tuple[Any, ...], list[tuple[float, float]]] = {}

    def add(self, key: tuple[Any, ...], metric: str, predicted: float, measured: float) -> None:
        if predicted > 0 and measured > 0 and math.isfinite(measured):
            self.points.setdefault((*key, metric), []).append((predicted, measured))

    def apply(self, key: tuple[Any, ...], metric: str, predicted: float) -> float:
        pts = _monotonic(sorted(self.points.get((*key, metric), [])))
        if not pts:
            return predicted
        if predicted <= pts[0][0]:
            proportional = predicted * pts[0][1] / pts[0][0]
            if len(pts) < 2 or pts[1][0] <= pts[0][0]:  # one point, or one plan measured twice: no line
                return proportional
            (x0, y0), (x1, y1) = pts[0], pts[1]
            return max(proportional, y0 - (x0 - predicted) * (y1 - y0) / (x1 - x0))
        if predicted >= pts[-1][0]:
            return predicted * pts[-1][1] / pts[-1][0]
        xs, ys = zip(*pts)
        return float(np.interp(predicted, xs, ys))

    def measured(self) -> bool:
        return bool(self.points)


def _monotonic(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pool adjacent violators: merge neighbouring points (averaging both coordinates) until the measured values
    rise with the predicted ones."""
    blocks: list[list[float]] = []  # [sum predicted, sum measured, count]
    for x, y in points:
        blocks.append([x, y, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    return [(sx / n, sy / n) for sx, sy, n in blocks]


@dataclass
class Tuned:
    """A pruned, fine-tuned model and its accuracy on the whole validation split (tier 3)."""

    model: torch.nn.Module
    accuracy: float
    summary: PruneSummary
    recovery: RecoverySummary | None


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
        return self.space.to_plan(self.candidate)

    def report(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "chosen": _candidate_dict(self.candidate, self.space) | {
                "accuracy": self.tuned.accuracy, "predicted": _costs_dict(self.costs)},
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


def _candidate_dict(c: Candidate, space: SearchSpace) -> dict[str, Any]:
    return {"target": c.target, "scheme": c.scheme, "importance": c.importance, "threads": c.threads,
            "keep": {b.name: k for b, k in zip(space.buckets, c.keep)}}


def _costs_dict(c: Costs) -> dict[str, float]:
    return {k: round(v, 5) for k, v in c.__dict__.items()}


def limits_of(profile: DeviceProfile) -> Limits:
    b = profile.budget
    return Limits(b.latency_ms, b.model_size_mb, b.peak_memory_mb, profile.energy_limit_mj)


class Planner:
    """Plans for one model and data set; shared by every device of a fleet (sensitivity, traces and fine-tuned
    models are computed once)."""

    def __init__(self, spec: ModelSpec, dataset: Dataset, settings: PlanSettings, steps: Steps | None = None):
        settings.check()
        self.spec = spec
        self.dataset = dataset
        self.settings = settings
        self.steps = steps or Steps(enabled=False)
        self.example = torch.zeros(spec.input_shape)
        if dataset.val_x is None or len(dataset.val_x) == 0:
            raise ConfigError(f"data '{dataset.source}' has no validation split to plan on; load it with "
                              "edgeprune.data (load_data or dataset_from_arrays), which splits train/validation/test")
        self.calib = as_tensor(dataset.calib_x)
        self.buckets = make_buckets(channel_groups(spec.module, self.example))
        # every choice is scored on the validation split; the test split stays held out for the report
        self.val_x = dataset.val_x
        dense_val = _predict_classes(spec.module, self.val_x)
        self.val_y = dataset.val_y if dataset.val_y is not None else dense_val
        self.dense_accuracy = float((dense_val == self.val_y).mean())
        n = min(settings.sensitivity_samples, len(self.val_x))
        self._subset = np.random.default_rng(settings.seed).permutation(len(self.val_x))[:n]
        self._nodes: dict[tuple[float, ...], list] = {}
        # fine-tuned models by Candidate.prune_key (keep ratios, importance criterion)
        self._tuned: dict[tuple[tuple[float, ...], str], Tuned] = {}
        self._ranked: dict[tuple[tuple[float, ...], str], Tuned] = {}  # briefly (rank_epochs < finetune_epochs)
        self._sensitivity: dict[str, Sensitivity] = {}
        self._timing_models: dict[tuple[float, ...], torch.nn.Module] = {}

    # ------------------------------------------------------------------------------------------ tiers 1-3
    def space(self, targets: Sequence[str], schemes: Sequence[str], profile: DeviceProfile) -> SearchSpace:
        s = self.settings
        threads = (s.threads,) if s.threads is not None else thread_options(profile.default_threads)
        return SearchSpace(self.buckets, tuple(schemes), tuple(targets), s.importances, threads, seed=s.seed)

    def _plan(self, space: SearchSpace, keep: tuple[float, ...], importance: str) -> Plan:
        return space.to_plan(Candidate(keep, space.schemes[0], space.targets[0], importance))

    def _architecture(self, space: SearchSpace, keep: tuple[float, ...], importance: str | None = None,
                      recalibrate: bool = False) -> torch.nn.Module:
        """`keep` applied to the dense model with `importance` (default: the first searched; the shapes do not
        depend on it), BatchNorm re-estimated when `recalibrate`; the dense model itself for a keep of 1.0
        everywhere."""
        plan = self._plan(space, keep, importance or space.importances[0])
        if not plan.layer_keep_ratios:
            return self.spec.module
        model = pruned_architecture(self.spec.module, self.example, plan)
        if recalibrate:
            recalibrate_bn(model, self.calib)
            model.eval()
        return model

    def sensitivity(self, space: SearchSpace, importance: str) -> Sensitivity:
        """The per-stage sensitivity with channels ranked by `importance` (computed once per criterion)."""
        if importance not in self._sensitivity:
            x, y = self.val_x[self._subset], self.val_y[self._subset]

            def accuracy_of(keep: tuple[float, ...]) -> float:
                model = self._architecture(space, keep, importance, recalibrate=True)
                return float((_predict_classes(model, x) == y).mean())

            total = len(self.buckets) * 3
            label = f"Sensitivity of {len(self.buckets)} stages ({importance} importance) on {len(x)} samples"
            with self.steps.step(label, total=total) as up:
                self._sensitivity[importance] = analyse(space, accuracy_of, progress=up)
        return self._sensitivity[importance]

    def predicted(self, profile: DeviceProfile, space: SearchSpace, cand: Candidate):
        nodes = self._nodes.get(cand.keep)
        if nodes is None:
            nodes = self._nodes[cand.keep] = trace(self._architecture(space, cand.keep), self.example)
        features = lower(nodes, tuple(self.example.shape), cand.target, cand.scheme)
        return predict_features(profile, features, cand.threads)

    def tuned(self, space: SearchSpace, key: tuple[tuple[float, ...], str], brief: bool = False) -> Tuned:
        """The candidate with prune key `key` (keep ratios, importance) pruned, BatchNorm re-estimated, fine-tuned
        (`rank_epochs` when `brief`, else `finetune_epochs`) and evaluated; cached by that key."""
        epochs, cache = self._fine_tune_cache(brief)
        if key not in cache:
            plan = self._plan(space, *key)
            model, summary = prune(self.spec.module, self.example, self.calib, plan)
            if not plan.layer_keep_ratios:
                model = self.spec.module
            recovery = None
            if model is not self.spec.module:
                recovery = recover(model, self.spec.module, self.dataset, epochs, self.settings.seed)
            acc = float((_predict_classes(model, self.val_x) == self.val_y).mean())
            cache[key] = Tuned(model, acc, summary, recovery)
        return cache[key]

    def _fine_tune_cache(self, brief: bool) -> tuple[int, dict[tuple[tuple[float, ...], str], Tuned]]:
        """(epochs, cache) of a brief or a full fine-tune; one cache when ranking already uses every epoch."""
        full = self.settings.finetune_epochs
        epochs = min(self.settings.rank_epochs, full) if brief else full
        return epochs, (self._tuned if epochs == full else self._ranked)

    def _final(self, space: SearchSpace, cand: Candidate) -> tuple[Tuned, float]:
        """The chosen candidate fine-tuned in full, and the seconds that took (0 when cached)."""
        if cand.prune_key in self._tuned:
            return self._tuned[cand.prune_key], 0.0
        start = time.perf_counter()
        with self.steps.step(f"Fine-tuning the chosen plan {cand.label()} ({self.settings.finetune_epochs} epochs)"):
            tuned = self.tuned(space, cand.prune_key)
        return tuned, time.perf_counter() - start

    # ------------------------------------------------------------------------------------------ one device
    def plan_device(
        self, profile: DeviceProfile, targets: Sequence[str], measure: MeasureFn | None, where: str
    ) -> DevicePlan:
        """Search, fine-tune the best candidates and close the loop on the device; raises BudgetInfeasibleError
        (exit 3) saying which budget binds when no plan meets the budgets."""
        start = time.perf_counter()
        s = self.settings
        space = self.space(targets, s.schemes, profile)
        limits = limits_of(profile)
        correction = Correction()
        percentile = profile.budget.latency_percentile
        counts = measure is not None and measured_on_device(profile, where)

        known: dict[Candidate, Costs] = {}  # predicted costs under the current correction

        def costs(c: Candidate) -> Costs:
            if c not in known:
                p = self.predicted(profile, space, c)
                key = (c.target, c.scheme, c.threads)
                latency = correction.apply(key, "latency", p.latency_p50_ms)
                known[c] = Costs(
                    latency_ms=latency,
                    model_size_mb=correction.apply(key, "size", p.model_size_mb),
                    peak_memory_mb=correction.apply(key, "memory", p.peak_memory_mb),
                    energy_mj=p.energy_mj * latency / max(p.latency_p50_ms, 1e-9),
                )
            return known[c]

        measured: dict[Candidate, dict[str, Any]] = {}  # every plan measured on the device, and what it measured

        def learn(c: Candidate, m: Measurement) -> dict[str, Any]:
            known.clear()
            p = self.predicted(profile, space, c)
            pair = (c.target, c.scheme, c.threads)
            got = _measured_figures(m, percentile)
            correction.add(pair, "latency", p.latency_p50_ms, got["latency_ms"])
            correction.add(pair, "size", p.model_size_mb, m.size_bytes / 1e6)
            if m.peak_memory_mb is not None:
                correction.add(pair, "memory", p.peak_memory_mb, m.peak_memory_mb)
            measured[c] = got
            return got

        rounds: list[RoundReport] = []
        finetuned: list[dict[str, Any]] = []
        anchored: dict[tuple[str, str, int], float] = {}  # (target, scheme, threads): the unpruned model's ms

        def anchor(target: str, scheme: str, threads: int) -> dict[str, float | None]:
            dense = space.dense(scheme, target, threads=threads)
            with self.steps.step(f"Measuring the unpruned model ({target}, {scheme}, {threads} threads) on {where}"):
                got = learn(dense, measure(space.to_plan(dense), self.spec.module))
            anchored[(target, scheme, threads)] = got["latency_ms"]
            return got

        if s.objective == "accuracy":  # the unpruned model at the most faithful scheme, if it fits, is the answer
            scheme = min(space.schemes, key=SCHEME_PREFERENCE.index)
            for target in space.targets:
                for threads in space.threads:  # fewest threads first: cores left to the app
                    dense = space.dense(scheme, target, threads=threads)
                    got = anchor(target, scheme, threads) if counts else {}
                    fits = _met(limits, got, headroom=s.margin / 2) if counts else limits.met(costs(dense), s.margin)
                    if fits:
                        break
                if fits:
                    tuned = self.tuned(space, dense.prune_key)
                    action = ("the unpruned model meets every budget: nothing to prune" if counts else
                              f"predicted to meet every budget (not measured: {where} is not {profile.name})")
                    rounds.append(RoundReport(1, dense.label(), _costs_dict(costs(dense)), got, counts, action))
                    return DevicePlan(profile.name, dense, space, tuned, costs(dense), rounds, [], 1, [],
                                      time.perf_counter() - start, None)

        if counts:  # anchor the cost model on this device: the unpruned model, once per (target, scheme, threads)
            for target in space.targets:
                for scheme in space.schemes:
                    for threads in space.threads:
                        if (target, scheme, threads) not in anchored:
                            anchor(target, scheme, threads)

        dropped = _no_faster_with_more_threads(anchored)

        def allowed(v: Visit) -> bool:
            return (v.candidate.target, v.candidate.scheme, v.candidate.threads) not in dropped

        sens = {importance: self.sensitivity(space, importance) for importance in space.importances}

        def proxy(c: Candidate) -> float:
            return sens[c.importance].proxy_accuracy(c.keep)

        accepted: tuple[Candidate, Costs, Tuned, Measurement | None] | None = None
        near: tuple[Candidate, Costs, Tuned, Measurement] | None = None  # within budget, but inside the headroom
        probed: set[Candidate] = set()
        final_s = 0.0
        proved = False
        last_round = s.max_rounds
        round_no = 0
        while round_no < last_round:
            round_no += 1
            visits = self._search(space, costs, proxy, limits)
            usable = [v for v in visits if allowed(v)] or visits
            feasible = [v for v in visits if limits.met(costs(v.candidate), s.margin)]
            # a feasible plan at another thread count is a plan too (a search visits only some thread counts)
            feasible += [replace(v, candidate=c, costs=costs(c)) for v in list(feasible) for n in space.threads
                         if (c := replace(v.candidate, threads=n)) != v.candidate and limits.met(costs(c), s.margin)]
            feasible = [v for v in feasible if allowed(v)]
            if not feasible:
                if accepted is not None:
                    break
                if not counts:
                    raise self._predicted_infeasible(profile, space, visits, costs, limits, where, rounds)
                fresh = [v for v in usable if v.candidate not in probed and v.candidate not in measured]
                if not fresh or round_no == last_round:
                    if not proved and near is None:
                        proved = True  # before any verdict, measure the most aggressive plans
                        if self._prove(space, measure, learn, measured, rounds, round_no, where, limits):
                            last_round = round_no + EXTRA_ROUNDS  # a plan of the space fits: search on
                            continue
                    break
                # predicted out of reach: measure the closest plan before believing it (the prediction may be off)
                probe = min(fresh, key=lambda v: (limits.excess(costs(v.candidate), s.margin), -v.proxy_accuracy))
                probed.add(probe.candidate)
                model = self._timing_model(space, probe.candidate.keep)  # timing needs no trained weights
                with self.steps.step(f"Round {round_no}: measuring the closest plan {probe.candidate.label()}"):
                    got = learn(probe.candidate, measure(space.to_plan(probe.candidate), model))
                rounds.append(RoundReport(round_no, probe.candidate.label(), _costs_dict(probe.costs), got,
                                          _met(limits, got), "predicted over budget: measured the closest plan, "
                                          "fed back into the correction, re-planning"))
                continue
            cand, seconds = self._choose(space, feasible, costs, profile, finetuned)
            final_s += seconds
            predicted = costs(cand)
            if accepted is not None and cand == accepted[0]:
                break  # the re-plan came back to the plan already measured within budget
            tuned, seconds = self._final(space, cand)
            final_s += seconds
            if not counts:
                accepted = (cand, predicted, tuned, None)
                rounds.append(RoundReport(round_no, cand.label(), _costs_dict(predicted), {}, False,
                                          f"not measured: measurements on {where} do not count for {profile.name}"))
                break
            with self.steps.step(f"Round {round_no}: measuring {cand.label()} on {where}"):
                measurement = measure(space.to_plan(cand), tuned.model)
            got = learn(cand, measurement)
            met = _met(limits, got, headroom=s.margin / 2)
            denser = met and s.objective == "accuracy" and self._loose(limits, got, s.margin)
            if met:
                accepted = (cand, predicted, tuned, measurement)
            elif _met(limits, got) and (near is None or tuned.accuracy > near[2].accuracy):
                near = (cand, predicted, tuned, measurement)
            action = ("met with room to spare: re-planning for a denser plan" if denser and round_no < last_round
                      else "accepted" if met else
                      f"within budget but inside the {s.margin / 2:.1%} headroom: kept as a fallback, re-planning"
                      if _met(limits, got) else "budget missed: fed back into the correction, re-planning")
            rounds.append(RoundReport(round_no, cand.label(), _costs_dict(predicted), got, met, action))
            if met and not denser:
                break
            if round_no == last_round and accepted is None and near is None and not proved:
                proved = True  # before any verdict, measure the most aggressive plans: they bound what is reachable
                if self._prove(space, measure, learn, measured, rounds, round_no, where, limits):
                    last_round = round_no + EXTRA_ROUNDS  # a plan of the space fits: search on with what was learnt
        if accepted is None and near is None and counts:
            if not proved:
                self._prove(space, measure, learn, measured, rounds, round_no, where, limits)
            near, seconds = self._fallback(space, measured, costs, limits)
            final_s += seconds
        if accepted is None and near is not None:
            accepted = near
            got = measured.get(near[0], {})
            flag = ("returned: it measured within the budget, though no re-plan met it before the rounds ran out"
                    if _met(limits, got, headroom=s.margin / 2) else
                    f"returned although inside the {s.margin / 2:.1%} headroom: it measured within the budget, and no "
                    "plan met it with room to spare")
            rounds.append(RoundReport(round_no, near[0].label(), _costs_dict(near[1]), got, True, flag))
        if accepted is None:
            raise self._measured_infeasible(profile, space, measured, limits, where, rounds)
        cand, predicted, tuned, measurement_of_plan = accepted
        drop = 100.0 * (self.dense_accuracy - tuned.accuracy)
        max_drop = profile.budget.max_accuracy_drop_pct
        if max_drop is not None and drop > max_drop + 1e-9 and self.dataset.labelled:
            raise _with_rounds(BudgetInfeasibleError(
                f"device '{profile.name}': the accuracy budget binds: at {predicted.latency_ms:.4g} ms "
                f"({cand.label()}) the best accuracy drop on the validation split is {drop:.2f} points > "
                f"{max_drop:g} allowed; loosen the latency/size budgets or allow a larger accuracy drop"
            ), rounds, proven=False)
        front = self._front(space, usable, costs, proxy)
        return DevicePlan(profile.name, cand, space, tuned, predicted, rounds, front, len(visits), finetuned,
                          time.perf_counter() - start, measurement_of_plan, final_s, sens, sorted(dropped.values()))

    # ------------------------------------------------------------------------------------------ infeasibility
    def _timing_model(self, space: SearchSpace, keep: tuple[float, ...]) -> torch.nn.Module:
        """The pruned architecture for `keep` with untrained weights, kept so that its exports are shared across
        schemes and thread counts (latency does not depend on the weights)."""
        if keep not in self._timing_models:
            self._timing_models[keep] = self._architecture(space, keep)
        return self._timing_models[keep]

    def _prove(self, space: SearchSpace, measure: MeasureFn, learn, measured: dict[Candidate, dict[str, Any]],
               rounds: list[RoundReport], round_no: int, where: str, limits: Limits) -> bool:
        """Measure the most aggressive plan of the space (the smallest uniform keep ratio) at every target, scheme
        and thread count not measured yet; True when any measured plan then fits the budgets."""
        floor = tuple(space.keep_grid[-1] for _ in space.buckets)
        for target in space.targets:
            for scheme in space.schemes:
                for threads in space.threads:
                    cand = Candidate(floor, scheme, target, space.importances[0], threads)
                    if cand in measured:
                        continue
                    model = self._timing_model(space, floor)
                    with self.steps.step(f"Measuring the most aggressive plan {cand.label()} on {where}"):
                        got = learn(cand, measure(space.to_plan(cand), model))
                    rounds.append(RoundReport(round_no, cand.label(), {}, got, _met(limits, got),
                                              "the most aggressive plan of the space, measured before any verdict"))
        return any(_met(limits, got) for got in measured.values())

    def _fallback(self, space: SearchSpace, measured: dict[Candidate, dict[str, Any]], costs,
                  limits: Limits) -> tuple[tuple[Candidate, Costs, Tuned, None] | None, float]:
        """The plan to return when the rounds ran out but some measured plan fits, and the seconds its fine-tune
        took: of those plans, the densest (the least pruned), fine-tuned in full."""
        fits = [c for c, got in measured.items() if _met(limits, got)]
        if not fits:
            return None, 0.0
        cand = max(fits, key=lambda c: (sum(c.keep), -c.threads, -measured[c]["latency_ms"]))
        tuned, seconds = self._final(space, cand)
        return (cand, costs(cand), tuned, None), seconds

    def _widen(self, space: SearchSpace, profile: DeviceProfile) -> str:
        """What would widen the search space, in words."""
        ways = [f"a keep floor below {space.keep_grid[-1]:g} (the grid's sparsest ratio)"]
        schemes = [sc for sc in SCHEME_PREFERENCE if sc not in space.schemes]
        if schemes:
            ways.append(f"another scheme (--schemes with {', '.join(schemes)})")
        targets = [t for t in profile.supported_targets if t not in space.targets]
        if targets:
            ways.append(f"another target ({', '.join(targets)})")
        if self.settings.threads is not None:
            ways.append(f"more threads than --threads {self.settings.threads}")
        return "; ".join(ways)

    def _measured_infeasible(self, profile: DeviceProfile, space: SearchSpace,
                             measured: dict[Candidate, dict[str, Any]], limits: Limits, where: str,
                             rounds: list[RoundReport]) -> BudgetInfeasibleError:
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
            if values[best] <= limit:
                continue
            text = f"{label} {values[best]:.4g} {unit} > {limit:g} {unit} budget"
            if name == "latency_ms":
                low, point = measured[best]["latency_low_ms"], measured[best]["latency_point_ms"]
                text = f"{label} {point:.4g} ms (95% interval {low:.4g}..{values[best]:.4g} ms) > {limit:g} ms budget"
                if low <= limit:
                    proven = False
                    text += " (within noise: the interval reaches the budget)"
            which = "fastest" if name == "latency_ms" else "smallest"
            parts.append(f"{which} measured plan {best.label()}: {text}; the tightest {label} budget this space "
                         f"meets is about {values[best]:.4g} {unit}")
        verdict = "proven by measurement" if proven else "measured, but within noise"
        why = "; ".join(parts) or "no single measured plan meets every budget at once"
        return _with_rounds(BudgetInfeasibleError(
            f"device '{profile.name}': no plan meets the budget ({verdict} on {where}, the most aggressive plans "
            f"of the search space included): {why}; to widen the space: {self._widen(space, profile)}"
        ), rounds, proven=proven)

    def _predicted_infeasible(self, profile: DeviceProfile, space: SearchSpace, visits: list[Visit], costs,
                              limits: Limits, where: str, rounds: list[RoundReport]) -> BudgetInfeasibleError:
        """The verdict when nothing measured counts for the device (a phone planned on a laptop): predicted only."""
        return _with_rounds(BudgetInfeasibleError(
            f"{self._infeasible(profile, space, visits, costs, limits)} (predicted, not proven: measurements on "
            f"{where} do not count for {profile.name}; validate on the device); to widen the space: "
            f"{self._widen(space, profile)}"
        ), rounds, proven=False)

    # ------------------------------------------------------------------------------------------ helpers
    def _search(self, space: SearchSpace, costs, proxy, limits: Limits) -> list[Visit]:
        """The strategy's visits, plus the uniform walk from every start (cheap: predictions only), so the densest
        uniform plan that fits is always a candidate."""
        s = self.settings
        visits: list[Visit] = []
        if s.strategy == "optuna":
            visits += optuna_search(space, costs, proxy, limits, s.margin, s.optuna_trials, s.time_budget_s, s.seed)
        else:
            deadline = None if s.time_budget_s is None else time.monotonic() + s.time_budget_s
            for start in space.starts():
                if deadline is not None and time.monotonic() > deadline and visits:
                    break
                visits += greedy(space, start, costs, proxy, limits, s.margin)
        for start in space.starts():
            visits += uniform(space, start, costs, proxy, limits, s.margin)
        return visits

    def _choose(self, space, feasible: list[Visit], costs, profile: DeviceProfile,
                finetuned: list[dict[str, Any]]) -> tuple[Candidate, float]:
        """Tier 3 on the best feasible candidates: the most accurate after a brief fine-tune (objective
        'accuracy'), or the fastest within the accuracy budget (objective 'latency'). Of the feasible variants of
        one pruned model, the most faithful scheme wins, then (objective 'accuracy') the fewest threads, leaving
        cores to the app, then the fastest.

        The unpruned model needs no fine-tune, so its accuracy is final while a pruned candidate's brief one is
        not: when it leads the brief ranking, the best pruned candidate is fine-tuned in full (as it would be if
        chosen) and the two compared on that footing. Returns the candidate and, when that fine-tuned candidate is
        chosen, the seconds its full fine-tune took."""
        rank = {sc: i for i, sc in enumerate(SCHEME_PREFERENCE)}
        fewest_threads = self.settings.objective == "accuracy"

        def preference(c: Candidate) -> tuple:
            return (rank[c.scheme], c.threads if fewest_threads else 0, costs(c).latency_ms)

        best_per_arch: dict[tuple[tuple[float, ...], str], Visit] = {}
        for v in feasible:
            old = best_per_arch.get(v.candidate.prune_key)
            if old is None or preference(v.candidate) < preference(old.candidate):
                best_per_arch[v.candidate.prune_key] = v
        options = list(best_per_arch.values())
        if self.settings.objective == "latency":
            options.sort(key=lambda v: costs(v.candidate).latency_ms)
            max_drop = profile.budget.max_accuracy_drop_pct
            return self._fastest_within(space, options, max_drop, finetuned), 0.0
        options.sort(key=lambda v: (-v.proxy_accuracy, rank[v.candidate.scheme], costs(v.candidate).latency_ms))
        ranked = options[: self.settings.top_k]
        # the best uniform plan is always ranked too: a searched plan is chosen only if it beats it after fine-tuning
        ranked += [v for v in options if is_uniform(v.candidate)][:1]
        scored = []
        for v in dict.fromkeys(ranked):
            tuned = self._tune_logged(space, v, finetuned)
            scored.append((tuned.accuracy, -rank[v.candidate.scheme], -costs(v.candidate).latency_ms, v, tuned))
        best = max(scored, key=lambda t: t[:3])
        pruned = [t for t in scored if not _unpruned(t[3].candidate)]
        if not _unpruned(best[3].candidate) or not pruned:
            return best[3].candidate, 0.0
        contender = max(pruned, key=lambda t: t[:3])
        tuned, seconds = self._final(space, contender[3].candidate)
        entry = _candidate_dict(contender[3].candidate, space) | {"accuracy": tuned.accuracy,
                                                                  "epochs": self.settings.finetune_epochs,
                                                                  "params": tuned.summary.params_after,
                                                                  "why": "the unpruned model led the brief ranking"}
        if entry not in finetuned:
            finetuned.append(entry)
        if (tuned.accuracy, *contender[1:3]) > best[:3]:
            return contender[3].candidate, seconds  # its final fine-tune, done early
        return best[3].candidate, 0.0  # the full fine-tune was part of the search

    def _fastest_within(self, space, options: list[Visit], max_drop: float | None,
                        finetuned: list[dict[str, Any]]) -> Candidate:
        """Bisection over the candidates sorted by latency (accuracy falls roughly monotonically with latency):
        the fastest whose accuracy drop after a brief fine-tune is within `max_drop` (the full fine-tune of the
        chosen plan only gains accuracy back, so this errs on the safe side)."""
        if max_drop is None:
            raise ConfigError("--minimize latency needs an accuracy budget: give --max-accuracy-drop")
        lo, hi = 0, len(options) - 1  # find the smallest index that is within the drop
        found: Candidate | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            tuned = self._tune_logged(space, options[mid], finetuned)
            if 100.0 * (self.dense_accuracy - tuned.accuracy) <= max_drop:
                found = options[mid].candidate
                hi = mid - 1
            else:
                lo = mid + 1
        if found is None:  # the accuracy check after the full fine-tune reports the binding budget
            return options[-1].candidate
        return found

    def _tune_logged(self, space: SearchSpace, v: Visit, finetuned: list[dict[str, Any]]) -> Tuned:
        epochs, cache = self._fine_tune_cache(brief=True)
        fresh = v.candidate.prune_key not in cache
        label = f"Fine-tuning {v.candidate.label()} briefly ({epochs} epochs)"
        with self.steps.step(label) if fresh else nullcontext():
            tuned = self.tuned(space, v.candidate.prune_key, brief=True)
        entry = _candidate_dict(v.candidate, space) | {"proxy_accuracy": round(v.proxy_accuracy, 4),
                                                       "accuracy": tuned.accuracy, "epochs": epochs,
                                                       "params": tuned.summary.params_after}
        if entry not in finetuned:
            finetuned.append(entry)
        return tuned

    @staticmethod
    def _loose(limits: Limits, got: dict[str, float | None], margin: float) -> bool:
        latency = got.get("latency_ms")
        return limits.latency_ms is not None and latency is not None and latency < limits.latency_ms * (1 - 3 * margin)

    def _front(self, space, visits: list[Visit], costs, proxy) -> list[dict[str, Any]]:
        points = [(v.candidate, costs(v.candidate), proxy(v.candidate)) for v in visits]
        unique = list({c: (c, k, a) for c, k, a in points}.values())
        front = pareto_front(unique, accuracy=lambda p: p[2], latency_ms=lambda p: p[1].latency_ms)
        out = []
        for c, k, a in front:
            entry = _candidate_dict(c, space) | {"proxy_accuracy": round(a, 4), "predicted": _costs_dict(k)}
            if c.prune_key in self._tuned:
                entry["accuracy"] = self._tuned[c.prune_key].accuracy
            out.append(entry)
        return out

    def _infeasible(self, profile: DeviceProfile, space, visits: list[Visit], costs, limits: Limits) -> str:
        """Which budget binds and by how much at best, with the closest plan."""
        parts = []
        for name, unit in (("latency_ms", "ms"), ("model_size_mb", "MB"), ("peak_memory_mb", "MB"), ("energy_mj", "mJ")):
            limit = getattr(limits, name)
            if limit is None:
                continue
            best = min(visits, key=lambda v: getattr(costs(v.candidate), name))
            value = getattr(costs(best.candidate), name)
            margin = self.settings.margin
            if value > limit * (1 - margin):
                what = f"best {name.rsplit('_', 1)[0].replace('_', ' ')} {value:.4g} {unit}"
                if value > limit:
                    parts.append(f"{what} > {limit:g} {unit} budget ({best.candidate.label()})")
                else:  # under the budget, but not by the margin a prediction needs to be trusted
                    parts.append(f"{what} predicted, within the {limit:g} {unit} budget but not its {margin:.0%} "
                                 f"prediction margin (<= {limit * (1 - margin):.4g} {unit}) ({best.candidate.label()})")
        closest = min(visits, key=lambda v: limits.excess(costs(v.candidate), self.settings.margin))
        why = "; ".join(parts) or "no single plan meets every budget at once"
        return (f"device '{profile.name}': no plan meets the budget: {why}; closest plan {closest.candidate.label()} "
                f"at {_costs_text(costs(closest.candidate))}")


def _unpruned(c: Candidate) -> bool:
    return all(k >= 1.0 for k in c.keep)


def _measured_figures(m: Measurement, percentile: str) -> dict[str, Any]:
    """What a measurement says against the budgets. `latency_ms`, the figure a plan is judged and the cost model
    corrected by, is the upper end of the 95% bootstrap interval of the budget's percentile (with 3 blocks, about
    the slowest block's): a plan must meet its budget reliably, so a thread count whose timing swings on this device
    (threads waiting on each other while the app or the OS takes a core) is corrected towards its slow side.
    `latency_point_ms` and `latency_low_ms` are the estimate and the interval's lower end (a budget below the lower
    end is missed beyond noise)."""
    interval = m.timing.get(f"{percentile}_ci95_ms") if m.timing else None
    point = m.latency_p50_ms if percentile == "p50" else m.latency_p90_ms
    blocks = m.extra.get(f"block_{percentile}_ms")
    if interval:
        low, high = float(interval[0]), float(interval[1])
    elif blocks:
        low, high = float(min(blocks)), float(max(blocks))
    else:
        low = high = point
    out: dict[str, Any] = {"latency_ms": max(high, point), "latency_point_ms": point, "latency_low_ms": min(low, point),
                           "model_size_mb": m.size_bytes / 1e6, "peak_memory_mb": m.peak_memory_mb}
    if m.timing.get("multimodal"):
        out["latency_modes_ms"] = [mode["center_ms"] for mode in m.timing["modes"]]
    return out


def _with_rounds(error: BudgetInfeasibleError, rounds: list[RoundReport], proven: bool) -> BudgetInfeasibleError:
    """`error` carrying the rounds that led to it (`rounds`, as dicts) and whether measurements prove it (`proven`;
    False for a verdict on predictions, or one within the measurements' noise)."""
    error.rounds = [r.to_dict() for r in rounds]
    error.proven = proven
    return error


def _no_faster_with_more_threads(anchored: dict[tuple[str, str, int], float]) -> dict[tuple[str, str, int], str]:
    """The (target, scheme, threads) whose unpruned model measured no faster than with fewer threads, and why: more
    cores for nothing (threads contending on a small host, or spilling onto a phone's little cores), so their plans
    are left out; a pruned model has less work to share between threads, not more."""
    out = {}
    for (target, scheme, threads), ms in anchored.items():
        fewer = [v for (t, sc, n), v in anchored.items() if (t, sc) == (target, scheme) and n < threads]
        if fewer and ms >= min(fewer):
            out[(target, scheme, threads)] = (f"{target}/{scheme} at {threads} threads: the unpruned model measured "
                                              f"{ms:.4g} ms, no faster than {min(fewer):.4g} ms with fewer threads")
    return out


def _met(limits: Limits, got: dict[str, Any], headroom: float = 0.0) -> bool:
    """Whether measured figures meet the budgets; the latency with `headroom` to spare (the build measures again,
    and a plan accepted at 99% of its budget would then miss it half the time)."""
    for name in ("latency_ms", "model_size_mb", "peak_memory_mb"):
        limit, value = getattr(limits, name), got.get(name)
        if name == "latency_ms" and limit is not None:
            limit *= 1.0 - headroom
        if limit is not None and value is not None and value > limit:
            return False
    return True


def _fmt(got: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in got.items() if isinstance(v, (int, float)))


def _costs_text(c: Costs) -> str:
    return (f"{c.latency_ms:.4g} ms, {c.model_size_mb:.4g} MB, {c.peak_memory_mb:.4g} MB peak, "
            f"{c.energy_mj:.4g} mJ (predicted)")


def _predict_classes(model: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(as_tensor(x[i : i + batch_size])).argmax(1).numpy()
                               for i in range(0, len(x), batch_size)])
