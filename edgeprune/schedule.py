"""How a plan's channels are removed and its accuracy recovered: one-shot (prune, then fine-tune) or iterative
(`Plan.prune_steps` > 1: prune a step, fine-tune briefly, repeat, then fine-tune for the epochs left).

Iterative schedules can keep more accuracy where much is removed at once (the fine-tune between steps lets the
model move what the next step takes onto the channels that stay); at equal epochs on MNIST-1D they did not
(docs/benchmarks.md), so the planner tries both and keeps the better on validation. The planner and
`build`/`apply` both call `prune_and_recover`, so `edgeprune apply plan.yaml` replays the planner's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from edgeprune.prune import prune
from edgeprune.recover import RecoverySummary, recover
from edgeprune.types import Dataset, Plan, PruneSummary


def step_epochs(epochs: int, steps: int) -> int:
    """Epochs of each brief fine-tune between iterative pruning steps: an equal share of the full fine-tune, at
    least one (none when there is no fine-tune at all)."""
    return 0 if epochs == 0 else max(1, epochs // steps)


def final_epochs(epochs: int, steps: int) -> int:
    """Epochs of the full fine-tune after the last of `steps` pruning steps: what the brief fine-tunes between steps
    leave of `epochs`, at least one. So an iterative schedule trains as long as one-shot does (`epochs` in all; one
    epoch more where `epochs` < `steps`), and the planner compares the two schedules, not two training lengths."""
    return 0 if epochs == 0 else max(1, epochs - step_epochs(epochs, steps) * (steps - 1))


def prune_and_recover(
    module: nn.Module,
    example: torch.Tensor,
    calibration: torch.Tensor,
    plan: Plan,
    dataset: Dataset,
    epochs: int,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[nn.Module, PruneSummary, RecoverySummary | None]:
    """`module` pruned to `plan` and fine-tuned `epochs` by `recover.recover` (on `threads`; None: every usable
    core); an iterative plan spends `step_epochs` of them after each step but the last and `final_epochs` after
    the last, where the epoch best on the validation split is kept. The recovery is None when `epochs` is 0."""
    between: list[RecoverySummary] = []
    brief = step_epochs(epochs, plan.prune_steps)

    def fine_tune_between(model: nn.Module, step: int) -> None:
        # every epoch of a brief fine-tune is kept: it moves what the next step removes onto what stays
        summary = recover(model, module, dataset, brief, seed + step, threads=threads, keep_best_epoch=False)
        if summary is not None:
            between.append(summary)

    pruned, summary = prune(module, example, calibration, plan, fine_tune_between if brief else None)
    # (a model pruned chain by chain takes one step whatever the plan: then no epochs went to brief fine-tunes)
    recovery = recover(pruned, module, dataset, final_epochs(epochs, 1 + len(between)), seed, progress=progress,
                       threads=threads)
    if recovery is not None and between:
        recovery = dataclasses.replace(recovery, seconds=recovery.seconds + sum(b.seconds for b in between),
                                       between_steps=len(between), step_epochs=brief)
    return pruned, summary, recovery
