"""The search space: channel groups bucketed into stages, a keep-ratio grid per bucket, scheme and target.

A `Candidate` fixes one keep ratio per bucket plus the quantisation scheme and target; `to_plan` turns it into the
`Plan` the pruning stage takes (a keep ratio for the root layer of every group in a bucket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from edgeprune.errors import ConfigError
from edgeprune.types import ChannelGroup, Plan

KEEP_GRID: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
"""Keep ratios a bucket may take, densest first. One step removes an eighth of the bucket's channels."""
MAX_BUCKETS = 6


@dataclass(frozen=True)
class Bucket:
    """A stage: consecutive channel groups pruned with one keep ratio."""

    name: str
    roots: tuple[str, ...]
    macs: int


def make_buckets(groups: Sequence[ChannelGroup], max_buckets: int = MAX_BUCKETS) -> tuple[Bucket, ...]:
    """Split groups, in forward order, into at most `max_buckets` consecutive stages of roughly equal MACs, so the
    space stays small (7 ratios ^ 6 buckets) while early, middle and late layers can be pruned differently."""
    if not groups:
        return ()
    ordered = sorted(groups, key=lambda g: g.order)
    count = max(1, min(max_buckets, len(ordered)))
    total = sum(max(g.macs, 1) for g in ordered)
    buckets: list[list[ChannelGroup]] = [[]]
    done = 0
    for i, g in enumerate(ordered):
        remaining_groups = len(ordered) - i
        remaining_buckets = count - len(buckets)
        boundary = total * len(buckets) / count
        midpoint = done + max(g.macs, 1) / 2  # a group goes where most of its MACs fall
        if buckets[-1] and remaining_buckets > 0 and (midpoint >= boundary or remaining_groups <= remaining_buckets):
            buckets.append([])
        buckets[-1].append(g)
        done += max(g.macs, 1)
    return tuple(
        Bucket(f"stage{i + 1}", tuple(g.root for g in b), sum(g.macs for g in b)) for i, b in enumerate(buckets)
    )


@dataclass(frozen=True)
class Candidate:
    """One point of the space: a keep ratio per bucket, a scheme and a target."""

    keep: tuple[float, ...]
    scheme: str
    target: str

    @property
    def prune_key(self) -> tuple[float, ...]:
        """What decides the pruned architecture (and its fine-tuned weights): shared across schemes and targets."""
        return self.keep

    def label(self) -> str:
        return f"{self.target}/{self.scheme} keep {'/'.join(f'{k:g}' for k in self.keep)}"


@dataclass(frozen=True)
class SearchSpace:
    buckets: tuple[Bucket, ...]
    schemes: tuple[str, ...]
    targets: tuple[str, ...]
    keep_grid: tuple[float, ...] = KEEP_GRID
    importance: str = "l2"
    round_to: int = 8
    threads: int = 1
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.schemes or not self.targets:
            raise ConfigError("the plan search needs at least one quantisation scheme and one target")
        if sorted(self.keep_grid, reverse=True) != list(self.keep_grid) or self.keep_grid[0] != 1.0:
            raise ConfigError(f"keep grid {self.keep_grid} must start at 1.0 and decrease")

    def dense(self, scheme: str, target: str) -> Candidate:
        return Candidate(tuple(1.0 for _ in self.buckets), scheme, target)

    def to_plan(self, candidate: Candidate) -> Plan:
        ratios = {
            root: keep for bucket, keep in zip(self.buckets, candidate.keep) if keep < 1.0 for root in bucket.roots
        }
        return Plan(
            target=candidate.target,
            scheme=candidate.scheme,
            keep_ratio=1.0,
            layer_keep_ratios=ratios,
            importance=self.importance,
            round_to=self.round_to,
            threads=self.threads,
            seed=self.seed,
        )

    def step_down(self, candidate: Candidate, bucket: int) -> Candidate | None:
        """`candidate` with bucket `bucket` one grid step sparser, or None at the end of the grid."""
        index = self.keep_grid.index(candidate.keep[bucket])
        if index + 1 >= len(self.keep_grid):
            return None
        keep = list(candidate.keep)
        keep[bucket] = self.keep_grid[index + 1]
        return Candidate(tuple(keep), candidate.scheme, candidate.target)
