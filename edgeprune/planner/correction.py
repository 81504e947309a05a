"""What the device measured, mapped back onto the cost model's predictions: one correction per (target, scheme,
threads), learnt from the plans measured so far."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Correction:
    """Maps the cost model's prediction to what the device measured, per (target, scheme, threads), from the plans
    measured so far: linear between measured points, proportional to the nearest one outside them. Below the smallest
    measured plan, the line through the two smallest is used where it lies higher: a fixed per-inference cost (operator
    dispatch, thread wake-ups) that the prediction misses does not shrink with the model. The points are first made
    monotonic (pool-adjacent-violators): a smaller prediction never maps to a larger latency, so one noisy measurement
    (a pruned plan timed slower than the dense one) cannot make every pruned plan look slower."""

    def __init__(self) -> None:
        self.points: dict[tuple[Any, ...], list[tuple[float, float]]] = {}

    def add(self, key: tuple[Any, ...], metric: str, predicted: float, measured: float) -> None:
        if predicted > 0 and measured > 0 and math.isfinite(measured):
            self.points.setdefault((*key, metric), []).append((predicted, measured))

    def apply(self, key: tuple[Any, ...], metric: str, predicted: float) -> float:
        pts = _monotonic(sorted(self.points.get((*key, metric), [])))
        if not pts:
            return predicted
        if predicted <= pts[0][0]:
            proportional = predicted * pts[0][1] / pts[0][0]
            if len(pts) < 2 or pts[1][0] <= pts[0][0]:  # one point, or one plan measured twice: no line
                return proportional
            (x0, y0), (x1, y1) = pts[0], pts[1]
            return max(proportional, y0 - (x0 - predicted) * (y1 - y0) / (x1 - x0))
        if predicted >= pts[-1][0]:
            return predicted * pts[-1][1] / pts[-1][0]
        xs, ys = zip(*pts)
        return float(np.interp(predicted, xs, ys))

    def measured(self) -> bool:
        return bool(self.points)


def _monotonic(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pool adjacent violators: merge neighbouring points (averaging both coordinates) until the measured values
    rise with the predicted ones."""
    blocks: list[list[float]] = []  # [sum predicted, sum measured, count]
    for x, y in points:
        blocks.append([x, y, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    return [(sx / n, sy / n) for sx, sy, n in blocks]
