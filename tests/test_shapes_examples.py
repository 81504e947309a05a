"""The shapes examples: a seeded generator whose boxes and masks agree, its split, and the train-on-first-use and
cache path behind examples:shapes-detect / examples:shapes-segment (on a tiny recipe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune import metrics
from edgeprune.errors import ConfigError, ModelError
from edgeprune.examples import shapes
from edgeprune.modelspec import resolve_model
from edgeprune.vision_heads import postprocess_of


def test_generator_is_deterministic_per_image_under_a_seed():
    a, b = shapes.generate(6, seed=3), shapes.generate(6, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes + a.labels, b.boxes + b.labels))
    tail = shapes.generate(2, seed=3, start=4)  # image i of a seed does not depend on how many are drawn
    assert np.array_equal(tail.images, a.images[4:]) and np.array_equal(tail.masks, a.masks[4:])
    assert not np.array_equal(shapes.generate(6, seed=4).images, a.images)


def test_boxes_labels_and_masks_agree():
    data = shapes.generate(40, seed=0)
    assert data.images.shape == (40, 3, 64, 64) and data.images.dtype == np.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    for mask, boxes, labels in zip(data.masks, data.boxes, data.labels):
        assert 1 <= len(labels) <= 4 and set(labels.tolist()) <= {1, 2, 3}
        seen = np.zeros_like(mask, dtype=bool)
        for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
            inside = mask[y1:y2, x1:x2] == label
            # the box is tight: the shape touches all four of its edges
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert 7 <= x2 - x1 <= 22 and 7 <= y2 - y1 <= 22  # a triangle's apex pixel row may stay empty
            seen[y1:y2, x1:x2] |= inside
        assert np.array_equal(seen, mask > 0)  # every labelled pixel lies in its shape's box


def test_split_is_fixed_and_disjoint():
    seg = shapes.shapes_split("segmentation", samples=50)
    assert (len(seg.train_x), len(seg.val_x), len(seg.eval_x), len(seg.calib_x)) == (30, 10, 10, 5)
    assert seg.eval_y.shape == (10, 64, 64) and seg.num_classes == 4
    det = shapes.shapes_split("detection", samples=50)
    assert np.array_equal(det.eval_x, seg.eval_x) and set(det.eval_y[0]) == {"boxes", "labels"}
    assert np.array_equal(det.calib_x, det.train_x[:5])
    with pytest.raises(ConfigError, match="shapes task 'keypoints' is unknown"):
        shapes.shapes_split("keypoints")


@pytest.fixture
def tiny_recipes(monkeypatch):
    """The recipes at 40 images and one epoch: the path the full recipes take, in seconds."""
    tiny = {task: {**recipe, "samples": 40, "epochs": 1, "batch_size": 8} for task, recipe in shapes.RECIPES.items()}
    monkeypatch.setattr(shapes, "RECIPES", tiny)
    return tiny


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_trained_on_first_use_cached_and_scored(task, tiny_recipes, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    calls: list[tuple[int, int]] = []
    spec = resolve_model(f"examples:shapes-{'detect' if task == 'detection' else 'segment'}",
                         progress=lambda e, n: calls.append((e, n)))
    assert calls == [(1, 1)] and spec.input_shape == shapes.INPUT_SHAPE and spec.default_data == spec.spec
    path = shapes.weights_path(task)
    assert path.is_file() and path.parent == tmp_path
    again = shapes.load_trained(task, progress=lambda e, n: calls.append((e, n)))
    assert calls == [(1, 1)]  # loaded from the cache, not retrained
    for key, value in spec.module.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    data = shapes.shapes_split(task, samples=40)
    with torch.no_grad():
        outputs = spec.module(torch.from_numpy(data.eval_x))
    labels = list(data.eval_y) if task == "detection" else data.eval_y
    result = metrics.evaluate(metrics.metric_for(spec.module), [(outputs, labels)],
                              postprocess=postprocess_of(spec.module) if task == "detection" else None,
                              resamples=20)
    assert result.metric == ("map50" if task == "detection" else "miou") and 0.0 <= result.value <= 1.0
    program = torch.export.export(spec.module, (torch.from_numpy(data.eval_x[:1]),), strict=False)
    assert program is not None


@pytest.mark.slow
def test_training_is_deterministic(tiny_recipes):
    data = shapes.shapes_split("segmentation", samples=40)
    first, second = (shapes.train("segmentation", data, tiny_recipes["segmentation"]) for _ in range(2))
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def test_shapes_spec_rejects_another_input_shape():
    with pytest.raises(ModelError, match=r"takes input shape \(1, 3, 64, 64\)"):
        resolve_model("examples:shapes-detect", input_shape=(1, 3, 96, 96))
