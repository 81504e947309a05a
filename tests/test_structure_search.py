"""The planner searches a transformer encoder by its structure: the share of attention heads, of MLP neurons and of
blocks kept, jointly with the quantisation scheme, and the chosen plan really has fewer heads, neurons and blocks."""

from __future__ import annotations

import torch

from edgeprune.data import dataset_from_arrays
from edgeprune.evaluator import CandidateEvaluator
from edgeprune.planner import Candidate, Planner, PlanSettings
from edgeprune.planner.space import SearchSpace, structure_buckets
from edgeprune.profiles import load_profile
from edgeprune.structure import _kept_count, describe
from edgeprune.types import ModelSpec

SHAPE = (1, 3, 32, 32)


def _vit() -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, num_classes=4, embed_dim=32, depth=4, num_heads=4,
                             mlp_ratio=2.0).eval()


def test_an_encoders_buckets_map_keep_ratios_onto_heads_neurons_and_blocks():
    buckets = structure_buckets(describe(_vit()))
    assert [(b.kind, b.units) for b in buckets] == [("heads", 4), ("mlp", 64), ("blocks", 4)]
    space = SearchSpace(buckets, ("fp32",), ("executorch",))
    plan = space.to_plan(Candidate((0.5, 0.75, 0.5), "fp32", "executorch"))
    assert (plan.head_keep_ratio, plan.mlp_keep_ratio, plan.keep_blocks) == (0.5, 0.75, 2)
    assert plan.layer_keep_ratios == {} and plan.prunes
    dense = space.to_plan(space.dense("fp32", "executorch"))
    assert not dense.restructures and not dense.prunes
    assert structure_buckets(describe(torch.nn.Sequential(torch.nn.Linear(4, 4)))) == ()


def test_the_planner_meets_a_latency_budget_by_removing_heads_neurons_or_blocks():
    model = _vit()
    spec = ModelSpec("test:vit", "vit", model, SHAPE, "none")
    gen = torch.Generator().manual_seed(1)
    data = dataset_from_arrays(torch.rand(160, *SHAPE[1:], generator=gen).numpy(),
                               torch.randint(0, 4, (160,), generator=gen).numpy(), SHAPE)
    settings = PlanSettings(schemes=("fp32", "int8"), importances=("l2",), threads=1, rank_epochs=1,
                            finetune_epochs=1, executor="serial", sensitivity_samples=32)
    planner = Planner(CandidateEvaluator(spec, data, settings), settings)
    assert [b.kind for b in planner.buckets] == ["heads", "mlp", "blocks"]
    phone = load_profile("pixel-8")
    space = planner.space(("executorch",), settings.schemes, phone)
    dense_ms = planner.predicted(phone, space, space.dense("fp32", "executorch", threads=1)).latency_p50_ms
    budget = phone.with_budget(latency_ms=0.55 * dense_ms, max_accuracy_drop_pct=100.0)  # structure, not accuracy
    chosen = planner.plan_device(budget, ("executorch",), None, "host")  # predicted: host is not the phone

    plan = chosen.plan
    assert plan.restructures and plan.layer_keep_ratios == {}
    assert chosen.costs.latency_ms <= 0.55 * dense_ms
    after = describe(chosen.tuned.model)
    assert set(after["heads"].values()) == {_kept_count(plan.head_keep_ratio, 4, "head")}
    assert set(after["mlp"].values()) == {_kept_count(plan.mlp_keep_ratio, 64, "MLP", round_to=plan.round_to)}
    assert sum(after["blocks"].values()) == (plan.keep_blocks or 4)
    assert chosen.tuned.summary.structure  # the manifest's pruning.structure says what went
    assert chosen.tuned.summary.params_after < chosen.tuned.summary.params_before


def test_an_encoder_is_searched_once_per_distinct_structure_criterion():
    """fpgm ranks heads and neurons by weight norm as l2 does, wanda by activation as taylor does: on an encoder the
    planner keeps the first of each, so no sensitivity analysis or candidate is computed twice; a CNN keeps all."""
    gen = torch.Generator().manual_seed(1)
    data = dataset_from_arrays(torch.rand(40, *SHAPE[1:], generator=gen).numpy(),
                               torch.randint(0, 4, (40,), generator=gen).numpy(), SHAPE)
    asked = ("fpgm", "l2", "wanda", "taylor")
    settings = PlanSettings(importances=asked, executor="serial", sensitivity_samples=8)
    vit = Planner(CandidateEvaluator(ModelSpec("test:vit", "vit", _vit(), SHAPE, "none"), data, settings), settings)
    assert vit.importances == ("fpgm", "wanda")
    assert vit.space(("executorch",), ("fp32",), load_profile("pixel-8")).importances == ("fpgm", "wanda")
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    conv = Planner(CandidateEvaluator(ModelSpec("test:cnn", "cnn", cnn, SHAPE, "none"), data, settings), settings)
    assert conv.importances == asked
