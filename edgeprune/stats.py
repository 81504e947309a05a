"""The statistics verdicts rest on: binomial intervals for accuracies on a finite test split, bootstrap intervals for
latency percentiles measured in blocks and for any metric of independent items, and a detector of multi-modal
timings (a shared machine that switches between a fast and a slow state for seconds at a time).

Pure numpy; every function is deterministic for its inputs (the bootstrap draws from a fixed seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal."""
BOOTSTRAP_RESAMPLES = 2000
MODE_MIN_SHARE = 0.1
"""A mode must hold at least this share of the samples; a smaller cluster is a tail, not a state of the machine."""
MODE_MAX_DIP = 0.7
"""Two density peaks are separate modes only where the density between them falls below this share of the lower
peak; a shallower dip is a bump on one mode."""
MODE_MIN_RATIO = 1.1
"""Modes whose centres are less than 10% apart are reported as one: a smaller split does not move a budget verdict
beyond the planner's margins."""


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion `successes / n` (95% by default). Unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0% and 100% accuracy."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(first: np.ndarray, second: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """(difference, low, high) of the accuracy difference p1 - p2 of two classifiers scored on the same samples
    (`first`, `second`: one bool per sample, True when correct), by Newcombe's (1998) method 10: the Wilson intervals
    of both accuracies combined with the (continuity-corrected) correlation of their per-sample outcomes, as worked
    in Altman et al., Statistics with Confidence (2000), ch. 6. Two models that agree on most
    samples get a much narrower interval than two independent samples would."""
    a1 = np.asarray(first, dtype=bool)
    a2 = np.asarray(second, dtype=bool)
    if a1.shape != a2.shape or a1.ndim != 1 or len(a1) == 0:
        raise ValueError(f"need two equal, non-empty 1-D outcome vectors, got shapes {a1.shape} and {a2.shape}")
    n = len(a1)
    both = int(np.sum(a1 & a2))
    only1 = int(np.sum(a1 & ~a2))
    only2 = int(np.sum(~a1 & a2))
    neither = n - both - only1 - only2
    p1, p2 = (both + only1) / n, (both + only2) / n
    l1, u1 = wilson_interval(both + only1, n, z)
    l2, u2 = wilson_interval(both + only2, n, z)
    denom = (both + only1) * (only2 + neither) * (both + only2) * (only1 + neither)
    cross = both * neither - only1 * only2
    # Newcombe's continuity correction of the correlation: a positive one is shrunk by n / 2, never below zero
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(denom) if denom > 0 else 0.0
    low = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    high = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    diff = p1 - p2
    return diff, diff - math.sqrt(max(0.0, low)), diff + math.sqrt(max(0.0, high))


def class_drops(labels: np.ndarray, reference_ok: np.ndarray,
                other_ok: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """Each class's top-1 drop from a reference model to another, in points, with its paired 95% interval (Newcombe's,
    over that class's samples): class -> (drop, low, high), from whether each sample was right (aligned with
    `labels`)."""
    out = {}
    for c in np.unique(labels):
        mask = labels == c
        drop, low, high = paired_difference_interval(reference_ok[mask], other_ok[mask])
        out[int(c)] = (100.0 * drop, 100.0 * low, 100.0 * high)
    return out


def straddles(interval: Sequence[float] | None, limit: float) -> bool:
    """Whether a 95% interval reaches both sides of `limit`: the verdict against it is within noise."""
    return interval is not None and interval[0] <= limit < interval[1]


def block_percentile(blocks: Sequence[Sequence[float]], q: float) -> float:
    """The median over blocks of each block's `q`-th percentile: a slow window that holds one block moves one
    block's figure, not the result."""
    return float(np.median([np.percentile(np.asarray(b, dtype=np.float64), q) for b in blocks]))


