"""Structured pruning through torch-pruning: whole channels removed, so the module really shrinks.

plan -> check -> execute: the dependency graph groups coupled channels (residual adds, depthwise convs,
BatchNorm), an importance criterion ranks them, and channel counts are rounded to multiples of `round_to`.
The classifier's outputs are never pruned. BatchNorm statistics are re-estimated on calibration data.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.types import Plan, PruneSummary

IMPORTANCE: dict[str, Callable[[], tp.importance.Importance]] = {
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "bn-scale": lambda: tp.importance.BNScaleImportance(),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on `example_input`."""
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def _output_layers(model: nn.Module) -> list[nn.Module]:
    """Linear/conv layers whose output is the model's output: their output channels are the classes."""
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            last = module
    return [last] if last is not None else []


def recalibrate_bn(model: nn.Module, calibration: torch.Tensor, batch_size: int = 32) -> int:
    """Re-estimate BatchNorm running statistics on `calibration` (cumulative average); returns batches run."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(calibration) == 0:
        return 0
    saved = {bn: bn.momentum for bn in bns}
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    was_training = model.training
    model.train()
    batches = 0
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            chunk = calibration[start : start + batch_size]
            if len(chunk) < 2:  # BatchNorm in train mode needs more than one sample
                continue
            model(chunk)
            batches += 1
    for bn, momentum in saved.items():
        bn.momentum = momentum
    model.train(was_training)
    return batches


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    calibration: torch.Tensor,
    plan: Plan,
) -> tuple[nn.Module, PruneSummary]:
    """A pruned copy of `model` following `plan` (global `keep_ratio`, per-layer `layer_keep_ratios`)."""
    if not 0.0 < plan.keep_ratio <= 1.0:
        raise ConfigError(f"keep ratio {plan.keep_ratio} is out of range; --prune takes a fraction in [0, 1)")
    if plan.importance not in IMPORTANCE:
        raise ConfigError(f"importance '{plan.importance}' is unknown; known: {', '.join(IMPORTANCE)}")
    if plan.round_to < 1:
        raise ConfigError(f"round_to {plan.round_to} must be a positive channel count")
    model = copy.deepcopy(model).eval()
    macs_before, params_before = count_macs_params(model, example_input)
    widths_before = _widths(model)
    by_name = dict(model.named_modules())
    unknown = sorted(set(plan.layer_keep_ratios) - set(by_name))
    if unknown:
        raise ConfigError(f"per-layer keep ratio names module '{unknown[0]}', which the model does not have")
    ratio_dict = {by_name[name]: 1.0 - keep for name, keep in plan.layer_keep_ratios.items()}

    batches = 0
    if plan.keep_ratio < 1.0 or ratio_dict:
        torch.manual_seed(plan.seed)
        try:
            with torch.enable_grad():  # torch-pruning traces the dependency graph through autograd
                pruner = tp.pruner.MetaPruner(
                    model,
                    example_input,
                    importance=IMPORTANCE[plan.importance](),
                    pruning_ratio=1.0 - plan.keep_ratio,
                    pruning_ratio_dict=ratio_dict or None,
                    ignored_layers=_output_layers(model),
                    round_to=plan.round_to,
                )
                pruner.step()
        except Exception as exc:  # torch-pruning's tracer meets something it cannot follow
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnsupportedModelError(f"structured pruning cannot trace this model: {reason}") from None
        batches = recalibrate_bn(model, calibration)
        model.eval()

    macs_after, params_after = count_macs_params(model, example_input)
    widths_after = _widths(model)
    changed = {n: (widths_before[n], w) for n, w in widths_after.items() if widths_before.get(n) != w}
    summary = PruneSummary(
        keep_ratio=plan.keep_ratio,
        importance=plan.importance,
        round_to=plan.round_to,
        params_before=params_before,
        params_after=params_after,
        macs_before=macs_before,
        macs_after=macs_after,
        channels=changed,
        bn_recalibrated_batches=batches,
    )
    return model, summary


def _widths(model: nn.Module) -> dict[str, int]:
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
