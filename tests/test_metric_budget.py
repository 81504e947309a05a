"""The build's metric: scored on the test split through the runtime, with a paired interval of its loss; the
`max_metric_drop` budget judged on it; the planner's evaluator and the recovery fine-tune on outputs that are not
class logits; bad metric input as one-line errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import edgeprune
from edgeprune import metrics
from edgeprune.errors import ConfigError
from edgeprune.evaluator import CandidateEvaluator, ValScore
from edgeprune.planner.settings import PlanSettings
from edgeprune.profiles import Budget
from edgeprune.recover import RecoveryConfig, _kd, distill
from edgeprune.scoring import metric_quality, resolve_metric, score_outputs
from edgeprune.types import Dataset, ModelSpec

from conftest import _cli_build


@pytest.fixture
def my_metrics(tmp_path, monkeypatch):
    (tmp_path / "budget_metrics.py").write_text(textwrap.dedent("""
        def hits(outputs, labels):
            return float((outputs.argmax(1).numpy() == labels).mean())
        hits.higher_is_better = True

        def boom(outputs, labels):
            raise RuntimeError("no scores today")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "budget_metrics"


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _arrays(n: int = 60, labelled: bool = True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    return (x, rng.integers(0, 3, size=n)) if labelled else (x, None)


# ------------------------------------------------------------------------------------------------ the loss


def test_paired_drop_of_identical_scores_is_zero_and_a_worse_artifact_is_positive():
    metric = metrics.get_metric("rmse")
    labels = np.zeros((40, 2), dtype=np.float32)
    good = np.full((40, 2), 0.1, dtype=np.float32)
    bad = good + np.linspace(0.0, 0.4, 40, dtype=np.float32)[:, None]
    reference = score_outputs(metric, {"output": good}, labels)
    same = metric_quality(metric, reference, {"output": good.copy()}, labels)
    assert same.drop == 0.0 and same.drop_ci95 == (0.0, 0.0)
    worse = metric_quality(metric, reference, {"output": bad}, labels)
    assert worse.drop == pytest.approx(worse.artifact_value - worse.reference_value) and worse.drop > 0
    low, high = worse.drop_ci95
    assert 0 < low <= worse.drop <= high  # the paired interval excludes 0: every sample got worse
    assert not worse.higher_is_better and worse.items == "samples" and worse.n == 40


# ------------------------------------------------------------------------------------------------ choosing one


def test_resolve_metric_follows_the_user_then_the_task_then_the_budget(my_metrics):
    model = _tiny_classifier()
    assert resolve_metric(None, model, ("output",), labelled=True, budget_needs_one=False) is None
    assert resolve_metric(None, model, ("output",), labelled=True, budget_needs_one=True).name == "top1"
    assert resolve_metric("rmse", model, ("output",), labelled=True, budget_needs_one=False).name == "rmse"
    assert resolve_metric(f"{my_metrics}:hits", model, ("output",), labelled=True, budget_needs_one=False).task == "user"
    model.task = "segmentation"
    assert resolve_metric(None, model, ("output",), labelled=True, budget_needs_one=False).name == "miou"

    def in_memory(outputs, labels):
        return 1.0
    in_memory.higher_is_better = False
    chosen = resolve_metric(in_memory, model, ("output",), labelled=True, budget_needs_one=False)
    assert chosen.name.endswith("in_memory") and not chosen.higher_is_better and chosen.direction == "declared"
    two = ("logits", "aux")
    assert resolve_metric("top1@logits", model, two, labelled=True, budget_needs_one=False).output == "logits"


@pytest.mark.parametrize("metric, keys, labelled, message", [
    ("top1@boxes", ("logits", "aux"), True, r"metric 'top1@boxes': the model has no output 'boxes'; its outputs: logits, aux"),
    ("top1@boxes", ("output",), True, r"the model has no output 'boxes'; its outputs: output"),
    ("miou", ("logits", "aux"), True, r"metric 'miou' scores one output .* --metric miou@logits"),
    ("top1", ("output",), False, r"metric 'top1' needs labels but the data is unlabelled"),
    ("no_such_module_here:fn", ("output",), True, r"module 'no_such_module_here' does not import"),
    ("f1", ("output",), True, r"metric 'f1' is unknown; built in: top1, miou"),
])
def test_bad_metric_choices_are_one_line_config_errors(metric, keys, labelled, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve_metric(metric, _tiny_classifier(), keys, labelled=labelled, budget_needs_one=False)
    assert "\n" not in str(info.value)


def test_bad_metric_input_stops_a_build_before_anything_is_written(tmp_path, my_metrics):
    model, data = _tiny_classifier(), _arrays()
    plan = edgeprune.FixedPlan(quant="fp32")
    measure = edgeprune.Measure(runs=2, warmup=1)
    out = tmp_path / "dist"
    with pytest.raises(ConfigError, match=r"metric 'budget_metrics:boom' raised RuntimeError: no scores today"):
        edgeprune.build(model, data, out=out, targets=["onnx"], plan=plan, measure=measure,
                        input_shape=(1, 1, 4, 4), metric=f"{my_metrics}:boom")
    with pytest.raises(ConfigError, match=r"metric 'rmse' needs labels but the data is unlabelled"):
        edgeprune.build(model, _arrays(labelled=False), out=out, targets=["onnx"], plan=plan, measure=measure,
                        input_shape=(1, 1, 4, 4), metric="rmse")
    with pytest.raises(ConfigError, match=r"max_metric_drop=-1 must be >= 0"):
        edgeprune.build(model, data, out=out, targets=["onnx"], plan=plan, measure=measure,
                        input_shape=(1, 1, 4, 4), max_metric_drop=-1)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ a build


@pytest.mark.slow
def test_metric_budget_fails_a_plan_that_meets_latency_but_loses_the_metric(tmp_path, digits_model, my_metrics):
    """Pruned hard with no fine-tune: latency is far inside its budget, the metric's loss is not; the user metric
    (top-1 written by hand) agrees with the built-in top-1 figures, through the runtime."""
    code, summary, out = _cli_build(tmp_path / "dist", "--model", "examples:digits", "--prune", "0.75",
                                    "--finetune-epochs", "0", "--target", "executorch", "--runs", "5", "--warmup",
                                    "1", "--latency-ms", "1000", "--metric", f"{my_metrics}:hits",
                                    "--max-metric-drop", "0.001")
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    q, checks = art["quality"], {c["name"]: c for c in art["verdict"]["checks"]}
    m = q["metric"]
    assert m["metric"] == "budget_metrics:hits" and m["split"] == "test" and m["direction"] == "declared"
    assert m["n"] == q["samples"] and m["items"] == "batches"  # one sample per call: the interval is over samples
    assert m["reference_value"] == pytest.approx(q["reference_accuracy"])
    assert m["artifact_value"] == pytest.approx(q["artifact_accuracy"])
    assert m["drop"] == pytest.approx(q["reference_accuracy"] - q["artifact_accuracy"])
    assert m["drop"] > 0.001, "75% of the channels pruned without fine-tuning should lose more than 0.1 points"
    assert m["drop_ci95"][0] <= m["drop"] <= m["drop_ci95"][1]
    assert checks["latency"]["status"] == "pass"
    assert checks["metric_drop"]["status"] == "fail" and checks["metric_drop"]["unit"] == "budget_metrics:hits"
    assert checks["metric_drop"]["limit"] == 0.001 and manifest["budget"]["max_metric_drop"] == 0.001
    assert code == 3 and not summary["passed"]


@pytest.mark.slow
def test_a_build_reports_its_metric_on_the_test_split(tmp_path):
    """A lower-is-better metric with an in-memory callable through the API: the fp32 artifact matches the model."""
    model, data = _tiny_classifier(), _arrays()

    def spread(outputs, labels):
        return float(outputs.std())
    spread.higher_is_better = False
    result = edgeprune.build(model, data, out=tmp_path / "dist", targets=["onnx"], plan=edgeprune.FixedPlan(),
                             measure=edgeprune.Measure(runs=3, warmup=1), input_shape=(1, 1, 4, 4), metric=spread,
                             max_metric_drop=0.01)
    rep = result.devices["host"].artifact("onnx")
    m = rep.quality.metric
    assert m is not None and m.metric.endswith("spread") and not m.higher_is_better and m.n == 12
    assert abs(m.drop) < 1e-5 and m.artifact_value == pytest.approx(m.reference_value, abs=1e-5)
    check = {c.name: c for c in rep.verdict.checks}["metric_drop"]
    assert check.status == "pass" and check.value == pytest.approx(m.drop)


# ------------------------------------------------------------------------------------------------ planning


class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _regression_data() -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 1, 6, 6)).astype(np.float32)
    y = np.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1).astype(np.float32)
    return Dataset("regression arrays", calib_x=x[:10], eval_x=x[60:], eval_y=y[60:], train_x=x[:40], train_y=y[:40],
                   val_x=x[40:60], val_y=y[40:60])


