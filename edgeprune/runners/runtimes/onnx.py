"""ONNX Runtime in-process session on the CPU execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune._deps import package_version, require
from edgeprune.errors import DeviceError
from edgeprune.types import Artifact, TensorSpec

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


def _vm_rss_kb() -> int | None:
    """This process's resident set size in kB from /proc/self/status, or None where there is no procfs."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class OnnxSession:
    runner = "onnxruntime.InferenceSession"

    def __init__(self, path: Path, threads: int, outputs: tuple[TensorSpec, ...] = ()):
        ort = require("onnxruntime", extra="onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._file_mb = Path(path).stat().st_size / 1e6
        rss_before = _vm_rss_kb()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise DeviceError(f"onnxruntime could not load '{path}': {str(exc).splitlines()[0]}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise DeviceError(f"'{path}' has {len(inputs)} inputs; the host runner feeds exactly one")
        self._input_name = inputs[0].name
        if inputs[0].type not in _ORT_TYPES or np.dtype(_ORT_TYPES[inputs[0].type]).kind != "f":
            raise DeviceError(f"'{path}' input '{inputs[0].name}' is {inputs[0].type}; the host runner feeds floats")
        self._input_dtype = _ORT_TYPES[inputs[0].type]
        names = [o.name for o in self._session.get_outputs()]
        wanted = [spec.name for spec in outputs]
        # the artifact's output order (the model's flattening order); the graph's own where the names differ
        self._output_names = wanted if wanted and set(wanted) <= set(names) else names
        shape = tuple(d if isinstance(d, int) else 1 for d in inputs[0].shape)
        self.run(np.zeros(shape, dtype=np.float32))  # first run allocates the arena: inside the measured window
        rss_after = _vm_rss_kb()
        self._rss_delta_mb = None
        if rss_before is not None and rss_after is not None:
            self._rss_delta_mb = (rss_after - rss_before) * 1024 / 1e6  # kB (KiB) -> MB

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x).astype(self._input_dtype, copy=False)
        ys = self._session.run(self._output_names, {self._input_name: x})
        return [np.asarray(y).astype(np.float32, copy=False) for y in ys]

    def memory(self) -> tuple[float | None, str]:
        if self._rss_delta_mb is None:
            return None, "not measured: /proc/self/status is not available on this host"
        return (
            round(max(self._rss_delta_mb, self._file_mb), 3),
            "max(model file size, VmRSS delta from /proc/self/status across InferenceSession creation + first "
            "run, in-process, CPUExecutionProvider; includes initialisers, the CPU arena and optimised-graph "
            "buffers) in MB (1e6 bytes); the RSS delta under-counts when the allocator reuses memory already "
            "resident, hence the file-size floor; the first session in a process also counts the "
            "runtime's one-time initialisation",
        )

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime") or "unknown"}

    def close(self) -> None:
        self._session = None


def open_session(artifact: Artifact, threads: int) -> OnnxSession:
    return OnnxSession(artifact.path, threads, artifact.outputs)
