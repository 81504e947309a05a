"""The search space: channel groups bucketed into stages (or a transformer encoder's heads, MLP neurons and blocks),
a keep-ratio grid per bucket, the importance criterion, quantisation scheme, target and thread count.

A `Candidate` fixes one keep ratio per bucket plus the criterion, scheme, target and threads; `to_plan` turns it into
the `Plan` the pruning stage takes (a keep ratio for the root layer of every group in a bucket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from edgeprune.errors import ConfigError
from edgeprune.types import ChannelGroup, Plan

KEEP_GRID: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
"""Keep ratios a bucket may take, densest first. One step removes an eighth of the bucket's channels."""
MAX_BUCKETS = 6


STRUCTURE_KINDS = ("heads", "mlp", "blocks")


@dataclass(frozen=True)
class Bucket:
    """A stage: consecutive channel groups pruned with one keep ratio (`kind` 'channels'); or, for a transformer
    encoder, one of its structures (`edgeprune.structure`): 'heads' (the share of attention heads kept in every
    layer), 'mlp' (of MLP hidden neurons) or 'blocks' (of encoder blocks; `units` blocks per stack)."""

    name: str
    roots: tuple[str, ...]
    macs: int
    kind: str = "channels"
    units: int = 0


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


def structure_buckets(encoder: dict) -> tuple[Bucket, ...]:
    """A transformer encoder's search buckets from `structure.describe`'s summary: heads, MLP neurons and blocks,
    each where the model has them; () for a model with no encoder `edgeprune.structure` knows."""
    buckets = []
    if encoder.get("heads") and min(encoder["heads"].values()) > 1:
        buckets.append(Bucket("heads", tuple(sorted(encoder["heads"])), 0, "heads", min(encoder["heads"].values())))
    if encoder.get("mlp"):
        buckets.append(Bucket("mlp", tuple(sorted(encoder["mlp"])), 0, "mlp", min(encoder["mlp"].values())))
    if encoder.get("blocks") and min(encoder["blocks"].values()) > 1:
        buckets.append(Bucket("blocks", tuple(sorted(encoder["blocks"])), 0, "blocks", min(encoder["blocks"].values())))
    return tuple(buckets)


@dataclass(frozen=True)
class Candidate:
    """One point of the space: a keep ratio per bucket, the importance criterion that picks the channels kept, a
    scheme, a target and the thread count inference runs with."""

    keep: tuple[float, ...]
    scheme: str
    target: str
    importance: str = "l2"
    threads: int = 1

    @property
    def prune_key(self) -> tuple[tuple[float, ...], str]:
        """What decides the pruned model (and its fine-tuned weights): shared across schemes, targets and threads."""
        return self.keep, self.importance

    def label(self) -> str:
        return (f"{self.target}/{self.scheme} keep {'/'.join(f'{k:g}' for k in self.keep)} {self.importance}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}")


def thread_options(default_threads: int) -> tuple[int, ...]:
    """Thread counts worth searching up to the app's `default_threads`: powers of two and the default itself."""
    options = {default_threads}
    n = 1
    while n < default_threads:
        options.add(n)
        n *= 2
    return tuple(sorted(options))


@dataclass(frozen=True)
class SearchSpace:
    buckets: tuple[Bucket, ...]
    schemes: tuple[str, ...]
    targets: tuple[str, ...]
    importances: tuple[str, ...] = ("l2",)
    threads: tuple[int, ...] = (1,)
    keep_grid: tuple[float, ...] = KEEP_GRID
    round_to: int = 8
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.schemes or not self.targets or not self.importances or not self.threads:
            raise ConfigError("the plan search needs at least one quantisation scheme, target, importance criterion "
                              "and thread count")
        if min(self.threads) < 1:
            raise ConfigError(f"thread counts {self.threads} must be >= 1")
        if sorted(self.keep_grid, reverse=True) != list(self.keep_grid) or self.keep_grid[0] != 1.0:
            raise ConfigError(f"keep grid {self.keep_grid} must start at 1.0 and decrease")

    def starts(self) -> list[Candidate]:
        """The unpruned model at every (target, scheme, importance, threads): where each descent begins."""
        return [self.dense(s, t, i, n) for t in self.targets for s in self.schemes
                for i in self.importances for n in self.threads]

    def dense(self, scheme: str, target: str, importance: str | None = None, threads: int | None = None) -> Candidate:
        """The unpruned model (criterion: the first one; threads: the most, unless given)."""
        return Candidate(tuple(1.0 for _ in self.buckets), scheme, target, importance or self.importances[0],
                         threads or max(self.threads))

    def to_plan(self, candidate: Candidate) -> Plan:
        pairs = list(zip(self.buckets, candidate.keep))
        ratios = {root: keep for bucket, keep in pairs if keep < 1.0 and bucket.kind == "channels"
                  for root in bucket.roots}
        structure = {bucket.kind: (bucket, keep) for bucket, keep in pairs if bucket.kind in STRUCTURE_KINDS}
        blocks = structure.get("blocks")
        return Plan(
            target=candidate.target,
            scheme=candidate.scheme,
            keep_ratio=1.0,
            layer_keep_ratios=ratios,
            importance=candidate.importance,
            round_to=self.round_to,
            threads=candidate.threads,
            seed=self.seed,
            head_keep_ratio=structure["heads"][1] if "heads" in structure else 1.0,
            mlp_keep_ratio=structure["mlp"][1] if "mlp" in structure else 1.0,
            keep_blocks=(None if blocks is None or blocks[1] >= 1.0
                         else max(1, math.floor(blocks[1] * blocks[0].units + 0.5))),
        )

    def step_down(self, candidate: Candidate, bucket: int) -> Candidate | None:
        """`candidate` with bucket `bucket` one grid step sparser, or None at the end of the grid."""
        index = self.keep_grid.index(candidate.keep[bucket])
        if index + 1 >= len(self.keep_grid):
            return None
        keep = list(candidate.keep)
        keep[bucket] = self.keep_grid[index + 1]
        return replace(candidate, keep=tuple(keep))
