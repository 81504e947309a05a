"""Structural pruning of transformer encoders: whole attention heads, MLP hidden neurons and whole blocks removed.

Where `prune.py` narrows channels (in attention, every head alike), this module removes the units encoders are
built of, so the pruned model really holds fewer heads (its head count attribute and its q/k/v/out projections
shrink, head size unchanged), narrower MLPs (fc1 rows and fc2 columns) and fewer blocks. Known architectures:

- torchvision `VisionTransformer` (vit_b_16 and any smaller one): each `EncoderBlock.self_attention`
  (nn.MultiheadAttention, which cannot hold fewer heads than its width allows) is rebuilt as a
  `PrunedMultiheadAttention` with separate q/k/v projections; `MLPBlock` and `Encoder.layers`.
- timm `VisionTransformer` (deit_tiny_patch16_224, ...): `Attention` (fused qkv), `Mlp`, `blocks`.
- transformers BERT (`BertModel`, `BertForSequenceClassification`, or a module holding one; imported lazily):
  `BertAttention` (query/key/value + output.dense), `BertIntermediate` / `BertOutput`, `BertEncoder.layer`.

Importance (`IMPORTANCE`), per layer, ties broken by position (the lower index wins), so the same model and
inputs always keep the same units:

- `l2` (no data): a head scores the L2 norm of all its weights in the q, k, v projections (its rows) and in the
  output projection (its columns); an MLP neuron the L2 norm of its fc1 row and fc2 column. Biases are not counted.
- `activation` (calibration inputs, up to `SCORE_SAMPLES`): a head scores the mean L2 norm of what it adds to the
  attention output (its output times its columns of the output projection), per token; an MLP neuron the mean
  |activation| (after the non-linearity) times the L2 norm of its fc2 column.

Depth: with calibration inputs a block scores the mean relative change it makes to the tokens it is given,
‖out − in‖ / ‖in‖ per token, and the blocks that change the stream most are kept; without them blocks are kept
evenly spaced, first and last included. Explicit block indices may be given instead.

`prune_structure` runs depth, heads and MLP pruning in that order and returns a summary (a plain dict for the
manifest). Names in the summary are those of the pruned model: an nn.Sequential of blocks keeps its blocks'
names (`encoder_layer_7`), an nn.ModuleList (BERT) is renumbered.
"""

from __future__ import annotations

import copy
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgeprune._calibration import run_hooked
from edgeprune.errors import ConfigError, UnsupportedModelError


IMPORTANCE = ("l2", "activation")
"""Head / neuron criteria: `l2` reads the weights only; `activation` runs calibration inputs."""

KNOWN = "torchvision VisionTransformer, timm VisionTransformer, transformers BERT"


# ------------------------------------------------------------------------------------------ class lookup


def _loaded_class(module_name: str, class_name: str) -> type | None:
    """The class `class_name` of `module_name` if that module is already imported, else None: a model built from
    it has imported it, so nothing heavy is imported here to find out."""
    module = sys.modules.get(module_name)
    return getattr(module, class_name, None) if module is not None else None


def _is(module: nn.Module, module_name: str, class_name: str) -> bool:
    """True when `module` is exactly that class (a subclass may change forward() in ways surgery cannot follow)."""
    cls = _loaded_class(module_name, class_name)
    return cls is not None and type(module) is cls


_TV = "torchvision.models.vision_transformer"
_TIMM_ATTN = "timm.layers.attention"
_TIMM_MLP = "timm.layers.mlp"
_TIMM_VIT = "timm.models.vision_transformer"
_BERT = "transformers.models.bert.modeling_bert"


# ------------------------------------------------------------------------------------------ linear surgery


