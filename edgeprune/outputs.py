"""A model's outputs as a structure: what forward returns, flattened into an ordered list of named tensors.

forward may return a tensor, a tuple or list of tensors, or a dict of tensors, nested (a dict of dicts or tuples,
a tuple of dicts). Each tensor gets a key: 'output' for a lone tensor, the dict key or the index at the top level,
'heads.box' / '0.scores' one level down. The order is torch's pytree flattening (dicts in insertion order), which is
the order torch.export, ExecuTorch and ONNX keep; the LiteRT exporter maps its signature's outputs onto it by name.
Every stage walks the same list: export (`TensorSpec.key`), the runners (`Measurement.named_outputs`), parity
(`judge`), the manifest.

What cannot be exported as it is, is refused here, before any export, with a one-line `ModelError` naming the
output: values that are not tensors (None, strings, numbers), per-image lists of dicts (detection post-processing),
empty or input-dependent shapes (NMS inside forward), outputs without a batch dimension of 1.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgeprune.errors import ConfigError, DeviceError, ModelError
from edgeprune.types import SINGLE_OUTPUT_KEY, TensorSpec

POSTPROCESS_FIX = "export the heads' raw outputs and run post-processing such as NMS in the app"
CLASS_LOGITS_ATTRIBUTE = "class_logits_output"
"""A module attribute naming the output that holds class logits (its key), for a model with several outputs:
top-1 accuracy and agreement are read from it. A model with one output is taken as class logits when its data has
class labels."""
REMOTE_OUTPUTS_SUFFIX = ".npz"
"""`remote_measure.py --outputs X.npz` writes every output, keyed by the runtime's output names; X.npy the first."""


@dataclass(frozen=True)
class OutputSpec:
    """One output of the PyTorch model: its key, batch-1 shape and dtype."""

    key: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ModelOutputs:
    """What a model returns, flattened: its outputs in order, and which one (if any) is declared class logits."""

    specs: tuple[OutputSpec, ...]
    class_logits: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.specs)

    @property
    def several(self) -> bool:
        return len(self.specs) > 1


def flatten(value: Any) -> list[tuple[str, Any]]:
    """(key, leaf) pairs of an output structure in torch's pytree order; leaves need not be tensors (the caller
    checks). A lone tensor is keyed 'output'."""
    if not isinstance(value, (tuple, list, dict)) or _per_image_list(value):
        return [(SINGLE_OUTPUT_KEY, value)]
    out: list[tuple[str, Any]] = []
    _walk(value, "", out)
    return out


def _walk(value: Any, prefix: str, out: list[tuple[str, Any]]) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for name, item in items:
        key = f"{prefix}{name}"
        if isinstance(item, (tuple, list, dict)) and not _per_image_list(item):
            if not item:
                out.append((key, item))  # an empty container: refused by `check`
            else:
                _walk(item, key + ".", out)
        else:
            out.append((key, item))


def _per_image_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def leaves(value: Any) -> list[torch.Tensor]:
    """The tensors of an output structure, in flattening order."""
    return [v for _, v in flatten(value)]


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool | int | float):
        return f"a Python {type(value).__name__}"
    if _per_image_list(value):
        return f"a list of {len(value)} dict(s), one per image, as detection post-processing returns"
    if isinstance(value, (tuple, list, dict)):
        return f"an empty {type(value).__name__}"
    return f"a {type(value).__name__}"


def _where(key: str) -> str:
    return "the model's output" if key == SINGLE_OUTPUT_KEY else f"model output '{key}'"


