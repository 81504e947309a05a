""""No plan meets the budget" only when shown: a real (small, unstubbed) model planned on this host, whose budget
lies below the smallest plan of its search space, gets the verdict after that plan was measured; a budget just above
the smallest measured size gets a plan."""

from __future__ import annotations

import re

import pytest

from edgeprune.planner.settings import PlanSettings
from edgeprune.errors import BudgetInfeasibleError
from edgeprune.pipeline import BuildRequest, build

SETTINGS = PlanSettings(schemes=("fp32",), importances=("l2",), threads=1, finetune_epochs=1, rank_epochs=1, top_k=1,
                        max_rounds=1)  # one round: the proof follows at once


def _plan(model: str, out, **budgets):
    return build(BuildRequest(model=model, out=out, devices=("host",), targets=("executorch",),
                              budget_overrides=budgets, plan_settings=SETTINGS, plan_only=True, runs=20, warmup=5))


@pytest.mark.slow
def test_a_budget_below_the_smallest_plan_is_proven_infeasible_and_one_just_above_gets_a_plan(tmp_path, user_models):
    model = f"{user_models}:tiny"
    with pytest.raises(BudgetInfeasibleError) as exc:
        _plan(model, tmp_path / "a", model_size_mb=0.0001, latency_ms=0.0001)
    err = exc.value
    msg = str(err)
    assert "\n" not in msg and err.exit_code == 3
    # the most aggressive plan of the space (the smallest uniform keep ratio) was measured before the verdict
    floor = [r for r in err.rounds if r["action"].startswith("the most aggressive plan")]
    assert floor and "keep 0.25 " in floor[0]["candidate"] and floor[0]["measured"]["latency_ms"] > 0.0001
    assert all(r["measured"] for r in err.rounds)  # every round behind the verdict was measured on the host
    assert err.proven is True and "proven by measurement on host" in msg
    # the message names the fastest measured plan with its latency, the tightest budget and what would widen the space
    assert re.search(r"fastest measured plan executorch/fp32 keep [0-9./]+ l2, 1 thread: p50 latency [0-9.e-]+ ms "
                     r"\(95% interval [0-9.e-]+\.\.[0-9.e-]+ ms\) > 0.0001 ms budget", msg), msg
    assert "the tightest p50 latency budget this space meets is about" in msg
    assert "keep floor below 0.25" in msg and "another scheme" in msg and "another target" in msg
    tightest_mb = float(re.search(r"tightest size budget this space meets is about ([0-9.e-]+) MB", msg).group(1))
    smallest = min(r["measured"]["model_size_mb"] for r in err.rounds)
    assert tightest_mb == pytest.approx(smallest, rel=1e-3)

    budget = tightest_mb * 1.02
    result = _plan(model, tmp_path / "b", model_size_mb=budget)
    planning = result.summary["devices"][0]["planning"]
    final = [r for r in planning["rounds"] if r["met"]]
    assert final and final[-1]["measured"]["model_size_mb"] <= budget
    assert (tmp_path / "b" / "host" / "plan.yaml").is_file()
