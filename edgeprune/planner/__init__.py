"""Planner: the candidate space, the accuracy proxy from a sensitivity analysis, the search strategies and the
Pareto front; `recipe` reads and writes plan.yaml.

The planner never prunes, exports or measures by itself: it is handed the channel groups and callables that
score a candidate (`edgeprune.autoplan` wires those to prune, recover, export and the runners), so it stays a
sibling of those stages.
"""

from edgeprune.planner.pareto import pareto_front
from edgeprune.planner.space import Bucket, Candidate, SearchSpace, make_buckets

__all__ = ["Bucket", "Candidate", "SearchSpace", "make_buckets", "pareto_front"]
