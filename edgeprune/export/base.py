"""The exporter contract: one subclass per target, each owning its quantiser and lowering.

Also the one place that turns a library exception raised while capturing, quantising or lowering a model into
a one-line `UnsupportedModelError` naming the target, the scheme, the module (and user code line) or op at
fault, and the first line of the reason: `unsupported(target, scheme, model, exc, stage)`.
"""

from __future__ import annotations

import abc
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator

import torch

from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.outputs import ModelOutputs, OutputSpec, check, leaves
from edgeprune.types import Artifact, Plan


class Reference:
    """The PyTorch callable an artifact should agree with: float32 (N, ...) in, without autograd.

    Called, it returns the first output as float32 (what single-output code reads); `all(x)` returns every output
    in flattening order (`outputs.py`). `batch` runs a graph captured with a static batch size that many rows at a
    time; `input_dtype` casts the input first (half for an fp16 module).
    """

    def __init__(self, fn: Callable[..., object], *, batch: int | None = None,
                 input_dtype: torch.dtype = torch.float32):  # fmt: skip
        self._fn, self._batch, self._input_dtype = fn, batch, input_dtype

    def _leaves(self, x: torch.Tensor) -> list[torch.Tensor]:
        values = leaves(self._fn(x.to(self._input_dtype)))
        if not values or not all(isinstance(v, torch.Tensor) for v in values):
            raise ConfigError(f"the model returned {type(values[0] if values else None).__name__}, not tensors; "
                              "return tensors (a tensor, a tuple or a dict of them)")
        return [v.float() for v in values]

    def all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output as float32, in flattening order."""
        with torch.no_grad():
            if self._batch is None or x.shape[0] == self._batch:
                return self._leaves(x)
            if x.shape[0] % self._batch:
                raise ConfigError(f"reference takes batches of a multiple of {self._batch} rows; got {x.shape[0]}")
            parts = [self._leaves(x[i : i + self._batch]) for i in range(0, x.shape[0], self._batch)]
            return [torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.all(x)[0]


@dataclass(frozen=True)
class ExportResult:
    """The artifact, and the PyTorch callable it should agree with.

    `reference` maps a float32 input batch to float32 outputs exactly as the artifact was meant to
    compute them: the (pruned) fp32 module for fp32, the half module for fp16, the PT2E
    fake-quantised module for int8. Parity is judged against it, output by output (`Reference.all`).
    """

    artifact: Artifact
    reference: Reference


class Exporter(abc.ABC):
    """Writes one `Plan` of one model as a file for one runtime."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    extra: ClassVar[str | None] = None
    """The pip extra that installs this target's toolchain (None: a core dependency)."""

    def check_scheme(self, scheme: str) -> None:
        """Refuse, up front, a scheme this target cannot do."""
        if scheme not in self.schemes:
            raise ConfigError(
                f"target '{self.name}' cannot do --quant {scheme}; it supports: {', '.join(self.schemes)}"
            )

    def check_plan(self, plan: Plan, calibration: torch.Tensor | None) -> None:
        """Refuse, before any work, a plan this exporter cannot take."""
        self.check_scheme(plan.scheme)
        if plan.target != self.name:
            raise ConfigError(f"plan.target '{plan.target}' given to the '{self.name}' exporter; set target='{self.name}'")
        if plan.scheme == "int8" and (calibration is None or len(calibration) == 0):
            raise ConfigError(f"--quant int8 for target '{self.name}' needs calibration samples; none were given")

    @abc.abstractmethod
    def export(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor,
        plan: Plan,
        out_path: Path,
    ) -> ExportResult:
        """Export `model` (already pruned, in eval mode) per `plan` to `out_path`, atomically.

        `example_input` is one batch-1 float32 input; `calibration` is an (N, ...) float32 tensor
        of inputs used to calibrate static quantisation.
        """


def reference_for(
    fn: Callable[..., object], *, batch: int | None = None, input_dtype: torch.dtype = torch.float32
) -> Reference:
    """A reference callable over `fn` (see `Reference`)."""
    return Reference(fn, batch=batch, input_dtype=input_dtype)


def model_outputs(model: torch.nn.Module, example: torch.Tensor) -> ModelOutputs:
    """The model's outputs (keys, shapes), refused early where they are no tensors (`outputs.describe`)."""
    with torch.no_grad():
        pairs = check(model(example), shapes=False)
    return ModelOutputs(tuple(OutputSpec(k, tuple(int(d) for d in t.shape), str(t.dtype).removeprefix("torch."))
                              for k, t in pairs))


# ------------------------------------------------------------------------------------------ naming misses

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_USER_CALL = re.compile(
    r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\S+)\s*\n\s*(.+)'
)
_OP = re.compile(r"\b(?:aten|prims|quantized_decomposed)(?:\.|::)[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?")
_MODULE_PY = "torch/nn/modules/module.py"

STAGES = {
    "capture": "torch.export cannot capture the model",
    "quantise": "cannot quantise the model",
    "lower": "cannot lower the model",
    "convert": "cannot convert the model",
}
_FIX = {
    "capture": "make forward() traceable by torch.export (no Python branching on tensor values, no unsupported ops)",
    "quantise": "try --quant fp32 or fp16, or another --target",
    "lower": "replace the named op or module, or try another --target",
    "convert": "replace the named op or module, or try another --target",
}
_DATA_DEPENDENT_FIX = (
    "branching on tensor values is not exportable: rewrite it with torch.where/torch.cond, or move it out of the model"
)


def exception_chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """`exc` and the exceptions it was raised from (`__cause__`, else an unsuppressed `__context__`), outermost first."""
    chain = [exc]
    while len(chain) < limit:
        last = chain[-1]
        nxt = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if nxt is None or any(nxt is e for e in chain):
            break
        chain.append(nxt)
    return chain