def _sliced_linear(layer: nn.Linear, rows: Sequence[int] | None = None, cols: Sequence[int] | None = None) -> nn.Linear:
    """A new nn.Linear holding `layer`'s weight rows `rows` (output features) and columns `cols` (input
    features), and its bias entries `rows`; None keeps all."""
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    if rows is not None:
        index = torch.as_tensor(list(rows), dtype=torch.long, device=weight.device)
        weight = weight.index_select(0, index)
        bias = bias.index_select(0, index) if bias is not None else None
    if cols is not None:
        weight = weight.index_select(1, torch.as_tensor(list(cols), dtype=torch.long, device=weight.device))
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(layer.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    new.train(layer.training)
    return new


def _head_columns(heads: Sequence[int], head_dim: int) -> list[int]:
    """Feature indices of `heads` in a (heads x head_dim) layout."""
    return [h * head_dim + j for h in heads for j in range(head_dim)]


# ------------------------------------------------------------------------------------------ torchvision attention


class PrunedMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with a head count of its own: separate q/k/v projections to `num_heads * head_dim`
    features and an output projection back to `embed_dim`, computed with plain matmul + softmax (portable to
    every target). Called like nn.MultiheadAttention; masks are not supported (torchvision's EncoderBlock gives
    none)."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, bias: bool = True, out_bias: bool = True,
                 dropout: float = 0.0, batch_first: bool = True):  # fmt: skip
        super().__init__()
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=out_bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "PrunedMultiheadAttention":
        """The same function as `mha` (every head kept), in this module's layout."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise UnsupportedModelError(
                "head pruning: nn.MultiheadAttention with separate key/value widths, bias_k/bias_v or add_zero_attn "
                "is not supported; prune its channels instead (keep the head ratio at 1.0)"
            )
        embed, heads = mha.embed_dim, mha.num_heads
        new = cls(embed, heads, embed // heads, bias=mha.in_proj_bias is not None,
                  out_bias=mha.out_proj.bias is not None, dropout=mha.dropout, batch_first=mha.batch_first)  # fmt: skip
        new = new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * embed : (i + 1) * embed])
                if mha.in_proj_bias is not None:
                    proj.bias.copy_(mha.in_proj_bias[i * embed : (i + 1) * embed])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise UnsupportedModelError("PrunedMultiheadAttention takes no attention masks; prune heads of a model "
                                        "that gives none (torchvision VisionTransformer)")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        heads, dim = self.num_heads, self.head_dim
        q = self.q_proj(query).reshape(batch, q_len, heads, dim).transpose(1, 2)
        k = self.k_proj(key).reshape(batch, k_len, heads, dim).transpose(1, 2)
        v = self.v_proj(value).reshape(batch, k_len, heads, dim).transpose(1, 2)
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        attn = F.dropout(attn, p=self.dropout, training=self.training)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, q_len, heads * dim)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(dim=1) if average_attn_weights else attn


# ------------------------------------------------------------------------------------------ adapters


@dataclass
class _Heads:
    """One attention layer as head surgery sees it."""

    name: str
    num_heads: int
    head_dim: int
    qkv: list[torch.Tensor]
    """The q, k and v projection weights, each (num_heads * head_dim, in)."""
    out: nn.Linear
    """The output projection: its input is the heads' outputs side by side."""
    keep: Callable[[list[int]], None]
    """Rebuild the layer in place holding only these heads."""


@dataclass
class _Mlp:
    """One MLP block as neuron surgery sees it."""

    name: str
    fc1: nn.Linear
    fc2: nn.Linear
    keep: Callable[[list[int]], None]


@dataclass
class _Blocks:
    """One stack of encoder blocks."""

    name: str
    parent: nn.Module
    attr: str
    container: nn.Module
    config: object | None = None
    """A transformers config that counts the layers (num_hidden_layers), kept in step with the stack."""


def _tv_heads(name: str, block: nn.Module) -> _Heads:
    """torchvision EncoderBlock: its nn.MultiheadAttention is first rebuilt as PrunedMultiheadAttention."""
    attn = block.self_attention
    if isinstance(attn, nn.MultiheadAttention):
        attn = PrunedMultiheadAttention.from_mha(attn)
        block.self_attention = attn

    def keep(heads: list[int]) -> None:
        cols = _head_columns(heads, attn.head_dim)
        attn.q_proj = _sliced_linear(attn.q_proj, rows=cols)
        attn.k_proj = _sliced_linear(attn.k_proj, rows=cols)
        attn.v_proj = _sliced_linear(attn.v_proj, rows=cols)
        attn.out_proj = _sliced_linear(attn.out_proj, cols=cols)
        attn.num_heads = len(heads)
        block.num_heads = len(heads)

    return _Heads(f"{name}.self_attention", attn.num_heads, attn.head_dim,
                  [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], attn.out_proj, keep)  # fmt: skip


