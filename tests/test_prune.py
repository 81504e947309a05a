"""Structured pruning: a genuinely smaller module, widths rounded, classifier kept, BN recalibrated."""

from __future__ import annotations

import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.examples import digits
from edgeprune.prune import prune
from edgeprune.types import Plan

EXAMPLE = torch.zeros(digits.INPUT_SHAPE)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return digits.build_model().eval()


@pytest.fixture(scope="module")
def calib():
    return torch.rand(64, *digits.INPUT_SHAPE[1:])


def widths(module):
    return {n: m.out_channels for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_global_ratio_really_shrinks_the_module(model, calib):
    pruned, summary = prune(model, EXAMPLE, calib, Plan(keep_ratio=0.5))
    assert summary.params_after < 0.5 * summary.params_before
    assert summary.macs_after < 0.5 * summary.macs_before
    assert sum(p.numel() for p in pruned.parameters()) == summary.params_after
    assert pruned(EXAMPLE).shape == (1, 10), "the classifier's outputs are kept"
    assert all(w % 8 == 0 for w in widths(pruned).values())
    assert summary.bn_recalibrated_batches >= 2
    assert widths(model) != widths(pruned), "the input model must not be modified in place"
    before, after = zip(*summary.channels.values())
    assert all(a < b for a, b in zip(after, before))


def test_round_to_is_configurable(model, calib):
    pruned, _ = prune(model, EXAMPLE, calib, Plan(keep_ratio=0.6, round_to=16))
    assert all(w % 16 == 0 for w in widths(pruned).values())


def test_per_layer_ratio_touches_only_its_group(model, calib):
    name = "head.0"
    assert name in dict(model.named_modules()), sorted(dict(model.named_modules()))[:20]
    pruned, summary = prune(model, EXAMPLE, calib, Plan(layer_keep_ratios={name: 0.5}))
    assert widths(pruned)[name] == widths(model)[name] // 2
    assert set(summary.channels) == {name}


def test_keep_ratio_one_is_a_no_op(model, calib):
    pruned, summary = prune(model, EXAMPLE, calib, Plan(keep_ratio=1.0))
    assert summary.params_after == summary.params_before and not summary.channels
    torch.testing.assert_close(pruned(EXAMPLE), model(EXAMPLE))


@pytest.mark.parametrize(
    ("plan", "needle"),
    [
        (Plan(keep_ratio=0.0), "keep ratio"),
        (Plan(importance="magic"), "importance 'magic'"),
        (Plan(layer_keep_ratios={"no.such.layer": 0.5}), "no.such.layer"),
        (Plan(round_to=0), "round_to"),
    ],
)
def test_bad_plans_are_config_errors(model, calib, plan, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        prune(model, EXAMPLE, calib, plan)


def _state_sha256(module: torch.nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("labelled", [False, True])
def test_apply_recovers_the_planners_weights(tmp_path, labelled):
    """One owner of prune + recovery: a plan replayed by `apply` (the pipeline's fixed plan) gives the weights the
    planner fine-tuned for it, with labelled data and without (there both distil on what `recover` picks)."""
    from edgeprune._progress import Steps
    from edgeprune._torch import torch_threads
    from edgeprune.evaluator import planner_for
    from edgeprune.planner import PlanSettings
    from edgeprune.data import dataset_from_arrays, load_data
    from edgeprune.pipeline import BuildRequest, _fixed_plan
    from edgeprune.planner import Candidate
    from edgeprune.profiles import load_profile
    from edgeprune.types import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec("test:digits", "digits", digits.build_model().eval(), digits.INPUT_SHAPE, "none")
    if labelled:
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(120, *digits.INPUT_SHAPE[1:], generator=gen).numpy()
        data = dataset_from_arrays(x, torch.randint(0, 10, (120,), generator=gen).numpy(), digits.INPUT_SHAPE)
    else:
        data = load_data(None, digits.INPUT_SHAPE)  # generated inputs: no labels, no train split
    settings = PlanSettings(schemes=("fp32",), importances=("fpgm",), threads=1, finetune_epochs=2, seed=3)
    with torch_threads(1), planner_for(spec, data, settings) as planner:
        space = planner.space(("executorch",), ("fp32",), load_profile("host"))
        keep = tuple(0.5 if i % 2 else 0.75 for i in range(len(space.buckets)))
        planned = planner.tuned(space, (keep, "fpgm"))
        plan = space.to_plan(Candidate(keep, "fp32", "executorch", "fpgm"))
        request = BuildRequest(model="test:digits", out=tmp_path, layer_keep_ratios=plan.layer_keep_ratios,
                               importance=plan.importance, round_to=plan.round_to, finetune_epochs=2, seed=3)
        applied, _, summary, recovery = _fixed_plan(request, spec, data, Steps(enabled=False), ("executorch",))
    assert recovery is not None and planned.recovery is not None
    assert recovery.data == planned.recovery.data
    assert ("labels" in recovery.data) is labelled
    assert recovery.kept_epoch == planned.recovery.kept_epoch and recovery.val_scores == planned.recovery.val_scores
    assert summary.channels == planned.summary.channels
    assert _state_sha256(applied) == _state_sha256(planned.model)
