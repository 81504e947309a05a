"""ExecuTorch exporter: torch.export -> (PT2E int8 | half) -> XNNPACK delegation -> .pte.

Schemes:
  fp32          the model as is, lowered to XNNPACK.
  fp16          `model.half()` exported with a half input; the .pte takes and returns float16 tensors
                (the runtime session casts float32 in and float32 out).
  int8          static PT2E quantisation (XNNPACKQuantizer, symmetric per-channel weights, calibrated
                activations), then lowered like fp32.
  int8-dynamic  PT2E with dynamic activation quantisation (activations quantised at run time).

The exported graph has a static batch size: that of `example_input` (normally 1). The program's outputs are the
model's in torch's pytree flattening order (`outputs.py`), which the .pte keeps.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import torch
from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.backends.xnnpack.utils.configs import get_transform_passes
from executorch.devtools.backend_debug import get_delegation_info
from executorch.exir import to_edge_transform_and_lower
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from edgeprune._deps import package_version
from edgeprune._io import atomic_write_bytes
from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.export.base import (
    Exporter,
    ExportResult,
    first_line,
    model_outputs,
    quiet_capture,
    reference_for,
    unsupported,
)
from edgeprune.outputs import with_keys
from edgeprune.types import Artifact, Plan, TensorSpec

# Call nodes that are bookkeeping, not operators executed at run time.
_NOT_OPS = frozenset({"getitem", "executorch_call_delegate"})


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class ExecuTorchExporter(Exporter):
    name = "executorch"
    suffix = ".pte"
    schemes = ("fp32", "fp16", "int8", "int8-dynamic")
    extra = None  # executorch is a core dependency

    # ------------------------------------------------------------------ public

    def export(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor | None,
        plan: Plan,
        out_path: Path,
    ) -> ExportResult:
        scheme = plan.scheme
        self.check_plan(plan, calibration)
        self._check_inputs(example_input, calibration, scheme)
        out_path = Path(out_path)

        start = time.perf_counter()
        model = model.eval()
        outputs = model_outputs(model, example_input.to(torch.float32))  # refuses non-tensor outputs before export
        if scheme == "fp16":
            half = copy.deepcopy(model).half().eval()
            ep = self._capture(half, example_input.to(torch.float16), scheme)
            reference = reference_for(half, input_dtype=torch.float16)

        elif scheme in ("int8", "int8-dynamic"):
            ex = example_input.to(torch.float32)
            calib = ex if calibration is None or len(calibration) == 0 else calibration.to(torch.float32)
            quantized = self._quantize(model, ex, calib, scheme)
            ep = self._capture(quantized, ex, scheme)
            reference = reference_for(quantized, batch=ex.shape[0])
        else:  # fp32
            ex = example_input.to(torch.float32)
            ep = self._capture(model, ex, scheme)
            reference = reference_for(model)

        buffer, lowering = self._lower(ep, scheme)
        lowering["reference"] = {"fp16": "fp16_module", "fp32": "fp32"}.get(scheme, "pt2e_fake_quant")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_path, buffer)
        export_s = time.perf_counter() - start

        artifact = Artifact(
            path=out_path,
            target=self.name,
            scheme=scheme,
            size_bytes=len(buffer),
            sha256=hashlib.sha256(buffer).hexdigest(),
            inputs=_specs(ep, "input"),
            outputs=with_keys(_specs(ep, "output"), outputs),
            plan=plan,
            lowering=lowering,
            export_s=round(export_s, 4),
        )
        return ExportResult(artifact=artifact, reference=reference)

    # ------------------------------------------------------------------ steps

    def _check_inputs(self, example_input: torch.Tensor, calibration: torch.Tensor | None, scheme: str) -> None:
        if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
            got = type(example_input).__name__ if not isinstance(example_input, torch.Tensor) else example_input.dtype
            raise ConfigError(f"example input must be a float tensor, got {got}")
        if calibration is None:
            if scheme == "int8":
                raise ConfigError("static int8 (--quant int8) needs calibration inputs; give --data or use int8-dynamic")
            return
        if not isinstance(calibration, torch.Tensor):
            raise ConfigError(f"calibration data must be a float tensor, got {type(calibration).__name__}")
        if not calibration.is_floating_point():
            raise ConfigError(
                f"calibration data has dtype {_dtype_name(calibration.dtype)}; expected float32 "
                f"inputs shaped (N, {', '.join(map(str, example_input.shape[1:]))})"
            )
        if tuple(calibration.shape[1:]) != tuple(example_input.shape[1:]):
            raise ConfigError(
                f"calibration data has shape {tuple(calibration.shape)}, so samples of shape "
                f"{tuple(calibration.shape[1:])}; the model input is {tuple(example_input.shape)}, so expected "
                f"(N, {', '.join(map(str, example_input.shape[1:]))})"
            )
        if scheme == "int8" and len(calibration) == 0:
            raise ConfigError("static int8 (--quant int8) needs at least one calibration input; got 0")

    def _capture(self, module: torch.nn.Module, example: torch.Tensor, scheme: str) -> torch.export.ExportedProgram:
        """torch.export, with a capture failure turned into a one-line UnsupportedModelError."""
        try:
            with quiet_capture():
                return torch.export.export(module, (example,))
        except Exception as exc:  # noqa: BLE001 - library errors become one typed line
            raise unsupported(self.name, scheme, module, exc, "capture") from exc

    def _quantize(
        self, model: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor, scheme: str
    ) -> torch.fx.GraphModule:
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=scheme == "int8-dynamic")
        quantizer = XNNPACKQuantizer().set_global(config)
        captured = self._capture(model, example, scheme)
        try:
            prepared = prepare_pt2e(captured.module(), quantizer)
            batch, n = example.shape[0], len(calibration)
            with torch.no_grad():
                # The graph has a static batch: feed `batch` rows at a time, wrapping round at the end.
                for i in range(0, n, batch):
                    prepared(calibration[torch.arange(i, i + batch) % n])
            return convert_pt2e(prepared)
        except Exception as exc:  # noqa: BLE001
            raise unsupported(self.name, scheme, model, exc, "quantise", "with PT2E XNNPACKQuantizer") from exc

    def _lower(self, ep: torch.export.ExportedProgram, scheme: str) -> tuple[bytes, dict[str, Any]]:
        """Lower to XNNPACK and check that executorch.runtime loads the result. XNNPACK can refuse, at load time, a
        node its partitioner accepted (swin_t int8: a quantised constant pad); that op is then lowered again without
        delegation (it runs on the portable kernels), or the model is refused with the runtime's reason."""
        kept_off: dict[str, str] = {}  # partitioner config -> why it was kept off XNNPACK
        while True:
            configs = [c for c in ALL_PARTITIONER_CONFIGS if c.__name__ not in kept_off]
            try:
                edge = to_edge_transform_and_lower(
                    ep, partitioner=[XnnpackPartitioner(configs=configs)], transform_passes=get_transform_passes()
                )
                info = get_delegation_info(edge.exported_program().graph_module)
                program = edge.to_executorch()
                buffer = bytes(program.buffer)
                plan = program.executorch_program.execution_plan[0]
            except Exception as exc:  # noqa: BLE001
                raise unsupported(self.name, scheme, None, exc, "lower", "to XNNPACK") from exc
            refused = _load_failure(buffer)
            if refused is None:
                break
            reason, xnn_node = refused
            config = _XNN_NODE_CONFIG.get(xnn_node or "")
            if config is None or config in kept_off:
                raise UnsupportedModelError(
                    f"target '{self.name}' (--quant {scheme}): executorch.runtime cannot load the lowered program"
                    f"{f' (XNNPACK {xnn_node} node)' if xnn_node else ''}: {reason}; try another --quant or --target"
                )
            kept_off[config] = f"XNNPACK refused a {xnn_node} node at load: {reason}"

        delegated: dict[str, int] = {}
        non_delegated: dict[str, int] = {}
        for op_type, row in info.delegation_by_operator.items():
            if op_type in _NOT_OPS:
                continue
            if row.delegated:
                delegated[op_type] = row.delegated
            if row.non_delegated:
                non_delegated[op_type] = row.non_delegated
        n_del, n_non = sum(delegated.values()), sum(non_delegated.values())
        lowering = {
            "backend": "XnnpackBackend",
            "delegated_ops": n_del,
            "non_delegated_ops": n_non,
            "delegated_share": round(n_del / (n_del + n_non), 4) if n_del + n_non else 0.0,
            "delegated_subgraphs": int(info.num_delegated_subgraphs),
            "non_delegated": dict(sorted(non_delegated.items())),
            "planned_arena_bytes": int(sum(plan.non_const_buffer_sizes[1:])),
            "executorch_version": package_version("executorch"),
        }
        if kept_off:
            lowering["kept_off_xnnpack"] = kept_off
        return buffer, lowering