def _timm_heads(name: str, attn: nn.Module) -> _Heads:
    """timm Attention: one fused qkv Linear laid out (3, heads, head_dim), and proj."""
    if not isinstance(attn.norm, nn.Identity):
        raise UnsupportedModelError(f"head pruning: timm Attention '{name}' normalises across heads (scale_norm); "
                                    "removing heads would change that normalisation: keep the head ratio at 1.0")
    heads, dim = attn.num_heads, attn.head_dim
    inner = heads * dim
    w = attn.qkv.weight

    def keep(kept: list[int]) -> None:
        cols = _head_columns(kept, dim)
        attn.qkv = _sliced_linear(attn.qkv, rows=[s * inner + c for s in range(3) for c in cols])
        attn.proj = _sliced_linear(attn.proj, cols=cols)
        if getattr(attn, "gate", None) is not None:
            attn.gate = _sliced_linear(attn.gate, rows=cols)
        attn.num_heads = len(kept)
        if hasattr(attn, "attn_dim"):
            attn.attn_dim = len(kept) * dim

    return _Heads(name, heads, dim, [w[:inner], w[inner : 2 * inner], w[2 * inner :]], attn.proj, keep)


def _bert_heads(name: str, attention: nn.Module) -> _Heads:
    """transformers BertAttention: self.query/key/value and output.dense."""
    sa = attention.self
    heads, dim = sa.num_attention_heads, sa.attention_head_size

    def keep(kept: list[int]) -> None:
        cols = _head_columns(kept, dim)
        sa.query = _sliced_linear(sa.query, rows=cols)
        sa.key = _sliced_linear(sa.key, rows=cols)
        sa.value = _sliced_linear(sa.value, rows=cols)
        attention.output.dense = _sliced_linear(attention.output.dense, cols=cols)
        sa.num_attention_heads = len(kept)
        sa.all_head_size = len(kept) * dim

    return _Heads(name, heads, dim, [sa.query.weight, sa.key.weight, sa.value.weight], attention.output.dense, keep)