def bootstrap_block_percentile(blocks: Sequence[Sequence[float]], q: float, *, resamples: int = BOOTSTRAP_RESAMPLES,
                               seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of `block_percentile(blocks, q)`, resampling in two stages: the blocks
    with replacement (the samples of one block share a moment of the machine, so they are not independent), then
    the runs within each drawn block. With one value per block only the first stage varies."""
    if not blocks or any(len(b) == 0 for b in blocks):
        raise ValueError("need at least one block, each with at least one sample")
    rng = np.random.default_rng(seed)
    n_blocks = len(blocks)
    # per block, `resamples` within-block resamples of its percentile
    within = np.empty((n_blocks, resamples))
    for i, block in enumerate(blocks):
        arr = np.asarray(block, dtype=np.float64)
        if len(arr) == 1:
            within[i] = arr[0]
        else:
            draws = arr[rng.integers(0, len(arr), size=(resamples, len(arr)))]
            within[i] = np.percentile(draws, q, axis=1)
    picked = rng.integers(0, n_blocks, size=(resamples, n_blocks))
    column = rng.integers(0, resamples, size=(resamples, n_blocks))
    stats = np.median(within[picked, column], axis=1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_interval(n: int, statistic: Callable[[np.ndarray], float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a statistic of `n` independent items (samples, images or batches):
    `statistic(idx)` computes it on the items `idx`, an index array drawn with replacement. Resamples whose
    statistic is undefined (NaN: say, no ground truth drawn) are left out; ValueError when all are."""
    if n <= 0 or resamples <= 0:
        raise ValueError(f"need n > 0 items and resamples > 0, got {n} and {resamples}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError("the statistic is undefined on every resample")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def detect_modes(samples_ms: Sequence[float], *, min_share: float = MODE_MIN_SHARE, max_dip: float = MODE_MAX_DIP,
                 min_ratio: float = MODE_MIN_RATIO) -> list[dict[str, float]]:
    """The modes of a timing series, slowest last: [{'center_ms', 'share'}], one entry when it is unimodal.

    A Gaussian kernel density of log latency (timings are multiplicative: a slow state is a factor, not an offset)
    with Silverman's bandwidth, which over-smooths a multi-modal sample and so errs towards reporting one mode. Its
    peaks are modes when the density dips between them below `max_dip` of the lower peak, each holds at least
    `min_share` of the samples and their centres (the median of the samples in each) are `min_ratio` apart."""
    x = np.log(np.asarray([s for s in samples_ms if s > 0], dtype=np.float64))
    if len(x) == 0:
        return []
    whole = [{"center_ms": round(float(np.exp(np.median(x))), 6), "share": 1.0}]
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    spread = min(sd, iqr / 1.349) if iqr > 0 else sd
    if len(x) < 4 or spread <= 0:
        return whole
    h = 0.9 * spread * len(x) ** -0.2
    grid = np.linspace(x.min() - 3 * h, x.max() + 3 * h, 512)
    density = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / h) ** 2).sum(axis=1)
    inner = density[1:-1]
    peaks = list(np.flatnonzero((inner > density[:-2]) & (inner >= density[2:])) + 1)
    # modes as [peak index, left edge index, right edge index]; edges at the density's minima between peaks
    modes = []
    for i, p in enumerate(peaks):
        left = 0 if i == 0 else modes[-1][2]
        right = len(grid) - 1 if i == len(peaks) - 1 else p + int(np.argmin(density[p : peaks[i + 1] + 1]))
        modes.append([p, left, right])

    def share(m: list[int]) -> float:
        lo = -np.inf if m[1] == 0 else grid[m[1]]
        hi = np.inf if m[2] == len(grid) - 1 else grid[m[2]]
        return float(np.mean((x > lo) & (x <= hi)))

    def centre(m: list[int]) -> float:
        lo = -np.inf if m[1] == 0 else grid[m[1]]
        hi = np.inf if m[2] == len(grid) - 1 else grid[m[2]]
        inside = x[(x > lo) & (x <= hi)]
        return float(np.exp(np.median(inside))) if len(inside) else float(np.exp(grid[m[0]]))

    def weakest_join() -> int | None:
        """Index i of the pair (i, i + 1) that is least separate, or None when every pair is a real split."""
        worst, where = None, None
        for i in range(len(modes) - 1):
            a, b = modes[i], modes[i + 1]
            dip = density[a[2]] / min(density[a[0]], density[b[0]])
            ratio = centre(b) / centre(a)
            small = min(share(a), share(b)) < min_share
            if dip > max_dip or ratio < min_ratio or small:
                score = dip + (1.0 if small else 0.0)
                if worst is None or score > worst:
                    worst, where = score, i
        return where

    while len(modes) > 1 and (i := weakest_join()) is not None:
        a, b = modes[i], modes[i + 1]
        modes[i : i + 2] = [[a[0] if density[a[0]] >= density[b[0]] else b[0], a[1], b[2]]]
    if len(modes) == 1:
        return whole
    return [{"center_ms": round(centre(m), 6), "share": round(share(m), 4)} for m in modes]


def timing_summary(blocks: Sequence[Sequence[float]] | None, block_p50_ms: Sequence[float],
                   block_p90_ms: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """What a measurement in blocks says about its latency, with its spread: p50 and p90 (medians of the blocks')
    with 95% bootstrap intervals, and the modes of the timings. `blocks` holds each block's per-run samples where the
    runner returned them (the basis is then every run); otherwise the blocks' own p50/p90 are all there is."""
    per_run = bool(blocks) and all(len(b) > 0 for b in blocks)
    if per_run:
        p50_blocks, p90_blocks, pooled = blocks, blocks, [s for b in blocks for s in b]
    else:
        p50_blocks, p90_blocks = [[v] for v in block_p50_ms], [[v] for v in block_p90_ms]
        pooled = list(block_p50_ms)
    p50, p90 = block_percentile(p50_blocks, 50), block_percentile(p90_blocks, 90)
    modes = detect_modes(pooled)
    return {
        "basis": "per-run samples" if per_run else "block p50/p90 (the runner returned no per-run samples)",
        "blocks": len(block_p50_ms),
        "runs_per_block": len(blocks[0]) if per_run else None,
        "p50_ms": round(p50, 6),
        "p50_ci95_ms": [round(v, 6) for v in bootstrap_block_percentile(p50_blocks, 50, seed=seed)],
        "p90_ms": round(p90, 6),
        "p90_ci95_ms": [round(v, 6) for v in bootstrap_block_percentile(p90_blocks, 90, seed=seed)],
        "multimodal": len(modes) > 1,
        "modes": modes,
        "method": ("two-stage bootstrap (blocks, then runs within blocks)" if per_run else "bootstrap of the blocks")
                  + f", {BOOTSTRAP_RESAMPLES} resamples; modes: kernel density of log latency, Silverman bandwidth",
    }
