"""Recovery keeps the fine-tune's epoch that is best on the validation split, so a fine-tune never leaves a model
worse there than pruning alone did."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edgeprune.recover import RecoveryConfig, distill, recover, validation_score
from edgeprune.types import Dataset


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three separable clusters in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centres = np.random.default_rng(99).normal(scale=3.0, size=(3, 8))
    return (centres[y] + rng.normal(size=(n, 8))).astype(np.float32), y.astype(np.int64)


def _dataset() -> Dataset:
    (tx, ty), (vx, vy), (ex, ey) = _blobs(192, 0), _blobs(96, 1), _blobs(96, 2)
    return Dataset("blobs", calib_x=tx[:32], eval_x=ex, eval_y=ey, train_x=tx, train_y=ty, num_classes=3,
                   val_x=vx, val_y=vy)


def _trained(data: Dataset) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _top1(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_a_fine_tune_that_hurts_validation_is_undone():
    data = _dataset()
    teacher = _trained(data)
    assert _top1(teacher, data.val_x, data.val_y) > 0.95
    config = RecoveryConfig(epochs=2, lr=50.0, batch_size=32, threads=1)  # a learning rate that wrecks the model

    wrecked = copy.deepcopy(teacher)
    distill(wrecked, teacher, data.train_x, data.train_y, config)
    assert _top1(wrecked, data.val_x, data.val_y) < _top1(teacher, data.val_x, data.val_y) - 0.05

    guarded = copy.deepcopy(teacher)
    summary = distill(guarded, teacher, data.train_x, data.train_y, config,
                      score=validation_score(teacher, data, config))
    assert summary.kept_epoch == 0 and len(summary.val_scores) == 3
    assert summary.val_scores[0] > max(summary.val_scores[1:])
    assert all(torch.equal(a, b) for a, b in zip(guarded.state_dict().values(), teacher.state_dict().values()))
    assert "keeping the epoch best on the validation split (0 of 2)" in summary.to_dict()["method"]


def test_recover_keeps_the_best_scoring_epoch_and_says_which():
    data = _dataset()
    teacher = _trained(data)
    student = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))  # a narrow, untrained "pruned" model
    summary = recover(student, teacher, data, epochs=4, threads=1)
    assert summary is not None and len(summary.val_scores) == 5
    best = max(summary.val_scores)
    assert summary.kept_epoch == max(i for i, s in enumerate(summary.val_scores) if s == best)  # ties: the later
    assert _top1(student, data.val_x, data.val_y) == best
    assert best > summary.val_scores[0]  # the untrained student did learn

    plain = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    unguarded = recover(plain, teacher, data, epochs=4, threads=1, keep_best_epoch=False)
    assert unguarded is not None and unguarded.kept_epoch is None and unguarded.val_scores == ()


def test_validation_score_by_output_kind():
    data = _dataset()
    teacher = _trained(data)
    config = RecoveryConfig(threads=1)
    top1 = validation_score(teacher, data, config)
    assert top1 is not None and top1(teacher) == _top1(teacher, data.val_x, data.val_y)

    no_val = Dataset("blobs", calib_x=data.calib_x, eval_x=data.eval_x, eval_y=data.eval_y,
                     train_x=data.train_x, train_y=data.train_y)
    assert validation_score(teacher, no_val, config) is None

    # per-pixel logits with masks: minus the recovery loss, highest (zero distillation term) for the teacher itself
    torch.manual_seed(0)
    segmenter = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 1, 6, 6)).astype(np.float32)
    masks = rng.integers(0, 3, size=(16, 6, 6))
    seg_data = Dataset("masks", calib_x=x, eval_x=x, eval_y=masks, train_x=x, train_y=masks, val_x=x, val_y=masks)
    score = validation_score(segmenter, seg_data, config)
    assert score is not None
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    assert np.isfinite(score(segmenter)) and score(segmenter) <= 0.0
    assert score(other) != score(segmenter)