def _attention_like(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _find_heads(model: nn.Module) -> list[_Heads]:
    """Every attention layer of `model` that head pruning knows; an UnsupportedModelError naming the model (or
    its first attention module it does not know) otherwise."""
    found: list[_Heads] = []
    known: set[int] = set()
    for name, module in model.named_modules():
        if _is(module, _TV, "EncoderBlock"):
            if not isinstance(module.self_attention, (nn.MultiheadAttention, PrunedMultiheadAttention)):
                continue
            found.append(_tv_heads(name, module))
            known.add(id(module.self_attention))
        elif _is(module, _TIMM_ATTN, "Attention"):
            found.append(_timm_heads(name, module))
            known.add(id(module))
        elif _is(module, _BERT, "BertAttention") and _is(module.self, _BERT, "BertSelfAttention"):
            found.append(_bert_heads(name, module))
            known.update({id(module), id(module.self)})
        elif isinstance(module, PrunedMultiheadAttention):
            known.add(id(module))
    for name, module in model.named_modules():  # attention elsewhere would silently keep all its heads
        if _attention_like(module) and id(module) not in known and not _inside_known(model, name, known):
            raise UnsupportedModelError(
                f"head pruning: attention module '{name}' ({type(module).__name__}) of model {type(model).__name__} "
                f"is not one head pruning knows ({KNOWN}); keep the head ratio at 1.0"
            )
    if not found:
        raise UnsupportedModelError(
            f"head pruning: model {type(model).__name__} has no attention layer head pruning knows ({KNOWN}); "
            "prune its channels instead (--prune) and keep the head ratio at 1.0"
        )
    return found


def _inside_known(model: nn.Module, name: str, known: set[int]) -> bool:
    """True when module `name` sits inside (or is a sub-module of) an attention layer already found."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if id(model.get_submodule(".".join(parts[:i]))) in known:
            return True
    return False


def _find_mlps(model: nn.Module) -> list[_Mlp]:
    """Every transformer MLP block of `model` that neuron pruning knows; an UnsupportedModelError otherwise."""
    found: list[_Mlp] = []
    for name, module in model.named_modules():
        if _is(module, _TV, "MLPBlock"):
            found.append(_tv_mlp(name, module))
        elif _is(module, _TIMM_MLP, "Mlp"):
            found.append(_timm_mlp(name, module))
        elif _is(module, _BERT, "BertLayer"):
            found.append(_bert_mlp(name, module))
    if not found:
        raise UnsupportedModelError(
            f"MLP pruning: model {type(model).__name__} has no transformer MLP block MLP pruning knows ({KNOWN}); "
            "prune its channels instead (--prune)"
        )
    return found


def _tv_mlp(name: str, block: nn.Sequential) -> _Mlp:
    linears = [i for i, m in enumerate(block) if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        raise UnsupportedModelError(f"MLP pruning: torchvision MLPBlock '{name}' holds {len(linears)} Linear layers, "
                                    "not 2; prune its channels instead")
    i1, i2 = linears

    def keep(kept: list[int]) -> None:
        block[i1] = _sliced_linear(block[i1], rows=kept)
        block[i2] = _sliced_linear(block[i2], cols=kept)

    return _Mlp(name, block[i1], block[i2], keep)


def _timm_mlp(name: str, mlp: nn.Module) -> _Mlp:
    if not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.fc2, nn.Linear) or not isinstance(mlp.norm, nn.Identity):
        raise UnsupportedModelError(f"MLP pruning: timm Mlp '{name}' uses 1x1 convs or a norm across its hidden "
                                    "width (scale_mlp_norm); prune its channels instead")

    def keep(kept: list[int]) -> None:
        mlp.fc1 = _sliced_linear(mlp.fc1, rows=kept)
        mlp.fc2 = _sliced_linear(mlp.fc2, cols=kept)

    return _Mlp(name, mlp.fc1, mlp.fc2, keep)


def _bert_mlp(name: str, layer: nn.Module) -> _Mlp:
    def keep(kept: list[int]) -> None:
        layer.intermediate.dense = _sliced_linear(layer.intermediate.dense, rows=kept)
        layer.output.dense = _sliced_linear(layer.output.dense, cols=kept)

    return _Mlp(f"{name}.intermediate", layer.intermediate.dense, layer.output.dense, keep)


def _is_block(module: nn.Module) -> bool:
    return _is(module, _TV, "EncoderBlock") or _is(module, _TIMM_VIT, "Block") or _is(module, _BERT, "BertLayer")


def _find_blocks(model: nn.Module) -> list[_Blocks]:
    """Every stack (nn.Sequential / nn.ModuleList) of encoder blocks depth pruning knows."""
    found: list[_Blocks] = []
    for name, module in model.named_modules():
        for attr, child in module.named_children():
            if not isinstance(child, (nn.Sequential, nn.ModuleList)) or len(child) == 0:
                continue
            if all(_is_block(b) for b in child):
                full = f"{name}.{attr}" if name else attr
                config = module.config if _is(module, _BERT, "BertEncoder") else None
                found.append(_Blocks(full, module, attr, child, config))
    if not found:
        raise UnsupportedModelError(
            f"depth pruning: model {type(model).__name__} has no stack of encoder blocks depth pruning knows "
            f"({KNOWN})"
        )
    return found


# ------------------------------------------------------------------------------------------ scoring


def _check_importance(importance: str, calibration: torch.Tensor | None, what: str) -> None:
    if importance not in IMPORTANCE:
        raise ConfigError(f"{what} importance '{importance}' is unknown; known: {', '.join(IMPORTANCE)}")
    if importance == "activation" and (calibration is None or len(calibration) == 0):
        raise ConfigError(f"{what} importance 'activation' scores on calibration inputs and none were given; give "
                          "data or use l2")


def _record_inputs(model: nn.Module, layers: list[nn.Module], calibration: torch.Tensor,
                   reduce: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
    """For each layer, the sum over calibration tokens of reduce(layer, its input) and the token count: the mean."""
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def hook(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().float()
        x = x.reshape(-1, x.shape[-1])
        value = reduce(module, x)
        sums[id(module)] = sums[id(module)] + value if id(module) in sums else value
        counts[id(module)] = counts.get(id(module), 0) + x.shape[0]

    run_hooked(model, calibration, [layer.register_forward_pre_hook(hook) for layer in layers])
    missing = [layer for layer in layers if id(layer) not in sums]
    if missing:
        raise UnsupportedModelError(f"structure pruning: a layer ({type(missing[0]).__name__}) never ran on the "
                                    "calibration inputs, so it cannot be scored; use importance l2")
    return [sums[id(layer)] / counts[id(layer)] for layer in layers]


def _head_contribution(out: nn.Module, x: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """Per head: the sum over tokens of ‖W_out[:, head] · x_head‖."""
    w = out.weight.detach().float()
    norms = [(x[:, h * dim : (h + 1) * dim] @ w[:, h * dim : (h + 1) * dim].T).norm(dim=1).sum() for h in range(heads)]
    return torch.stack(norms)


def _head_scores(layers: list[_Heads], importance: str, model: nn.Module,
                 calibration: torch.Tensor | None) -> list[torch.Tensor]:  # fmt: skip
    if importance == "activation":
        dims = {id(layer.out): (layer.num_heads, layer.head_dim) for layer in layers}
        return _record_inputs(model, [layer.out for layer in layers], calibration,
                              lambda m, x: _head_contribution(m, x, *dims[id(m)]))  # fmt: skip
    scores = []
    for layer in layers:
        total = torch.zeros(layer.num_heads)
        d = layer.head_dim
        for h in range(layer.num_heads):
            rows = slice(h * d, (h + 1) * d)
            total[h] = sum(w.detach()[rows].float().pow(2).sum() for w in layer.qkv)
            total[h] += layer.out.weight.detach()[:, rows].float().pow(2).sum()
        scores.append(total.sqrt())
    return scores


def _mlp_scores(mlps: list[_Mlp], importance: str, model: nn.Module,
                calibration: torch.Tensor | None) -> list[torch.Tensor]:  # fmt: skip
    out_norms = [m.fc2.weight.detach().float().norm(dim=0) for m in mlps]
    if importance == "activation":
        means = _record_inputs(model, [m.fc2 for m in mlps], calibration, lambda m, x: x.abs().sum(0))
        return [mean * norm for mean, norm in zip(means, out_norms)]
    return [(m.fc1.weight.detach().float().pow(2).sum(1) + norm.pow(2)).sqrt() for m, norm in zip(mlps, out_norms)]


def _block_changes(model: nn.Module, stacks: list[_Blocks], calibration: torch.Tensor) -> list[torch.Tensor]:
    """Per stack, per block: the mean over calibration tokens of ‖out − in‖ / ‖in‖."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        y = output[0] if isinstance(output, (tuple, list)) else output
        x = x.detach().float().reshape(-1, x.shape[-1])
        y = y.detach().float().reshape(-1, y.shape[-1])
        change = ((y - x).norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)).sum().item()
        sums[id(module)] = sums.get(id(module), 0.0) + change
        counts[id(module)] = counts.get(id(module), 0) + x.shape[0]

    hooks = [b.register_forward_hook(hook, with_kwargs=True) for s in stacks for b in s.container]
    run_hooked(model, calibration, hooks)
    return [torch.tensor([sums.get(id(b), 0.0) / max(1, counts.get(id(b), 0)) for b in s.container]) for s in stacks]


