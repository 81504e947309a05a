"""The runner contract: measure an artifact on some machine and return a `Measurement`."""

from __future__ import annotations

import abc

from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.types import Artifact, Measurement


class Runner(abc.ABC):
    """Runs artifacts on one machine (this host, a phone over adb, a board over ssh)."""

    where: str

    @abc.abstractmethod
    def measure(
        self,
        artifact: Artifact,
        inputs: np.ndarray,
        *,
        warmup: int = 10,
        runs: int = 50,
        threads: int = 1,
    ) -> Measurement:
        """Run every row of `inputs` (shape (N, *input_shape[1:]), float32) through the artifact one at a
        time, collecting float32 outputs; then time `runs` inferences of the first row after `warmup`
        untimed ones at `threads` threads.
        """


def latency_stats_ms(samples_ms: list[float]) -> tuple[float, float, float]:
    """(p50, p90, mean) of latency samples in milliseconds."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 90)), float(arr.mean())


def check_request(artifact: Artifact, inputs: np.ndarray, warmup: int, runs: int, threads: int) -> None:
    """The checks every runner makes before touching a device: counts, input shape, artifact file."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise ConfigError(f"runs={runs}, warmup={warmup}, threads={threads}: need runs >= 1, warmup >= 0, threads >= 1")
    expected = tuple(artifact.inputs[0].shape[1:])
    if inputs.ndim < 1 or len(inputs) == 0 or tuple(inputs.shape[1:]) != expected:
        raise ConfigError(
            f"inputs of shape {tuple(inputs.shape)} do not match the artifact's input (N, {', '.join(map(str, expected))})"
        )
    if not Path(artifact.path).is_file():
        raise ConfigError(f"artifact '{artifact.path}' does not exist; export it again before measuring")
