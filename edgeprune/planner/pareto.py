"""Non-dominated points: higher accuracy and lower latency both better."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def pareto_front(points: Sequence[T], accuracy: Callable[[T], float], latency_ms: Callable[[T], float]) -> list[T]:
    """The points no other point beats on both accuracy and latency, sorted by latency."""
    ordered = sorted(points, key=lambda p: (latency_ms(p), -accuracy(p)))
    front: list[T] = []
    best = float("-inf")
    for p in ordered:
        if accuracy(p) > best:
            front.append(p)
            best = accuracy(p)
    return front
