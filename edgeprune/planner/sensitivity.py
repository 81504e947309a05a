"""Per-bucket sensitivity analysis: the fast accuracy proxy of the planner's first fidelity tier.

Each bucket is pruned alone at a few keep ratios (BatchNorm recalibrated, no fine-tuning) and scored on an eval
subset; the proxy accuracy of a candidate is the dense accuracy minus the sum of its buckets' interpolated drops
(the additive model of NetAdapt / AMC-style analyses). It ranks candidates; it does not predict the accuracy after
fine-tuning, which the second tier measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeprune.planner.space import SearchSpace

PROBE_KEEPS: tuple[float, ...] = (0.75, 0.5, 0.25)


@dataclass(frozen=True)
class Sensitivity:
    """Accuracy after pruning one bucket alone, per bucket and probed keep ratio."""

    dense_accuracy: float
    probe_keeps: tuple[float, ...]
    accuracy: tuple[tuple[float, ...], ...]
    """accuracy[b][i]: accuracy with bucket b at probe_keeps[i] and every other bucket dense."""
    seconds: float = 0.0

    def drop(self, bucket: int, keep: float) -> float:
        """Accuracy points lost by pruning `bucket` alone to `keep` (linear between probes, 0 at keep 1.0)."""
        keeps = (1.0,) + self.probe_keeps
        drops = (0.0,) + tuple(max(0.0, self.dense_accuracy - a) for a in self.accuracy[bucket])
        order = np.argsort(keeps)
        return float(np.interp(keep, np.asarray(keeps)[order], np.asarray(drops)[order]))

    def proxy_accuracy(self, keep: tuple[float, ...]) -> float:
        return self.dense_accuracy - sum(self.drop(b, k) for b, k in enumerate(keep))

    def to_dict(self, space: SearchSpace) -> dict:
        return {
            "dense_accuracy": self.dense_accuracy,
            "probe_keeps": list(self.probe_keeps),
            "seconds": round(self.seconds, 2),
            "buckets": {
                b.name: {f"{k:g}": round(a, 4) for k, a in zip(self.probe_keeps, accs)}
                for b, accs in zip(space.buckets, self.accuracy)
            },
        }


def probes(buckets: int, probe_keeps: tuple[float, ...] = PROBE_KEEPS) -> list[tuple[float, ...]]:
    """The keep tuples an analysis scores: the dense model first, then each bucket alone at each probe ratio."""
    dense = tuple(1.0 for _ in range(buckets))
    return [dense] + [tuple(keep if i == b else 1.0 for i in range(buckets))
                      for b in range(buckets) for keep in probe_keeps]


def analyse(
    space: SearchSpace,
    score_all: Callable[[list[tuple[float, ...]]], list[float]],
    probe_keeps: tuple[float, ...] = PROBE_KEEPS,
) -> Sensitivity:
    """Score the dense model and each bucket alone at each probe keep ratio with `score_all(keep tuples)` (one call,
    so the caller may spread the evaluations over workers)."""
    start = time.perf_counter()
    n = len(space.buckets)
    scores = score_all(probes(n, probe_keeps))
    per = len(probe_keeps)
    table = tuple(tuple(scores[1 + b * per : 1 + (b + 1) * per]) for b in range(n))
    return Sensitivity(scores[0], tuple(probe_keeps), table, time.perf_counter() - start)
