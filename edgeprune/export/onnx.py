"""ONNX exporter: torch.onnx (dynamo) export, ONNX Runtime quantisation, optional ORT-format conversion.

Schemes:

- ``fp32``: ``torch.onnx.export(model, (x,), dynamo=True, opset_version=18)``. Reference: the fp32 module.
- ``fp16``: the module in half precision wrapped so that I/O stays float32 (a Cast at each end), exported the same
  way; ONNX Runtime's CPU provider runs the fp16 kernels. The export is loaded once in an InferenceSession to refuse
  models whose fp16 ops the CPU provider lacks. Reference: the same wrapper in PyTorch (half compute).
- ``int8``: ``quant_pre_process`` then ``quantize_static`` (QDQ, per-channel, QInt8 activations and weights, MinMax)
  calibrated on the calibration rows. ONNX Runtime static quantisation has no PyTorch fake-quant twin, so the
  reference is the QDQ graph itself run unfused (graph optimisations off: each DequantizeLinear -> float op ->
  QuantizeLinear as written), the fake-quantised twin of the int8 kernels the artifact's session runs
  (lowering ``{"reference": "qdq_unfused"}``); parity then checks the int8 lowering as for the other targets.
- ``int8-dynamic``: ``quant_pre_process`` then ``quantize_dynamic`` with QInt8 weights. Reference: the fp32 module.

Opset 18 is pinned: the newest opset common to the ONNX Runtime mobile packages still in use, and enough for the
quantiser's per-channel QDQ.

``to_ort_format(path)`` converts an exported .onnx to ORT format (``.ort`` plus the ``required_operators.config``
that a minimal ONNX Runtime build takes) by running ``python -m onnxruntime.tools.convert_onnx_models_to_ort``.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._deps import package_version, require
from edgeprune._io import atomic_write_bytes, sha256_file
from edgeprune.errors import ConfigError, EdgepruneError, UnsupportedModelError
from edgeprune.export.base import (
    Exporter,
    ExportResult,
    Reference,
    model_outputs,
    quiet_capture,
    reference_for,
    unsupported,
)
from edgeprune.outputs import with_keys
from edgeprune.types import Artifact, Plan, TensorSpec

REDUCE_RANGE_WHY = (
    "int8 weights are quantised to 7 bits (onnxruntime's reduce_range): without AVX-512 VNNI, onnxruntime's x86 "
    "int8 kernels multiply activation and weight bytes with VPMADDUBSW, whose 16-bit pair sums saturate for 8-bit "
    "weights, so the same artifact computed outputs 5-22% of the output range apart on such a host and on ARM; with "
    "7-bit weights every CPU computes the same integers"
)


class _HalfIO(torch.nn.Module):
    """Runs a half-precision module behind float32 inputs and outputs."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils._pytree.tree_map(
            lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, self.module(x.half())
        )


