"""Standalone measurement entry point, copied to a board or device and run there with its own Python.

It needs only numpy and the artifact's runtime (`executorch`, `ai_edge_litert` or `onnxruntime`), never edgeprune
itself, so it imports nothing from this package. Usage on the device:

    python3 remote_measure.py --artifact model.pte --inputs inputs.npy --warmup 10 --runs 50 --threads 4 \
        --outputs outputs.npz > result.json

`inputs.npy` holds float32 rows shaped like the model's input without the batch dimension's meaning: row i is fed
as a batch-1 input. The result JSON holds latency samples' statistics, memory figures and runtime versions; the
float32 outputs (one row per input) are written to `--outputs`: every output of the model to an `.npz`, keyed by
the runtime's output names (ExecuTorch, which has none: `output_<i>`) in the runtime's order, or the first output
alone to an `.npy`. The host puts them in the model's order by name (`edgeprune.outputs.read_remote`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

import numpy as np

SCHEMA_VERSION = 1


def _status_kb(field: str) -> int | None:
    """A kB figure from /proc/self/status (VmRSS: resident now, VmHWM: peak resident), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _version(dist: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - the version is informative only
        return "unknown"


class _ExecuTorch:
    runner = "executorch.runtime"
    modules = ("torch", "executorch.runtime")

    def __init__(self, path: str, threads: int):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)
        self._torch = torch
        self._method = Runtime.get().load_program(path).load_method("forward")
        meta = self._method.metadata
        self._dtype = torch.float32
        try:  # fp16 programs take half inputs
            if "Half" in str(meta.input_tensor_meta(0).dtype()):
                self._dtype = torch.float16
        except Exception:  # noqa: BLE001 - older runtimes: assume float32
            pass
        self.versions = {"executorch": _version("executorch"), "torch": torch.__version__}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self._method.execute((self._torch.from_numpy(x).to(self._dtype),))
        return {f"output_{i}": t.to(self._torch.float32).numpy().copy() for i, t in enumerate(outs)}


class _LiteRT:
    runner = "ai_edge_litert.Interpreter"
    modules = ("ai_edge_litert.interpreter",)

    def __init__(self, path: str, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=path, num_threads=threads)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._outs = self._it.get_output_details()
        self.versions = {"ai_edge_litert": _version("ai-edge-litert")}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._in["dtype"] == np.int8:
            scale, zero = self._in["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        self._it.set_tensor(self._in["index"], x.astype(self._in["dtype"], copy=False))
        self._it.invoke()
        out = {}
        for detail in self._outs:
            y = self._it.get_tensor(detail["index"])
            if detail["dtype"] == np.int8:
                scale, zero = detail["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            out[detail["name"]] = np.asarray(y, dtype=np.float32).copy()
        return out


class _OnnxRuntime:
    runner = "onnxruntime.InferenceSession"
    modules = ("onnxruntime",)

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._name = self._sess.get_inputs()[0].name
        self._outs = [o.name for o in self._sess.get_outputs()]
        self.versions = {"onnxruntime": ort.__version__}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        ys = self._sess.run(None, {self._name: x})
        return {name: np.asarray(y, dtype=np.float32) for name, y in zip(self._outs, ys)}


RUNTIMES = {".pte": _ExecuTorch, ".tflite": _LiteRT, ".onnx": _OnnxRuntime, ".ort": _OnnxRuntime}


def measure(artifact: str, inputs: np.ndarray, warmup: int, runs: int,
            threads: int) -> tuple[dict, dict[str, np.ndarray]]:  # fmt: skip
    """(result, every output by the runtime's name: rows stacked, one per input, in the runtime's order)."""
    suffix = os.path.splitext(artifact)[1]
    if suffix not in RUNTIMES:
        raise SystemExit(f"remote_measure: unknown artifact type '{suffix}'; known: {', '.join(RUNTIMES)}")
    runtime = RUNTIMES[suffix]
    for module in runtime.modules:  # import first, so the memory figure counts the model, not the runtime's import
        importlib.import_module(module)
    rss_before_kb = _status_kb("VmRSS")
    session = runtime(artifact, threads)
    rows = [session.run(inputs[i : i + 1]) for i in range(len(inputs))]
    outputs = {name: np.stack([row[name][0] for row in rows]) for name in rows[0]}
    first = np.ascontiguousarray(inputs[:1])
    for _ in range(warmup):
        session.run(first)
    samples_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(first)
        samples_ms.append((time.perf_counter() - start) * 1e3)
    rss_after_kb = _status_kb("VmRSS")
    peak_kb = _status_kb("VmHWM")
    arr = np.asarray(samples_ms)
    result = {
        "schema_version": SCHEMA_VERSION,
        "latency_p50_ms": float(np.percentile(arr, 50)),
        "latency_p90_ms": float(np.percentile(arr, 90)),
        "latency_mean_ms": float(arr.mean()),
        "runs": runs,
        "warmup_runs": warmup,
        "threads": threads,
        "size_bytes": os.path.getsize(artifact),
        "rss_growth_mb": None if rss_before_kb is None or rss_after_kb is None else (rss_after_kb - rss_before_kb) / 1e3,
        "peak_rss_mb": None if peak_kb is None else peak_kb / 1e3,
        "runner": session.runner,
        "runtime_versions": session.versions,
        "machine": {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version()},
    }
    return result, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one model artifact on this machine (edgeprune remote entry point).")
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--inputs", required=True, help=".npy of float32 inputs, one row per inference")
    parser.add_argument("--outputs", required=True,
                        help="where to write the float32 outputs: .npz every output by name, .npy the first")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    inputs = np.load(args.inputs, allow_pickle=False).astype(np.float32, copy=False)
    result, outputs = measure(args.artifact, inputs, args.warmup, args.runs, args.threads)
    arrays = {name: a.astype(np.float32) for name, a in outputs.items()}
    if args.outputs.endswith(".npz"):
        with open(args.outputs, "wb") as fh:  # a file object: numpy adds no suffix of its own
            np.savez(fh, **arrays)
    else:
        np.save(args.outputs, next(iter(arrays.values())))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
