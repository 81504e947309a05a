"""Structured pruning through torch-pruning: whole channels removed, so the module really shrinks.

plan -> check -> execute: the dependency graph groups coupled channels (residual adds, depthwise convs,
BatchNorm), an importance criterion ranks them, and channel counts are rounded to multiples of `round_to`.
The classifier's outputs are never pruned. BatchNorm statistics are re-estimated on calibration data.

Multi-head attention (nn.MultiheadAttention) is pruned alike in every head. Models with attention torch-pruning
cannot follow (windowed / relative-position attention: Swin, MaxViT) are pruned in their MLP hidden layers only.
Where torch-pruning cannot trace the whole model at all (ShuffleNet's channel shuffle, the patch merging of the
deeper Swins), each plain chain of layers (an nn.Sequential of convs / linears / norms / activations) is traced on
its own and pruned in its private channels: every width but the chain's input and output.

Channels are ranked by an importance criterion (`criteria.IMPORTANCE`: magnitude, FPGM, and the data-aware taylor
and wanda). Scores always come from the dense model, before any channel is removed. Per-group ratios decide the
channel counts, so the criterion changes which channels stay, not how many. A plan with `prune_steps` > 1 removes
the channels in that many equal steps (torch-pruning's iterative schedule, towards the same widths), with a hook
between steps where `schedule.prune_and_recover` fine-tunes.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from edgeprune import structure
from edgeprune.criteria import DATA_AWARE, IMPORTANCE, structure_criterion
from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.types import ChannelGroup, Plan, PruneSummary


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on `example_input`."""
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def _output_layers(model: nn.Module) -> list[nn.Module]:
    """Linear/conv layers whose output is the model's output: their output channels are the classes. A module
    that names them (`output_layer_names`: a detector's heads, a segmenter's classifiers) is taken at its word;
    otherwise the last one registered."""
    named = getattr(model, "output_layer_names", None)
    if named:
        modules = dict(model.named_modules())
        missing = [n for n in named if n not in modules]
        if missing:
            raise UnsupportedModelError(f"output layer '{missing[0]}' named by the model's output_layer_names is not "
                                        "one of its modules; name them as named_modules() does")
        return [modules[n] for n in named]
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            last = module
    return [last] if last is not None else []


_PASS_THROUGH = (nn.GELU, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Mish, nn.Dropout, nn.Identity)


def _custom_attention(model: nn.Module) -> tuple[str, str] | None:
    """(name, class) of the first attention module other than nn.MultiheadAttention, which torch-pruning models.

    Windowed / relative-position attention (Swin, MaxViT) reshapes and rolls its tokens in ways torch-pruning
    cannot map channels through: enumerating its groups exhausts memory (over 20 GB for swin_t).
    """
    for name, module in model.named_modules():
        if "Attention" in type(module).__name__ and not isinstance(module, nn.MultiheadAttention):
            return name, type(module).__name__
    return None


def _mlp_hidden_layers(model: nn.Module) -> set[nn.Module]:
    """First Linear of each MLP block (Linear -> activation / dropout -> Linear inside one nn.Sequential):
    its output channels are private to the block, so pruning them touches nothing else."""
    hidden = set()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        layers = list(seq)
        for i, first in enumerate(layers):
            if not isinstance(first, nn.Linear):
                continue
            j = i + 1
            while j < len(layers) and isinstance(layers[j], _PASS_THROUGH):
                j += 1
            if j < len(layers) and isinstance(layers[j], nn.Linear) and layers[j].in_features == first.out_features:
                hidden.add(first)
    return hidden


