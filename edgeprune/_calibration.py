"""How data-aware scores (pruning criteria, transformer structure importance) read calibration inputs."""

from __future__ import annotations

import torch
from torch import nn

SCORE_SAMPLES = 64
"""Calibration inputs a data-aware score runs on (the first ones), in batches of `SCORE_BATCH`."""
SCORE_BATCH = 16


def score_batches(calibration: torch.Tensor) -> list[torch.Tensor]:
    """The first `SCORE_SAMPLES` calibration inputs in batches of `SCORE_BATCH`."""
    x = calibration[:SCORE_SAMPLES]
    return [x[i : i + SCORE_BATCH] for i in range(0, len(x), SCORE_BATCH)]


def run_hooked(model: nn.Module, calibration: torch.Tensor, hooks: list) -> None:
    """Run `score_batches(calibration)` through `model` in eval mode without gradients, then remove `hooks` (the
    handles of the hooks that record what the scores need) and restore every module's training mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for batch in score_batches(calibration):
                model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.train(training)
