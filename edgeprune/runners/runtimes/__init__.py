"""In-process runtime sessions used by the host runner, one module per artifact target.

Each module exposes `open_session(artifact, threads) -> RuntimeSession` and imports its runtime lazily.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from edgeprune.types import Artifact


class RuntimeSession(Protocol):
    runner: str
    """e.g. 'executorch.runtime', 'ai_edge_litert.Interpreter', 'onnxruntime.InferenceSession'."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference on a batch-1 float32 input; its first float32 output (dequantised where the I/O is int8)."""

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """One inference; every output as float32, in the artifact's output order (`Artifact.outputs`)."""

    def memory(self) -> tuple[float | None, str]:
        """(peak memory in MB, how it was obtained) for this loaded artifact."""

    def versions(self) -> dict[str, str]:
        """Runtime package versions."""

    def close(self) -> None: ...


def open_session(artifact: Artifact, threads: int) -> RuntimeSession:
    module = importlib.import_module(f"{__name__}.{artifact.target}")
    return module.open_session(artifact, threads)
