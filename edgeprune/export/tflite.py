"""LiteRT (TFLite) exporter: litert-torch conversion, ai-edge-quantizer / PT2E quantisation, XNNPACK lowering facts.

Schemes:

- ``fp32``: ``litert_torch.convert(model, (x,))``. Reference: the fp32 module.
- ``fp16``: the fp32 flatbuffer with fp16 weights (ai-edge-quantizer FLOAT_CASTING, weight-only, 16 bits); the
  runtime inserts DEQUANTIZE ops and computes in float32, I/O stays float32. Reference: the fp32 module.
- ``int8``: static int8 through PT2E with litert-torch's ``PT2EQuantizer`` (per-channel symmetric weights, static
  activations; concatenations and pools share one scale, see `_sharing_quantizer`), calibrated on the calibration rows,
  converted with ``QuantConfig(pt2e_quantizer=q)``. The model's
  input and output tensors are int8; their scale / zero point are recorded in the TensorSpecs. Reference: the PT2E
  fake-quantised module (the one that was converted).
- ``int8-dynamic``: dynamic-range int8 weights (ai-edge-quantizer ``dynamic_wi8_afp32``), float I/O. Reference: the
  fp32 module (the runtime quantises activations per inference; PyTorch has no twin that matches it more closely).

Lowering facts come from loading the flatbuffer in ai-edge-litert twice: once without the default delegates (the
op list) and once with the default XNNPACK delegate; each DELEGATE node's inputs / outputs bound the partition it
replaced, and walking producers back from its outputs to its inputs gives the ops inside it. Ops in no partition
run on the builtin kernels. This is the host's XNNPACK build; a phone runs the same delegate code for ARM.

Outputs: the flatbuffer's own output order need not be the model's, so the artifact lists them in the model's
flattening order (`outputs.py`), matched by name through the signature (`signature_output_names`); runtime sessions
read them by tensor name.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._deps import package_version, require
from edgeprune._io import atomic_write_bytes, sha256_file
from edgeprune.errors import EdgepruneError, ModelError
from edgeprune.export.base import Exporter, ExportResult, model_outputs, quiet_capture, reference_for, unsupported
from edgeprune.outputs import leaves, with_keys
from edgeprune.types import Artifact, Plan, TensorSpec

_QUANT_OPS = {"QUANTIZE", "DEQUANTIZE"}
def _tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail["quantization"]
    if dtype in ("int8", "uint8", "int16") and scale:
        return TensorSpec(detail["name"], tuple(int(d) for d in detail["shape"]), dtype, float(scale), int(zero_point))
    return TensorSpec(detail["name"], tuple(int(d) for d in detail["shape"]), dtype)


def signature_output_names(value: Any) -> list[str]:
    """The names litert-torch gives the outputs of a model that returned `value`, in flattening order: a dict's keys
    joined with '_' one level down ('heads_box', 'heads_0'), else 'output_<i>' for the i-th flattened tensor
    (litert_torch/_convert/litert_converter.py `_get_output_names`, litert 0.10). Checked against the converted
    model's signature by `inspect_flatbuffer`, never assumed."""
    if not isinstance(value, dict):
        return [f"output_{i}" for i in range(len(leaves(value)))]
    names: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for name, item in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(item, (dict, list, tuple)):
                walk(item, f"{prefix}{name}_")
            else:
                names.append(f"{prefix}{name}")

    walk(value, "")
    return names