def _text(exc: BaseException) -> str:
    return _ANSI.sub("", str(exc))


def first_line(exc: BaseException, limit: int = 300) -> str:
    """'Type: first line' of the innermost cause of `exc`, without colour codes: never a multi-line traceback."""
    root = exception_chain(exc)[-1]
    line = next((ln.strip() for ln in _text(root).splitlines() if ln.strip()), "")
    # torch's own long messages continue a sentence after two spaces: keep the first sentence.
    line = line.split(".  ")[0].split(" (unhinted")[0]
    msg = f"{type(root).__name__}: {line}" if line else type(root).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def failing_module(model: torch.nn.Module, exc: BaseException) -> tuple[str, str] | None:
    """(dotted path, class name) of the innermost submodule of `model` whose forward was running when `exc` (or an
    exception it was raised from) was raised; '' is the model itself. None when no module's code is on the stack."""
    names = {id(m): (n, type(m).__name__) for n, m in model.named_modules()}
    found = None
    for e in reversed(exception_chain(exc)):  # innermost exception first: its traceback is the deepest
        tb = e.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if owner is not None and id(owner) in names and not tb.tb_frame.f_code.co_filename.endswith(_MODULE_PY):
                found = names[id(owner)]
            tb = tb.tb_next
        if found is not None:
            return found
    return None


def user_code(exc: BaseException) -> str | None:
    """The user line torch.export blames, as 'file.py:4 `if x.sum() > 0:`'."""
    for e in exception_chain(exc):
        match = _USER_CALL.search(_text(e))
        if match:
            code = match.group(4).split("  #")[0].strip()
            return f"{Path(match.group(1)).name}:{match.group(2)} `{code}`"
    return None


def failing_op(exc: BaseException) -> str | None:
    """The first ATen (or prims / quantized_decomposed) operator an exception's messages name, as 'aten.name.overload'."""
    for e in reversed(exception_chain(exc)):
        match = _OP.search(_text(e))
        if match:
            return match.group(0).replace("::", ".")
    return None


def failing_node(exc: BaseException) -> tuple[str, tuple[str, str] | None] | None:
    """(op, (module path, class) or None) of the graph node a converter was working on when `exc` was raised: the
    innermost traceback frame holding an FX node (torch.export / ExecuTorch / litert-torch passes) or an ONNX node
    (onnxruntime's quantiser) in a local variable. FX nodes carry the module they came from in their metadata."""
    found = None
    for e in reversed(exception_chain(exc)):
        tb = e.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                if isinstance(value, torch.fx.Node) and value.op in ("call_function", "call_method", "call_module"):
                    target = value.target
                    op = str(target) if not callable(target) or isinstance(target, torch._ops.OpOverload) else getattr(
                        target, "__name__", str(target)
                    )
                    stack = value.meta.get("nn_module_stack") or {}
                    module = None
                    if stack:
                        path, cls = list(stack.values())[-1]
                        cls_name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
                        module = (_clean_module_path(path), cls_name)
                    found = (op, module)
                elif type(value).__name__ == "NodeProto" and type(value).__module__.startswith("onnx"):
                    found = (f"onnx {value.op_type}" + (f" '{value.name}'" if value.name else ""), None)
            tb = tb.tb_next
        if found is not None:
            return found
    return None


def _clean_module_path(path: str) -> str:
    """'L['self'].layer1.0' / 'L__self___layer1_0' style paths from torch.export metadata -> 'layer1.0'."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    return path.lstrip(".")


def is_data_dependent(exc: BaseException) -> bool:
    return any("DataDependent" in type(e).__name__ or "data-dependent" in _text(e) for e in exception_chain(exc))


def unsupported(
    target: str, scheme: str, model: torch.nn.Module | None, exc: BaseException, stage: str = "capture", how: str = ""
) -> UnsupportedModelError:
    """A one-line UnsupportedModelError for `exc`, raised while `stage` ('capture', 'quantise', 'lower', 'convert')
    ran `model` for `target` with --quant `scheme`: names the module (and user code line) or op at fault, the first
    line of the reason, and the fix. `how` names the tool, e.g. 'with litert-torch'."""
    where = failing_module(model, exc) if model is not None else None
    place = ""
    if where is not None:
        place = f" in module '{where[0]}' ({where[1]})" if where[0] else f" in the model's forward ({where[1]})"
    code = user_code(exc)
    if code:
        place += f" at {code}"
    reason = first_line(exc, limit=240)
    node = failing_node(exc)
    if where is None and node is not None and node[1] is not None:
        place = f" in module '{node[1][0]}' ({node[1][1]})" if node[1][0] else f" in the model's forward ({node[1][1]})"
    op = failing_op(exc) or (node[0] if node is not None else None)
    if op and op.split(".")[-2 if op.count(".") >= 2 else -1].split(" ")[-1] not in reason:
        place += f" (op {op})"
    what = STAGES[stage] + (f" {how}" if how else "")
    if is_data_dependent(exc):
        return UnsupportedModelError(
            f"target '{target}' (--quant {scheme}): {what}{place}: data-dependent control flow ({reason}); "
            f"{_DATA_DEPENDENT_FIX}"
        )
    return UnsupportedModelError(f"target '{target}' (--quant {scheme}): {what}{place}: {reason}; {_FIX[stage]}")


@contextmanager
def quiet_capture() -> Iterator[list[str]]:
    """Keep what torch.export, the converters and the runtimes print while they work (the partial FX graph before a
    capture error, native converter / runtime logs on file descriptor 2) out of the user's terminal, and hand the
    lines back when the block ends: a native failure often explains itself only there."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines.extend(_ANSI.sub("", log.read().decode(errors="replace")).splitlines())