def test_the_planner_scores_candidates_by_the_metric_oriented_higher_is_better():
    model = _Regressor().eval()
    spec = ModelSpec("test:regressor", "regressor", model, (1, 1, 6, 6), "raw")
    data = _regression_data()
    evaluator = CandidateEvaluator(spec, data, PlanSettings(executor="serial"), metrics.get_metric("rmse"))
    with torch.no_grad():
        rmse = float(np.sqrt(((model(torch.from_numpy(data.val_x)).numpy() - data.val_y) ** 2).mean()))
    assert evaluator.dense_accuracy == pytest.approx(-rmse, rel=1e-5)  # lower is better: negated
    score = evaluator.score
    assert not score.top1 and score.drop_scale == 1.0 and score.unit == "rmse"
    assert score.max_drop(Budget(max_accuracy_drop_pct=2.0, max_metric_drop=0.05)) == 0.05
    top1 = ValScore()
    assert top1.top1 and top1.drop_scale == 100.0 and top1.max_drop(Budget(max_accuracy_drop_pct=2.0)) == 2.0
    evaluator.close()


# ------------------------------------------------------------------------------------------------ recovery


def test_distillation_of_class_logits_is_unchanged_and_dense_logits_average_over_pixels():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    expected = nn.functional.kl_div(nn.functional.log_softmax(student / 2, 1), nn.functional.softmax(teacher / 2, 1),
                                    reduction="batchmean")
    assert torch.equal(_kd(student, teacher, 2.0), expected)
    # a (N, C, H, W) output: the per-pixel KL, averaged over pixels (the same as stacking pixels as samples)
    dense_s, dense_t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    as_rows = _kd(dense_s.permute(0, 2, 3, 1).reshape(-1, 4), dense_t.permute(0, 2, 3, 1).reshape(-1, 4), 2.0)
    assert _kd(dense_s, dense_t, 2.0).item() == pytest.approx(as_rows.item(), rel=1e-5)


def test_recovery_fine_tunes_a_segmenter_on_masks_and_a_regressor_on_values():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    x = np.random.default_rng(0).normal(size=(16, 1, 6, 6)).astype(np.float32)
    masks = np.random.default_rng(1).integers(0, 3, size=(16, 6, 6))
    masks[:, 0, :] = 255  # void pixels take no part in the loss
    before = [p.detach().clone() for p in seg.parameters()]
    summary = distill(seg, teacher, x, masks, RecoveryConfig(epochs=2, batch_size=8))
    assert np.isfinite(summary.final_loss) and summary.train_samples == 16
    assert any(not torch.equal(a, b) for a, b in zip(before, seg.parameters()))

    regressor, reg_teacher = _Regressor(), _Regressor().eval()
    data = _regression_data()
    summary = distill(regressor, reg_teacher, data.train_x, data.train_y, RecoveryConfig(epochs=3, batch_size=8))
    assert np.isfinite(summary.final_loss) and summary.final_loss >= 0  # squared errors
