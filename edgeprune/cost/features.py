"""Model features for the cost model: the kernels a target runtime will execute, with their shapes and work.

`extract_features(model, example_input, target, scheme)` runs the model once under a recording dispatch mode
(one eager forward pass, tens of milliseconds for a mobile CNN), rebuilds the ATen data-flow graph from tensor
identities, then lowers it the way ExecuTorch/XNNPACK and LiteRT/XNNPACK do:

- BatchNorm after a convolution (or linear) is folded into its weights and bias;
- relu / relu6 / hardtanh / clamp right after a conv or linear (and, for LiteRT, an add) that is its sole consumer
  is fused as an output clamp;
- views, reshapes, flatten, dropout (eval), detach and `split` are free (no kernel); a transpose followed by a
  copy (channel shuffle) is one `copy` kernel;
- convolutions are classified by groups and kernel size: `pwconv` (1x1, stride 1, groups 1: a GEMM), `dwconv`
  (depthwise), `gconv` (grouped, not depthwise), `conv` (dense k x k or strided);
- `mean` over the spatial axes is `gap`; with keepdim=False ExecuTorch's XNNPACK partitioner leaves it to the
  portable kernels (not delegated, so the graph splits into two delegate calls), which is recorded;
- for static int8 the compute kernels run in int8 (weights 1 byte, int32 bias, per-output-channel quantisation
  parameters), except what the quantisers leave in float (sigmoid-like activations and elementwise ops they feed;
  LiteRT: MEAN, and HARD_SWISH on its builtin kernels, outside XNNPACK); the model input/output are converted (ExecuTorch: `Convert` ops inside the delegate; LiteRT: the
  runner quantises the int8 I/O in Python), both counted in the model-level features.

The module is not modified (it is put in eval mode for the trace and its mode restored). Nothing from the
export or runner stages is imported: features come from the PyTorch model alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edgeprune.errors import ModelError

# Kernel types. Compute kernels have MACs; the others are costed by bytes moved and calls.
GEMM_TYPES = ("conv", "pwconv", "gconv", "linear")
KERNEL_TYPES = (
    "conv",  # dense k x k (or strided 1x1) convolution, groups == 1
    "pwconv",  # 1x1 stride-1 convolution: a GEMM over pixels
    "gconv",  # grouped convolution that is not depthwise
    "dwconv",  # depthwise convolution (groups == in channels == out channels)
    "linear",  # fully connected
    "maxpool",
    "avgpool",
    "gap",  # global average pool (mean over H, W)
    "add",  # elementwise add / sub
    "mul",  # elementwise mul / div (incl. broadcast squeeze-excite scaling)
    "act",  # activation that is not fused: hardswish, sigmoid, silu, hardsigmoid, gelu, tanh, ...
    "concat",
    "copy",  # data movement: transpose+copy (channel shuffle), permute, pad, slice copies
    "other",  # anything else (softmax, layer norm, ...)
)
QUANTISED_SCHEMES = ("int8",)
"""Schemes whose compute kernels run in int8 on the target (int8-dynamic keeps float activations)."""

_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "t", "expand", "squeeze", "unsqueeze", "flatten", "alias", "detach",
    "dropout", "feature_dropout", "alpha_dropout", "lift_fresh", "contiguous", "_to_copy_noop", "select", "unbind",
    "split", "split_with_sizes", "chunk", "slice", "as_strided", "transpose", "permute", "identity",
}
"""Ops that produce no kernel by themselves (a transpose/permute becomes a `copy` kernel when materialised)."""
_MATERIALISE = {"clone", "_to_copy", "copy_"}
_CLAMPS = {"relu", "relu6", "hardtanh", "clamp", "clamp_min", "clamp_max", "threshold"}
_ACTS = {"hardswish", "sigmoid", "silu", "hardsigmoid", "gelu", "tanh", "elu", "leaky_relu", "mish", "softplus",
         "log_sigmoid", "prelu", "_prelu_kernel"}
_IGNORED = {"empty", "zeros_like", "empty_like", "new_empty", "empty_strided", "size", "sym_size", "_local_scalar_dense"}

DTYPE_BYTES = {"float32": 4, "float16": 2, "int8": 1}
_FLOAT_IN_INT8 = {"sigmoid", "silu", "hardsigmoid", "gelu", "tanh", "elu", "mish", "softplus", "softmax", "_softmax"}


@dataclass(frozen=True)
class Kernel:
    """One kernel as the target runtime executes it."""

    index: int
    type: str
    dtype: str
    """'float32', 'float16' or 'int8': the compute type on the target."""
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int
    """Multiply-accumulates (conv/linear); window reads for pooling; 0 for data movement."""
    weight_bytes: int
    """Constant bytes as stored for this dtype (weights, folded bias, per-channel scales)."""
    in_bytes: int
    out_bytes: int
    kernel_hw: tuple[int, int] = (1, 1)
    stride: int = 1
    groups: int = 1
    fused: tuple[str, ...] = ()
    delegated: bool = True
    source: str = ""
    inputs: tuple[int, ...] = ()
    """Indices of the kernels this one reads (-1: the model input)."""

    @property
    def elems(self) -> int:
        return _numel(self.out_shape)

    def gemm_dims(self) -> tuple[int, int, int, int]:
        """(M rows, N output channels per group, K reduction length per group, groups) for GEMM-like kernels."""
        if self.type == "linear":
            k = self.in_shape[-1]
            return _numel(self.out_shape) // self.out_shape[-1], self.out_shape[-1], k, 1
        n, c_out, h, w = _nchw(self.out_shape)
        c_in = _nchw(self.in_shape)[1]
        g = self.groups
        return n * h * w, c_out // g, (c_in // g) * self.kernel_hw[0] * self.kernel_hw[1], g

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "type": self.type,
            "dtype": self.dtype,
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "macs": self.macs,
            "weight_bytes": self.weight_bytes,
            "in_bytes": self.in_bytes,
            "out_bytes": self.out_bytes,
            "kernel_hw": list(self.kernel_hw),
            "stride": self.stride,
            "groups": self.groups,
            "fused": list(self.fused),
            "delegated": self.delegated,
            "source": self.source,
        }


@dataclass(frozen=True)
class ModelFeatures:
    """The kernels of one model for one (target, scheme), plus model-level facts."""

    target: str
    scheme: str
    kernels: tuple[Kernel, ...]
    input_bytes: int
    output_bytes: int
    params: int
    """Parameters after folding BatchNorm (what the target stores)."""
    weight_bytes: int
    activation_peak_bytes: int
    """Peak of live intermediate tensors over the execution order (the runtime's activation workspace)."""
    planned_arena_bytes: int
    """Tensors the ExecuTorch memory planner allocates: graph I/O and tensors crossing delegate boundaries."""
    partitions: int
    """Delegate calls (contiguous runs of delegated kernels)."""
    non_delegated: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def macs(self) -> int:
        return sum(k.macs for k in self.kernels if k.type in GEMM_TYPES or k.type == "dwconv")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kernels:
            out[k.type] = out.get(k.type, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "scheme": self.scheme,
            "kernels": len(self.kernels),
            "counts": self.counts(),
            "macs": self.macs,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "activation_peak_bytes": self.activation_peak_bytes,
            "planned_arena_bytes": self.planned_arena_bytes,
            "partitions": self.partitions,
            "non_delegated": list(self.non_delegated),
        }


# ---------------------------------------------------------------------------------------------------- tracing


@dataclass(frozen=True)
class _Meta:
    """What the lowering needs of a tensor argument (keeping the tensor itself would keep every activation alive)."""

    shape: tuple[int, ...]

    def numel(self) -> int:
        return _numel(self.shape)


def _light(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return _Meta(tuple(a.shape))
    if isinstance(a, (list, tuple)):
        return type(a)(_light(x) for x in a)
    return a


@dataclass
class _Node:
    op: str  # aten op name without namespace/overload, e.g. "convolution"
    overload: str
    inputs: list[int]  # producer node ids of tensor activation inputs (-1 = model input)
    consts: list[_Meta]  # constant tensor inputs (weights, bias, BN stats)
    args: tuple
    out_shape: tuple[int, ...]
    out_dtype: torch.dtype
    in_shapes: list[tuple[int, ...]]


class _Recorder(TorchDispatchMode):
    """Records every ATen op with the producers of its tensor inputs, tracked by tensor identity."""

    def __init__(self, model_input: torch.Tensor, constants: Iterable[torch.Tensor]):
        super().__init__()
        self.nodes: list[_Node] = []
        self.producer: dict[int, int] = {id(model_input): -1}
        self.const_ids = {id(t) for t in constants}
        self.keep: list[Any] = [model_input]  # keep every tensor alive so ids are not reused during the trace

    def _src(self, t: torch.Tensor) -> int | None:
        return self.producer.get(id(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        overload = func._overloadname
        base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
        flat_in = _flatten((args, tuple(kwargs.values())))
        tensors_in = [t for t in flat_in if isinstance(t, torch.Tensor)]
        flat_out = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        self.keep.extend(tensors_in)
        self.keep.extend(flat_out)
        if base in _IGNORED or base.startswith("empty"):
            return out
        srcs = [self._src(t) for t in tensors_in]
        act_in = [s for s in srcs if s is not None]
        if not act_in:
            # Constant-only op (e.g. t(weight), a view of a buffer): its outputs are constants too.
            for t in flat_out:
                self.const_ids.add(id(t))
            return out
        if base in _VIEW_OPS and base not in ("transpose", "permute"):
            # Free: outputs stand for the same producer (split/chunk/unbind give several views).
            for t in flat_out:
                self.producer[id(t)] = act_in[0]
            return out
        consts = [_Meta(tuple(t.shape)) for t, s in zip(tensors_in, srcs) if s is None]
        first = flat_out[0] if flat_out else None
        node = _Node(
            op=base,
            overload=overload,
            inputs=list(dict.fromkeys(act_in)),
            consts=consts,
            args=_light(tuple(args)),
            out_shape=tuple(first.shape) if first is not None else (),
            out_dtype=first.dtype if first is not None else torch.float32,
            in_shapes=[tuple(t.shape) for t, s in zip(tensors_in, srcs) if s is not None],
        )
        self.nodes.append(node)
        nid = len(self.nodes) - 1
        if base in ("max_pool2d_with_indices",):
            flat_out = flat_out[:1]
        for t in flat_out:
            self.producer[id(t)] = nid
        return out


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        out: list[Any] = []
        for o in obj:
            out.extend(_flatten(o))
        return out
    return [obj]


def _numel(shape: Iterable[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def _nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) == 4:
        return shape  # type: ignore[return-value]
    if len(shape) == 3:
        return (1, *shape)  # type: ignore[return-value]
    if len(shape) == 2:
        return (shape[0], shape[1], 1, 1)
    return (1, _numel(shape), 1, 1)


def trace(model: torch.nn.Module, example_input: torch.Tensor) -> list[_Node]:
    """The ATen data-flow graph of one forward pass of `model` on `example_input` (batch as given)."""
    if not isinstance(example_input, torch.Tensor):
        raise ModelError(f"example input must be a tensor, got {type(example_input).__name__}")
    modes = {m: m.training for m in model.modules()}
    x = example_input.detach().to(torch.float32).clone()
    constants = list(model.parameters()) + list(model.buffers())
    rec = _Recorder(x, constants)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        model.eval()
        if mha is not None:
            mha.set_fastpath_enabled(False)  # the fused transformer fast path would hide its matmuls in one op
        with torch.no_grad(), rec:
            model(x)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on its example input is a user error
        raise ModelError(
            f"cannot trace the model on an input of shape {tuple(example_input.shape)} for the cost model: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        for m, flag in modes.items():
            m.training = flag
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
    return rec.nodes


# ---------------------------------------------------------------------------------------------------- lowering


def _consumers(nodes: list[_Node]) -> dict[int, list[int]]:
    cons: dict[int, list[int]] = {i: [] for i in range(-1, len(nodes))}
    for i, n in enumerate(nodes):
        for s in n.inputs:
            cons[s].append(i)
    return cons


def _clamp_name(n: _Node) -> str | None:
    """'relu' / 'relu6' / 'clamp' when the node is an output clamp XNNPACK fuses, else None."""
    if n.op == "relu":
        return "relu"
    if n.op in ("hardtanh", "clamp", "clamp_min", "clamp_max"):
        return "relu6" if n.op == "hardtanh" and tuple(n.args[1:3]) == (0.0, 6.0) else n.op
    return None


def _const_bytes(consts: list[_Meta]) -> int:
    return sum(t.numel() for t in consts)


def extract_features(
    model: torch.nn.Module, example_input: torch.Tensor, target: str = "executorch", scheme: str = "fp32"
) -> ModelFeatures:
    """The kernels `target` runs for `model` under `scheme` (see the module docstring for the rules)."""
    nodes = trace(model, example_input)
    return lower(nodes, tuple(example_input.shape), target, scheme)


def lower(nodes: list[_Node], input_shape: tuple[int, ...], target: str, scheme: str) -> ModelFeatures:
    """Apply the target's fusion, delegation and dtype rules to a traced graph."""
    quant = scheme in QUANTISED_SCHEMES
    act_dtype = "int8" if quant else ("float16" if scheme == "fp16" else "float32")
    act_size = DTYPE_BYTES[act_dtype]
    # int8 weights carry per-output-channel quantisation parameters: an fp32 scale (ExecuTorch), an fp32 scale
    # and an int64 zero point (TFLite, ONNX).
    q_chan = 4 if target == "executorch" else 12
    cons = _consumers(nodes)
    absorbed: dict[int, int] = {}  # node id -> kernel-owning node id it was fused into
    fused: dict[int, list[str]] = {}
    notes: list[str] = []

    def owner(i: int) -> int:
        while i in absorbed:
            i = absorbed[i]
        return i

    # BatchNorm folding and clamp fusion. ExecuTorch's XNNPACK lowering fuses an output clamp into conv / linear
    # only (an add is followed by its own Clamp operator); TFLite ops carry a fused activation (ADD included).
    fusable = {"convolution", "addmm", "linear", "mm"}
    if target != "executorch":
        fusable |= {"add", "sub"}
    for i, n in enumerate(nodes):
        if n.op in ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit"):
            src = n.inputs[0]
            if src >= 0 and nodes[owner(src)].op in ("convolution", "addmm", "linear", "mm") and len(cons[src]) == 1:
                absorbed[i] = owner(src)
                fused.setdefault(owner(src), []).append("bn")
        clamp = _clamp_name(n)
        if clamp is not None and n.inputs and n.inputs[0] >= 0:
            src = n.inputs[0]
            base = owner(src)
            if nodes[base].op in fusable and len(cons[src]) == 1:
                absorbed[i] = base
                fused.setdefault(base, []).append(clamp)

    kernels: list[Kernel] = []
    kid_of: dict[int, int] = {-1: -1}
    params = 0
    weight_bytes_total = 0
    non_delegated: list[str] = []
    pending_transpose: dict[int, int] = {}

    def in_kernel(i: int) -> int:
        return kid_of.get(owner(i), -1) if i >= 0 else -1

    for i, n in enumerate(nodes):
        if i in absorbed:
            continue
        op = n.op
        in_shape = n.in_shapes[0] if n.in_shapes else ()
        out_shape = n.out_shape
        ktype = None
        macs = 0
        consts: list[_Meta] = list(n.consts)
        khw, stride, groups = (1, 1), 1, 1
        delegated = True
        dtype = act_dtype
        if op == "convolution":
            weight = n.args[1]
            bias = n.args[2]
            stride_t, padding, dilation, transposed, _, groups = n.args[3:9]
            c_out, c_in_g, kh, kw = (tuple(weight.shape) + (1, 1))[:4]
            khw, stride, groups = (kh, kw), int(stride_t[0]), int(groups)
            c_in = in_shape[1]
            if transposed:
                ktype = "conv"
            elif groups > 1 and groups == c_in and c_out % c_in == 0 and c_in_g == 1:
                ktype = "dwconv"
            elif groups > 1:
                ktype = "gconv"
            elif kh == 1 and kw == 1 and all(s == 1 for s in stride_t) and all(p == 0 for p in padding):
                ktype = "pwconv"
            else:
                ktype = "conv"
            macs = _numel(out_shape) * c_in_g * kh * kw
            n_w = weight.numel()
            n_b = c_out if (bias is not None or "bn" in fused.get(i, [])) else 0
            params += n_w + n_b
            wb = n_w * 1 + n_b * 4 + c_out * q_chan if quant else (n_w + n_b) * act_size
            consts = []
        elif op in ("addmm", "mm", "linear"):
            ktype = "linear"
            if op == "addmm":
                bias, weight = n.args[0], n.args[2]
                w_shape = tuple(weight.shape)  # (in, out) after t()
                in_f, out_f = w_shape[0], w_shape[1]
                n_b = out_f
            elif op == "mm":
                weight = n.args[1]
                in_f, out_f = tuple(weight.shape)
                n_b = out_f if "bn" in fused.get(i, []) else 0
            else:
                weight = n.args[1]
                out_f, in_f = tuple(weight.shape)
                n_b = out_f if (len(n.args) > 2 and n.args[2] is not None) else 0
            macs = _numel(out_shape) // out_f * in_f * out_f
            n_w = in_f * out_f
            params += n_w + n_b
            wb = n_w + n_b * 4 + out_f * q_chan if quant else (n_w + n_b) * act_size
            in_shape = tuple(in_shape[:-1]) + (in_f,)
            consts = []
        elif op in ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm"):
            ktype, wb = "mul", 2 * in_shape[1] * 4 if len(in_shape) > 1 else 8
            params += 2 * (in_shape[1] if len(in_shape) > 1 else 1)
            macs = 0
            consts = []
            notes.append("standalone BatchNorm (not after a conv) costed as an elementwise affine")
        elif op in ("max_pool2d_with_indices", "max_pool2d", "avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d"):
            if op.startswith("max"):
                ktype = "maxpool"
                k = n.args[1]
                khw = (int(k[0]), int(k[-1]))
                s = n.args[2] if len(n.args) > 2 and n.args[2] else k
                stride = int(s[0])
            elif "adaptive" in op and tuple(out_shape[-2:]) == (1, 1):
                ktype = "gap"
                khw = (in_shape[-2], in_shape[-1])
            else:
                ktype = "avgpool"
                k = n.args[1]
                khw = (int(k[0]), int(k[-1])) if isinstance(k, (list, tuple)) else (int(k), int(k))
                stride = khw[0]
            macs = _numel(out_shape) * khw[0] * khw[1]
            wb = 0
        elif op == "mean":
            dims = [d % len(in_shape) for d in (n.args[1] if len(n.args) > 1 and n.args[1] is not None else range(len(in_shape)))]
            keepdim = bool(n.args[2]) if len(n.args) > 2 else False
            ktype = "gap" if sorted(dims) == [len(in_shape) - 2, len(in_shape) - 1] else "other"
            khw = (in_shape[-2], in_shape[-1]) if ktype == "gap" else (1, 1)
            macs = _numel(in_shape)
            wb = 0
            if target == "executorch" and not keepdim:
                delegated = False
        elif op in ("add", "sub"):
            ktype, wb = "add", 0
        elif op in ("mul", "div"):
            ktype, wb = "mul", 0
        elif op in _CLAMPS:
            ktype, wb = "act", 0
        elif op in _ACTS:
            ktype, wb = "act", 0
        elif op == "cat":
            ktype, wb = "concat", 0
            in_shape = out_shape
        elif op in ("transpose", "permute"):
            # Materialised by the following clone/contiguous: one copy kernel.
            pending_transpose[i] = 1
            ktype, wb = "copy", 0
        elif op in _MATERIALISE:
            src = n.inputs[0]
            if src >= 0 and owner(src) in pending_transpose:
                # transpose + clone = one Transpose kernel: fold into the transpose's kernel
                absorbed[i] = owner(src)
                continue
            ktype, wb = "copy", 0
        elif op in ("constant_pad_nd", "pad", "reflection_pad2d", "replication_pad2d"):
            ktype, wb = "copy", 0
        else:
            ktype, wb = "other", 0
            delegated = target != "executorch" or op in ("softmax", "_softmax")
            notes.append(f"op '{op}' costed as a generic kernel")
        ins = [in_kernel(s) for s in n.inputs]
        if quant:
            # What the int8 quantisers leave in float (measured on ExecuTorch 1.5 / litert-torch 0.10 exports):
            # sigmoid-like activations run as float islands (dequantise, compute, quantise), and so does an
            # elementwise op fed by one; LiteRT keeps int8 HARD_SWISH on its builtin kernels (not XNNPACK) and
            # computes MEAN in float.
            if ktype in ("act", "other") and op in _FLOAT_IN_INT8:
                dtype = "float32"
            elif ktype in ("add", "mul") and any(i >= 0 and kernels[i].dtype == "float32" for i in ins):
                dtype = "float32"
            if target == "tflite":
                if op == "hardswish":
                    delegated = False
                elif ktype == "gap":
                    dtype = "float32"
        const_extra = _const_bytes(consts)
        if const_extra and ktype not in GEMM_TYPES and ktype != "dwconv":
            wb += const_extra * 4
            params += const_extra
        weight_bytes_total += wb
        in_bytes = sum(_numel(s) for s in n.in_shapes) * act_size
        if ktype in ("conv", "pwconv", "gconv", "dwconv", "linear", "maxpool", "avgpool", "gap"):
            in_bytes = _numel(in_shape) * act_size
        if ktype == "concat":
            in_bytes = _numel(out_shape) * act_size
        if not delegated:
            non_delegated.append(op)
            if target == "executorch":
                dtype = "float32"  # ExecuTorch's portable kernels compute in float
        k = Kernel(
            index=len(kernels),
            type=ktype,
            dtype=dtype if ktype not in ("copy",) else act_dtype,
            in_shape=tuple(in_shape),
            out_shape=tuple(out_shape),
            macs=int(macs),
            weight_bytes=int(wb),
            in_bytes=int(in_bytes),
            out_bytes=int(_numel(out_shape) * act_size),
            kernel_hw=(int(khw[0]), int(khw[1])),
            stride=int(stride),
            groups=int(groups),
            fused=tuple(fused.get(i, [])),
            delegated=delegated,
            source=op,
            inputs=tuple(ins),
        )
        kid_of[i] = k.index
        kernels.append(k)

    if not kernels:
        raise ModelError("the model ran no operators on its input; nothing to cost")
    in_elems = _numel(input_shape)
    out_k = kernels[-1]
    io_size = 4  # the model's I/O stays float32 at the API
    peak = _activation_peak(kernels, in_elems * act_size)
    partitions, arena = _partitions_and_arena(kernels, in_elems * io_size, out_k.elems * io_size, act_size)
    return ModelFeatures(
        target=target,
        scheme=scheme,
        kernels=tuple(kernels),
        input_bytes=in_elems * io_size,
        output_bytes=out_k.elems * io_size,
        params=params,
        weight_bytes=weight_bytes_total,
        activation_peak_bytes=peak,
        planned_arena_bytes=arena,
        partitions=partitions,
        non_delegated=tuple(non_delegated),
        notes=tuple(dict.fromkeys(notes)),
    )


def _activation_peak(kernels: list[Kernel], input_bytes: int) -> int:
    """Peak of live tensor bytes when kernels run in order and each output dies after its last reader."""
    last_use: dict[int, int] = {-1: 0}
    for k in kernels:
        for s in k.inputs:
            last_use[s] = max(last_use.get(s, 0), k.index)
    size = {-1: input_bytes} | {k.index: k.out_bytes for k in kernels}
    live = {-1}
    peak = input_bytes
    for k in kernels:
        live.add(k.index)
        peak = max(peak, sum(size[t] for t in live))
        live = {t for t in live if last_use.get(t, len(kernels)) > k.index or t == kernels[-1].index}
    return int(peak)


def _align(n: int, a: int = 16) -> int:
    return (n + a - 1) // a * a


def _partitions_and_arena(kernels: list[Kernel], in_bytes: int, out_bytes: int, act_size: int) -> tuple[int, int]:
    """(delegate calls, ExecuTorch planned-arena bytes): graph I/O plus tensors crossing delegate boundaries,
    planned with lifetimes (a tensor is live from its producer to its last reader)."""
    partitions = 0
    prev = None
    for k in kernels:
        if k.delegated and prev is not True:
            partitions += 1
        prev = k.delegated
    boundary: dict[int, int] = {}
    for k in kernels:
        if not k.delegated:
            for s in k.inputs:
                if s >= 0:
                    boundary[s] = kernels[s].out_bytes // act_size * 4
            boundary[k.index] = k.out_bytes // act_size * 4
        else:
            for s in k.inputs:
                if s >= 0 and not kernels[s].delegated:
                    boundary[s] = kernels[s].out_bytes // act_size * 4
    last = kernels[-1].index
    boundary.pop(last, None)
    # A greedy planner reuses memory across non-overlapping lifetimes; with few boundary tensors the peak of
    # simultaneously live ones is what it allocates.
    last_use = {t: max((k.index for k in kernels if t in k.inputs), default=t) for t in boundary}
    peak = 0
    for k in kernels:
        live = sum(_align(b) for t, b in boundary.items() if t <= k.index <= last_use[t])
        peak = max(peak, live)
    return max(partitions, 1), _align(in_bytes) + _align(out_bytes) + peak + 64
