"""The runner contract: measure an artifact on some machine and return a `Measurement`."""

from __future__ import annotations

import abc
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.stats import timing_summary
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
        energy: bool = True,
    ) -> Measurement:
        """Run every row of `inputs` (shape (N, *input_shape[1:]), float32) through the artifact one at a
        time, collecting float32 outputs; then time `runs` inferences of the first row after `warmup`
        untimed ones at `threads` threads. `energy=False` skips any energy measurement (a repeated timing block).
        """


BLOCK_PAUSE_S = 0.2
"""Pause between measurement blocks, so that the blocks sample different moments of a shared machine."""


def measure_in_blocks(runner: Runner, artifact: Artifact, inputs: np.ndarray, *, warmup: int, runs: int, threads: int,
                      blocks: int, pause_s: float = BLOCK_PAUSE_S) -> Measurement:
    """`blocks` measurements of `runs` timed runs each, `pause_s` apart; the first also runs every row of
    `inputs` for the outputs. Latency p50 and p90 are the medians of the blocks' own, so a slow window of a shared
    machine (a few milliseconds can hold a whole block of a small model) moves one block, not the verdict. Each
    block's p50 and p90 are kept in `extra["block_p50_ms"]` and `extra["block_p90_ms"]`, every run's latency (where
    the runner returns them) in `samples_ms`, and `timing` says what they show with their spread: bootstrap 95%
    intervals of p50 and p90 and the modes of the timings (`stats.timing_summary`)."""
    if blocks < 1:
        raise ConfigError(f"--blocks {blocks}: need at least 1 measurement block")
    found = [runner.measure(artifact, inputs, warmup=warmup, runs=runs, threads=threads)]
    for _ in range(blocks - 1):
        time.sleep(pause_s)
        found.append(runner.measure(artifact, inputs[:1], warmup=warmup, runs=runs, threads=threads, energy=False))
    first = found[0]
    samples = [list(m.samples_ms) for m in found]
    block_p50 = [m.latency_p50_ms for m in found]
    block_p90 = [m.latency_p90_ms for m in found]
    timing = timing_summary(samples if all(samples) else None, block_p50, block_p90)
    if blocks == 1:
        return replace(first, timing=timing)
    peaks = [m.peak_memory_mb for m in found if m.peak_memory_mb is not None]
    return replace(
        first,
        latency_p50_ms=float(np.median(block_p50)),
        latency_p90_ms=float(np.median(block_p90)),
        latency_mean_ms=float(np.mean([m.latency_mean_ms for m in found])),
        runs=runs * blocks,
        peak_memory_mb=max(peaks) if peaks else None,
        extra=first.extra | {"block_p50_ms": [round(v, 5) for v in block_p50],
                             "block_p90_ms": [round(v, 5) for v in block_p90]},
        samples_ms=tuple(s for block in samples for s in block),
        timing=timing,
    )


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
