"""The class and robustness guards (`max_class_drop_pts`, `max_shift_drop_pts`): per-class top-1 and top-1 on shifted
inputs in the manifest, each drop judged with its paired interval; the planner keeps them within budget on the
validation split; the corruptions are fixed and seeded per data modality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import edgeprune
from edgeprune.errors import ConfigError
from edgeprune import shifts
from edgeprune.judge import assess_quality, assess_shift, judge
from edgeprune.stats import class_drops
from edgeprune.planner.guards import binding_guard, breaks_class_guard, meets_guards, shift_drop, worst_class
from edgeprune.planner.results import Tuned
from edgeprune.profiles import host_profile
from edgeprune.types import Measurement


def _logits(pred: np.ndarray, classes: int = 3) -> np.ndarray:
    out = np.zeros((len(pred), classes), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


def _measurement() -> Measurement:
    return Measurement(latency_p50_ms=1.0, latency_p90_ms=1.0, latency_mean_ms=1.0, runs=1, warmup_runs=0, threads=1,
                       size_bytes=1000, peak_memory_mb=1.0, memory_method="test", where="host", runner="host",
                       runtime_versions={}, outputs=np.empty(0))


def test_a_plan_that_passes_overall_accuracy_but_drops_one_class_fails_the_guard():
    labels = np.repeat([0, 1, 2], 40)
    dense = labels.copy()
    artifact = labels.copy()
    artifact[80:92] = 0  # class 2 loses 12 of its 40 samples: 30 points; overall 10 points
    q = assess_quality("fp32", _logits(artifact), _logits(artifact), _logits(dense), labels)
    by_class = {c.label: c for c in q.per_class}
    assert [c.samples for c in q.per_class] == [40, 40, 40]
    assert by_class[0].drop_pts == 0.0 and by_class[2].drop_pts == pytest.approx(30.0)
    assert q.worst_class.label == 2 and q.accuracy_drop_pct == pytest.approx(10.0)
    low, high = by_class[2].drop_ci95_pts
    assert low < 30.0 < high and low > 0  # 12 of 40 lost, none gained: the interval is above 0
    profile = host_profile().with_budget(latency_ms=10.0, max_accuracy_drop_pct=15.0, max_class_drop_pts=20.0)
    checks = {c.name: c for c in judge(profile, _measurement(), q).checks}
    assert checks["accuracy_drop"].status == "pass"
    assert checks["class_drop"].status == "fail" and checks["class_drop"].value == pytest.approx(30.0)
    assert "class 2 (40 test samples) 100.0% -> 70.0%" in checks["class_drop"].note
    # within noise when the worst class's interval reaches the limit
    near = {c.name: c for c in judge(host_profile().with_budget(max_class_drop_pts=28.0), _measurement(), q).checks}
    assert near["class_drop"].note.startswith("within noise")


def test_the_class_guard_without_class_labels_is_unverified_or_refused(tmp_path):
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    q = assess_quality("fp32", logits, logits, logits, None)
    assert q.per_class == ()
    checks = {c.name: c for c in judge(host_profile().with_budget(max_class_drop_pts=5.0), _measurement(), q).checks}
    assert checks["class_drop"].status == "unverified" and "needs class labels" in checks["class_drop"].note
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = np.random.default_rng(0).normal(size=(30, 1, 4, 4)).astype(np.float32)
    with pytest.raises(ConfigError, match=r"--max-class-drop needs labelled eval data"):
        edgeprune.build(model, x, out=tmp_path / "dist", targets=["onnx"], plan=edgeprune.FixedPlan(),
                        input_shape=(1, 1, 4, 4), max_class_drop_pts=5.0)
    assert not (tmp_path / "dist").exists()


class _Evaluator:
    dense_class_accuracy = {0: 1.0, 1: 0.9, 2: 0.8}
    dense_shift_accuracy = 0.9

    def class_drops(self, tuned):
        return None  # no per-sample figures: the guard judges the point drops


def test_the_planner_reads_the_worst_class_and_the_shift_drop_on_the_validation_split():
    evaluator, budget = _Evaluator(), host_profile().with_budget(max_class_drop_pts=10.0).budget
    even = Tuned(None, 0.85, None, None, {0: 0.95, 1: 0.85, 2: 0.75})
    skewed = Tuned(None, 0.88, None, None, {0: 1.0, 1: 0.9, 2: 0.6})
    assert worst_class(evaluator, even, 10.0) == (0, *[pytest.approx(5.0)] * 3)
    assert worst_class(evaluator, skewed, 10.0) == (2, *[pytest.approx(20.0)] * 3)
    assert meets_guards(evaluator, budget, even) and not meets_guards(evaluator, budget, skewed)
    assert "class 2 loses 20.00 points" in binding_guard(evaluator, budget, skewed)
    assert meets_guards(evaluator, budget, Tuned(None, 0.5, None, None, None))  # a metric: no per-class figures
    budget = host_profile().with_budget(max_shift_drop_pts=5.0).budget
    robust, brittle = (Tuned(None, 0.85, None, None, None, shift) for shift in (0.87, 0.8))
    assert shift_drop(evaluator, robust) == pytest.approx(3.0) and meets_guards(evaluator, budget, robust)
    assert shift_drop(evaluator, brittle) == pytest.approx(10.0) and not meets_guards(evaluator, budget, brittle)
    assert "shifted validation inputs drops 10.00 points > 5 allowed" in binding_guard(evaluator, budget, brittle)


class _PairedEvaluator(_Evaluator):
    """Per-sample outcomes on a validation split whose class 2 has only 5 samples (class 0 and 1: 40 each)."""

    labels = np.repeat([0, 1, 2], [40, 40, 5])
    dense_ok = np.ones(len(labels), dtype=bool)
    dense_class_accuracy = {0: 1.0, 1: 1.0, 2: 1.0}

    def class_drops(self, tuned):
        return class_drops(self.labels, self.dense_ok, tuned.val_correct)


def _losing(per_class: dict[int, int]) -> Tuned:
    """A candidate that gets `per_class[c]` of class c's validation samples wrong (the dense model gets all right)."""
    ok = np.ones(len(_PairedEvaluator.labels), dtype=bool)
    for c, lost in per_class.items():
        ok[np.flatnonzero(_PairedEvaluator.labels == c)[:lost]] = False
    per = {c: float(ok[_PairedEvaluator.labels == c].mean()) for c in (0, 1, 2)}
    return Tuned(None, float(ok.mean()), None, None, per, val_correct=ok)


