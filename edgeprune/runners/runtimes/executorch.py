"""ExecuTorch runtime session: runs a .pte in this process through `executorch.runtime` (XNNPACK + portable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune._deps import package_version
from edgeprune._io import native_stderr_silenced
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.types import Artifact

MEMORY_METHOD = "planned activation arena + program bytes (ExecuTorch memory plan)"


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def planned_arena_bytes(pte: bytes, method: str = "forward") -> int:
    """Bytes of the memory-planned buffers of `method`, read from the .pte itself (index 0 is reserved)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte).program
    plans = {p.name: p for p in program.execution_plan}
    plan = plans.get(method, program.execution_plan[0])
    return int(sum(plan.non_const_buffer_sizes[1:]))


def set_threads(threads: int) -> None:
    """Size the runtime's (process-wide) CPU thread pool that XNNPACK uses."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchSession:
    runner = "executorch.runtime"

    def __init__(self, artifact: Artifact, threads: int):
        import torch

        path = Path(artifact.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DeviceError(f"cannot read ExecuTorch program '{path}': {exc.strerror or exc}") from exc
        try:
            from executorch.runtime import Runtime

            with native_stderr_silenced():  # cpuinfo/threadpool chatter on every load
                set_threads(threads)
                self._program = Runtime.get().load_program(str(path))
                self._method = self._program.load_method("forward")
            self._arena_bytes = planned_arena_bytes(data)
        except Exception as exc:  # noqa: BLE001 - runtime errors become one typed line
            raise DeviceError(f"executorch.runtime could not load '{path.name}': {_first_line(exc)}") from exc
        self._file_bytes = len(data)
        self._path = path
        spec = artifact.inputs[0]
        self._in_shape = tuple(spec.shape)
        self._in_dtype = getattr(torch, spec.dtype)
        self._torch = torch

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        if tuple(x.shape) != self._in_shape:
            raise ConfigError(f"input of shape {tuple(x.shape)} does not match the program's input {self._in_shape}")
        tensor = self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._in_dtype)
        try:
            outputs = self._method.execute((tensor,))
        except Exception as exc:  # noqa: BLE001
            raise DeviceError(f"executorch.runtime failed running '{self._path.name}': {_first_line(exc)}") from exc
        # Copy: the outputs may live in the program's planned arena, which the next execute() overwrites. The program
        # returns them in the model's flattening order, the artifact's output order.
        return [np.array(t.to(self._torch.float32).numpy(), dtype=np.float32, copy=True) for t in outputs]

    def memory(self) -> tuple[float | None, str]:
        return (self._arena_bytes + self._file_bytes) / 1e6, MEMORY_METHOD

    def versions(self) -> dict[str, str]:
        return {"executorch": package_version("executorch") or "unknown", "torch": self._torch.__version__}

    def close(self) -> None:
        self._method = None
        self._program = None


def open_session(artifact: Artifact, threads: int) -> ExecuTorchSession:
    return ExecuTorchSession(artifact, threads)