def _strip_node_metadata(proto) -> None:
    """Drop per-node metadata (the exporter's stack traces name the developer's source files) from a shipped model."""
    graphs = [proto.graph] + [f for f in proto.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def _specs(values) -> tuple[TensorSpec, ...]:
    onnx = require("onnx", extra="onnx")
    out = []
    for v in values:
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        out.append(TensorSpec(v.name, shape, dtype))
    return tuple(out)


def _calibration_reader(input_name: str, calibration: torch.Tensor):
    quantization = require("onnxruntime.quantization", extra="onnx")

    class _Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(range(len(calibration)))

        def get_next(self) -> dict | None:
            i = next(self._rows, None)
            if i is None:
                return None
            return {input_name: calibration[i : i + 1].detach().float().numpy()}

    return _Reader()


def to_ort_format(path: Path, *, target_platform: str = "arm", optimization_style: str = "Fixed") -> Path:
    """Convert `path` (.onnx) to ORT format next to it; returns the `.ort` path.

    Also writes `<stem>.required_operators.config` (the operator list for a minimal ONNX Runtime build). The
    converter runs in a subprocess into a temporary folder beside `path`; results are renamed into place, so no
    half-written .ort is left. `target_platform='arm'` (phones) keeps the optimised graph free of x86-only NCHWc
    ops and allows int8 QDQ fusion; use 'amd64' for x86 targets.
    """
    require("onnxruntime", extra="onnx")
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise ConfigError(f"'{path}' is not an existing .onnx file; ORT-format conversion needs one")
    if target_platform not in ("arm", "amd64"):
        raise ConfigError(f"target_platform '{target_platform}' is not allowed; use 'arm' or 'amd64'")
    if optimization_style not in ("Fixed", "Runtime"):
        raise ConfigError(f"optimization_style '{optimization_style}' is not allowed; use 'Fixed' or 'Runtime'")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}.ort-", suffix=".tmp"))
    try:
        cmd = [
            sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(path.resolve()),
            "--output_dir", str(tmp), "--optimization_style", optimization_style,
            "--target_platform", target_platform,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        suffix = ".with_runtime_opt" if optimization_style == "Runtime" else ""
        ort_tmp = tmp / f"{path.stem}{suffix}.ort"
        config_tmp = tmp / f"{path.stem}.required_operators{suffix}.config"
        if proc.returncode != 0 or not ort_tmp.is_file():
            lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            raise UnsupportedModelError(f"onnxruntime could not convert '{path.name}' to ORT format: {reason}")
        ort_path = path.with_name(ort_tmp.name)
        for src, dst in ((config_tmp, path.with_name(config_tmp.name)), (ort_tmp, ort_path)):
            if src.is_file():
                with open(src, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(src, dst)
        return ort_path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    extra = "onnx"
    schemes = ("fp32", "fp16", "int8", "int8-dynamic")
    opset = 18

    def __init__(self, ort_format: bool = False):
        self.ort_format = ort_format
        """Also write `<stem>.ort` (ORT format, target_platform 'arm') beside the .onnx; recorded in lowering."""

    def export(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor,
        plan: Plan,
        out_path: Path,
    ) -> ExportResult:
        self.check_plan(plan, calibration)
        onnx = require("onnx", extra="onnx")
        require("onnxscript", extra="onnx")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        example_input = example_input.detach().float()
        start = time.perf_counter()
        model_out = model_outputs(model, example_input)  # refuses non-tensor outputs before export
        tmp = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp"))
        step = ["convert", "with torch.onnx"]  # what was running, for the message if it fails
        try:
            try:
                final, reference, lowering = self._convert(model, example_input, calibration, plan.scheme, tmp, step)
                proto = onnx.load(str(final))
            except (EdgepruneError, MemoryError):
                raise
            except Exception as exc:
                raise unsupported(self.name, plan.scheme, model, exc, step[0], step[1]) from exc
            _strip_node_metadata(proto)
            atomic_write_bytes(out_path, proto.SerializeToString())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        lowering.update(
            stripped="node metadata_props (PyTorch stack traces with source paths, FX node text)",
            nodes=dict(Counter(n.op_type for n in proto.graph.node)),
            opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            ir_version=int(proto.ir_version),
            torch_version=torch.__version__,
            onnx_version=package_version("onnx"),
        )
        if plan.scheme in ("int8", "int8-dynamic"):
            lowering["onnxruntime_version"] = package_version("onnxruntime")
        if self.ort_format:
            lowering["ort_path"] = str(to_ort_format(out_path))
        artifact = Artifact(
            path=out_path,
            target=self.name,
            scheme=plan.scheme,
            size_bytes=out_path.stat().st_size,
            sha256=sha256_file(out_path),
            inputs=_specs(proto.graph.input),
            outputs=with_keys(_specs(proto.graph.output), model_out),
            plan=plan,
            lowering=lowering,
            export_s=round(time.perf_counter() - start, 3),
        )
        return ExportResult(artifact=artifact, reference=reference)

    def _torch_export(self, module: torch.nn.Module, example_input: torch.Tensor, dest: Path) -> None:
        with quiet_capture():  # torch.onnx prints the partial graph of each capture strategy it tries
            program = torch.onnx.export(
                module, (example_input,), dynamo=True, opset_version=self.opset, verbose=False
            )
        outputs = program.model.graph.outputs
        for i, value in enumerate(outputs):  # stable names across schemes ('linear' / '_to_copy_1' otherwise)
            value.name = "output" if len(outputs) == 1 else f"output_{i}"
        program.save(str(dest), external_data=False)

    def _convert(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor,
        scheme: str,
        tmp: Path,
        step: list[str],
    ) -> tuple[Path, Reference, dict[str, Any]]:
        fp32 = tmp / "model.onnx"
        ort = require("onnxruntime", extra="onnx")
        if scheme == "fp16":
            half = _HalfIO(copy.deepcopy(model).half()).eval()
            self._torch_export(half, example_input, fp32)
            # refuse an fp16 graph the CPU provider has no kernels for, here rather than at measurement
            step[:] = ["lower", "(onnxruntime's CPU provider cannot load the fp16 graph)"]
            ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
            lowering = {"reference": "fp16_module", "precision": "fp16 weights and compute, float32 I/O"}
            return fp32, reference_for(half), lowering
        self._torch_export(model, example_input, fp32)
        if scheme == "fp32":
            return fp32, reference_for(model), {"reference": "fp32"}
        step[:] = ["quantise", "with onnxruntime.quantization"]
        quantization = require("onnxruntime.quantization", extra="onnx")
        shape_inference = require("onnxruntime.quantization.shape_inference", extra="onnx")
        pre = tmp / "model.pre.onnx"
        shape_inference.quant_pre_process(str(fp32), str(pre))
        out = tmp / "model.q.onnx"
        if scheme == "int8":
            onnx = require("onnx", extra="onnx")
            input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
            quantization.quantize_static(
                str(pre),
                str(out),
                _calibration_reader(input_name, calibration),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                reduce_range=True,  # 7-bit weights: see REDUCE_RANGE_WHY
            )
            step[:] = ["lower", "(onnxruntime's CPU provider cannot load the QDQ graph)"]
            return out, _qdq_reference(ort, out), {
                "reference": "qdq_unfused",
                "reference_detail": (
                    "the quantised QDQ graph run literally (onnxruntime, graph optimisations off): float ops between "
                    "QuantizeLinear/DequantizeLinear pairs, the fake-quantised twin of what the int8 kernels compute"
                ),
                "quantizer": "onnxruntime quantize_static QDQ, per-channel QInt8 weights in 7 bits (reduce_range), "
                             "QInt8 activations, MinMax",
                "calibration_samples": int(len(calibration)),
            }
        quantization.quantize_dynamic(str(pre), str(out), weight_type=quantization.QuantType.QInt8, reduce_range=True)
        return out, reference_for(model), {
            "reference": "fp32",
            "quantizer": "onnxruntime quantize_dynamic, per-tensor QInt8 weights, activations quantised at run time",
        }


class _QdqReference(Reference):
    """The fake-quantised twin of a static-int8 QDQ model: the same graph with every optimisation off.

    ONNX Runtime then runs each DequantizeLinear -> float op -> QuantizeLinear as written (float compute on the
    quantised values, rounding at each Q), while the artifact's session fuses those into int8 kernels (QLinearConv,
    QGemm, ...) with fixed-point requantisation. This is what PT2E's fake-quantised module is for the other targets:
    parity then checks the int8 lowering, not quantisation error (which the accuracy figures report). Every graph
    output is returned, in the graph's order (the model's flattening order).
    """

    def __init__(self, ort, path: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(Path(path).read_bytes(), options, providers=["CPUExecutionProvider"])
        self._name = self._session.get_inputs()[0].name
        super().__init__(self._run)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.detach().float().numpy()
        rows = [self._session.run(None, {self._name: x[i : i + 1]}) for i in range(len(x))]
        return [torch.from_numpy(np.concatenate([r[j] for r in rows]).astype(np.float32, copy=False))
                for j in range(len(rows[0]))]


def _qdq_reference(ort, path: Path) -> Reference:
    return _QdqReference(ort, path)


EXPORTER = OnnxExporter()
