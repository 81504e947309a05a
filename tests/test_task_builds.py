"""A segmenter and a detector (the shapes examples' architectures, trained for seconds on a few generated images)
pruned, fine-tuned and planned, judged by their own metric: the planner scores candidates by mIoU on the validation
split; the detector's raw heads are pruned around its output layers and distilled head by head."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeprune
from edgeprune.examples import shapes

SAMPLES = 60
MEASURE = edgeprune.Measure(runs=5, warmup=1, blocks=1)


def _tiny(task: str):
    """(model, (x, y)): the example's architecture trained two epochs on `SAMPLES` generated images."""
    recipe = {**shapes.RECIPES[task], "samples": SAMPLES, "epochs": 2, "batch_size": 4}
    data = shapes.shapes_split(task, samples=SAMPLES)
    model = shapes.train(task, data, recipe)
    generated = shapes.generate(SAMPLES, shapes.SPLIT_SEED)
    labels = generated.masks if task == "segmentation" else list(generated.targets())
    return model, (generated.images, labels)


@pytest.mark.slow
def test_a_segmenter_is_planned_for_speed_within_its_miou_budget(tmp_path):
    model, data = _tiny("segmentation")
    result = edgeprune.build(model, data, out=tmp_path / "dist", targets=["onnx"], measure=MEASURE,
                             latency_ms=1000.0, max_metric_drop=1.0,
                             plan=edgeprune.PlanSettings(objective="latency", schemes=("fp32",), importances=("l2",),
                                                         finetune_epochs=1, rank_epochs=1, executor="serial"))
    device = result.devices["host"]
    assert device.plan.layer_keep_ratios and min(device.plan.layer_keep_ratios.values()) < 1.0  # pruned
    manifest = json.loads((tmp_path / "dist" / "host" / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    m = art["quality"]["metric"]
    assert m["metric"] == "miou" and m["split"] == "test" and m["items"] == "images" and m["n"] == 12
    assert 0.0 <= m["artifact_value"] <= 1.0 and m["drop"] == pytest.approx(m["reference_value"] - m["artifact_value"])
    checks = {c["name"]: c for c in art["verdict"]["checks"]}
    assert checks["metric_drop"]["status"] == "pass" and checks["metric_drop"]["unit"] == "miou"
    assert manifest["recovery"]["data"] == "train split with labels"  # masks: per-pixel distillation plus CE
    assert manifest["pruning"]["macs_after"] < manifest["pruning"]["macs_before"]


@pytest.mark.slow
def test_a_detector_is_pruned_around_its_heads_and_judged_by_map(tmp_path):
    model, data = _tiny("detection")
    heads = {name: module.out_channels for name, module in model.named_modules() if name in model.output_layer_names}
    result = edgeprune.build(model, data, out=tmp_path / "dist", targets=["onnx"], measure=MEASURE,
                             plan=edgeprune.FixedPlan(prune=0.5, finetune_epochs=1), max_metric_drop=1.0)
    manifest = json.loads((tmp_path / "dist" / "host" / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    assert [o["key"] for o in art["outputs"]] == ["cls_logits", "bbox_regression"]
    assert manifest["pruning"]["params_after"] < manifest["pruning"]["params_before"]
    pruned = result.devices["host"]
    assert pruned.passed
    # the heads' output layers keep their widths: the anchors' classes and box codes are the outputs
    for name, width in heads.items():
        assert manifest["pruning"]["channels"].get(name, (width, width))[1] == width, name
    m = art["quality"]["metric"]
    assert m["metric"] == "map50" and m["n"] == 12 and 0.0 <= m["artifact_value"] <= 1.0
    assert manifest["recovery"]["data"].endswith("every output fitted to the unpruned model's (labels unused)")
    assert np.isfinite(manifest["recovery"]["final_loss"])
