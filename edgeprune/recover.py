"""Accuracy recovery after pruning: a short fine-tune with knowledge distillation from the dense model.

loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · cross-entropy(student, labels)

`recover` is the one place that decides what a pruned model is fine-tuned on; the planner and `build`/`apply` both
call it, so `edgeprune apply plan.yaml` reproduces the weights the planner chose.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.types import Dataset

DISTILL_ALPHA = 0.7
"""Share of the loss that is distillation when labels are there too."""


@dataclass(frozen=True)
class RecoveryConfig:
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = DISTILL_ALPHA
    seed: int = 0


@dataclass(frozen=True)
class RecoverySummary:
    config: RecoveryConfig
    train_samples: int
    seconds: float
    final_loss: float
    data: str = "train split with labels"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"method": "fine-tune with knowledge distillation from the unpruned model"}


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    config: RecoveryConfig = RecoveryConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> RecoverySummary:
    """Fine-tune `student` in place on (train_x, train_y) with KD from `teacher`; leaves it in eval mode."""
    if config.epochs < 0 or not 0.0 <= config.alpha <= 1.0 or config.temperature <= 0:
        raise ConfigError(f"recovery settings {config} are out of range: epochs >= 0, 0 <= alpha <= 1, temperature > 0")
    if len(train_x) != len(train_y) or len(train_x) == 0:
        raise ConfigError(f"training data has {len(train_x)} inputs and {len(train_y)} labels; need the same, non-zero count")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    x_all = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    teacher.eval()
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(x_all[i : i + 256]) for i in range(0, len(x_all), 256)])
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(x_all) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    t = config.temperature
    loss_value = float("nan")
    with torch.random.fork_rng():  # dropout draws from the global generator: seed it, without leaking the seed
        torch.manual_seed(config.seed)
        for epoch in range(config.epochs):
            student.train()
            order = torch.randperm(len(x_all), generator=generator)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                logits = student(x_all[idx])
                kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher_logits[idx] / t, dim=1), reduction="batchmean")
                loss = config.alpha * t * t * kd + (1.0 - config.alpha) * F.cross_entropy(logits, y_all[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_value = loss.item()
            if progress is not None:
                progress(epoch + 1, config.epochs)
    student.eval()
    return RecoverySummary(config, len(x_all), time.perf_counter() - start, loss_value)


def recovery_data(teacher: nn.Module, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, float, str]:
    """(inputs, labels, alpha, what) a pruned model is fine-tuned on: the labelled train split, distillation plus
    labels; else the train inputs, or without a train split the calibration inputs, with the teacher's top-1 as
    labels and distillation alone (alpha 1). Never the validation or test split."""
    if dataset.train_x is not None and dataset.train_y is not None and len(dataset.train_x):
        return dataset.train_x, dataset.train_y, DISTILL_ALPHA, "train split with labels"
    if dataset.train_x is not None and len(dataset.train_x):
        x, what = dataset.train_x, "train split, unlabelled: distillation from the unpruned model alone"
    else:
        x, what = dataset.calib_x, "calibration split (no train split): distillation from the unpruned model alone"
    teacher.eval()
    with torch.no_grad():
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        labels = torch.cat([teacher(inputs[i : i + 256]).argmax(1) for i in range(0, len(inputs), 256)]).numpy()
    return x, labels.astype(np.int64), 1.0, what


def recover(
    student: nn.Module,
    teacher: nn.Module,
    dataset: Dataset,
    epochs: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RecoverySummary | None:
    """Fine-tune the pruned `student` in place for `epochs` on `recovery_data`; None when `epochs` is 0."""
    if epochs == 0:
        return None
    x, y, alpha, what = recovery_data(teacher, dataset)
    summary = distill(student, teacher, x, y, RecoveryConfig(epochs=epochs, alpha=alpha, seed=seed), progress)
    return RecoverySummary(summary.config, summary.train_samples, summary.seconds, summary.final_loss, what)