def _top(scores: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` highest scores, ascending; ties go to the lower index."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:count])


def _evenly_spaced(n: int, count: int) -> list[int]:
    """`count` of `n` block indices evenly spaced, first and last included (the first alone when count is 1)."""
    step = (n - 1) / max(1, count - 1)
    return sorted({math.floor(j * step + 0.5) for j in range(count)})


def _kept_count(keep_ratio: float, total: int, what: str, round_to: int = 1) -> int:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        raise ConfigError(f"{what} keep ratio {keep_ratio!r} is out of range; give a fraction in (0, 1]")
    if not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to {round_to!r} must be a positive count")
    count = math.floor(keep_ratio * total / round_to + 0.5) * round_to
    return min(total, max(min(round_to, total), count, 1))


# ------------------------------------------------------------------------------------------ in-place passes


def _heads_in_place(model: nn.Module, keep_ratio: float, calibration: torch.Tensor | None,
                    importance: str) -> dict[str, dict]:  # fmt: skip
    _check_importance(importance, calibration, "head")
    layers = _find_heads(model)
    counts = [_kept_count(keep_ratio, layer.num_heads, "head") for layer in layers]
    scores = _head_scores(layers, importance, model, calibration)
    record = {}
    for layer, count, score in zip(layers, counts, scores):
        kept = _top(score, count)
        layer.keep(kept)
        record[layer.name] = {"before": layer.num_heads, "after": len(kept), "kept": kept}
    return record


def _mlp_in_place(model: nn.Module, keep_ratio: float, calibration: torch.Tensor | None, importance: str,
                  round_to: int) -> dict[str, dict]:  # fmt: skip
    _check_importance(importance, calibration, "MLP")
    mlps = _find_mlps(model)
    counts = [_kept_count(keep_ratio, m.fc1.out_features, "MLP", round_to) for m in mlps]
    scores = _mlp_scores(mlps, importance, model, calibration)
    record = {}
    for mlp, count, score in zip(mlps, counts, scores):
        before = mlp.fc1.out_features
        mlp.keep(_top(score, count))
        record[mlp.name] = {"before": before, "after": count}
    return record


def _depth_in_place(model: nn.Module, keep_blocks: int | Sequence[int],
                    calibration: torch.Tensor | None) -> dict[str, dict]:  # fmt: skip
    stacks = _find_blocks(model)
    if isinstance(keep_blocks, bool) or not isinstance(keep_blocks, (int, Sequence)) or isinstance(keep_blocks, str):
        raise ConfigError(f"keep_blocks {keep_blocks!r} must be a block count or a list of block indices")
    changes = _block_changes(model, stacks, calibration) if isinstance(keep_blocks, int) and calibration is not None \
        and len(calibration) else None  # fmt: skip
    record = {}
    for i, stack in enumerate(stacks):
        n = len(stack.container)
        if isinstance(keep_blocks, int):
            if not 1 <= keep_blocks <= n:
                raise ConfigError(f"keep_blocks {keep_blocks} is out of range: '{stack.name}' has {n} blocks; "
                                  f"keep 1 to {n}")
            if changes is not None:
                kept, how = _top(changes[i], keep_blocks), "residual-change"
            else:
                kept, how = _evenly_spaced(n, keep_blocks), "even"
        else:
            kept, how = sorted({int(j) for j in keep_blocks}), "given"
            if not kept or any(j < 0 or j >= n for j in kept) or len(kept) != len(keep_blocks):
                raise ConfigError(f"keep_blocks {list(keep_blocks)} must be distinct indices of '{stack.name}''s {n} "
                                  f"blocks (0 to {n - 1}), at least one")
        children = list(stack.container._modules.items())
        if isinstance(stack.container, nn.Sequential):
            new: nn.Module = nn.Sequential(OrderedDict((children[j][0], children[j][1]) for j in kept))
        else:
            new = nn.ModuleList([children[j][1] for j in kept])
        new.train(stack.container.training)
        setattr(stack.parent, stack.attr, new)
        if stack.config is not None:
            stack.config.num_hidden_layers = len(kept)
        record[stack.name] = {"before": n, "after": len(kept), "kept": kept, "chosen_by": how}
    return record


def _check_runs(model: nn.Module, example_input: torch.Tensor | None, what: str) -> None:
    if example_input is None:
        return
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:  # noqa: BLE001 - one line naming the failure
        line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise UnsupportedModelError(f"{what}: the pruned {type(model).__name__} fails on the example input: "
                                    f"{type(exc).__name__}: {line[:200]}; keep this model's ratios at 1.0") from exc


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ public


def prune_heads(model: nn.Module, keep_ratio: float, example_input: torch.Tensor | None = None,
                calibration: torch.Tensor | None = None, importance: str = "l2") -> nn.Module:  # fmt: skip
    """A copy of `model` keeping round(keep_ratio × heads) heads (at least 1) in every attention layer, chosen per
    layer by `importance` (module docstring). Head size is kept; the head count attribute and the q/k/v/out
    projections shrink. torchvision's nn.MultiheadAttention becomes a PrunedMultiheadAttention even at 1.0."""
    pruned = copy.deepcopy(model)
    _heads_in_place(pruned, keep_ratio, calibration, importance)
    _check_runs(pruned, example_input, "head pruning")
    return pruned


def prune_mlp(model: nn.Module, keep_ratio: float, example_input: torch.Tensor | None = None,
              calibration: torch.Tensor | None = None, importance: str = "l2", round_to: int = 1) -> nn.Module:  # fmt: skip
    """A copy of `model` whose every MLP block keeps round(keep_ratio × hidden / round_to) × round_to hidden
    neurons (at least one, at most all), chosen per block by `importance` (module docstring)."""
    pruned = copy.deepcopy(model)
    _mlp_in_place(pruned, keep_ratio, calibration, importance, round_to)
    _check_runs(pruned, example_input, "MLP pruning")
    return pruned


def prune_depth(model: nn.Module, keep_blocks: int | Sequence[int], example_input: torch.Tensor | None = None,
                calibration: torch.Tensor | None = None) -> nn.Module:  # fmt: skip
    """A copy of `model` keeping `keep_blocks` encoder blocks (a count, chosen as the module docstring says, or
    the indices to keep), in their order."""
    pruned = copy.deepcopy(model)
    _depth_in_place(pruned, keep_blocks, calibration)
    _check_runs(pruned, example_input, "depth pruning")
    return pruned


def prune_structure(model: nn.Module, example_input: torch.Tensor | None = None, *, head_keep_ratio: float = 1.0,
                    mlp_keep_ratio: float = 1.0, keep_blocks: int | Sequence[int] | None = None,
                    calibration: torch.Tensor | None = None, importance: str = "l2",
                    round_to: int = 1) -> tuple[nn.Module, dict]:  # fmt: skip
    """A copy of `model` with blocks, then heads, then MLP neurons removed (a ratio of 1.0 or `keep_blocks` None
    skips that step; heads and neurons are scored on the model as the earlier steps left it), and a summary for
    the manifest: {"importance", "round_to", "blocks", "heads", "mlp", "params_before", "params_after"}."""
    pruned = copy.deepcopy(model)
    summary: dict = {"importance": importance, "round_to": round_to, "blocks": {}, "heads": {}, "mlp": {},
                     "params_before": _param_count(model)}  # fmt: skip
    if keep_blocks is not None:
        summary["blocks"] = _depth_in_place(pruned, keep_blocks, calibration)
    if head_keep_ratio != 1.0:
        summary["heads"] = _heads_in_place(pruned, head_keep_ratio, calibration, importance)
    if mlp_keep_ratio != 1.0:
        summary["mlp"] = _mlp_in_place(pruned, mlp_keep_ratio, calibration, importance, round_to)
    _check_runs(pruned, example_input, "structure pruning")
    summary["params_after"] = _param_count(pruned)
    return pruned, summary


def describe(model: nn.Module) -> dict:
    """What a transformer encoder holds: {"blocks": {stack: count}, "heads": {layer: count}, "mlp": {block: hidden
    width}}, from the modules themselves (empty where the model has none of that kind)."""
    out: dict = {"blocks": {}, "heads": {}, "mlp": {}}
    for name, module in model.named_modules():
        if isinstance(module, PrunedMultiheadAttention):
            out["heads"][name] = module.num_heads
        elif isinstance(module, nn.MultiheadAttention):
            out["heads"][name] = module.num_heads
        elif _is(module, _TIMM_ATTN, "Attention"):
            out["heads"][name] = module.num_heads
        elif _is(module, _BERT, "BertAttention") and _is(module.self, _BERT, "BertSelfAttention"):
            out["heads"][name] = module.self.num_attention_heads
        elif _is(module, _TV, "MLPBlock"):
            out["mlp"][name] = next(m for m in module if isinstance(m, nn.Linear)).out_features
        elif _is(module, _TIMM_MLP, "Mlp"):
            out["mlp"][name] = module.fc1.out_features
        elif _is(module, _BERT, "BertIntermediate"):
            out["mlp"][name] = module.dense.out_features
        for attr, child in module.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) and all(_is_block(b) for b in child):
                out["blocks"][f"{name}.{attr}" if name else attr] = len(child)
    return out
