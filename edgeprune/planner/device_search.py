"""One device's search: the closed loop between the cost model's predictions and the device's measurements.

The chosen plan is exported and measured on the device's runner at its thread count (when one can measure it), in
blocks; the upper end of its latency's 95% interval must meet the budget with a little headroom. A miss is fed back
into the correction and the plan re-chosen, `max_rounds` times. A round measures the pruned architecture (latency,
size and memory do not depend on the weights), so only the plan finally returned is fine-tuned in full. A thread
count whose unpruned model measured no faster than with fewer threads is left out of the search, and so is a scheme
no faster than a more faithful one whose unpruned model already meets the size and memory budgets. At equal accuracy
the fewest threads win (cores left to the app).

Infeasible only when shown: where measurements count, "no plan meets the budget" (exit 3) comes only after the most
aggressive plan of the space (the smallest uniform keep ratio) was measured at every target, scheme and thread
count and none fit; if one fits, the search goes on, and a plan measured within its budget but inside the headroom
is returned, flagged in its round. Where nothing measured counts (a phone planned on a laptop), the verdict says it
is predicted. `BudgetInfeasibleError.rounds` carries the rounds, `.proven` whether measurements beyond noise back it.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Sequence

from edgeprune.errors import BudgetInfeasibleError, ConfigError
from edgeprune.limits import Costs, Limits, measured_on_device
from edgeprune.planner.collaborators import MeasureFn
from edgeprune.planner.correction import Correction
from edgeprune.planner.guards import binding_guard, meets_guards
from edgeprune.planner.pareto import pareto_front
from edgeprune.planner.planner import Planner, PruneKey
from edgeprune.planner.results import DevicePlan, RoundReport, Tuned, candidate_dict, costs_dict
from edgeprune.planner.search import Visit, greedy, is_uniform, optuna_search, uniform
from edgeprune.planner.settings import SCHEME_PREFERENCE
from edgeprune.planner.sharing import fleet_wide_choice, reusable_within_noise
from edgeprune.planner.space import Candidate, thread_options
from edgeprune.planner.verdicts import measured_infeasible, predicted_infeasible, with_rounds
from edgeprune.profiles import DeviceProfile
from edgeprune.types import Measurement

EXTRA_ROUNDS = 2
"""Rounds added when the rounds ran out but a measured plan of the space fits the budget (the correction then knows
the space's fastest plans, so a re-plan lands closer)."""

Accepted = tuple[Candidate, Costs, "Measurement | None"]
"""A plan that met the budgets: the candidate, its predicted costs and its measurement (None: not measured)."""


class DeviceSearch:
    """The search for one device: the correction learnt from its measurements, the plans measured, the rounds."""

    def __init__(self, planner: Planner, profile: DeviceProfile, targets: Sequence[str], measure: MeasureFn | None,
                 where: str, fleet: Sequence[DeviceProfile] = ()):
        self.planner, self.settings = planner, planner.settings
        self.profile, self.measure_fn, self.where = profile, measure, where
        self.space = planner.space(targets, self.settings.schemes, profile)
        self.limits = Limits.of(profile)
        self.correction = Correction()
        self.percentile = profile.budget.latency_percentile
        self.counts = measure is not None and measured_on_device(profile, where)
        """Whether what is measured here counts for this device (otherwise plans are judged on predictions)."""
        self.known: dict[Candidate, Costs] = {}  # predicted costs under the current correction
        self.measured: dict[Candidate, dict[str, Any]] = {}  # every plan measured on the device, and what it measured
        self.rounds: list[RoundReport] = []
        self.finetuned: list[dict[str, Any]] = []
        self.anchored: dict[tuple[str, str, int], float] = {}  # (target, scheme, threads): the unpruned model's ms
        self.dropped: dict[tuple[str, str, int], str] = {}
        self.fleet = tuple(fleet)
        """The run's other devices: a plan that also fits theirs can serve them without a fine-tune of their own."""
        self.inherited = {key for key, _ in planner.fully_tuned_items()}
        """Pruned models fine-tuned in full before this search (for other devices or budgets of the run)."""
        self.start = time.perf_counter()

    # ------------------------------------------------------------------------------------------ costs and measuring
    def costs(self, c: Candidate) -> Costs:
        if c not in self.known:
            p = self.planner.predicted(self.profile, self.space, c)
            key = (c.target, c.scheme, c.threads)
            latency = self.correction.apply(key, "latency", p.latency_p50_ms)
            self.known[c] = Costs(
                latency_ms=latency,
                model_size_mb=self.correction.apply(key, "size", p.model_size_mb),
                peak_memory_mb=self.correction.apply(key, "memory", p.peak_memory_mb),
                energy_mj=p.energy_mj * latency / max(p.latency_p50_ms, 1e-9),
            )
        return self.known[c]

    def proxy(self, c: Candidate) -> float:
        return self.planner.sensitivity(self.space, c.importance).proxy_accuracy(c.keep)

    def measure(self, c: Candidate, model, what: str, label: str) -> tuple[dict[str, Any], Measurement]:
        """Measure `c` (exported from `model`) on the device and learn from it: the figures it is judged by, and the
        measurement."""
        assert self.measure_fn is not None
        with self.planner.steps.step(label):
            m = self.planner.measured(self.measure_fn, self.space.to_plan(c), model, what, self.where)
        return self.learn(c, m), m

    def learn(self, c: Candidate, m: Measurement) -> dict[str, Any]:
        self.known.clear()
        p = self.planner.predicted(self.profile, self.space, c)
        pair = (c.target, c.scheme, c.threads)
        got = measured_figures(m, self.percentile)
        self.correction.add(pair, "latency", p.latency_p50_ms, got["latency_ms"])
        self.correction.add(pair, "size", p.model_size_mb, m.size_bytes / 1e6)
        if m.peak_memory_mb is not None:
            self.correction.add(pair, "memory", p.peak_memory_mb, m.peak_memory_mb)
        self.measured[c] = got
        return got

    def anchor(self, target: str, scheme: str, threads: int) -> dict[str, Any]:
        dense = self.space.dense(scheme, target, threads=threads)
        got, _ = self.measure(dense, self.planner.evaluator.dense, "dense",
                           f"Measuring the unpruned model ({target}, {scheme}, {threads} threads) on {self.where}")
        self.anchored[(target, scheme, threads)] = got["latency_ms"]
        return got

    def _dense_fits_size_and_memory(self, target: str, scheme: str, threads: int) -> bool:
        """Whether the unpruned model, measured at (target, scheme, threads), meets the size and memory budgets."""
        got = self.measured.get(self.space.dense(scheme, target, threads=threads), {})
        return self.limits.met_measured({k: v for k, v in got.items() if k in ("model_size_mb", "peak_memory_mb")})

    def round(self, no: int, c: Candidate, predicted: dict[str, float], got: dict, met: bool, action: str) -> None:
        self.rounds.append(RoundReport(no, c.label(), predicted, got, met, action))

    def allowed(self, v: Visit) -> bool:
        return (v.candidate.target, v.candidate.scheme, v.candidate.threads) not in self.dropped

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> DevicePlan:
        s, space, limits = self.settings, self.space, self.limits
        unpruned = self._unpruned_fits()
        if unpruned is not None:
            return unpruned
        if self.counts:  # anchor the cost model on this device: the unpruned model, once per (target, scheme, threads)
            for target in space.targets:
                for scheme in space.schemes:
                    for threads in space.threads:
                        if (target, scheme, threads) not in self.anchored:
                            self.anchor(target, scheme, threads)
        self.dropped = no_faster_with_more_threads(self.anchored)
        self.dropped |= no_faster_than_a_more_faithful_scheme(self.anchored, self._dense_fits_size_and_memory)
        sens = {importance: self.planner.sensitivity(space, importance) for importance in space.importances}

        accepted: Accepted | None = None
        near: Accepted | None = None  # within budget, but inside the headroom
        probed: set[Candidate] = set()
        final_s = 0.0
        proved = False
        last_round = s.max_rounds
        round_no = 0
        visits: list[Visit] = []
        usable: list[Visit] = []
        while round_no < last_round:
            round_no += 1
            visits = self._search()
            usable = [v for v in visits if self.allowed(v)] or visits
            feasible = self._feasible(visits)
            if not feasible:
                if accepted is not None:
                    break
                if not self.counts:
                    raise predicted_infeasible(self.profile, space, visits, self.costs, limits, self.where,
                                               self.rounds, s)
                fresh = [v for v in usable if v.candidate not in probed and v.candidate not in self.measured]
                if not fresh or round_no == last_round:
                    if not proved and near is None:
                        proved = True  # before any verdict, measure the most aggressive plans
                        if self._prove(round_no):
                            last_round = round_no + EXTRA_ROUNDS  # a plan of the space fits: search on
                            continue
                    break
                self._probe(fresh, probed, round_no)
                continue
            cand, seconds = self._choose(feasible)
            final_s += seconds
            predicted = self.costs(cand)
            if accepted is not None and cand == accepted[0]:
                break  # the re-plan came back to the plan already measured within budget
            if not self.counts:
                accepted = (cand, predicted, None)
                self.round(round_no, cand, costs_dict(predicted), {}, False,
                           f"not measured: measurements on {self.where} do not count for {self.profile.name}")
                break
            # latency, size and memory depend on the architecture, not the weights: the round measures the pruned
            # architecture, and only the plan finally accepted is fine-tuned in full (`_result`)
            got, measurement = self.measure(cand, self.planner.timing_model(space, cand.keep), "timing",
                                            f"Round {round_no}: measuring {cand.label()} on {self.where}")
            met = limits.met_measured(got, headroom=s.margin / 2)
            denser = met and s.objective == "accuracy" and self._loose(got)
            if met:
                accepted = (cand, predicted, measurement)
            elif limits.met_measured(got) and (near is None or self._accuracy(cand) > self._accuracy(near[0])):
                near = (cand, predicted, measurement)
            action = ("met with room to spare: re-planning for a denser plan" if denser and round_no < last_round
                      else "accepted" if met else
                      f"within budget but inside the {s.margin / 2:.1%} headroom: kept as a fallback, re-planning"
                      if limits.met_measured(got) else "budget missed: fed back into the correction, re-planning")
            self.round(round_no, cand, costs_dict(predicted), got, met, action)
            if met and not denser:
                break
            if round_no == last_round and accepted is None and near is None and not proved:
                proved = True  # before any verdict, measure the most aggressive plans: they bound what is reachable
                if self._prove(round_no):
                    last_round = round_no + EXTRA_ROUNDS  # a plan of the space fits: search on with what was learnt
        if accepted is None and near is None and self.counts:
            if not proved:
                self._prove(round_no)
            near = self._fallback()
        if accepted is None and near is not None:
            accepted = near
            got = self.measured.get(near[0], {})
            flag = ("returned: it measured within the budget, though no re-plan met it before the rounds ran out"
                    if limits.met_measured(got, headroom=s.margin / 2) else
                    f"returned although inside the {s.margin / 2:.1%} headroom: it measured within the budget, and no "
                    "plan met it with room to spare" if limits.met_measured(got) else
                    f"returned within noise: its p50 {got.get('latency_point_ms', 0):.4g} ms is under the budget, but "
                    f"the 95% interval reaches {got.get('latency_ms', 0):.4g} ms"
                    + (f" (the timings have modes at {', '.join(f'{v:.4g}' for v in got['latency_modes_ms'])} ms)"
                       if got.get("latency_modes_ms") else "")
                    + "; no plan met it beyond noise, so the budget verdict is within noise")
            self.round(round_no, near[0], costs_dict(near[1]), got, True, flag)
        if accepted is None:
            raise measured_infeasible(self.profile, space, self.measured, limits, self.where, self.rounds, s)
        return self._result(accepted, usable, len(visits), final_s, sens)

    def _result(self, accepted: Accepted, usable: list[Visit], visited: int, final_s: float, sens) -> DevicePlan:
        cand, predicted, measurement = accepted
        tuned, seconds = self.planner.best_schedule(self.space, cand)  # full fine-tune, one-shot or iterative
        final_s += seconds
        score = self.planner.evaluator.score
        drop = score.drop_scale * (self.planner.dense_accuracy - tuned.accuracy)
        max_drop = score.max_drop(self.profile.budget)
        judged = self.planner.evaluator.labelled or not score.top1  # top-1 of unlabelled data is agreement
        if max_drop is not None and drop > max_drop + 1e-9 and judged:
            raise with_rounds(BudgetInfeasibleError(
                f"device '{self.profile.name}': the {score.name} budget binds: at {predicted.latency_ms:.4g} ms "
                f"({cand.label()}) the best {score.name} drop on the validation split is {_amount(drop, score)} > "
                f"{max_drop:g} allowed; loosen the latency/size budgets or allow a larger {score.name} drop"
            ), self.rounds, proven=False)
        guard = binding_guard(self.planner.evaluator, self.profile.budget, tuned)
        if guard is not None:
            raise with_rounds(BudgetInfeasibleError(
                f"device '{self.profile.name}': at {predicted.latency_ms:.4g} ms ({cand.label()}) {guard}"
            ), self.rounds, proven=False)
        return DevicePlan(self.profile.name, cand, self.space, tuned, predicted, self.rounds, self._front(usable),
                          visited, self.finetuned, time.perf_counter() - self.start, measurement, final_s, sens,
                          sorted(self.dropped.values()))

    def _guarded(self, tuned: Tuned) -> bool:
        return meets_guards(self.planner.evaluator, self.profile.budget, tuned)

    def _unpruned_fits(self) -> DevicePlan | None:
        """Objective 'accuracy': the unpruned model at the most faithful scheme, if it fits, is the answer."""
        s, space = self.settings, self.space
        if s.objective != "accuracy":
            return None
        scheme = min(space.schemes, key=SCHEME_PREFERENCE.index)
        for target in space.targets:
            for threads in space.threads:  # fewest threads first: cores left to the app
                dense = space.dense(scheme, target, threads=threads)
                got = self.anchor(target, scheme, threads) if self.counts else {}
                fits = (self.limits.met_measured(got, headroom=s.margin / 2) if self.counts
                        else self.limits.met(self.costs(dense), s.margin))
                if fits:
                    tuned = self.planner.tuned(space, dense.prune_key)
                    action = ("the unpruned model meets every budget: nothing to prune" if self.counts else
                              f"predicted to meet every budget (not measured: {self.where} is not {self.profile.name})")
                    self.round(1, dense, costs_dict(self.costs(dense)), got, self.counts, action)
                    return DevicePlan(self.profile.name, dense, space, tuned, self.costs(dense), self.rounds, [], 1,
                                      [], time.perf_counter() - self.start, None)
        return None

    def _feasible(self, visits: list[Visit]) -> list[Visit]:
        """The visits predicted to meet every budget; a feasible plan at another thread count is a plan too (a
        search visits only some thread counts)."""
        s, limits = self.settings, self.limits
        feasible = [v for v in visits if limits.met(self.costs(v.candidate), s.margin)]
        feasible += [replace(v, candidate=c, costs=self.costs(c)) for v in list(feasible) for n in self.space.threads
                     if (c := replace(v.candidate, threads=n)) != v.candidate and limits.met(self.costs(c), s.margin)]
        return [v for v in feasible if self.allowed(v)]

    def _probe(self, fresh: list[Visit], probed: set[Candidate], round_no: int) -> None:
        """Predicted out of reach: measure the closest plan before believing it (the prediction may be off)."""
        margin = self.settings.margin
        probe = min(fresh, key=lambda v: (self.limits.excess(self.costs(v.candidate), margin), -v.proxy_accuracy))
        probed.add(probe.candidate)
        model = self.planner.timing_model(self.space, probe.candidate.keep)  # timing needs no trained weights
        got, _ = self.measure(probe.candidate, model, "timing",
                           f"Round {round_no}: measuring the closest plan {probe.candidate.label()}")
        self.round(round_no, probe.candidate, costs_dict(probe.costs), got, self.limits.met_measured(got),
                   "predicted over budget: measured the closest plan, fed back into the correction, re-planning")

    # ------------------------------------------------------------------------------------------ infeasibility
    def _prove(self, round_no: int) -> bool:
        """Measure the most aggressive plan of the space (the smallest uniform keep ratio) at every target, scheme
        and thread count not measured yet; True when any measured plan then fits the budgets."""
        space = self.space
        floor = tuple(space.keep_grid[-1] for _ in space.buckets)
        for target in space.targets:
            for scheme in space.schemes:
                for threads in space.threads:
                    cand = Candidate(floor, scheme, target, space.importances[0], threads)
                    if cand in self.measured:
                        continue
                    got, _ = self.measure(cand, self.planner.timing_model(space, floor), "timing",
                                       f"Measuring the most aggressive plan {cand.label()} on {self.where}")
                    self.round(round_no, cand, {}, got, self.limits.met_measured(got),
                               "the most aggressive plan of the space, measured before any verdict")
        return any(self.limits.met_measured(got) for got in self.measured.values())

    def _fallback(self) -> Accepted | None:
        """The plan to return when the rounds ran out but some measured plan fits: of those plans, the densest (the
        least pruned). Failing that, a plan whose p50 estimate fits though its interval reaches over the budget
        (timings that swing): not proven over the budget, so not infeasible; it is returned with its verdict marked
        within noise."""
        fits = ([c for c, got in self.measured.items() if self.limits.met_measured(got)]
                or [c for c, got in self.measured.items() if self.limits.met_measured(at_point(got))])
        if not fits:
            return None
        cand = max(fits, key=lambda c: (sum(c.keep), -c.threads, -self.measured[c]["latency_ms"]))
        return cand, self.costs(cand), None

    # ------------------------------------------------------------------------------------------ tiers 1-3
    def _search(self) -> list[Visit]:
        """The strategy's visits, plus the uniform walk from every start (cheap: predictions only), so the densest
        uniform plan that fits is always a candidate."""
        s, space, limits = self.settings, self.space, self.limits
        visits: list[Visit] = []
        if s.strategy == "optuna":
            visits += optuna_search(space, self.costs, self.proxy, limits, s.margin, s.optuna_trials,
                                    s.time_budget_s, s.seed, storage=s.storage)
        else:
            deadline = None if s.time_budget_s is None else time.monotonic() + s.time_budget_s
            for start in space.starts():
                if deadline is not None and time.monotonic() > deadline and visits:
                    break
                visits += greedy(space, start, self.costs, self.proxy, limits, s.margin)
        for start in space.starts():
            visits += uniform(space, start, self.costs, self.proxy, limits, s.margin)
        return visits

    def _choose(self, feasible: list[Visit]) -> tuple[Candidate, float]:
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
            return (rank[c.scheme], c.threads if fewest_threads else 0, self.costs(c).latency_ms)

        best_per_arch: dict[tuple[tuple[float, ...], str], Visit] = {}
        for v in feasible:
            old = best_per_arch.get(v.candidate.prune_key)
            if old is None or preference(v.candidate) < preference(old.candidate):
                best_per_arch[v.candidate.prune_key] = v
        options = list(best_per_arch.values())
        if self.settings.objective == "latency":
            options.sort(key=lambda v: self.costs(v.candidate).latency_ms)
            return self._fastest_within(options, self.planner.evaluator.score.max_drop(self.profile.budget)), 0.0
        options.sort(key=lambda v: (-v.proxy_accuracy, rank[v.candidate.scheme], self.costs(v.candidate).latency_ms))
        shared = self._shared_in_fleet(options[0].proxy_accuracy, preference)
        if shared is not None:
            return shared, 0.0
        ranked = options[: self.settings.top_k]
        # the best uniform plan is always ranked too: a searched plan is chosen only if it beats it after fine-tuning
        ranked += [v for v in options if is_uniform(v.candidate)][:1]
        # in a fleet, the most promising plan that fits every other device too: one fine-tune could serve them all
        if self.fleet:
            ranked += next(([v] for v in options if self._fleet_fits(v.candidate) == len(self.fleet)), [])
        self.planner.tune_all(self.space, [v.candidate.prune_key for v in ranked], brief=True)  # side by side
        scored = []
        for v in dict.fromkeys(ranked):
            tuned = self._tune_logged(v)
            scored.append((tuned.accuracy, -rank[v.candidate.scheme], -self.costs(v.candidate).latency_ms, v, tuned))
        # the class guard first: a candidate that keeps every class within its budget beats a more accurate one
        best = max(scored, key=lambda t: (self._guarded(t[4]), *t[:3]))
        pruned = [t for t in scored if not unpruned(t[3].candidate)]
        if self.fleet and not unpruned(best[3].candidate):
            wide = fleet_wide_choice(best[4], [(t[4], t[3].candidate) for t in pruned if self._guarded(t[4])],
                                     self._fleet_fits)
            best = next(t for t in scored if t[3].candidate == wide) if wide is not None else best
        if not unpruned(best[3].candidate) or not pruned:
            if self.planner.fully_tuned(best[3].candidate.prune_key) is None:
                reused = self._reused_after_ranking(best[4], preference)
                if reused is not None:
                    return reused, 0.0
            return best[3].candidate, 0.0
        contender = max(pruned, key=lambda t: (self._guarded(t[4]), *t[:3]))
        tuned, seconds = self.planner.final(self.space, contender[3].candidate)
        entry = candidate_dict(contender[3].candidate, self.space) | {
            "accuracy": tuned.accuracy, "epochs": self.settings.finetune_epochs, "params": tuned.summary.params_after,
            "why": "the unpruned model led the brief ranking"}
        if entry not in self.finetuned:
            self.finetuned.append(entry)
        if (tuned.accuracy, *contender[1:3]) > best[:3]:
            return contender[3].candidate, seconds  # its final fine-tune, done early
        return best[3].candidate, 0.0  # the full fine-tune was part of the search

    def _fleet_fits(self, cand: Candidate) -> int:
        """How many of the run's other devices `cand`'s pruned model fits by prediction (at some scheme and thread
        count of theirs, on this search's targets), each device's budgets with the search margin to spare."""
        count = 0
        for other in self.fleet:
            limits = Limits.of(other)
            variants = (Candidate(cand.keep, scheme, target, cand.importance, threads)
                        for target in self.space.targets for scheme in self.space.schemes
                        for threads in thread_options(other.default_threads))
            if any(limits.met(_costs(self.planner.predicted(other, self.space, c)), self.settings.margin)
                   for c in variants):
                count += 1
        return count

    def _inherited(self, preference) -> list[tuple[PruneKey, Tuned, Candidate]]:
        """The pruned models fine-tuned in full before this search (for another device of the fleet, or another
        budget) that fit this device's budgets (predicted), each with its most preferred variant here."""
        out = []
        for (keep, importance), tuned in self.planner.fully_tuned_items():
            if ((keep, importance) not in self.inherited or importance not in self.space.importances
                    or len(keep) != len(self.space.buckets)):
                continue
            fits = [c for c in (Candidate(keep, scheme, target, importance, threads)
                                for target in self.space.targets for scheme in self.space.schemes
                                for threads in self.space.threads)
                    if (c.target, c.scheme, c.threads) not in self.dropped
                    and self.limits.met(self.costs(c), self.settings.margin)]
            if fits and self._guarded(tuned):
                out.append(((keep, importance), tuned, min(fits, key=preference)))
        return out

    def _shared_in_fleet(self, best_proxy: float, preference) -> Candidate | None:
        """Before any ranking: an inherited model (`_inherited`) whose proxy accuracy is within noise of the best
        candidate found here: one standard error of an accuracy over the sensitivity samples. Reusing it costs no
        fine-tune; a candidate a hair more accurate by the proxy would cost a ranking and a full fine-tune of its
        own. The most accurate such model (by its full fine-tune) is chosen, at its most preferred scheme and thread
        count."""
        n = max(1, self.planner.evaluator.sensitivity_samples)
        p = min(max(best_proxy, 0.0), 1.0)
        # a metric's proxy has no binomial noise model: its models are reused only when at least as good
        noise = math.sqrt(max(p * (1.0 - p), 1.0 / n) / n) if self.planner.evaluator.score.top1 else 0.0
        found = [(tuned.accuracy, cand) for _, tuned, cand in self._inherited(preference)
                 if self.proxy(cand) >= best_proxy - noise]
        if not found:
            return None
        accuracy, cand = max(found, key=lambda t: (t[0], -preference(t[1])[0]))
        self._note_reuse(cand, accuracy, f"its proxy accuracy is within {100 * noise:.2f} points (one standard "
                                         "error) of the best candidate here")
        return cand

    def _reused_after_ranking(self, best: Tuned, preference) -> Candidate | None:
        """After the ranking: an inherited model (`_inherited`) that the best candidate here does not beat beyond
        noise after the same brief fine-tune (`reusable_within_noise`); reusing it saves this device's full
        fine-tune."""
        _, briefs = self.planner.fine_tune_cache(brief=True)
        inherited = [(full, briefs.get(key), cand) for key, full, cand in self._inherited(preference)]
        found = reusable_within_noise(best, [(f, b, c) for f, b, c in inherited if b is not None])
        if found is None:
            return None
        cand, accuracy = found
        self._note_reuse(cand, accuracy, "after the same brief fine-tune, the best candidate here is not more "
                                         "accurate beyond noise (paired 95% interval on the validation split)")
        return cand

    def _note_reuse(self, cand: Candidate, accuracy: float, why: str) -> None:
        entry = candidate_dict(cand, self.space) | {
            "accuracy": accuracy, "epochs": self.settings.finetune_epochs,
            "why": f"fine-tuned earlier in this run (another device or budget); {why}, so no new fine-tune"}
        if entry not in self.finetuned:
            self.finetuned.append(entry)

    def _fastest_within(self, options: list[Visit], max_drop: float | None) -> Candidate:
        """Bisection over the candidates sorted by latency (accuracy falls roughly monotonically with latency):
        the fastest whose accuracy drop after a brief fine-tune is within `max_drop` (the full fine-tune of the
        chosen plan only gains accuracy back, so this errs on the safe side)."""
        score = self.planner.evaluator.score
        if max_drop is None:
            raise ConfigError("--minimize latency needs an accuracy budget: give "
                              + ("--max-accuracy-drop" if score.top1 else "--max-metric-drop"))
        lo, hi = 0, len(options) - 1  # find the smallest index that is within the drop
        found: Candidate | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            tuned = self._tune_logged(options[mid])
            if score.drop_scale * (self.planner.dense_accuracy - tuned.accuracy) <= max_drop and self._guarded(tuned):
                found = options[mid].candidate
                hi = mid - 1
            else:
                lo = mid + 1
        if found is None:  # the accuracy check after the full fine-tune reports the binding budget
            return options[-1].candidate
        return found

    def _accuracy(self, cand: Candidate) -> float:
        """The validation accuracy known for `cand`'s pruned model: its full fine-tune when done, else its brief one."""
        full = self.planner.fully_tuned(cand.prune_key)
        return (full or self.planner.tuned(self.space, cand.prune_key, brief=True)).accuracy

    def _tune_logged(self, v: Visit) -> Tuned:
        epochs, cache = self.planner.fine_tune_cache(brief=True)
        fresh = v.candidate.prune_key not in cache
        label = f"Fine-tuning {v.candidate.label()} briefly ({epochs} epochs)"
        with self.planner.steps.step(label) if fresh else nullcontext():
            tuned = self.planner.tuned(self.space, v.candidate.prune_key, brief=True)
        entry = candidate_dict(v.candidate, self.space) | {"proxy_accuracy": round(v.proxy_accuracy, 4),
                                                           "accuracy": tuned.accuracy, "epochs": epochs,
                                                           "params": tuned.summary.params_after}
        if entry not in self.finetuned:
            self.finetuned.append(entry)
        return tuned

    def _loose(self, got: dict[str, float | None]) -> bool:
        latency, limit = got.get("latency_ms"), self.limits.latency_ms
        return limit is not None and latency is not None and latency < limit * (1 - 3 * self.settings.margin)

    def _front(self, visits: list[Visit]) -> list[dict[str, Any]]:
        points = [(v.candidate, self.costs(v.candidate), self.proxy(v.candidate)) for v in visits]
        unique = list({c: (c, k, a) for c, k, a in points}.values())
        front = pareto_front(unique, accuracy=lambda p: p[2], latency_ms=lambda p: p[1].latency_ms)
        out = []
        for c, k, a in front:
            entry = candidate_dict(c, self.space) | {"proxy_accuracy": round(a, 4), "predicted": costs_dict(k)}
            tuned = self.planner.fully_tuned(c.prune_key)
            if tuned is not None:
                entry["accuracy"] = tuned.accuracy
            out.append(entry)
        return out


def _amount(drop: float, score) -> str:
    """A drop in its unit: '1.25 points' for top-1, '0.0132 miou' for a metric."""
    return f"{drop:.2f} {score.unit}" if score.top1 else f"{drop:.4g} {score.unit}"


def _costs(p) -> Costs:
    """A cost-model prediction as the costs budgets judge."""
    return Costs(latency_ms=p.latency_p50_ms, model_size_mb=p.model_size_mb, peak_memory_mb=p.peak_memory_mb,
                 energy_mj=p.energy_mj)


def unpruned(c: Candidate) -> bool:
    return all(k >= 1.0 for k in c.keep)


def measured_figures(m: Measurement, percentile: str) -> dict[str, Any]:
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


def at_point(figures: dict[str, Any]) -> dict[str, Any]:
    """Measured `figures` with the latency at its estimate instead of its interval's upper end."""
    if figures.get("latency_point_ms") is None:
        return figures
    return {**figures, "latency_ms": figures["latency_point_ms"]}


def no_faster_with_more_threads(anchored: dict[tuple[str, str, int], float]) -> dict[tuple[str, str, int], str]:
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


def no_faster_than_a_more_faithful_scheme(anchored: dict[tuple[str, str, int], float],
                                          fits_size_and_memory) -> dict[tuple[str, str, int], str]:
    """The (target, scheme, threads) whose unpruned model measured no faster than a more faithful scheme's at the same
    target and threads, where that scheme's unpruned model already meets the size and memory budgets
    (`fits_size_and_memory(target, scheme, threads)`): the rounding buys no speed there (int8 kernels without fast
    integer dot products, say) and costs accuracy, so its plans are left out. Where size or memory binds, a smaller
    scheme stays in the search whatever its speed."""
    out = {}
    for (target, scheme, threads), ms in anchored.items():
        faithful = [(sc, v) for (t, sc, n), v in anchored.items() if (t, n) == (target, threads)
                    and SCHEME_PREFERENCE.index(sc) < SCHEME_PREFERENCE.index(scheme)
                    and ms >= v and fits_size_and_memory(target, sc, threads)]
        if faithful:
            sc, v = min(faithful, key=lambda f: f[1])
            out[(target, scheme, threads)] = (f"{target}/{scheme} at {threads} threads: the unpruned model measured "
                                              f"{ms:.4g} ms, no faster than {sc} at {v:.4g} ms, which meets the size "
                                              "and memory budgets")
    return out