def _ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels stay: the classifier; with attention torch-pruning cannot follow, every layer
    but the MLP hidden layers (the residual stream and the attention projections keep their width)."""
    ignored = _output_layers(model)
    attention = _custom_attention(model)
    if attention is None:
        return ignored
    hidden = _mlp_hidden_layers(model) - set(ignored)
    if not hidden:
        raise UnsupportedModelError(
            f"pruning: torch-pruning cannot follow attention module '{attention[0]}' ({attention[1]}) and the model "
            "has no MLP blocks to prune instead; export it unpruned (keep ratio 1.0)"
        )
    layers = (nn.Linear, nn.modules.conv._ConvNd)
    return ignored + [m for m in model.modules() if isinstance(m, layers) and m not in hidden and m not in ignored]


_CHAIN_LAYERS = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    *_PASS_THROUGH,
)


def _is_chain(module: nn.Module) -> bool:
    """An nn.Sequential of plain layers with at least two convs / linears: it has private channels."""
    if not isinstance(module, nn.Sequential) or not all(isinstance(m, _CHAIN_LAYERS) for m in module):
        return False
    return sum(isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) for m in module) >= 2


def _chains(model: nn.Module, example_input: torch.Tensor) -> list[tuple[nn.Sequential, torch.Tensor]]:
    """The chains with private channels that `model`'s forward pass runs exactly once, each with its input."""
    chains = [m for m in model.modules() if _is_chain(m) and _has_private_channels(m)]
    seen: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in chains}

    def grab(module: nn.Module, inputs: tuple) -> None:
        seen[module].append(inputs[0].detach().clone())

    _run_hooked(model, example_input, [m.register_forward_pre_hook(grab) for m in chains])
    return [(m, seen[m][0]) for m in chains if len(seen[m]) == 1]


def _run_hooked(model: nn.Module, example_input: torch.Tensor, handles: list) -> None:
    """One forward pass of `model` without autograd, then the hooks behind `handles` removed."""
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()


