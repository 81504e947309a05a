"""LiteRT (TFLite) in-process session: ai_edge_litert.Interpreter with its default XNNPACK delegate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeprune._deps import package_version, require
from edgeprune.errors import DeviceError
from edgeprune.types import Artifact, TensorSpec


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


class TFLiteSession:
    runner = "ai_edge_litert.Interpreter"

    def __init__(self, path: Path, threads: int, outputs: tuple[TensorSpec, ...] = ()):
        litert = require("ai_edge_litert.interpreter", extra="tflite")
        self._file_mb = Path(path).stat().st_size / 1e6
        rss_before = _vm_rss_kb()
        try:
            self._interpreter = litert.Interpreter(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(f"ai_edge_litert could not load '{path}': {str(exc).splitlines()[0]}") from exc
        inp = self._interpreter.get_input_details()
        if len(inp) != 1:
            raise DeviceError(f"'{path}' has {len(inp)} inputs; the host runner feeds exactly one")
        self._in = inp[0]
        self._outs = self._output_details(outputs)
        self._in_q = self._quant(self._in)
        self._outs_q = [self._quant(d) for d in self._outs]
        # First invoke inside the measured window: XNNPACK packs weights and sizes its workspace on first run.
        self.run(np.zeros(tuple(int(d) for d in self._in["shape"]), dtype=np.float32))
        rss_after = _vm_rss_kb()
        self._rss_delta_mb = None
        if rss_before is not None and rss_after is not None:
            self._rss_delta_mb = (rss_after - rss_before) * 1024 / 1e6  # kB (KiB) -> MB

    def _output_details(self, specs: tuple[TensorSpec, ...]) -> list[dict]:
        """The outputs in the artifact's order (the model's flattening order), found by tensor name: the flatbuffer's
        own order need not be the model's. Without names (or where they are not the file's), the first output in
        signature order alone."""
        details = self._interpreter.get_output_details()
        by_name = {d["name"]: d for d in details}
        if specs and all(s.name in by_name for s in specs):
            return [by_name[s.name] for s in specs]
        return [self._output_detail(details)]

    def _output_detail(self, details: list[dict]) -> dict:
        """The first output in signature order (falls back to the interpreter's output order)."""
        signatures = self._interpreter._get_full_signature_list()  # {key: {"inputs": {..}, "outputs": {name: index}}}
        if signatures:
            outputs = next(iter(signatures.values()))["outputs"]
            if outputs:
                first = outputs[min(outputs, key=_natural)]
                for d in details:
                    if d["index"] == first:
                        return d
        return details[0]

    @staticmethod
    def _quant(detail: dict) -> tuple[float, int] | None:
        """(scale, zero point) when the tensor is integer-quantised, read from the interpreter itself."""
        if np.dtype(detail["dtype"]).kind not in "iu":
            return None
        scale, zero_point = detail["quantization"]
        if not scale:
            raise DeviceError(f"tensor '{detail['name']}' is {np.dtype(detail['dtype']).name} without a scale")
        return float(scale), int(zero_point)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        dtype = np.dtype(self._in["dtype"])
        if self._in_q is not None:
            scale, zp = self._in_q
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
        elif dtype != np.float32:
            x = x.astype(dtype)
        self._interpreter.set_tensor(self._in["index"], x)
        self._interpreter.invoke()
        out = []
        for detail, quant in zip(self._outs, self._outs_q):
            y = self._interpreter.get_tensor(detail["index"])
            if quant is not None:
                scale, zp = quant
                out.append(((y.astype(np.float32) - zp) * scale).astype(np.float32))
            else:
                out.append(y.astype(np.float32, copy=False))
        return out

    def memory(self) -> tuple[float | None, str]:
        if self._rss_delta_mb is None:
            return None, "not measured: /proc/self/status is not available on this host"
        return (
            round(max(self._rss_delta_mb, self._file_mb), 3),
            "max(model file size, VmRSS delta from /proc/self/status across Interpreter(model_path) + "
            "allocate_tensors + first invoke, in-process; includes mmapped model pages touched and XNNPACK "
            "packed weights) in MB (1e6 bytes); the RSS delta under-counts when the allocator reuses memory "
            "already resident, hence the file-size floor; the first session in a process also counts the "
            "runtime's one-time initialisation",
        )

    def versions(self) -> dict[str, str]:
        return {"ai_edge_litert": package_version("ai-edge-litert") or "unknown"}

    def close(self) -> None:
        self._interpreter = None


def open_session(artifact: Artifact, threads: int) -> TFLiteSession:
    return TFLiteSession(artifact.path, threads, artifact.outputs)


def _natural(name: str) -> tuple:
    """Sort key reading digit runs as numbers: 'output_2' before 'output_10'."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