def _signature_order(interpreter: Any, details: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """`details` (the interpreter's outputs) in the model's flattening order, by the signature's output names."""
    signatures = interpreter._get_full_signature_list()  # {key: {"inputs": {..}, "outputs": {name: tensor index}}}
    by_name = next(iter(signatures.values()))["outputs"] if signatures else {}
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelError(f"LiteRT names the model's outputs by joining their keys with '_', and '{duplicated[0]}' "
                         "then names two of them; rename one of the keys")
    if sorted(by_name) != sorted(names):
        raise ModelError(f"the LiteRT signature's outputs ({', '.join(sorted(by_name)) or 'none'}) are not the "
                         f"model's ({', '.join(names)}); return a tensor, a tuple or a dict of tensors")
    by_index = {int(d["index"]): d for d in details}
    return [by_index[int(by_name[n])] for n in names]


def inspect_flatbuffer(content: bytes, output_names: list[str] | None = None
                       ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, Any]]:  # fmt: skip
    """(input specs, output specs, lowering facts) of a .tflite flatbuffer, read through ai-edge-litert.

    With `output_names` (`signature_output_names` of the model's outputs), the output specs follow the model's
    flattening order, matched through the signature by name; else the interpreter's order."""
    litert = require("ai_edge_litert.interpreter", extra="tflite")
    plain = litert.Interpreter(
        model_content=content,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    plain.allocate_tensors()
    inputs = tuple(_tensor_spec(d) for d in plain.get_input_details())
    details = plain.get_output_details()
    if output_names is not None:
        details = _signature_order(plain, details, output_names)
    outputs = tuple(_tensor_spec(d) for d in details)
    ops = plain._get_ops_details()  # private but stable since TF 2.x; the public API lists no ops
    op_counts = dict(Counter(op["op_name"] for op in ops))

    def dtype_of(t: int) -> str:
        return np.dtype(plain._get_tensor_details(int(t), 0)["dtype"]).name

    float_ops = sorted(
        {
            op["op_name"]
            for op in ops
            if op["op_name"] not in _QUANT_OPS
            and any(dtype_of(t) in ("float32", "float16") for t in op["outputs"] if t >= 0)
        }
    )

    delegated = litert.Interpreter(model_content=content)  # AUTO resolver: the default XNNPACK delegate
    delegated.allocate_tensors()
    dops = delegated._get_ops_details()
    producer: dict[int, int] = {}
    for op in dops:
        if op["op_name"] != "DELEGATE":
            for t in op["outputs"]:
                producer[int(t)] = op["index"]
    inside: set[int] = set()
    partitions = 0
    for op in dops:
        if op["op_name"] != "DELEGATE":
            continue
        partitions += 1
        boundary = {int(t) for t in op["inputs"]}
        stack = [int(t) for t in op["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            inside.add(node)
            stack.extend(int(u) for u in dops[node]["inputs"] if u >= 0)
    original = [op for op in dops if op["op_name"] != "DELEGATE"]
    not_delegated = [op["op_name"] for op in original if op["index"] not in inside]
    lowering: dict[str, Any] = {
        "ops": op_counts,
        "not_delegated_to_xnnpack": not_delegated,
        "xnnpack_delegation": (
            "measured on the host: ops inside the default XNNPACK delegate's partitions (DELEGATE nodes of an "
            "ai_edge_litert.Interpreter load, each partition traced from its output tensors back to its input "
            "tensors) vs a BUILTIN_WITHOUT_DEFAULT_DELEGATES load"
        ),
        "xnnpack_partitions": partitions,
        "delegated_op_share": round((len(original) - len(not_delegated)) / len(original), 4) if original else 0.0,
        "float_compute_ops": float_ops,
    }
    return inputs, outputs, lowering


class TFLiteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    extra = "tflite"
    schemes = ("fp32", "fp16", "int8", "int8-dynamic")

    def export(
        self,
        model: torch.nn.Module,
        example_input: torch.Tensor,
        calibration: torch.Tensor,
        plan: Plan,
        out_path: Path,
    ) -> ExportResult:
        self.check_plan(plan, calibration)
        litert_torch = require("litert_torch", extra="tflite")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        example_input = example_input.detach().float()
        start = time.perf_counter()
        model_out = model_outputs(model, example_input)  # refuses non-tensor outputs before conversion
        with torch.no_grad():
            names = signature_output_names(model(example_input))
        lowering: dict[str, Any] = {}
        step = ["convert", "with litert-torch"]  # what was running, for the message if it fails
        try:
            if plan.scheme == "int8":
                content, reference, lowering = self._int8_static(litert_torch, model, example_input, calibration, step)
            else:
                content = bytes(litert_torch.convert(model, (example_input,)).model_content())
                reference = reference_for(model)
                lowering = {"reference": "fp32"}
                step[:] = ["quantise", "with ai-edge-quantizer"]
                if plan.scheme == "fp16":
                    content = self._aeq_fp16(content)
                    lowering["quantizer"] = "ai_edge_quantizer weight-only float16 (FLOAT_CASTING), float32 compute"
                elif plan.scheme == "int8-dynamic":
                    recipe = require("ai_edge_quantizer.recipe", extra="tflite")
                    content = self._aeq(content, recipe.dynamic_wi8_afp32())
                    lowering["quantizer"] = "ai_edge_quantizer dynamic_wi8_afp32 (int8 weights, float I/O)"
            step[:] = ["lower", "(ai_edge_litert cannot load the converted flatbuffer)"]
            inputs, outputs, facts = inspect_flatbuffer(content, names)
        except (EdgepruneError, MemoryError):
            raise
        except Exception as exc:
            raise unsupported(self.name, plan.scheme, model, exc, step[0], step[1]) from exc
        lowering.update(facts)
        lowering["litert_torch_version"] = package_version("litert-torch") or getattr(litert_torch, "__version__", None)
        lowering["ai_edge_litert_version"] = package_version("ai-edge-litert")
        if plan.scheme in ("fp16", "int8-dynamic"):
            lowering["ai_edge_quantizer_version"] = package_version("ai-edge-quantizer")
        if plan.scheme != "int8":
            lowering.pop("float_compute_ops", None)
        atomic_write_bytes(out_path, content)
        export_s = time.perf_counter() - start
        artifact = Artifact(
            path=out_path,
            target=self.name,
            scheme=plan.scheme,
            size_bytes=out_path.stat().st_size,
            sha256=sha256_file(out_path),
            inputs=inputs,
            outputs=with_keys(outputs, model_out),
            plan=plan,
            lowering=lowering,
            export_s=round(export_s, 3),
        )
        return ExportResult(artifact=artifact, reference=reference)

    @staticmethod
    def _int8_static(litert_torch, model, example_input, calibration, step):
        pt2e = require("litert_torch.quantize.pt2e_quantizer", extra="tflite")
        qcfg = require("litert_torch.quantize.quant_config", extra="tflite")
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = _sharing_quantizer(pt2e).set_global(
            pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        step[:] = ["capture", ""]
        with quiet_capture():
            captured = torch.export.export(model, (example_input,))
        step[:] = ["quantise", "with PT2E (litert-torch PT2EQuantizer)"]
        graph = prepare_pt2e(captured.module(), quantizer)
        with torch.no_grad():
            for i in range(len(calibration)):  # exported with batch 1: calibrate row by row
                graph(calibration[i : i + 1].float())
        graph = convert_pt2e(graph, fold_quantize=False)
        move_exported_model_to_eval(graph)  # swaps BN/dropout to their eval forms in the graph
        graph.training = False  # exported modules refuse .eval(); litert-torch warns on the flag alone
        step[:] = ["convert", "with litert-torch"]
        content = bytes(
            litert_torch.convert(
                graph, (example_input,), quant_config=qcfg.QuantConfig(pt2e_quantizer=quantizer)
            ).model_content()
        )
        lowering = {
            "reference": "pt2e_fake_quant",
            "quantizer": "litert_torch PT2EQuantizer, symmetric per-channel int8 weights, static int8 activations",
            "calibration_samples": int(len(calibration)),
            "concatenations_sharing_one_scale": quantizer.cats_annotated,
            "pools_sharing_one_scale": quantizer.pools_annotated,
        }
        return content, reference_for(graph, batch=1), lowering

    @staticmethod
    def _aeq(content: bytes, recipe_obj) -> bytes:
        quantizer = require("ai_edge_quantizer.quantizer", extra="tflite")
        qt = quantizer.Quantizer(bytearray(content), recipe_obj)
        return bytes(qt.quantize(enable_progress_report=False).quantized_model)

    @staticmethod
    def _aeq_fp16(content: bytes) -> bytes:
        quantizer = require("ai_edge_quantizer.quantizer", extra="tflite")
        qtyping = require("ai_edge_quantizer.qtyping", extra="tflite")
        algos = require("ai_edge_quantizer.algorithm_manager", extra="tflite")
        qt = quantizer.Quantizer(bytearray(content))
        qt.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=algos.AlgorithmName.FLOAT_CASTING,
        )
        return bytes(qt.quantize(enable_progress_report=False).quantized_model)


_SAME_SCALE_OPS = (torch.ops.aten.avg_pool2d.default, torch.ops.aten.max_pool2d.default)
"""Single-input ops whose int8 TFLite kernel needs its input and output on one scale. Left to litert-torch, an
average pool's output gets an observer of its own, and the converter requantises the pool's input to that narrower
scale first, clipping every value beyond it (maxvit_t's stride-2 projection, AvgPool2d(3, 2, padding=1): 13-25% of
the output range off its PT2E twin). A max pool gets no annotation at all: where several convs read its output,
each requantises it, and the converter fed them the pool's int8 output while their biases were quantised for the
requantised scale (googlenet's inception4a: its branch convs 13-24% of the output range off their twin, 1% with
one scale)."""


def _sharing_quantizer(pt2e):
    """litert-torch's PT2EQuantizer, plus the concatenations and pools its annotators miss.

    The 'cat' annotator finds concatenations by their source function, which `torch.export` no longer records as
    `torch.cat`, so none is annotated: the PT2E graph then concatenates inputs of different scales, and the LiteRT
    converter gives the int8 CONCATENATION the first input's scale without requantising the others (their values
    saturate: top-1 agreement 0 on densenet / inception_v3). Every unannotated `aten.cat` gets the annotation the
    TFLite int8 spec needs: inputs and output share one observer, so one scale covers them all. Every unannotated
    pool of `_SAME_SCALE_OPS` gets its output on its input's observer alike.
    """
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    class SharingQuantizer(pt2e.PT2EQuantizer):
        cats_annotated = 0
        pools_annotated = 0

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            if self.global_config is None:
                return model
            for node in model.graph.nodes:
                if "quantization_annotation" in node.meta:
                    continue
                if node.target == torch.ops.aten.cat.default:
                    inputs = [a for a in node.args[0] if isinstance(a, Node)]
                elif node.target in _SAME_SCALE_OPS and isinstance(node.args[0], Node):
                    inputs = [node.args[0]]
                else:
                    continue
                if not inputs:
                    continue
                shared = SharedQuantizationSpec((inputs[0], node))
                qspecs = {inputs[0]: self.global_config.input_activation} | {a: shared for a in inputs[1:]}
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=qspecs, output_qspec=shared, _annotated=True
                )
                if node.target == torch.ops.aten.cat.default:
                    self.cats_annotated += 1
                else:
                    self.pools_annotated += 1
            return model

    return SharingQuantizer()


EXPORTER = TFLiteExporter()
