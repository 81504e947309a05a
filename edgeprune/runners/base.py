"""The runner contract: measure an artifact on some machine and return a `Measurement`."""

from __future__ import annotations

import abc

import numpy as np

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
