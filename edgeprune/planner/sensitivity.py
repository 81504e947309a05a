"""Per-bucket sensitivity analysis: the fast accuracy proxy of the planner's first fidelity tier.

Each bucket is pruned alone at a few keep ratios (BatchNorm recalibrated, no fine-tuning) and scored on an eval
subset; the proxy accuracy of a candidate is the dense accuracy minus the sum of its buckets' interpolated drops
(the additive model of NetAdapt / AMC-style analyses). It ranks candidates; it does not predict the accuracy after
fine-tuning, which the second tier measures.
"""

from __future__ import annotations

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


def analyse(
    space: SearchSpace,
    accuracy_of: Callable[[tuple[float, ...]], float],
    probe_keeps: tuple[float, ...] = PROBE_KEEPS,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Score the dense model and each bucket alone at each probe keep ratio with `accuracy_of(keep tuple)`."""
    import time

    start = time.perf_counter()
    n = len(space.buckets)
    dense = accuracy_of(tuple(1.0 for _ in range(n)))
    total = n * len(probe_keeps)
    table = []
    for b in range(n):
        row = []
        for keep in probe_keeps:
            keeps = tuple(keep if i == b else 1.0 for i in range(n))
            row.append(accuracy_of(keeps))
            if progress is not None:
                progress(b * len(probe_keeps) + len(row), total)
        table.append(tuple(row))
    return Sensitivity(dense, tuple(probe_keeps), tuple(table), time.perf_counter() - start)
