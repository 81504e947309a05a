"""Planner: budget-driven planning end to end: the candidate space, the accuracy proxy from a sensitivity analysis,
the search strategies, the closed loop with the device's measurements, the infeasibility verdicts, the fleet's
shared work and the journal that `--resume` reads; `recipe` reads and writes plan.yaml.

The planner never prunes, trains, exports or measures by itself: it is handed an evaluator and a measurer
(`collaborators`); `edgeprune.evaluator.planner_for` wires the evaluator to prune and recover, the pipeline hands in
the measurer (export + runner). So it stays a sibling of those stages.
"""

from edgeprune.planner.pareto import pareto_front
from edgeprune.planner.planner import Planner
from edgeprune.planner.results import DevicePlan, Tuned
from edgeprune.planner.settings import PlanSettings
from edgeprune.planner.space import Bucket, Candidate, SearchSpace, make_buckets

__all__ = ["Bucket", "Candidate", "DevicePlan", "PlanSettings", "Planner", "SearchSpace", "Tuned", "make_buckets",
           "pareto_front"]