def test_the_class_guard_turns_away_a_real_loss_not_one_sample_of_a_rare_class():
    evaluator, budget = _PairedEvaluator(), host_profile().with_budget(max_class_drop_pts=10.0).budget
    one_rare = _losing({2: 1})  # 1 of 5: 20 points over a 10-point guard, but its interval reaches below 0
    c, drop, low, high = worst_class(evaluator, one_rare, 10.0)
    assert (c, drop) == (2, pytest.approx(20.0)) and low < 0 < high
    assert meets_guards(evaluator, budget, one_rare)
    three_rare = _losing({2: 3})  # 3 of 5 lost and none gained: a loss beyond noise
    assert worst_class(evaluator, three_rare, 10.0)[2] > 0 and not meets_guards(evaluator, budget, three_rare)
    # a common class's real 15-point loss breaks the guard, and it is the one reported, not the rare class's noise
    common = _losing({0: 6, 2: 2})
    c, drop, low, _ = worst_class(evaluator, common, 10.0)
    assert (c, drop) == (0, pytest.approx(15.0)) and low > 0 and not meets_guards(evaluator, budget, common)
    assert breaks_class_guard((15.0, 4.0, 30.0), 10.0) and not breaks_class_guard((15.0, -1.0, 30.0), 10.0)
    assert not breaks_class_guard((8.0, 2.0, 20.0), 10.0)


# ------------------------------------------------------------------------------------------------ shifted inputs


@pytest.mark.parametrize("shape, names", [
    ((6, 3, 8, 8), ["noise", "contrast", "blur", "shift"]),
    ((6, 1, 40), ["noise", "contrast", "blur", "shift"]),
    ((6, 5), ["noise", "contrast"]),
])
def test_corruptions_are_deterministic_per_modality(shape, names):
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    first, second = shifts.corruptions(x), shifts.corruptions(x)
    assert list(first) == names
    for name in names:
        assert first[name].shape == x.shape and first[name].dtype == np.float32
        assert np.array_equal(first[name], second[name]) and not np.array_equal(first[name], x), name
    assert not np.array_equal(shifts.corruptions(x, seed=1)["noise"], first["noise"])
    stacked, order = shifts.shifted(x)
    assert order == names and stacked.shape == (len(names) * shape[0], *shape[1:])


def test_shift_and_blur_do_what_their_names_say():
    x = np.zeros((1, 1, 1, 8), dtype=np.float32)
    x[..., 3] = 3.0
    moved = shifts.corruptions(x)["shift"][0, 0, 0]
    assert moved.argmax() == 4  # 1/8 of 8 pixels: one to the right
    blurred = shifts.corruptions(x)["blur"][0, 0, 0]
    assert blurred[2:5].tolist() == [1.0, 1.0, 1.0] and blurred.sum() == pytest.approx(3.0)


def test_the_robustness_guard_judges_top1_on_shifted_inputs():
    labels = np.repeat([0, 1, 2], 10)
    names = ["noise", "blur"]
    reference = _logits(np.tile(labels, 2))
    art = np.tile(labels, 2)
    art[30:45] = (art[30:45] + 1) % 3  # under blur, half the samples go wrong
    q = assess_shift(names, reference, _logits(art), labels)
    assert q.samples == 60 and q.per_corruption == {"noise": (1.0, 1.0), "blur": (1.0, 0.5)}
    assert q.drop_pts == pytest.approx(25.0) and q.drop_ci95_pts[0] > 0
    quality = assess_quality("fp32", _logits(labels), _logits(labels), _logits(labels), labels)
    profile = host_profile().with_budget(max_shift_drop_pts=10.0)
    checks = {c.name: c for c in judge(profile, _measurement(), dataclasses.replace(quality, shift=q)).checks}
    assert checks["shift_drop"].status == "fail" and "noise, blur (60 shifted samples)" in checks["shift_drop"].note
    unmeasured = {c.name: c for c in judge(profile, _measurement(), quality).checks}
    assert unmeasured["shift_drop"].status == "unverified"


@pytest.mark.slow
def test_a_build_reports_per_class_and_shifted_accuracy_through_the_runtime(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(64, 3)).eval()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, size=60)
    result = edgeprune.build(model, (x, y), out=tmp_path / "dist", targets=["onnx"], plan=edgeprune.FixedPlan(),
                             measure=edgeprune.Measure(runs=3, warmup=1), input_shape=(1, 1, 4, 4),
                             max_class_drop_pts=1.0, max_shift_drop_pts=1.0)
    rep = result.devices["host"].artifact("onnx")
    q = rep.quality
    assert sum(c.samples for c in q.per_class) == q.samples == 12
    assert q.shift is not None and q.shift.corruptions == ("noise", "contrast", "blur", "shift")
    assert q.shift.samples == 48 and abs(q.shift.drop_pts) < 1e-9  # fp32 ONNX gives the model's own top-1
    checks = {c.name: c for c in rep.verdict.checks}
    assert checks["class_drop"].status == "pass" and checks["shift_drop"].status == "pass"
