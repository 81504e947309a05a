"""Built-in metrics on hand-checked tiny cases, user metrics from a module, their bad input, and the bootstrap."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from edgeprune import metrics, stats
from edgeprune.errors import ConfigError


def _score(name: str, outputs, labels, resamples: int | None = None, **kw) -> metrics.MetricResult:
    return metrics.evaluate(metrics.get_metric(name, **kw), [(outputs, labels)], resamples=resamples)


def test_top1_counts_argmax_hits_with_a_wilson_interval():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    result = _score("top1", logits, np.array([0, 1, 2, 1]))
    assert result.value == 0.75 and result.higher_is_better and result.n == 4
    assert result.ci95 == pytest.approx(stats.wilson_interval(3, 4))


def test_miou_on_a_4x4_mask():
    target = np.zeros((1, 4, 4), dtype=np.int64)
    target[0, :2, :2] = 1  # class 1: the top-left 2x2
    pred = np.zeros((1, 4, 4), dtype=np.int64)
    pred[0, 0, :] = 1  # predicted class 1: the top row (2 of its 4 pixels right)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 2).permute(0, 3, 1, 2).float()
    # class 1: TP 2, FP 2, FN 2 -> 1/3; class 0: TP 10, FP 2, FN 2 -> 10/14
    assert _score("miou", logits, target).value == pytest.approx((1 / 3 + 10 / 14) / 2)
    target[0, 3, 3] = 255  # a void pixel (correctly predicted 0 before) is ignored: class 0 TP 9 -> 9/13
    assert _score("miou", logits, target).value == pytest.approx((1 / 3 + 9 / 13) / 2)


def test_map50_and_map50_95_on_two_images_with_known_boxes():
    targets = [{"boxes": [[0, 0, 10, 10]], "labels": [1]}, {"boxes": [[20, 20, 30, 30]], "labels": [1]}]
    preds = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
        # the best-scored box is a false positive; the other box overlaps its ground truth at IoU 100/135
        {"boxes": torch.tensor([[40.0, 40, 50, 50], [20, 20, 30, 33.5]]), "scores": torch.tensor([0.95, 0.8]),
         "labels": torch.tensor([1, 1])},
    ]
    # ranked FP, TP, TP: precision 1/2 at recall 1/2 and 2/3 at recall 1, so the 101-point envelope is 2/3
    assert _score("map50", preds, targets, resamples=10).value == pytest.approx(2 / 3, abs=1e-4)
    # IoU 0.74 counts at thresholds 0.50..0.70 (AP 2/3) and not at 0.75..0.95 (recall 1/2 at precision 1/2:
    # 51 of 101 recall points at 1/2)
    assert _score("map50_95", preds, targets, resamples=10).value == pytest.approx((2 / 3 + 25.5 / 101) / 2, abs=1e-4)


def test_mae_and_rmse_are_lower_is_better():
    pred, target = torch.tensor([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 2.0, 5.0, 0.0])
    mae = _score("mae", pred, target)
    assert mae.value == pytest.approx(1.75) and not mae.higher_is_better
    assert _score("rmse", pred, target).value == pytest.approx(math.sqrt(21 / 4))
    assert mae.ci95[0] <= mae.value <= mae.ci95[1]


def test_multi_output_models_name_the_output_scored():
    outputs = {"logits": torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "aux": torch.zeros(2, 5)}
    assert _score("top1", outputs, np.array([1, 1]), output="logits").value == 0.5
    with pytest.raises(ConfigError, match=r"scores one output but the model returns \['logits', 'aux'\]"):
        _score("top1", outputs, np.array([1, 1]))
    with pytest.raises(ConfigError, match="has no output 'boxes'"):
        _score("top1", outputs, np.array([1, 1]), output="boxes")


@pytest.fixture
def user_metrics(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""
        import numpy as np

        def hits(outputs, labels):
            return float((outputs.argmax(1).numpy() == labels).mean())
        hits.higher_is_better = True

        def error(outputs, labels):
            return float(np.abs(outputs.argmax(1).numpy() - labels).mean())
        error.higher_is_better = False

        def undeclared(outputs, labels):
            return 1

        def agreement(outputs, labels):
            return 0.5
        agreement.needs_labels = False

        def boom(outputs, labels):
            return 1 / 0

        def text(outputs, labels):
            return "good"

        def nan(outputs, labels):
            return float("nan")

        def wrong_direction(outputs, labels):
            return 1.0
        wrong_direction.higher_is_better = "yes"
    """))
    (tmp_path / "broken_metrics.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_metrics"


def test_user_metric_from_a_module_is_averaged_over_batches_by_size(user_metrics):
    metric = metrics.get_metric(f"{user_metrics}:hits")
    assert metric.higher_is_better and metric.direction == "declared"
    batches = [(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), np.array([1, 0, 1])),  # 2 of 3
               (torch.tensor([[1.0, 0.0]]), np.array([1]))]  # 0 of 1
    result = metrics.evaluate(metric, batches)
    assert result.value == pytest.approx(0.5) and result.items == "batches" and result.n == 2
    error = metrics.get_metric(f"{user_metrics}:error")
    assert not error.higher_is_better and error.direction == "declared"
    undeclared = metrics.get_metric(f"{user_metrics}:undeclared")
    assert undeclared.higher_is_better and undeclared.direction == "default"
    agreement = metrics.evaluate(metrics.get_metric(f"{user_metrics}:agreement"), [(torch.zeros(4, 2), None)])
    assert agreement.value == 0.5 and agreement.n == 1


