"""A fleet shares its planner: one sensitivity analysis for every device, and one fine-tune per pruned model however
many devices choose it. Real evaluations (pruning, BatchNorm, fine-tunes), counted."""

from __future__ import annotations

import numpy as np
import torch

from edgeprune.data import load_data
from edgeprune.evaluator import CandidateEvaluator
from edgeprune.examples import digits
from edgeprune.planner import Candidate, Planner, PlanSettings
from edgeprune.planner.sharing import fleet_wide_choice, reusable_within_noise
from edgeprune.planner.results import Tuned
from edgeprune.profiles import load_profile
from edgeprune.stats import paired_difference_interval
from edgeprune.types import ModelSpec


class _Counting(CandidateEvaluator):
    """The real evaluator, counting the work it is asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scored: list[int] = []
        self.tuned: list[tuple] = []

    def sensitivity_scores(self, plans):
        self.scored.append(len(plans))
        return super().sensitivity_scores(plans)

    def tune(self, plan, epochs):
        self.tuned.append((tuple(sorted(plan.layer_keep_ratios.items())), plan.importance, epochs))
        return super().tune(plan, epochs)


def test_a_second_device_reuses_the_first_devices_sensitivity_and_fine_tunes(digits_model):
    spec = ModelSpec("examples:digits", "digits", digits_model, digits.INPUT_SHAPE, "none")
    settings = PlanSettings(schemes=("int8",), importances=("fpgm",), threads=1, rank_epochs=1, finetune_epochs=2,
                            executor="serial")
    evaluator = _Counting(spec, load_data("examples:digits", digits.INPUT_SHAPE), settings)
    planner = Planner(evaluator, settings)
    budget = {"model_size_mb": 0.12, "max_accuracy_drop_pct": 100.0}  # sharing, not accuracy, is tested here
    first_phone = load_profile("pixel-8").with_budget(**budget)
    first = planner.plan_device(first_phone, ("executorch",), None, "host")  # predicted: host is not the phone
    scored, tuned = sum(evaluator.scored), len(evaluator.tuned)
    assert scored == 1 + 3 * len(planner.buckets)  # the dense model, then each stage alone at three keep ratios
    assert tuned >= 2  # the candidates ranked briefly, and the chosen one in full

    # another phone with the same size budget: the size of a file does not depend on the phone, so the same plan
    second = planner.plan_device(load_profile("pixel-7a").with_budget(**budget), ("executorch",), None, "host")
    assert sum(evaluator.scored) == scored, "the second device ran a sensitivity analysis of its own"
    assert second.sensitivity["fpgm"] is first.sensitivity["fpgm"]
    assert second.candidate.prune_key == first.candidate.prune_key
    assert len(evaluator.tuned) == tuned, "a pruned model both devices chose was fine-tuned twice"
    assert second.tuned.model is first.tuned.model
    assert torch.equal(next(second.tuned.model.parameters()), next(first.tuned.model.parameters()))

    # a third phone with a slightly looser budget: its best candidate is a little denser, but no more accurate
    # beyond the proxy's noise, so the model fine-tuned for the first phone is taken without a new fine-tune
    third = planner.plan_device(load_profile("galaxy-a54").with_budget(**{**budget, "model_size_mb": 0.125}),
                                ("executorch",), None, "host")
    assert len(evaluator.tuned) == tuned, "a fleet device fine-tuned a model within noise of one it already had"
    assert third.candidate.prune_key == first.candidate.prune_key
    assert any("fine-tuned earlier in this run" in f.get("why", "") for f in third.finetuned)


def _tuned(accuracy: float, wrong: list[int], n: int = 2000) -> Tuned:
    ok = np.ones(n, dtype=bool)
    ok[wrong] = False
    return Tuned(None, accuracy, None, None, val_correct=ok)


def test_a_model_fine_tuned_for_another_device_is_reused_when_the_best_here_is_not_better_beyond_noise():
    """After the brief ranking: the best candidate here (2 of 2000 wrong) against models fine-tuned for earlier
    devices, each by its own brief fine-tune on the same validation samples."""
    best = _tuned(0.999, [0, 1])
    near = Candidate((0.5, 0.5), "fp32", "executorch")  # 4 wrong: within noise of the best
    far = Candidate((0.25, 0.25), "fp32", "executorch")  # 40 wrong: beaten beyond noise
    near_brief, far_brief = _tuned(0.998, [0, 1, 2, 3]), _tuned(0.98, list(range(40)))
    assert paired_difference_interval(best.val_correct, far_brief.val_correct)[1] > 0
    inherited = [(_tuned(0.985, []), far_brief, far), (_tuned(0.9985, []), near_brief, near)]
    assert reusable_within_noise(best, inherited) == (near, 0.9985)
    assert reusable_within_noise(best, inherited[:1]) is None
    # a metric-judged model has no per-sample outcomes: nothing is reused by this rule
    assert reusable_within_noise(Tuned(None, 0.9, None, None), inherited) is None


def test_a_fleet_prefers_the_plan_that_fits_the_most_devices_at_equal_accuracy_within_noise():
    best = _tuned(0.999, [0, 1])
    own = Candidate((0.75, 0.5), "fp32", "executorch")  # the most accurate, fits this device only
    shared = Candidate((0.5, 0.5), "fp32", "executorch")  # within noise of it, fits 4 other devices
    worse = Candidate((0.25, 0.25), "fp32", "executorch")  # fits all 4, but beaten beyond noise
    options = [(best, own), (_tuned(0.998, [0, 1, 2, 3]), shared), (_tuned(0.98, list(range(40))), worse)]
    fits = {own: 0, shared: 4, worse: 4}.get
    assert fleet_wide_choice(best, options, fits) == shared
    assert fleet_wide_choice(best, options, lambda c: 0) == own  # no device to share with: the most accurate
    assert fleet_wide_choice(Tuned(None, 0.9, None, None), options, fits) is None