def check(value: Any, shapes: bool = True) -> list[tuple[str, torch.Tensor]]:
    """`flatten(value)`, refusing what an exported graph cannot return (ModelError naming the output and the fix):
    values that are not tensors and, with `shapes`, outputs without a batch dimension of 1 or empty ones (what a
    build measures row by row)."""
    pairs = flatten(value)
    seen: set[str] = set()
    for key, leaf in pairs:
        if not isinstance(leaf, torch.Tensor):
            raise ModelError(f"{_where(key)} is {_kind(leaf)}, not a tensor; edgeprune exports forward's tensors only: "
                             f"{POSTPROCESS_FIX}")
        if key in seen:
            raise ModelError(f"model output key '{key}' occurs twice (a dict key with a '.' meets a nested one); "
                             "rename one of them")
        seen.add(key)
        if not shapes:
            continue
        if leaf.dim() == 0 or leaf.shape[0] != 1:
            raise ModelError(f"{_where(key)} has shape {tuple(leaf.shape)}, without a batch dimension of 1; return "
                             "every output shaped (1, ...) for a batch-1 input")
        if leaf.numel() == 0:
            raise ModelError(f"{_where(key)} is empty (shape {tuple(leaf.shape)}): its size depends on the input, as "
                             f"after NMS or thresholding; {POSTPROCESS_FIX}")
    if not pairs:
        raise ModelError(f"the model returns an empty {type(value).__name__}; return at least one tensor")
    return pairs


def describe(module: torch.nn.Module, example: torch.Tensor, seed: int = 0) -> ModelOutputs:
    """Run `module` on `example` and on a seeded random input of its shape; the outputs' keys, shapes and dtypes.

    Refuses (ModelError) outputs that are not tensors, and shapes or structures that differ between the two inputs
    (post-processing inside forward). A class-logits output is declared with the module's `class_logits_output`
    attribute (see `CLASS_LOGITS_ATTRIBUTE`).
    """
    other = torch.randn(example.shape, generator=torch.Generator().manual_seed(seed), dtype=example.dtype)
    with torch.no_grad():
        first = check(module(example))
        second = check(module(other))
    if [k for k, _ in first] != [k for k, _ in second]:
        raise ModelError(f"the model's outputs change with the input (keys {[k for k, _ in first]} on one input, "
                         f"{[k for k, _ in second]} on another); {POSTPROCESS_FIX}")
    for (key, a), (_, b) in zip(first, second):
        if a.shape != b.shape:
            raise ModelError(f"{_where(key)} has shape {tuple(a.shape)} on one input and {tuple(b.shape)} on another: "
                             f"its size depends on the input, as after NMS; {POSTPROCESS_FIX}")
    specs = tuple(OutputSpec(k, tuple(int(d) for d in t.shape), str(t.dtype).removeprefix("torch.")) for k, t in first)
    declared = getattr(module, CLASS_LOGITS_ATTRIBUTE, None)
    if declared is not None and declared not in [s.key for s in specs]:
        raise ModelError(f"{type(module).__name__}.{CLASS_LOGITS_ATTRIBUTE} = {declared!r} names no output of the "
                         f"model; its outputs are: {', '.join(s.key for s in specs)}")
    return ModelOutputs(specs, declared)


