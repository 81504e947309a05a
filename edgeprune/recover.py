"""Accuracy recovery after pruning: a short fine-tune with knowledge distillation from the dense model.

loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · cross-entropy(student, labels)
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


@dataclass(frozen=True)
class RecoveryConfig:
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0


@dataclass(frozen=True)
class RecoverySummary:
    config: RecoveryConfig
    train_samples: int
    seconds: float
    final_loss: float

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
