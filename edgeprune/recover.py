"""Accuracy recovery after pruning: a short fine-tune with knowledge distillation from the dense model.

loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · cross-entropy(student, labels)

over the class axis of class logits (N, C), or of per-pixel logits (N, C, H, W) with masks (N, H, W) as labels
(averaged over pixels; 255 marks a pixel with no label). With floating-point labels (regression) the loss is
alpha · MSE(student, teacher) + (1 − alpha) · MSE(student, labels).
A model with several outputs (a detector's raw heads) is fitted to the teacher's outputs alone: the mean over its
outputs of MSE(student, teacher) / variance(teacher output), so heads of different scales weigh alike.

`recover` is the one place that decides what a pruned model is fine-tuned on; the planner and `build`/`apply` both
call it, so `edgeprune apply plan.yaml` reproduces the weights the planner chose.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune._cores import usable_cores
from edgeprune._torch import torch_threads
from edgeprune.errors import ConfigError
from edgeprune.outputs import leaves
from edgeprune.structure import describe as describe_structure
from edgeprune.types import Dataset

DISTILL_ALPHA = 0.7
"""Share of the loss that is distillation when labels are there too."""
VOID_LABEL = 255
"""A segmentation mask's 'unlabelled' pixel value: left out of the loss."""


ATTENTION_LR = 5e-4
"""AdamW's learning rate when recovering a model with attention heads (`structure.describe`). The default, 2e-3,
suits the CNNs but undoes what a transformer learnt: on deit_tiny trained on the digits at 224x224, a 2-epoch
recovery at 2e-3 left half-MLP and 8-of-12-block variants 3.6 and 5.9 points of test top-1 below where pruning
alone left them; at 5e-4 they ended 1.7 and 0.6 points above (docs/benchmarks.md)."""


@dataclass(frozen=True)
class RecoveryConfig:
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = DISTILL_ALPHA
    seed: int = 0
    threads: int = 1
    """torch's intra-op threads while training (batches of 64 at 224x224 use every core well); recorded because
    the last bits of the weights may depend on it."""


@dataclass(frozen=True)
class RecoverySummary:
    config: RecoveryConfig
    train_samples: int
    seconds: float
    final_loss: float
    data: str = "train split with labels"
    between_steps: int = 0
    """Brief fine-tunes between the steps of an iterative pruning schedule (0: one-shot); `seconds` includes them."""
    step_epochs: int = 0
    """Epochs of each of those brief fine-tunes."""
    kept_epoch: int | None = None
    """The epoch whose weights were kept, chosen on the validation split (0: the pruned weights before any
    fine-tune); None: no validation split, the last epoch's."""
    val_scores: tuple[float, ...] = ()
    """The validation score after each epoch, from epoch 0 (see `validation_score`)."""

    def to_dict(self) -> dict[str, Any]:
        method = "fine-tune with knowledge distillation from the unpruned model"
        if self.kept_epoch is not None:
            method += f", keeping the epoch best on the validation split ({self.kept_epoch} of {self.config.epochs})"
        if self.between_steps:
            method += (f", after {self.between_steps} brief fine-tune(s) of {self.step_epochs} epoch(s) between "
                       "the steps of an iterative pruning schedule")
        return asdict(self) | {"method": method}


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_x: np.ndarray,
    train_y: Any,
    config: RecoveryConfig = RecoveryConfig(),
    progress: Callable[[int, int], None] | None = None,
    score: Callable[[nn.Module], float] | None = None,
) -> RecoverySummary:
    """Fine-tune `student` in place on (train_x, train_y) with KD from `teacher`; leaves it in eval mode. `train_y`
    may be None for a model with several outputs, which is fitted to the teacher's outputs alone. With `score`
    (higher is better; `validation_score`), the student is scored before training and after each epoch, and the
    best epoch's weights are kept (ties: the later epoch), so a fine-tune never leaves the model worse on it."""
    if config.epochs < 0 or not 0.0 <= config.alpha <= 1.0 or config.temperature <= 0 or config.threads < 1:
        raise ConfigError(f"recovery settings {config} are out of range: epochs >= 0, 0 <= alpha <= 1, "
                          "temperature > 0, threads >= 1")
    if len(train_x) == 0 or (train_y is not None and len(train_x) != len(train_y)):
        raise ConfigError(f"training data has {len(train_x)} inputs and "
                          f"{'no' if train_y is None else len(train_y)} labels; need the same, non-zero count")
    with torch_threads(config.threads):
        return _distill(student, teacher, train_x, train_y, config, progress, score)