_XNN_NODE_CONFIG = {
    "StaticConstantPad": "ConstantPadConfig",
    "StaticSlice": "SliceCopyConfig",
    "StaticTranspose": "PermuteConfig",
    "StaticReshape": "ViewCopyConfig",
    "Concatenate2": "CatConfig",
    "Concatenate3": "CatConfig",
    "Concatenate4": "CatConfig",
    "Concatenate5": "CatConfig",
}
"""XNNPACK node kinds (as its compiler logs them) -> the partitioner config that delegates them."""
_XNN_FAILED = re.compile(r"Failed to create (\w+) node \d+ with code: (\w+)")


def _load_failure(buffer: bytes) -> tuple[str, str | None] | None:
    """None if executorch.runtime loads `buffer`'s forward method; else (reason, XNNPACK node kind or None)."""
    from executorch.runtime import Runtime

    with quiet_capture() as log:
        try:
            Runtime.get().load_program(buffer).load_method("forward")
        except Exception as exc:  # noqa: BLE001 - the runtime's log says why
            failure: BaseException | None = exc
        else:
            failure = None
    if failure is None:
        return None
    text = "\n".join(log)
    match = _XNN_FAILED.search(text)
    if match:
        return f"{match.group(1)}: {match.group(2)}", match.group(1)
    errors = [line.split("] ", 1)[-1].strip() for line in log if line.startswith("E ") or "failed" in line.lower()]
    return "; ".join(dict.fromkeys(errors))[:300] or first_line(failure), None


def _specs(ep: torch.export.ExportedProgram, kind: str) -> tuple[TensorSpec, ...]:
    """TensorSpecs of the user inputs or outputs of an exported program, as the .pte will see them."""
    sig = ep.graph_signature
    if kind == "input":
        names = list(sig.user_inputs)
        nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        vals = [nodes[n].meta["val"] for n in names]
    else:
        out_node = next(n for n in ep.graph.nodes if n.op == "output")
        flat = out_node.args[0]
        flat = list(flat) if isinstance(flat, (list, tuple)) else [flat]
        user_out = set(sig.user_outputs)
        vals = [n.meta["val"] for n in flat if isinstance(n, torch.fx.Node) and n.name in user_out]
    return tuple(
        TensorSpec(name=f"{kind}_{i}", shape=tuple(int(d) for d in v.shape), dtype=_dtype_name(v.dtype))
        for i, v in enumerate(vals)
    )


EXPORTER = ExecuTorchExporter()
