"""Importance criteria: how a pruning group's channels are ranked, each built from the model about to be pruned and
its calibration inputs (`IMPORTANCE`).

Weight magnitude (l2, l1), BatchNorm scale, FPGM and random are torch-pruning's and need no data. Two read the data
(`DATA_AWARE`), on up to `SCORE_SAMPLES` calibration inputs of the dense model:

- `wanda`: |W| · ‖X‖, weights times the activation norm of the input channels they read (Wanda, Sun et al. 2023,
  made structured).
- `taylor`: the first-order Taylor estimate of the loss change from removing a channel, Σ w · ∂L/∂w over every
  parameter the channel's removal zeroes (its producing layer's row, its norm's scale and shift, the consuming
  layers' columns), *squared per sample* and summed over samples (Molchanov et al. 2019; the Fisher pruning of Theis
  et al. 2018). Squaring per sample matters: at a trained model's minimum the gradient summed over samples is close
  to zero and a channel's signs cancel, so |w · Σ_s g_s| ranks channels by noise. No labels are needed: class
  logits are differentiated through a random centred direction v · logits per sample, whose squared first-order
  change estimates how far the channel's removal moves the logits (the cross-entropy against labels drawn from the
  model's own softmax, the Fisher, was tried first: on a 99%-confident model almost every drawn label is the top-1,
  the gradients vanish and the scores were noise); any other output through 0.5 · ‖output‖².
"""

from __future__ import annotations

from typing import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tp_function

from edgeprune._calibration import SCORE_SAMPLES, run_hooked, score_batches
from edgeprune.errors import ConfigError, UnsupportedModelError

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

_OUT_HANDLERS = tuple(
    getattr(tp_function, name)
    for name in ("prune_conv_out_channels", "prune_depthwise_conv_out_channels", "prune_linear_out_channels",
                 "prune_batchnorm_out_channels", "prune_layernorm_out_channels", "prune_groupnorm_out_channels",
                 "prune_instancenorm_out_channels")
    if hasattr(tp_function, name)
)
"""Handlers that remove a layer's output channels (a depthwise conv's inputs are one and the same)."""
_IN_HANDLERS = (tp_function.prune_conv_in_channels, tp_function.prune_linear_in_channels)


def _score_batches(calibration: torch.Tensor | None, criterion: str) -> list[torch.Tensor]:
    """The calibration batches `criterion` scores on; a ConfigError when there are none."""
    if calibration is None or len(calibration) == 0:
        raise ConfigError(f"importance '{criterion}' scores channels on calibration inputs and none were given; "
                          "give data (--data) or use a data-free criterion such as l2")
    return score_batches(calibration)


def _mean_normalized(scores: torch.Tensor) -> torch.Tensor:
    """`scores` over their mean (torch-pruning's default normalisation), left as they are when all are zero."""
    mean = scores.mean()
    return scores / mean if mean > 0 else scores


def _picked(group, contributions: Callable[[nn.Module, object], torch.Tensor | None], width: int,
            leading: tuple[int, ...] = ()) -> tuple[torch.Tensor, int] | None:
    """(Σ over the group's layers of `contributions(layer, handler)` (shape leading + (channels,)), each layer's
    channels moved to the group's root channel positions; the number of layers summed), or None when no layer of
    the group has any."""
    total = torch.zeros(*leading, width, dtype=torch.float32)
    layers = 0
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
        if not len(idxs) or any(r is None for r in root_idxs):
            continue
        scores = contributions(dep.target.module, dep.handler)
        if scores is None:
            continue
        picked = scores[..., torch.as_tensor(list(idxs), dtype=torch.long)].float()
        index = torch.as_tensor(list(root_idxs), dtype=torch.long).expand(*leading, len(root_idxs))
        total.scatter_add_(len(leading), index, picked)
        layers += 1
    return (total, layers) if layers else None


# ------------------------------------------------------------------------------------------------------- taylor


def _label_free_loss(output: object, generator: torch.Generator) -> torch.Tensor:
    """The loss Taylor differentiates, summed over the batch, with no labels needed: class logits (N, C >= 2) through
    v · logits with v a random direction (Gaussian, centred over the classes, drawn per sample), so that the square
    of a channel's first-order change of it is, in expectation, the squared change of the centred logits the
    channel's removal causes (a Hutchinson estimate: one backward pass instead of one per class); any other output
    (feature maps, regression values, several tensors) through 0.5 · ‖output‖² over every floating-point tensor,
    whose gradient is the output itself, so a channel scores by how much it moves the outputs."""
    if isinstance(output, torch.Tensor) and output.ndim == 2 and output.shape[1] >= 2:
        direction = torch.randn(output.shape, generator=generator)
        direction = direction - direction.mean(1, keepdim=True)
        return (output * direction.to(output.dtype)).sum()
    tensors = [t for t in _output_tensors(output) if t.is_floating_point()]
    if not tensors:
        raise UnsupportedModelError(f"importance 'taylor' needs a tensor output to differentiate; the model returned "
                                    f"{type(output).__name__}: use l2")
    return sum(0.5 * t.pow(2).sum() for t in tensors)


