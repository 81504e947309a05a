"""Budget-driven planning, end to end: find the most accurate plan that meets a device's budgets (or the fastest
one within an accuracy drop), for every device of a fleet.

A candidate is a keep ratio per stage, the importance criterion that picks the channels kept, a (target, scheme) and
the thread count. Every accuracy the planner chooses by is on the data's validation split; the test split is left
for the build's report. Fidelity tiers, cheapest first:

1. cost: every candidate the search visits is pruned (no recalibration) and its kernels traced once; the cost
   model predicts each (target, scheme, threads) from that trace, corrected by what was measured on the device so
   far (`Correction`, one per (target, scheme, threads), each anchored on the unpruned model);
2. proxy accuracy: a per-bucket sensitivity analysis per importance criterion (each stage pruned alone, BatchNorm
   recalibrated, scored on a validation subset), run on the evaluator's executor and shared by every device;
3. real accuracy: the best few candidates, and the densest uniform plan (one keep ratio everywhere) that fits,
   are pruned, fine-tuned briefly (`rank_epochs`) and scored on the validation split; the most accurate is then
   fine-tuned in full (`finetune_epochs`, the same recovery `edgeprune apply` replays). Fine-tuned models are
   cached by (keep ratios, criterion), so devices, schemes and thread counts share them;
4. measurement: the chosen plan is exported and measured on the device's runner (`DeviceSearch`), and the loop
   closes there. An accepted plan that keeps under half the dense MACs is also fine-tuned pruned iteratively
   (`iterative_steps`; same widths, so the same costs), and the schedule that scores higher is kept.

The planner prunes, trains and measures nothing itself: an evaluator (`collaborators.Evaluator`) and a measurer
(`collaborators.MeasureFn`) are handed in. What they compute is written to a `Journal` when one is given, and read
back from it on `--resume`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import torch

from edgeprune._progress import Steps
from edgeprune.cost.features import lower, trace
from edgeprune.cost.model import predict_features
from edgeprune.criteria import structure_criterion
from edgeprune.planner.collaborators import Evaluator, MeasureFn
from edgeprune.planner.journal import Journal
from edgeprune.planner.results import DevicePlan, Tuned
from edgeprune.planner.sensitivity import Sensitivity, analyse
from edgeprune.planner.settings import PlanSettings
from edgeprune.planner.space import Candidate, SearchSpace, make_buckets, structure_buckets, thread_options
from edgeprune.profiles import DeviceProfile
from edgeprune.types import Measurement, Plan

PruneKey = tuple[tuple[float, ...], str]
"""(keep ratios, importance criterion): what decides a pruned model's weights."""

ITERATIVE_BELOW_MACS = 0.5
"""A chosen plan keeping less than this share of the dense MACs is also tried with an iterative pruning schedule."""


def distinct_for_structure(importances: Sequence[str]) -> tuple[str, ...]:
    """`importances` with each criterion dropped that ranks a transformer's heads and neurons as an earlier one
    does (`criteria.structure_criterion`)."""
    kept: dict[str, str] = {}
    for importance in importances:
        kept.setdefault(structure_criterion(importance), importance)
    return tuple(kept.values())