def _chain_boundary_layers(chain: nn.Sequential) -> list[nn.Module]:
    """The layers of a chain whose output width is the chain's input or output width.

    These are the last conv / linear, grouped convs before the first ungrouped one (their width is the input's),
    and grouped convs after the last ungrouped one (their width is the output's).
    """
    layers = [m for m in chain if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    plain = [i for i, m in enumerate(layers) if getattr(m, "groups", 1) == 1]
    if not plain:
        return layers
    return layers[: plain[0]] + layers[plain[-1] :]


def _has_private_channels(chain: nn.Sequential) -> bool:
    layers = [m for m in chain if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    return len(layers) > len(_chain_boundary_layers(chain))


def _attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Multi-head attention layers and their head counts: channels are pruned alike in every head, so the
    embedding stays divisible by the head count."""
    return {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}


def _sync_cached_widths(model: nn.Module) -> None:
    """Update widths that modules keep as plain attributes and use in forward(), which pruning cannot see."""
    for module in model.modules():
        conv_proj = getattr(module, "conv_proj", None)
        if hasattr(module, "hidden_dim") and isinstance(conv_proj, nn.Conv2d):  # torchvision VisionTransformer
            module.hidden_dim = conv_proj.out_channels


def recalibrate_bn(model: nn.Module, calibration: torch.Tensor, batch_size: int = 32) -> int:
    """Re-estimate BatchNorm running statistics on `calibration` (cumulative average); returns batches run."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(calibration) == 0:
        return 0
    saved = {bn: bn.momentum for bn in bns}
    modes = {m: m.training for m in model.modules()}
    # Only the BatchNorm layers go to train mode: dropout / stochastic depth stay off (they would skew the
    # statistics), and training-only branches (auxiliary heads, which pruning did not trace) stay unused.
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
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
    for module, training in modes.items():
        module.train(training)
    return batches


def _check_plan(plan: Plan) -> None:
    if not 0.0 < plan.keep_ratio <= 1.0:
        raise ConfigError(f"keep ratio {plan.keep_ratio} is out of range; --prune takes a fraction in [0, 1)")
    if plan.importance not in IMPORTANCE:
        raise ConfigError(f"importance '{plan.importance}' is unknown; known: {', '.join(IMPORTANCE)}")
    if plan.round_to < 1:
        raise ConfigError(f"round_to {plan.round_to} must be a positive channel count")
    for name, ratio in (("heads", plan.head_keep_ratio), ("MLP neurons", plan.mlp_keep_ratio)):
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"share of {name} kept {ratio} is out of range; give a fraction in (0, 1]")
    if plan.keep_blocks is not None and plan.keep_blocks < 1:
        raise ConfigError(f"blocks kept {plan.keep_blocks} must be at least 1")
    if plan.prune_steps < 1:
        raise ConfigError(f"prune steps {plan.prune_steps} must be at least 1 (1 prunes in one shot)")


def _restructured(model: nn.Module, example_input: torch.Tensor | None, plan: Plan,
                  calibration: torch.Tensor | None) -> tuple[nn.Module, dict]:
    """`model` with `plan`'s transformer structure removed (`edgeprune.structure`), and what was removed; the model
    itself and {} when the plan removes none. Heads and neurons rank by activation where the criterion looks at
    data and calibration is given, else by weight norm."""
    if not plan.restructures:
        return model, {}
    importance = structure_criterion(plan.importance) if calibration is not None else "l2"
    return structure.prune_structure(model, example_input, head_keep_ratio=plan.head_keep_ratio,
                                     mlp_keep_ratio=plan.mlp_keep_ratio, keep_blocks=plan.keep_blocks,
                                     calibration=calibration, importance=importance, round_to=plan.round_to)


StepHook = Callable[[nn.Module, int], None]
"""Called with the model after each pruning step but the last (and the step's number, from 1): an iterative
schedule fine-tunes there."""


def _remove_channels(
    model: nn.Module, example_input: torch.Tensor, plan: Plan, calibration: torch.Tensor | None,
    after_step: StepHook | None = None,
) -> int:
    """Prune `model` in place following `plan`, channels ranked by `plan.importance` (scored on `calibration` for
    the data-aware criteria: on the dense model, and again before each later step of an iterative plan); the
    number of steps the channels went in (0 when the plan keeps every channel)."""
    by_name = dict(model.named_modules())
    unknown = sorted(set(plan.layer_keep_ratios) - set(by_name))
    if unknown:
        raise ConfigError(f"per-layer keep ratio names module '{unknown[0]}', which the model does not have")
    ratio_dict = {by_name[name]: 1.0 - keep for name, keep in plan.layer_keep_ratios.items()}
    if plan.keep_ratio >= 1.0 and not ratio_dict:
        return 0
    torch.manual_seed(plan.seed)
    # scored once on the whole dense model: the chain fallback below ranks each chain's channels by the same
    # scores (its layers' own inputs and the whole model's loss), so both paths read the data alike
    importance = IMPORTANCE[plan.importance](model, calibration)
    try:
        with torch.enable_grad():  # torch-pruning traces the dependency graph through autograd
            pruner = _pruner(model, example_input, plan, ratio_dict, importance)
    except UnsupportedModelError:
        raise
    except Exception as whole:  # torch-pruning cannot trace the whole model: prune its chains one by one, at once
        try:
            pruned = _remove_chain_channels(model, example_input, plan, ratio_dict, importance)
        except Exception as exc:
            raise UnsupportedModelError(_prune_failure(model, exc)) from exc
        if not pruned:
            raise UnsupportedModelError(_prune_failure(model, whole)) from whole
        _checked_widths(model, example_input)
        return 1
    for step in range(1, plan.prune_steps + 1):
        if step > 1:
            if after_step is not None:
                after_step(model, step - 1)
            if plan.importance in DATA_AWARE:  # rank what is left by the data as the fine-tuned model sees it
                pruner.importance = IMPORTANCE[plan.importance](model, calibration)
        try:
            with torch.enable_grad():
                pruner.step()
        except Exception as exc:  # torch-pruning traced the model but cannot remove a group's channels
            raise UnsupportedModelError(_prune_failure(model, exc)) from exc
        _checked_widths(model, example_input)
    return plan.prune_steps


def _checked_widths(model: nn.Module, example_input: torch.Tensor) -> None:
    """Widths the model keeps outside its layers brought in line; a width used in forward that is still off breaks
    the model only now: an UnsupportedModelError naming where."""
    _sync_cached_widths(model)
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:
        raise UnsupportedModelError(_prune_failure(model, exc, after=True)) from exc


def _pruner(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: Plan,
    ratio_dict: dict[nn.Module, float],
    importance: tp.importance.Importance,
) -> tp.pruner.MetaPruner:
    """A torch-pruning pruner over the whole model (tracing it builds the dependency graph)."""
    return tp.pruner.MetaPruner(
        model,
        example_input,
        importance=importance,
        pruning_ratio=1.0 - plan.keep_ratio,
        pruning_ratio_dict=ratio_dict or None,
        ignored_layers=_ignored_layers(model),
        round_to=plan.round_to,
        num_heads=_attention_heads(model),
        iterative_steps=plan.prune_steps,
    )


def _remove_chain_channels(
    model: nn.Module,
    example_input: torch.Tensor,
    plan: Plan,
    ratio_dict: dict[nn.Module, float],
    importance: tp.importance.Importance,
) -> bool:
    """Prune the private channels of each chain in `model`, traced on its own; False when it has none.

    `importance` was built on the whole model: a chain's layers keep their activation norms and gradients until
    its own channels go, as pruning another chain leaves its weights as they are."""
    chains = _chains(model, example_input)
    for chain, chain_input in chains:
        inside = set(chain.modules())
        with torch.enable_grad():
            tp.pruner.MetaPruner(
                chain,
                chain_input,
                importance=importance,
                pruning_ratio=1.0 - plan.keep_ratio,
                pruning_ratio_dict={m: r for m, r in ratio_dict.items() if m in inside} or None,
                ignored_layers=_chain_boundary_layers(chain),
                round_to=plan.round_to,
            ).step()
    return bool(chains)


def pruned_architecture(
    model: nn.Module, example_input: torch.Tensor, plan: Plan, calibration: torch.Tensor | None = None
) -> nn.Module:
    """A pruned copy of `model` for its shapes only: no MAC counts, BatchNorm statistics left as they were.

    The planner's cost tier traces hundreds of candidates; this skips what only a deployable model needs. The
    channel counts do not depend on the criterion, so without `calibration` a data-aware one (`DATA_AWARE`) is
    replaced by l2: the shapes are right (for timing and tracing), the channels kept are l2's. Give `calibration`
    where the weights matter (a sensitivity score).
    """
    _check_plan(plan)
    plan = dataclasses.replace(plan, prune_steps=1)  # the widths are a one-shot plan's, in a fraction of the time
    if calibration is None and plan.importance in DATA_AWARE:
        plan = dataclasses.replace(plan, importance="l2")
    pruned, _ = _restructured(copy.deepcopy(model).eval(), example_input, plan, calibration)
    _remove_channels(pruned, example_input, plan, calibration)
    return pruned.eval()


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    calibration: torch.Tensor,
    plan: Plan,
    between_steps: StepHook | None = None,
) -> tuple[nn.Module, PruneSummary]:
    """A pruned copy of `model` following `plan` (global `keep_ratio`, per-layer `layer_keep_ratios`), BatchNorm
    re-estimated on `calibration`, which also scores the channels for the data-aware criteria. An iterative plan
    (`prune_steps` > 1) removes the channels in equal steps towards the same widths as one-shot, BatchNorm
    re-estimated after each and `between_steps` called between them."""
    _check_plan(plan)
    model = copy.deepcopy(model).eval()
    macs_before, params_before = count_macs_params(model, example_input)
    widths_before = layer_widths(model)
    model, removed = _restructured(model, example_input, plan, calibration)

    def after_step(pruned: nn.Module, step: int) -> None:
        recalibrate_bn(pruned, calibration)
        pruned.eval()
        if between_steps is not None:
            between_steps(pruned, step)
            pruned.eval()

    batches = 0
    steps = _remove_channels(model, example_input, plan, calibration, after_step)
    if steps:
        batches = recalibrate_bn(model, calibration)
        model.eval()

    macs_after, params_after = count_macs_params(model, example_input)
    widths_after = layer_widths(model)
    # layers a restructure rebuilt (a torchvision attention split into q/k/v) are in `structure`, not here
    changed = {n: (widths_before[n], w) for n, w in widths_after.items() if widths_before.get(n, w) != w}
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
        structure=removed,
        prune_steps=max(1, steps),
    )
    return model, summary