def run_rows(fn: Callable[[torch.Tensor], Any], x: np.ndarray, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Every output of `fn` over `x`, one batch-1 row at a time: key -> float32 array (N, *shape[1:]), in `keys`'
    order. `fn` returns an output structure or the list of its tensors in flattening order."""
    rows: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(len(x)):
            row = torch.from_numpy(np.ascontiguousarray(x[i : i + 1], dtype=np.float32))
            values = leaves(fn(row))
            if len(values) != len(keys):
                raise ModelError(f"the model returned {len(values)} output(s) on row {i}, {len(keys)} before "
                                 f"({', '.join(keys)}); {POSTPROCESS_FIX}")
            arrays = [v.detach().float().numpy()[0] for v in values]
            if rows:
                for key, a, b in zip(keys, arrays, rows[0]):
                    if a.shape != b.shape:
                        raise ModelError(f"{_where(key)} has shape {(1, *a.shape)} on row {i} and {(1, *b.shape)} on "
                                         f"row 0: its size depends on the input; {POSTPROCESS_FIX}")
            rows.append(arrays)
    return {key: np.stack([r[j] for r in rows]).astype(np.float32, copy=False) for j, key in enumerate(keys)}


def artifact_keys(specs: Sequence[TensorSpec]) -> list[str]:
    """The keys of an artifact's outputs (`TensorSpec.key`; artifacts made before keys existed: 'output' for a lone
    output, else the runtime's names)."""
    if len(specs) == 1 and specs[0].key is None:
        return [SINGLE_OUTPUT_KEY]
    return [s.key if s.key is not None else s.name for s in specs]


def with_keys(specs: Sequence[TensorSpec], outputs: ModelOutputs) -> tuple[TensorSpec, ...]:
    """`specs` (an exported artifact's outputs, already in flattening order) with the model's keys set; refuses a
    count or shape that disagrees with the model (the exporter would have reordered or dropped an output)."""
    if len(specs) != len(outputs.specs):
        raise ModelError(f"the exported artifact has {len(specs)} output(s), the model returns {len(outputs.specs)} "
                         f"({', '.join(outputs.keys)}); return each output once, as a tensor")
    out = []
    for spec, want in zip(specs, outputs.specs):
        if tuple(spec.shape) != tuple(want.shape):
            raise ModelError(f"the exported output '{spec.name}' has shape {tuple(spec.shape)} where {_where(want.key)} "
                             f"has {tuple(want.shape)}")
        out.append(TensorSpec(spec.name, spec.shape, spec.dtype, spec.scale, spec.zero_point, key=want.key))
    return tuple(out)


def runtime_order(specs: Sequence[TensorSpec], named: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The arrays of `named` (keyed by the runtime's output names) in the artifact's output order."""
    missing = [s.name for s in specs if s.name not in named]
    if missing:
        raise DeviceError(f"the runtime returned outputs {', '.join(named)}; the artifact's outputs are "
                          f"{', '.join(s.name for s in specs)} ({', '.join(missing)} missing)")
    return [named[s.name] for s in specs]


def read_remote(raw: bytes, specs: Sequence[TensorSpec], n_inputs: int,
                where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """(first output, every output by key) from what `remote_measure.py` (or the native runner) wrote: an .npz keyed
    by the runtime's output names (every output), or an .npy of the first output only (then the dict is empty)."""
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise DeviceError(f"{where}: the outputs copied back are neither .npy nor .npz: {exc}") from None
    if isinstance(loaded, np.ndarray):
        arrays, named = [loaded], {}
    else:
        with loaded:
            by_name = {name: loaded[name] for name in loaded.files}
        arrays = runtime_order(specs, by_name)
        named = dict(zip(artifact_keys(specs), arrays))
    for array in arrays:
        if array.ndim < 1 or len(array) != n_inputs:
            raise DeviceError(f"{where}: remote outputs of shape {array.shape} for {n_inputs} inputs")
    first = np.asarray(arrays[0], dtype=np.float32)
    return first, {k: np.asarray(v, dtype=np.float32) for k, v in named.items()}


OUTPUT_LAYERS_ATTRIBUTE = "output_layer_names"
"""A module attribute naming (by `named_modules` name) the layers whose output channels are the model's outputs:
pruning keeps their widths. The detector and segmenter wrappers (`vision_heads`) set it."""


def require_single(outputs: ModelOutputs, what: str, module: torch.nn.Module | None = None) -> None:
    """Refuse `what` (pruning, planning) for a model with several outputs unless `module` names its output layers
    (`OUTPUT_LAYERS_ATTRIBUTE`): without them, pruning cannot tell which widths are the outputs'."""
    if outputs.several and not getattr(module, OUTPUT_LAYERS_ATTRIBUTE, None):
        raise ConfigError(f"{what} of a model with several outputs ({', '.join(outputs.keys)}) needs the layers that "
                          f"produce them: set `{OUTPUT_LAYERS_ATTRIBUTE}` on the module (their module names), build it "
                          "without pruning or planning (--prune 0, no budget search), or return one output")
