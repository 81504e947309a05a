"""How data-aware scores (pruning criteria, transformer structure importance) read calibration inputs."""

from __future__ import annotations

import torch

SCORE_SAMPLES = 64
"""Calibration inputs a data-aware score runs on (the first ones), in batches of `SCORE_BATCH`."""
SCORE_BATCH = 16


def score_batches(calibration: torch.Tensor) -> list[torch.Tensor]:
    """The first `SCORE_SAMPLES` calibration inputs in batches of `SCORE_BATCH`."""
    x = calibration[:SCORE_SAMPLES]
    return [x[i : i + SCORE_BATCH] for i in range(0, len(x), SCORE_BATCH)]