def _distill(student: nn.Module, teacher: nn.Module, train_x: np.ndarray, train_y: Any, config: RecoveryConfig,
             progress: Callable[[int, int], None] | None,
             score: Callable[[nn.Module], float] | None) -> RecoverySummary:
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    x_all = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    teacher.eval()
    loss_of = _objective(_outputs(teacher, x_all), train_y, config)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(x_all) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    loss_value = float("nan")
    best = _BestEpoch(score)
    best.consider(student, 0)
    with torch.random.fork_rng():  # dropout draws from the global generator: seed it, without leaking the seed
        torch.manual_seed(config.seed)
        for epoch in range(config.epochs):
            student.train()
            order = torch.randperm(len(x_all), generator=generator)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss = loss_of(leaves(student(x_all[idx])), idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_value = loss.item()
            best.consider(student, epoch + 1)
            if progress is not None:
                progress(epoch + 1, config.epochs)
    kept = best.restore(student, config.epochs)
    student.eval()
    return RecoverySummary(config, len(x_all), time.perf_counter() - start, loss_value, kept_epoch=kept,
                           val_scores=tuple(best.scores))


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each of `model`'s outputs on all of `x`, computed in batches of 256 without gradients."""
    with torch.no_grad():
        parts = [leaves(model(x[i : i + 256])) for i in range(0, len(x), 256)]
    return [torch.cat(column) for column in zip(*parts)]


class _BestEpoch:
    """The weights of the best-scoring epoch so far (none kept without a score)."""

    def __init__(self, score: Callable[[nn.Module], float] | None):
        self._score, self.scores = score, []
        self._best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def consider(self, model: nn.Module, epoch: int) -> None:
        if self._score is None:
            return
        model.eval()
        value = float(self._score(model))
        self.scores.append(value)
        if self._best is None or value >= self._best[0]:
            self._best = (value, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})

    def restore(self, model: nn.Module, last_epoch: int) -> int | None:
        """Load the best epoch's weights into `model` (if not the last); its epoch, or None without a score."""
        if self._best is None:
            return None
        _, epoch, state = self._best
        if epoch != last_epoch:
            model.load_state_dict(state)
        return epoch


Objective = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]
"""(the student's outputs on a batch, the batch's sample indices) -> the loss."""