def _output_tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in _output_tensors(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in _output_tensors(v)]
    return []


def _channel_sums(layer: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Σ w · ∂L/∂w of `layer` per output channel and per input channel (None where it has no such channels or no
    gradient); a bias counts with its output channel, a norm's scale and shift with its channel."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.grad is None:
        return None, None
    wg = (weight * weight.grad).detach().float()
    bias = getattr(layer, "bias", None)
    bias_wg = (bias * bias.grad).detach().float() if isinstance(bias, torch.Tensor) and bias.grad is not None else 0
    if isinstance(layer, _NORMS):
        return wg.reshape(len(wg), -1).sum(1) + bias_wg, None
    if isinstance(layer, nn.Linear):
        return wg.sum(1) + bias_wg, wg.sum(0)
    per_pair = wg.flatten(2).sum(2)  # conv: (out, in / groups), or transposed (in, out / groups)
    groups = layer.groups
    if layer.transposed:
        n_in, out_per_group = per_pair.shape
        outs = per_pair.reshape(groups, n_in // groups, out_per_group).sum(1).reshape(-1)
        return outs + bias_wg, per_pair.sum(1)
    n_out, in_per_group = per_pair.shape
    ins = per_pair.reshape(groups, n_out // groups, in_per_group).sum(1).reshape(-1)
    return per_pair.sum(1) + bias_wg, ins


class TaylorImportance(tp.importance.Importance):
    """First-order Taylor importance with per-sample squares (see the module docstring).

    `per_sample[layer]` holds (outputs, inputs): Σ w · ∂L_s/∂w per channel for each calibration sample s, shapes
    (samples, channels). A group's channel c scores Σ_s (Σ over its layers of their contribution to c)², over the
    scores' mean. Layers the backward pass never reached score zero.
    """

    def __init__(self, per_sample: dict[nn.Module, tuple[torch.Tensor | None, torch.Tensor | None]], samples: int):
        self.per_sample, self.samples = per_sample, samples

    @classmethod
    def calibrated(cls, model: nn.Module, calibration: torch.Tensor | None, seed: int = 0) -> "TaylorImportance":
        """Per-sample channel contributions of `model` (in eval mode) over up to `SCORE_SAMPLES` calibration
        inputs, one forward and backward pass per input; the parameters' gradients are cleared after."""
        batches = _score_batches(calibration, "taylor")
        samples = torch.cat(batches)[:SCORE_SAMPLES]
        layers = [m for m in model.modules() if isinstance(m, _WEIGHTED + _NORMS)]
        rows: dict[nn.Module, tuple[list, list]] = {m: ([], []) for m in layers}
        params = list(model.parameters())
        requires = [p.requires_grad for p in params]
        modes = {m: m.training for m in model.modules()}
        generator = torch.Generator().manual_seed(seed)
        model.eval()
        try:
            for param in params:
                param.requires_grad_(True)
            with torch.enable_grad():
                for sample in samples:
                    _clear_grads(model)
                    _label_free_loss(model(sample.unsqueeze(0)), generator).backward()
                    for layer in layers:
                        outs, ins = _channel_sums(layer)
                        rows[layer][0].append(outs)
                        rows[layer][1].append(ins)
        finally:
            _clear_grads(model)
            for param, flag in zip(params, requires):
                param.requires_grad_(flag)
            for module, training in modes.items():
                module.train(training)
        per_sample = {layer: tuple(torch.stack(r) if r and all(t is not None for t in r) else None for r in pair)
                      for layer, pair in rows.items()}
        return cls(per_sample, len(samples))

    def _contributions(self, layer: nn.Module, handler) -> torch.Tensor | None:
        outs, ins = self.per_sample.get(layer, (None, None))
        if handler in _OUT_HANDLERS:
            return outs
        if handler in _IN_HANDLERS:
            return ins
        return None

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        summed = _picked(group, self._contributions, len(group[0].idxs), leading=(self.samples,))
        if summed is None:
            return None
        per_sample, _ = summed
        return _mean_normalized(per_sample.pow(2).sum(0))


def _clear_grads(model: nn.Module) -> None:
    """Drop every parameter's gradient."""
    for param in model.parameters():
        param.grad = None


# -------------------------------------------------------------------------------------------------------- wanda


class WandaImportance(tp.importance.Importance):
    """Wanda-style structured importance: |W| weighted by the activation norm of each input channel.

    `input_norms[layer][j]` is ‖X_j‖, the L2 norm of input channel j of a conv / linear layer over the calibration
    inputs (for a conv, over every sample and spatial position; for a linear, over every leading position). An
    output channel c of a layer scores Σ_j |W[c, j, …]| · ‖X_j‖; an input channel j of a layer (the layers a group's
    channels feed) scores ‖X_j‖ · Σ_c |W[c, j, …]|. A group's score is the mean over its conv / linear layers of
    these per-layer scores, over its mean (as torch-pruning's magnitude importance reduces and normalises).
    Layers the forward pass never called as modules have no norms: they score zero.
    """

    _OUT = (
        tp_function.prune_conv_out_channels,
        tp_function.prune_depthwise_conv_out_channels,  # also prunes its input channels: one and the same
        tp_function.prune_linear_out_channels,
    )

    def __init__(self, input_norms: dict[nn.Module, torch.Tensor]):
        self.input_norms = input_norms

    @classmethod
    def calibrated(cls, model: nn.Module, calibration: torch.Tensor | None) -> "WandaImportance":
        """The input-channel norms of every conv / linear layer of `model` over up to `SCORE_SAMPLES` calibration
        inputs (the model in eval mode, no gradients)."""
        _score_batches(calibration, "wanda")  # a ConfigError without calibration inputs
        squares: dict[nn.Module, torch.Tensor] = {}

        def record(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach().float()
            if isinstance(module, nn.Linear):
                per_channel = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            else:  # conv: (N, C, *spatial)
                per_channel = x.transpose(0, 1).reshape(x.shape[1], -1).pow(2).sum(1)
            squares[module] = squares[module] + per_channel if module in squares else per_channel

        run_hooked(model, calibration,
                   [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, _WEIGHTED)])
        return cls({m: s.sqrt() for m, s in squares.items()})

    def _layer_scores(self, layer: nn.Module, handler) -> torch.Tensor | None:
        """One score per output channel or per input channel of `layer`, as `handler` removes them."""
        if not isinstance(layer, _WEIGHTED) or handler not in self._OUT + _IN_HANDLERS:
            return None
        weight = _abs_weight_matrix(layer)  # (out, in)
        norms = self.input_norms.get(layer)
        if norms is None or norms.numel() != weight.shape[1]:
            norms = weight.new_zeros(weight.shape[1])
        return weight @ norms if handler in self._OUT else weight.sum(0) * norms

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        summed = _picked(group, self._layer_scores, len(group[0].idxs))
        if summed is None:
            return None
        total, layers = summed
        return _mean_normalized(total / layers)


def _abs_weight_matrix(layer: nn.Module) -> torch.Tensor:
    """|W| of a conv / linear layer as an (out channels, in channels) matrix, a conv's kernel positions summed;
    zero between channels of different groups of a grouped conv."""
    w = layer.weight.detach().abs().float()
    if isinstance(layer, nn.Linear):
        return w
    w = w.flatten(2).sum(2)
    groups = layer.groups
    if layer.transposed:  # (in, out / groups)
        n_in, out_per_group = w.shape
        in_per_group = n_in // groups
        dense = w.new_zeros(out_per_group * groups, n_in)
        rows = torch.arange(n_in).unsqueeze(1).expand(n_in, out_per_group)
        cols = (rows // in_per_group) * out_per_group + torch.arange(out_per_group)
        dense[cols, rows] = w
        return dense
    n_out, in_per_group = w.shape  # (out, in / groups)
    if groups == 1:
        return w
    out_per_group = n_out // groups
    dense = w.new_zeros(n_out, in_per_group * groups)
    rows = torch.arange(n_out).unsqueeze(1).expand(n_out, in_per_group)
    cols = (rows // out_per_group) * in_per_group + torch.arange(in_per_group)
    dense[rows, cols] = w
    return dense


ImportanceFactory = Callable[[nn.Module, torch.Tensor | None], tp.importance.Importance]

IMPORTANCE: dict[str, ImportanceFactory] = {
    "l2": lambda model, calibration: tp.importance.GroupMagnitudeImportance(p=2),
    "l1": lambda model, calibration: tp.importance.GroupMagnitudeImportance(p=1),
    "bn-scale": lambda model, calibration: tp.importance.BNScaleImportance(),
    "fpgm": lambda model, calibration: tp.importance.FPGMImportance(),
    "random": lambda model, calibration: tp.importance.RandomImportance(),
    "taylor": TaylorImportance.calibrated,
    "wanda": WandaImportance.calibrated,
}
"""Criterion name -> the importance that ranks channels, built from the model about to be pruned and the
calibration inputs (None where there are none; the criteria in `DATA_AWARE` then raise a ConfigError)."""

DATA_AWARE = frozenset({"taylor", "wanda"})
"""The criteria that score channels on calibration inputs (a forward pass, and for taylor a forward and backward
pass per input, of up to `SCORE_SAMPLES` inputs before pruning)."""


def structure_criterion(importance: str) -> str:
    """What a transformer's heads and MLP neurons are ranked by under `importance` (`edgeprune.structure`):
    'activation' for a criterion that looks at data (`DATA_AWARE`), 'l2' (weight norm) for any other. So l2 and
    fpgm, or taylor and wanda, remove the same heads and neurons."""
    return "activation" if importance in DATA_AWARE else "l2"