def _prune_failure(model: nn.Module, exc: BaseException, after: bool = False) -> str:
    """One line naming the module at which torch-pruning failed while it traced or pruned `model`.

    The module is the innermost one whose code (or whose torch-pruning graph node) was being handled when `exc`
    was raised; for a functional op (a reshape, a split) it is the nearest module feeding that op.
    """
    names = {id(m): (n, type(m).__name__) for n, m in model.named_modules()}
    where = None
    op = None
    tb = exc.__traceback__
    while tb is not None:  # innermost frames last: keep overwriting
        frame = tb.tb_frame
        local = frame.f_locals
        owner = next((local[k] for k in ("self", "module", "layer") if id(local.get(k)) in names), None)
        if owner is not None and not frame.f_code.co_filename.endswith("nn/modules/module.py"):
            where, op = names[id(owner)], None
        # torch-pruning's graph code holds the node it works on in a local named `node` / `reshape_node` / ...
        graph_node = next(
            (v for k, v in local.items() if k.endswith("node") and type(v).__module__.startswith("torch_pruning")),
            None,
        )
        if graph_node is not None and (found := _nearest_module(graph_node, names)) is not None:
            where = found
            kind = getattr(getattr(graph_node, "type", None), "name", None)
            op = None if id(graph_node.module) in names else (kind or type(graph_node.module).__name__).lower()
        tb = tb.tb_next
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = f"{type(exc).__name__}: {lines[0][:240]}" if lines else type(exc).__name__
    place = ""
    if where is not None:
        if op:
            place = f" at the {op} op after module '{where[0]}' ({where[1]})"
        else:
            place = f" at module '{where[0]}' ({where[1]})" if where[0] else f" at the model's forward ({where[1]})"
    what = "the pruned model fails" if after else "torch-pruning cannot prune this model"
    return f"pruning: {what}{place}: {reason}; export it unpruned (keep ratio 1.0)"