def _objective(teacher_out: list[torch.Tensor], train_y: Any, config: RecoveryConfig) -> Objective:
    """The loss for what the model returns and the labels hold (see the module docstring)."""
    t, alpha = config.temperature, config.alpha
    if len(teacher_out) > 1 or train_y is None:
        # several outputs (a detector's raw heads): each matched to the teacher's, scaled by the teacher's spread
        spreads = [o.float().var().clamp_min(1e-12) for o in teacher_out]

        def matched(out: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
            return sum(F.mse_loss(o, ref[idx]) / v for o, ref, v in zip(out, teacher_out, spreads)) / len(out)
        return matched
    (reference,) = teacher_out
    y_np = np.asarray(train_y)
    if np.issubdtype(y_np.dtype, np.floating):  # regression targets: squared error, not class scores
        y_values = torch.from_numpy(y_np.astype(np.float32))

        def squared(out: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
            (o,) = out
            return alpha * F.mse_loss(o, reference[idx]) + (1.0 - alpha) * F.mse_loss(o, y_values[idx].reshape(o.shape))
        return squared
    y_ids = torch.from_numpy(y_np.astype(np.int64))
    void = VOID_LABEL if y_np.ndim > 1 else -100  # masks mark unlabelled pixels 255; class ids may be 255

    def distilled(out: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        (o,) = out
        return alpha * t * t * _kd(o, reference[idx], t) + (1.0 - alpha) * F.cross_entropy(o, y_ids[idx],
                                                                                          ignore_index=void)
    return distilled


def _kd(logits: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher ‖ student) over the class axis (1) at temperature `t`, averaged over samples and, for dense
    outputs (N, C, H, W), over positions."""
    positions = logits[0, 0].numel()
    return F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher / t, dim=1),
                    reduction="sum") / (logits.shape[0] * positions)


def recovery_data(teacher: nn.Module, dataset: Dataset) -> tuple[np.ndarray, Any, float, str]:
    """(inputs, labels, alpha, what) a pruned model is fine-tuned on: the labelled train split, distillation plus
    labels; else the train inputs, or without a train split the calibration inputs, with the teacher's top-1 as
    labels and distillation alone (alpha 1). A model with several outputs is fitted to the teacher's outputs alone
    (labels None). Never the validation or test split."""
    x_any = dataset.train_x if dataset.train_x is not None and len(dataset.train_x) else dataset.calib_x
    teacher.eval()
    with torch.no_grad():
        several = len(leaves(teacher(torch.from_numpy(np.ascontiguousarray(x_any[:1], dtype=np.float32))))) > 1
    if several:
        where = "train split" if x_any is dataset.train_x else "calibration split (no train split)"
        return x_any, None, 1.0, f"{where}: every output fitted to the unpruned model's (labels unused)"
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


def validation_score(teacher: nn.Module, dataset: Dataset,
                     config: RecoveryConfig) -> Callable[[nn.Module], float] | None:
    """How `distill` picks the epoch to keep: top-1 on the validation split for class logits (against its labels,
    or the teacher's top-1 on unlabelled data); for any other output, minus the recovery loss on the validation
    split. None without a validation split."""
    if dataset.val_x is None or len(dataset.val_x) == 0:
        return None
    x = torch.from_numpy(np.ascontiguousarray(dataset.val_x, dtype=np.float32))

    def outputs(model: nn.Module) -> list[torch.Tensor]:
        return _outputs(model, x)

    teacher.eval()
    with torch.no_grad():
        probe = leaves(teacher(x[:1]))
    labels = None if dataset.val_y is None else np.asarray(dataset.val_y)
    if len(probe) == 1 and probe[0].ndim == 2 and (labels is None or (
            labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer))):
        target = outputs(teacher)[0].argmax(1) if labels is None else torch.from_numpy(labels.astype(np.int64))
        return lambda model: float((outputs(model)[0].argmax(1) == target).double().mean())
    reference = outputs(teacher)
    usable = labels if len(reference) == 1 and labels is not None and labels.dtype != object else None
    loss_of = _objective(reference, usable, config)
    everything = torch.arange(len(x))
    return lambda model: -float(loss_of(outputs(model), everything))


def recover(
    student: nn.Module,
    teacher: nn.Module,
    dataset: Dataset,
    epochs: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
    keep_best_epoch: bool = True,
) -> RecoverySummary | None:
    """Fine-tune the pruned `student` in place for `epochs` on `recovery_data`, on `threads` torch threads (None:
    every usable core; a pool worker passes 1), keeping the epoch best on the validation split
    (`validation_score`) unless `keep_best_epoch` is False; None when `epochs` is 0."""
    if epochs == 0:
        return None
    x, y, alpha, what = recovery_data(teacher, dataset)
    lr = ATTENTION_LR if describe_structure(teacher).get("heads") else RecoveryConfig.lr
    config = RecoveryConfig(epochs=epochs, lr=lr, alpha=alpha, seed=seed, threads=threads or usable_cores())
    with torch_threads(config.threads):
        score = validation_score(teacher, dataset, config) if keep_best_epoch else None
    summary = distill(student, teacher, x, y, config, progress, score)
    return dataclasses.replace(summary, data=what)