@pytest.mark.parametrize("attr, message", [
    ("boom", r"metric 'my_metrics:boom' raised ZeroDivisionError: division by zero on a batch of 2 samples"),
    ("text", r"metric 'my_metrics:text' returned str \('good'\), not a number"),
    ("nan", r"metric 'my_metrics:nan' returned nan; return a finite number"),
])
def test_user_metric_that_fails_is_named(user_metrics, attr, message):
    with pytest.raises(ConfigError, match=message) as info:
        metrics.evaluate(metrics.get_metric(f"{user_metrics}:{attr}"), [(torch.zeros(2, 2), np.array([0, 1]))])
    assert "\n" not in str(info.value)


def test_bad_metric_specs_are_one_line_config_errors(user_metrics):
    cases = {
        "top5": "metric 'top5' is unknown; built in: top1, miou, map50, map50_95, mae, rmse",
        "no_such_pkg.mod:fn": "module 'no_such_pkg.mod' does not import (ModuleNotFoundError: No module named "
                              "'no_such_pkg')",
        "broken_metrics:fn": "module 'broken_metrics' does not import (ModuleNotFoundError: No module named "
                             "'not_a_module_anywhere')",
        f"{user_metrics}:missing": "module 'my_metrics' has no callable 'missing'",
        f"{user_metrics}:wrong_direction": "higher_is_better is 'yes'; set it to True or False",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as info:
            metrics.get_metric(spec)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_metric_inputs_that_do_not_fit(user_metrics):
    with pytest.raises(ConfigError, match="metric 'top1' needs labels but data 'x.npz' is unlabelled"):
        metrics.evaluate(metrics.get_metric("top1"), [(torch.zeros(2, 3), None)], source="data 'x.npz'")
    with pytest.raises(ConfigError, match="metric 'my_metrics:hits' needs labels"):
        metrics.evaluate(metrics.get_metric(f"{user_metrics}:hits"), [(torch.zeros(2, 3), None)])
    with pytest.raises(ConfigError, match="labels for 3 samples but outputs for 2"):
        _score("top1", torch.zeros(2, 3), np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"takes decoded detections .* not raw outputs \(\['cls_logits'"):
        _score("map50", {"cls_logits": torch.zeros(1, 8, 3), "bbox_regression": torch.zeros(1, 8, 4)},
               [{"boxes": [[0, 0, 1, 1]], "labels": [1]}])
    with pytest.raises(ConfigError, match=r"masks shaped \(1, 4, 4\) do not match logits \(1, 2, 5, 5\)"):
        _score("miou", torch.zeros(1, 2, 5, 5), np.zeros((1, 4, 4), dtype=np.int64))
    with pytest.raises(ConfigError, match="hold no ground-truth boxes"):
        _score("map50", [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}],
               [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}])


def test_metric_for_follows_the_task_a_module_declares():
    class Seg(torch.nn.Module):
        task = "segmentation"

    assert metrics.metric_for(Seg()).name == "miou"
    assert metrics.metric_for(torch.nn.Linear(2, 2)).name == "top1"


def test_bootstrap_interval_covers_a_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    low, high = stats.bootstrap_interval(len(values), lambda idx: float(values[idx].mean()), seed=1)
    half = 1.96 * values.std() / math.sqrt(len(values))  # the normal approximation's half-width
    assert low < values.mean() < high and (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert stats.bootstrap_interval(len(values), lambda idx: float(values[idx].mean()), seed=1) == (low, high)
    with pytest.raises(ValueError, match="undefined on every resample"):
        stats.bootstrap_interval(3, lambda idx: math.nan, resamples=10)


def test_miou_interval_is_over_images():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, size=(30, 8, 8))
    noisy = np.where(rng.random(masks.shape) < 0.3, rng.integers(0, 3, size=masks.shape), masks)
    logits = torch.nn.functional.one_hot(torch.from_numpy(noisy), 3).permute(0, 3, 1, 2).float()
    result = _score("miou", logits, masks)
    assert result.items == "images" and result.n == 30
    assert result.ci95[0] < result.value < result.ci95[1] and result.ci95[1] - result.ci95[0] < 0.2