def _nearest_module(node, names: dict[int, tuple[str, str]], limit: int = 64) -> tuple[str, str] | None:
    """The model module of a torch-pruning graph node, or of the nearest node upstream of it."""
    queue, seen = [node], set()
    while queue and len(seen) < limit:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        module = getattr(current, "module", None)
        if module is not None and id(module) in names:
            return names[id(module)]
        queue.extend(getattr(current, "inputs", ()))
    return None


def _chain_groups(model: nn.Module, example_input: torch.Tensor) -> list:
    """torch-pruning groups of every chain's private channels, each chain traced on its own."""
    layers = [nn.Linear, nn.modules.conv._ConvNd]
    groups = []
    for chain, chain_input in _chains(model, example_input):
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(chain, example_inputs=chain_input)
            groups += graph.get_all_groups(ignored_layers=_chain_boundary_layers(chain), root_module_types=layers)
    return groups


def layer_widths(model: nn.Module) -> dict[str, int]:
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """The prunable channel groups of `model` in forward order (the classifier's outputs excluded).

    A group's keep ratio is set through `Plan.layer_keep_ratios[group.root]`.
    """
    model = copy.deepcopy(model).eval()
    names = {m: n for n, m in model.named_modules()}
    layers = (nn.Linear, nn.modules.conv._ConvNd)
    order: dict[nn.Module, int] = {}
    macs: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        order.setdefault(module, len(order))
        if isinstance(module, nn.modules.conv._ConvNd):
            per_out = (module.in_channels // module.groups) * int(np.prod(module.kernel_size))
        else:
            per_out = module.in_features
        macs[module] = int(output.numel()) * per_out

    _run_hooked(model, example_input, [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)])
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
            groups = list(graph.get_all_groups(ignored_layers=_ignored_layers(model), root_module_types=list(layers)))
    except UnsupportedModelError:
        raise
    except Exception as whole:  # noqa: BLE001 - torch-pruning cannot trace the whole model: trace its chains
        try:
            groups = _chain_groups(model, example_input)
        except Exception as exc:
            raise UnsupportedModelError(_prune_failure(model, exc)) from exc
        if not groups:
            raise UnsupportedModelError(_prune_failure(model, whole)) from whole
    found = []
    for group in groups:
        root = group[0].dep.target.module
        if root not in names or root not in order:
            continue
        touched = {dep.target.module for dep, _ in group if isinstance(dep.target.module, layers)}
        channels = root.out_channels if isinstance(root, nn.modules.conv._ConvNd) else root.out_features
        found.append(ChannelGroup(names[root], int(channels), sum(macs.get(m, 0) for m in touched), order[root]))
    return sorted(found, key=lambda g: g.order)