class Planner:
    """Plans for one model and data set; shared by every device of a fleet (sensitivity, traces and fine-tuned
    models are computed once)."""

    def __init__(self, evaluator: Evaluator, settings: PlanSettings, steps: Steps | None = None,
                 journal: Journal | None = None):
        settings.check()
        self.evaluator = evaluator
        self.settings = settings
        self.steps = steps or Steps(enabled=False)
        self.journal = journal
        self.example = evaluator.example
        # a transformer encoder is searched by its heads, MLP neurons and blocks; any other model by channel stages
        structure = structure_buckets(evaluator.encoder_structure())
        self.buckets = structure or make_buckets(evaluator.channel_groups())
        self.importances = distinct_for_structure(settings.importances) if structure else settings.importances
        """The criteria searched: on an encoder, one of each that ranks heads and neurons alike (l2 and fpgm, say),
        so the sensitivity analysis and the candidates are not computed twice."""
        self.dense_accuracy = evaluator.dense_accuracy
        self._nodes: dict[tuple[float, ...], list] = {}
        self._tuned: dict[PruneKey, Tuned] = {}
        self._ranked: dict[PruneKey, Tuned] = {}  # briefly fine-tuned (rank_epochs < finetune_epochs)
        self._schedules_tried: set[PruneKey] = set()
        self._sensitivity: dict[str, Sensitivity] = {}
        self._timing_models: dict[tuple[float, ...], torch.nn.Module] = {}

    def plan_device(self, profile: DeviceProfile, targets: Sequence[str], measure: MeasureFn | None,
                    where: str, fleet: Sequence[DeviceProfile] = ()) -> DevicePlan:
        """Search, fine-tune the best candidates and close the loop on the device; raises BudgetInfeasibleError
        (exit 3) saying which budget binds when no plan meets the budgets. `fleet`: every device the run plans for
        (this one may be among them); at equal accuracy within noise, the plan that fits the most of them by
        prediction is chosen, so that later devices can take its fine-tuned model instead of fine-tuning their own."""
        from edgeprune.planner.device_search import DeviceSearch  # it builds on this class

        others = tuple(p for p in fleet if p.name != profile.name)
        return DeviceSearch(self, profile, targets, measure, where, others).run()

    # ------------------------------------------------------------------------------------------ the space
    def space(self, targets: Sequence[str], schemes: Sequence[str], profile: DeviceProfile) -> SearchSpace:
        s = self.settings
        threads = (s.threads,) if s.threads is not None else thread_options(profile.default_threads)
        return SearchSpace(self.buckets, tuple(schemes), tuple(targets), self.importances, threads, seed=s.seed)

    @staticmethod
    def plan_of(space: SearchSpace, keep: tuple[float, ...], importance: str) -> Plan:
        return space.to_plan(Candidate(keep, space.schemes[0], space.targets[0], importance))

    # ------------------------------------------------------------------------------------------ tier 1: cost
    def predicted(self, profile: DeviceProfile, space: SearchSpace, cand: Candidate):
        """The cost model's prediction for `cand` on `profile` (the pruned shapes traced once per keep tuple)."""
        nodes = self._nodes.get(cand.keep)
        if nodes is None:
            model = self.evaluator.architecture(self.plan_of(space, cand.keep, space.importances[0]))
            nodes = self._nodes[cand.keep] = trace(model, self.example)
        features = lower(nodes, tuple(self.example.shape), cand.target, cand.scheme)
        return predict_features(profile, features, cand.threads)

    def timing_model(self, space: SearchSpace, keep: tuple[float, ...]) -> torch.nn.Module:
        """The pruned architecture for `keep` with untrained weights, kept so that its exports are shared across
        schemes and thread counts (latency does not depend on the weights)."""
        if keep not in self._timing_models:
            self._timing_models[keep] = self.evaluator.architecture(self.plan_of(space, keep, space.importances[0]))
        return self._timing_models[keep]

    # ------------------------------------------------------------------------------------------ tier 2: proxy
    def sensitivity(self, space: SearchSpace, importance: str) -> Sensitivity:
        """The per-stage sensitivity with channels ranked by `importance` (computed once per criterion; each score
        journalled as it comes back from the executor)."""
        if importance not in self._sensitivity:
            samples = self.evaluator.sensitivity_samples

            def score_all(keeps: list[tuple[float, ...]]) -> list[float]:
                keys = [("sensitivity", [importance, list(k), samples]) for k in keeps]
                scores = [self.journal.get(*key) if self.journal else None for key in keys]
                missing = [i for i, v in enumerate(scores) if v is None]
                label = (f"Sensitivity of {len(self.buckets)} stages ({importance} importance) on {samples} samples"
                         + (f", {len(keeps) - len(missing)} of {len(keeps)} from the journal" if
                            len(missing) < len(keeps) else ""))
                with self.steps.step(label, total=len(keeps)) as update:
                    chunk = max(1, self.evaluator.workers) if missing else 1
                    for at in range(0, len(missing), chunk):  # a chunk per round of workers: lose at most one
                        part = missing[at : at + chunk]
                        plans = [self.plan_of(space, keeps[i], importance) for i in part]
                        for i, score in zip(part, self.evaluator.sensitivity_scores(plans)):
                            scores[i] = score
                            if self.journal:
                                self.journal.put(*keys[i], score)
                        update(len(keeps) - len(missing) + at + len(part), len(keeps))
                return [float(s) for s in scores]

            self._sensitivity[importance] = analyse(space, score_all)
        return self._sensitivity[importance]

    # ------------------------------------------------------------------------------------------ tier 3: accuracy
    def tuned(self, space: SearchSpace, key: PruneKey, brief: bool = False) -> Tuned:
        """The candidate with prune key `key` pruned, BatchNorm re-estimated, fine-tuned (`rank_epochs` when
        `brief`, else `finetune_epochs`) and evaluated; cached by that key, and journalled."""
        epochs, cache = self.fine_tune_cache(brief)
        if key not in cache:
            plan = self.plan_of(space, *key)
            recorded = self._journalled(plan, key, epochs)
            cache[key] = recorded or self._record(plan, key, epochs, self.evaluator.tune(plan, epochs))
        return cache[key]

    def tune_all(self, space: SearchSpace, keys: Sequence[PruneKey], brief: bool = False) -> None:
        """`tuned` of every key, the ones not cached or journalled run on the evaluator's workers side by side (in
        rounds of one per worker, each journalled as it comes back); nothing to do on a single worker."""
        workers = self.evaluator.workers
        epochs, cache = self.fine_tune_cache(brief)
        todo = []
        for key in dict.fromkeys(keys):
            plan = self.plan_of(space, *key)
            if key in cache or not plan.prunes:
                continue
            recorded = self._journalled(plan, key, epochs)
            if recorded is not None:
                cache[key] = recorded
            else:
                todo.append((key, plan))
        if workers < 2 or len(todo) < 2:
            return  # one at a time, as `tuned` does
        with self.steps.step(f"Fine-tuning {len(todo)} candidates briefly ({epochs} epochs) on {workers} workers",
                             total=len(todo)) as update:
            for at in range(0, len(todo), workers):
                part = todo[at : at + workers]
                for (key, plan), tuned in zip(part, self.evaluator.tune_many([p for _, p in part], epochs)):
                    cache[key] = self._record(plan, key, epochs, tuned)
                update(at + len(part), len(todo))

    def _journalled(self, plan: Plan, key: PruneKey, epochs: int) -> Tuned | None:
        """The fine-tune of `key` read back from the journal (the unpruned model is never journalled)."""
        if self.journal is None or not plan.prunes:
            return None
        record = self.journal.get_weights("tuned", [list(key[0]), key[1], epochs])
        return None if record is None else self.evaluator.tuned_from_record(plan, *record)

    def _record(self, plan: Plan, key: PruneKey, epochs: int, tuned: Tuned) -> Tuned:
        """`tuned`, written to the journal first when there is one (and it pruned something)."""
        if self.journal is not None and plan.prunes:
            self.journal.put_weights("tuned", [list(key[0]), key[1], epochs], *self.evaluator.tuned_record(tuned))
        return tuned

    def fine_tune_cache(self, brief: bool) -> tuple[int, dict[PruneKey, Tuned]]:
        """(epochs, cache) of a brief or a full fine-tune; one cache when ranking already uses every epoch."""
        full = self.settings.finetune_epochs
        epochs = min(self.settings.rank_epochs, full) if brief else full
        return epochs, (self._tuned if epochs == full else self._ranked)

    def final(self, space: SearchSpace, cand: Candidate) -> tuple[Tuned, float]:
        """The chosen candidate fine-tuned in full, and the seconds that took (0 when cached)."""
        if cand.prune_key in self._tuned:
            return self._tuned[cand.prune_key], 0.0
        start = time.perf_counter()
        with self.steps.step(f"Fine-tuning the chosen plan {cand.label()} ({self.settings.finetune_epochs} epochs)"):
            tuned = self.tuned(space, cand.prune_key)
        return tuned, time.perf_counter() - start

    def best_schedule(self, space: SearchSpace, cand: Candidate) -> tuple[Tuned, float]:
        """The accepted candidate's final fine-tune with the better of the one-shot and the iterative schedule
        (`_scheduled`; the widths, and so the costs, are the same), and the seconds the comparison took."""
        key = cand.prune_key
        if key in self._schedules_tried:
            return self._tuned[key], 0.0
        start = time.perf_counter()
        one_shot, _ = self.final(space, cand)
        self._schedules_tried.add(key)
        self._tuned[key] = self._scheduled(space, key, one_shot)
        return self._tuned[key], time.perf_counter() - start

    def _scheduled(self, space: SearchSpace, key: PruneKey, one_shot: Tuned) -> Tuned:
        """`one_shot`, or the same plan pruned in `iterative_steps` steps when that scores higher on validation;
        tried only where the plan removes over half the MACs (below that, one-shot loses little). Journalled."""
        steps, summary = self.settings.iterative_steps, one_shot.summary
        plan = dataclasses.replace(self.plan_of(space, *key), prune_steps=steps)
        epochs = self.settings.finetune_epochs
        if (steps < 2 or epochs == 0 or not plan.layer_keep_ratios or not summary.macs_before
                or summary.prune_steps != 1 or summary.macs_after > ITERATIVE_BELOW_MACS * summary.macs_before):
            return one_shot  # (without fine-tunes between steps there is nothing to gain; a transformer's heads,
            # neurons and blocks go in one step)
        journal_key = [list(key[0]), key[1], epochs, "prune_steps", steps]
        record = self.journal.get_weights("tuned", journal_key) if self.journal else None
        if record is not None:
            stepped = self.evaluator.tuned_from_record(plan, *record)
        else:
            kept = summary.macs_after / summary.macs_before
            with self.steps.step(f"Fine-tuning it pruned in {steps} steps instead (it keeps {kept:.0%} of the MACs)"):
                stepped = self.evaluator.tune(plan, epochs)
            if self.journal is not None:
                self.journal.put_weights("tuned", journal_key, *self.evaluator.tuned_record(stepped))
        if stepped.summary.prune_steps == 1:  # pruned chain by chain: iterative pruning does not apply
            return one_shot
        scores = {"one-shot": one_shot.accuracy, f"iterative-{steps}": stepped.accuracy}
        better = stepped if stepped.accuracy > one_shot.accuracy else one_shot
        return dataclasses.replace(better, schedules=scores)

    def fully_tuned(self, key: PruneKey) -> Tuned | None:
        return self._tuned.get(key)

    def fully_tuned_items(self) -> list[tuple[PruneKey, Tuned]]:
        """Every pruned model fine-tuned in full so far in this run (any device), with its key."""
        return list(self._tuned.items())

    # ------------------------------------------------------------------------------------------ tier 4: measured
    def measured(self, measure: MeasureFn, plan: Plan, model: torch.nn.Module, what: str, where: str) -> Measurement:
        """`measure(plan, model)`, journalled by (plan, which model, where): a resumed search does not measure the
        same plan again. `what` names the model ('dense', 'timing' or the fine-tune's epochs)."""
        key = [plan.to_dict(), what, where]
        if self.journal:
            recorded = self.journal.get("measured", key)
            if recorded is not None:
                return Measurement.from_dict(recorded)
        measurement = measure(plan, model)
        if self.journal:
            self.journal.put("measured", key, measurement.to_dict())
        return measurement
