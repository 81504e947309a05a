"""Iterative pruning schedules: channels removed in steps with a brief fine-tune between them, towards the same
widths as one-shot; the planner tries the schedule on aggressive plans and `apply` replays whichever it chose."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.examples import digits
from edgeprune.prune import layer_widths, prune
from edgeprune.schedule import final_epochs, step_epochs
from edgeprune.types import Plan


def _sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model_and_calibration() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    calib = torch.rand(48, *digits.INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(1))
    return digits.build_model().eval(), calib


def test_iterative_pruning_reaches_the_one_shot_widths_in_equal_steps():
    model, calib = _model_and_calibration()
    example = calib[:1]
    one_shot, once = prune(model, example, calib, Plan(keep_ratio=0.4, round_to=1))
    seen: list[tuple[int, dict[str, int]]] = []
    stepped, summary = prune(model, example, calib, Plan(keep_ratio=0.4, round_to=1, prune_steps=3),
                             between_steps=lambda m, step: seen.append((step, layer_widths(m))))
    assert [step for step, _ in seen] == [1, 2]
    dense = layer_widths(model)
    for name, (before, after) in once.channels.items():  # each step removes a share of what one-shot removes
        assert before > seen[0][1][name] > seen[1][1][name] > after, name
        assert dense[name] == before
    assert summary.channels == once.channels and summary.prune_steps == 3 and once.prune_steps == 1
    assert layer_widths(stepped) == layer_widths(one_shot)


def test_an_iterative_schedule_trains_as_many_epochs_as_one_shot():
    for epochs, steps in ((10, 3), (3, 3), (6, 2), (5, 1)):
        assert step_epochs(epochs, steps) * (steps - 1) + final_epochs(epochs, steps) == epochs
    assert (step_epochs(10, 3), final_epochs(10, 3)) == (3, 4)
    assert final_epochs(2, 3) == 1  # fewer epochs than steps: one each, one more than one-shot
    assert final_epochs(0, 3) == step_epochs(0, 3) == 0


def test_prune_steps_below_one_is_a_config_error():
    model, calib = _model_and_calibration()
    with pytest.raises(ConfigError, match="prune steps 0 must be at least 1"):
        prune(model, calib[:1], calib, Plan(keep_ratio=0.5, prune_steps=0))


def test_plan_yaml_records_and_replays_the_schedule(tmp_path):
    from edgeprune.planner.recipe import make_recipe, read_plan_yaml, write_plan_yaml

    plan = Plan(keep_ratio=1.0, layer_keep_ratios={"features.0": 0.5}, prune_steps=3)
    recipe = make_recipe(model={}, device="host", plan=plan, channels={"features.0": (16, 8)}, recovery=None,
                         predicted=None, measured=None)
    write_plan_yaml(tmp_path / "plan.yaml", recipe)
    assert read_plan_yaml(tmp_path / "plan.yaml").plan.prune_steps == 3
    recipe["plan"]["prune_steps"] = 0
    write_plan_yaml(tmp_path / "bad.yaml", recipe)
    with pytest.raises(ConfigError, match="prune_steps"):
        read_plan_yaml(tmp_path / "bad.yaml")


def test_the_planner_keeps_the_better_schedule_and_apply_replays_an_iterative_plan(tmp_path):
    from edgeprune._progress import Steps
    from edgeprune._torch import torch_threads
    from edgeprune.data import dataset_from_arrays
    from edgeprune.evaluator import planner_for
    from edgeprune.pipeline import BuildRequest, _fixed_plan
    from edgeprune.planner import Candidate, PlanSettings
    from edgeprune.profiles import load_profile
    from edgeprune.types import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec("test:digits", "digits", digits.build_model().eval(), digits.INPUT_SHAPE, "none")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(120, *digits.INPUT_SHAPE[1:], generator=gen).numpy()
    data = dataset_from_arrays(x, torch.randint(0, 10, (120,), generator=gen).numpy(), digits.INPUT_SHAPE)
    settings = PlanSettings(schemes=("fp32",), importances=("l2",), threads=1, finetune_epochs=2, seed=3,
                            iterative_steps=3)
    with torch_threads(1), planner_for(spec, data, settings) as planner:
        space = planner.space(("executorch",), ("fp32",), load_profile("host"))
        cand = Candidate(tuple(0.4 for _ in space.buckets), "fp32", "executorch", "l2")
        one_shot, _ = planner.final(space, cand)
        chosen, _ = planner.best_schedule(space, cand)
        again, _ = planner.best_schedule(space, cand)
        assert again is chosen and planner.final(space, cand)[0] is chosen  # tried once, then cached
        assert one_shot.summary.prune_steps == 1 and chosen.schedules["one-shot"] == one_shot.accuracy
        assert chosen.summary.macs_after < 0.5 * chosen.summary.macs_before
        assert set(chosen.schedules) == {"one-shot", "iterative-3"}
        assert chosen.accuracy == max(chosen.schedules.values())
        assert chosen.summary.prune_steps == (3 if chosen.schedules["iterative-3"] > chosen.schedules["one-shot"]
                                              else 1)

        plan = dataclasses.replace(space.to_plan(cand), prune_steps=3)
        stepped = planner.evaluator.tune(plan, 2)
        request = BuildRequest(model="test:digits", out=tmp_path, layer_keep_ratios=plan.layer_keep_ratios,
                               importance=plan.importance, round_to=plan.round_to, finetune_epochs=2, seed=3,
                               prune_steps=3)
        applied, applied_plan, summary, recovery = _fixed_plan(request, spec, data, Steps(enabled=False),
                                                               ("executorch",))
    assert applied_plan.prune_steps == 3 and summary.prune_steps == 3
    assert recovery is not None and recovery.between_steps == 2 and recovery.step_epochs == 1
    assert recovery.config.epochs == final_epochs(2, 3) == 1
    assert "iterative pruning schedule" in recovery.to_dict()["method"]
    assert summary.channels == stepped.summary.channels
    assert _sha256(applied) == _sha256(stepped.model)


def test_a_plan_keeping_most_macs_is_only_fine_tuned_one_shot():
    from edgeprune._torch import torch_threads
    from edgeprune.data import dataset_from_arrays
    from edgeprune.evaluator import planner_for
    from edgeprune.planner import Candidate, PlanSettings
    from edgeprune.profiles import load_profile
    from edgeprune.types import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec("test:digits", "digits", digits.build_model().eval(), digits.INPUT_SHAPE, "none")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(80, *digits.INPUT_SHAPE[1:], generator=gen).numpy()
    data = dataset_from_arrays(x, torch.randint(0, 10, (80,), generator=gen).numpy(), digits.INPUT_SHAPE)
    settings = PlanSettings(schemes=("fp32",), importances=("l2",), threads=1, finetune_epochs=1, seed=3)
    with torch_threads(1), planner_for(spec, data, settings) as planner:
        space = planner.space(("executorch",), ("fp32",), load_profile("host"))
        chosen, _ = planner.best_schedule(space, Candidate(tuple(0.9 for _ in space.buckets), "fp32", "executorch",
                                                           "l2"))
    assert chosen.schedules is None and chosen.summary.prune_steps == 1

