"""Importance criteria: the data-aware ones (Wanda-style |W|·‖X‖, first-order Taylor) beside l2, through one interface.

Each crafted layer below has one channel that a data-aware criterion must rank differently from l2; the rest checks
that the new criteria prune real models end to end, deterministically, with the channel counts the plan gives.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.prune import (
    DATA_AWARE,
    IMPORTANCE,
    layer_widths,
    prune,
    pruned_architecture,
)
from edgeprune.types import Plan

NEW = ("taylor", "wanda")


def _kept_rows(dense: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Indices of the dense layer's output channels (weight rows) that survive in the pruned layer."""
    return [i for i in range(len(dense)) if any(torch.equal(dense[i], row) for row in pruned)]


def _two_layer(w1: list[list[float]], w2: list[list[float]]) -> nn.Sequential:
    """Linear -> ReLU -> Linear (the classifier) with the given weights and zero biases."""
    first, last = nn.Linear(len(w1[0]), len(w1)), nn.Linear(len(w2[0]), len(w2))
    with torch.no_grad():
        first.weight.copy_(torch.tensor(w1))
        last.weight.copy_(torch.tensor(w2))
        first.bias.zero_()
        last.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), last).eval()


def _kept_hidden(model: nn.Sequential, calib: torch.Tensor, importance: str) -> list[int]:
    """The hidden channels kept when one of four is pruned by `importance`."""
    pruned, _ = prune(model, calib[:1], calib, Plan(keep_ratio=0.75, round_to=1, importance=importance))
    assert pruned[0].out_features == 3 and pruned[2].out_features == 2
    return _kept_rows(model[0].weight, pruned[0].weight)


def test_wanda_drops_the_largest_weight_channel_when_its_inputs_are_near_zero():
    # hidden channel 0 has by far the largest weights, but reads input features 2 and 3, which are ~1e-3
    model = _two_layer(
        [[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 0.0, 0.0], [0.8, 0.8, 0.0, 0.0], [0.6, 0.6, 0.0, 0.0]],
        [[0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, -0.5]],
    )
    gen = torch.Generator().manual_seed(0)
    calib = (0.5 + 0.5 * torch.rand(32, 4, generator=gen)) * torch.tensor([1.0, 1.0, 1e-3, 1e-3])
    assert _kept_hidden(model, calib, "l2") == [0, 1, 2]  # l2 drops the smallest weights (channel 3)
    assert _kept_hidden(model, calib, "wanda") == [1, 2, 3]  # wanda drops the channel that sees no signal


def test_taylor_keeps_a_small_weight_channel_that_moves_the_loss():
    # hidden channel 0 has the smallest weights in and out, but it reads a feature ~100x larger than the others
    # read: its activation, and so the loss's gradient with respect to its weights, is the largest
    model = _two_layer(
        [[0.05, 0.0], [0.0, 1.0], [0.0, 0.9], [0.0, 0.8]],
        [[0.3, 0.5, 0.45, 0.4], [-0.3, -0.5, -0.45, -0.4]],
    )
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(32, 2, generator=gen)
    calib = torch.stack([100.0 + u[:, 0], 1.0 + 0.01 * u[:, 1]], dim=1)
    assert _kept_hidden(model, calib, "l2") == [1, 2, 3]  # l2 drops the small-weight channel 0
    assert _kept_hidden(model, calib, "taylor") == [0, 1, 2]  # taylor keeps it and drops channel 3


def _conv_pair() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


def _first_conv_group(model: nn.Sequential, example: torch.Tensor):
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(4)))


def test_wanda_scores_are_weight_magnitudes_times_input_channel_norms():
    model = _conv_pair()
    calib = torch.randn(20, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    scores = IMPORTANCE["wanda"](model, calib)(_first_conv_group(model, calib[:1]))
    with torch.no_grad():
        x_norm = calib.pow(2).sum((0, 2, 3)).sqrt()  # over samples and positions
        h = model[2](model[1](model[0](calib)))  # what the second conv reads
        h_norm = h.pow(2).sum((0, 2, 3)).sqrt()
        out_score = model[0].weight.abs().sum((2, 3)) @ x_norm  # the first conv's output channels
        in_score = h_norm * model[3].weight.abs().sum((0, 2, 3))  # the second conv's input channels
    expected = (out_score + in_score) / 2
    torch.testing.assert_close(scores, expected / expected.mean())


def test_taylor_scores_sum_per_sample_squares_of_each_channels_first_order_loss_change():
    # the output is a (N, 2, H, W) map, not class logits: each sample's loss is 0.5 * ||output||^2; a channel of
    # the first conv's group removes the conv's row and bias, the BatchNorm's scale and shift and the second conv's
    # column, and its per-sample first-order loss change is the sum of w * dL/dw over all of them
    model = _conv_pair()
    calib = torch.randn(40, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    reference = copy.deepcopy(model)
    scores = IMPORTANCE["taylor"](model, calib)(_first_conv_group(model, calib[:1]))
    expected = torch.zeros(4)
    for sample in calib:
        reference.zero_grad()
        (0.5 * reference(sample.unsqueeze(0)).pow(2).sum()).backward()
        conv, norm, last = reference[0], reference[1], reference[3]
        change = ((conv.weight * conv.weight.grad).sum((1, 2, 3)) + conv.bias * conv.bias.grad
                  + norm.weight * norm.weight.grad + norm.bias * norm.bias.grad
                  + (last.weight * last.weight.grad).sum((0, 2, 3)))
        expected += change.detach().pow(2)
    torch.testing.assert_close(scores, expected / expected.mean(), rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters()), "scoring leaves no gradient on the model"


class _TinyCNN(nn.Module):
    """Stem conv + BN, an inverted residual block (1x1 expand, depthwise 3x3, 1x1 project) added to its input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16),
        )  # fmt: skip
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(x.mean((2, 3)))


def _cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = _TinyCNN()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
    gen = torch.Generator().manual_seed(3)
    return model.eval(), torch.zeros(1, 3, 8, 8), torch.randn(48, 3, 8, 8, generator=gen)


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 5)).eval()
    return model, torch.zeros(1, 12), torch.randn(40, 12, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("importance", NEW)
def test_new_criteria_prune_a_cnn_with_batchnorm_and_a_residual_add(importance):
    model, example, calib = _cnn()
    pruned, summary = prune(model, example, calib, Plan(keep_ratio=0.5, importance=importance))
    assert summary.importance == importance
    assert pruned(calib[:4]).shape == (4, 10)
    widths = layer_widths(pruned)
    assert widths["stem.0"] == 8 and widths["block.6"] == 8  # coupled through the residual add
    assert widths["block.0"] == 16 and widths["block.3"] == 16  # the depthwise conv follows its input
    assert summary.params_after < 0.5 * summary.params_before
    assert summary.bn_recalibrated_batches >= 1
    assert all(p.grad is None for p in pruned.parameters()), "the gradients taylor scored on must not stay"
    assert all(p.grad is None for p in model.parameters()) and layer_widths(model)["stem.0"] == 16


@pytest.mark.parametrize("importance", NEW)
def test_new_criteria_prune_an_mlp(importance):
    model, example, calib = _mlp()
    pruned, summary = prune(model, example, calib, Plan(keep_ratio=0.5, importance=importance))
    assert pruned(calib).shape == (40, 5)
    assert layer_widths(pruned) == {"0": 16, "2": 16, "4": 5}
    assert set(summary.channels) == {"0", "2"}


@pytest.mark.parametrize("importance", NEW)
def test_same_plan_calibration_and_seed_keep_the_same_channels(importance):
    model, example, calib = _cnn()
    plan = Plan(keep_ratio=0.5, importance=importance, seed=7)
    first, _ = prune(model, example, calib, plan)
    second, _ = prune(model, example, calib, plan)
    kept = _kept_rows(model.stem[0].weight, first.stem[0].weight)
    assert len(kept) == 8 and kept == _kept_rows(model.stem[0].weight, second.stem[0].weight)
    expand = _kept_rows(model.block[0].weight[:, kept], first.block[0].weight)
    assert len(expand) == 16
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "plan",
    [Plan(keep_ratio=0.5), Plan(keep_ratio=0.75, round_to=4), Plan(layer_keep_ratios={"block.0": 0.25})],
    ids=["global-half", "round-to-4", "one-layer"],
)
def test_channel_counts_do_not_depend_on_the_criterion(plan):
    model, example, calib = _cnn()
    widths = {
        name: layer_widths(pruned_architecture(model, example, dataclasses.replace(plan, importance=name), calib))
        for name in ("l2", *NEW)
    }
    assert widths["l2"] != layer_widths(model)
    assert widths["taylor"] == widths["l2"] and widths["wanda"] == widths["l2"]


@pytest.mark.parametrize("importance", NEW)
def test_architecture_without_calibration_prunes_by_l2_for_its_shapes(importance):
    model, example, calib = _cnn()
    plan = Plan(keep_ratio=0.5, importance=importance)
    shapes_only = pruned_architecture(model, example, plan)
    by_l2 = pruned_architecture(model, example, dataclasses.replace(plan, importance="l2"))
    a, b = shapes_only.state_dict(), by_l2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    scored = pruned_architecture(model, example, plan, calibration=calib)
    assert layer_widths(scored) == layer_widths(by_l2)


@pytest.mark.parametrize("importance", NEW)
def test_data_aware_criteria_without_calibration_inputs_are_a_config_error(importance):
    model, example, _ = _mlp()
    with pytest.raises(ConfigError, match=f"importance '{importance}' scores channels on calibration inputs"):
        prune(model, example, torch.empty(0, 12), Plan(keep_ratio=0.5, importance=importance))


def test_unknown_criterion_is_a_config_error_naming_every_known_one():
    model, example, calib = _mlp()
    with pytest.raises(ConfigError, match=r"importance 'magic' is unknown; known: l2, l1, bn-scale, fpgm, random, "
                                          r"taylor, wanda$"):
        prune(model, example, calib, Plan(keep_ratio=0.5, importance="magic"))
    assert DATA_AWARE == {"taylor", "wanda"} and DATA_AWARE <= set(IMPORTANCE)


def test_the_planner_accepts_the_new_criteria():
    from edgeprune.evaluator import check_criteria

    check_criteria(("l2", "fpgm", *NEW))
    with pytest.raises(ConfigError, match="taylor, wanda"):
        check_criteria(("magic",))


@pytest.fixture(scope="module")
def shufflenet() -> tuple[nn.Module, torch.Tensor, nn.Module]:
    """ShuffleNetV2 (random weights, 32x32 inputs): its channel shuffle defeats torch-pruning's trace of the whole
    model, so each branch2 chain is pruned alone; with it, the model l2 prunes."""
    torch.manual_seed(0)
    model = torchvision.models.get_model("shufflenet_v2_x0_5", weights=None).eval()
    calib = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    by_l2, _ = prune(model, calib[:1], calib, Plan(keep_ratio=0.5))
    return model, calib, by_l2


@pytest.mark.parametrize("importance", NEW)
def test_new_criteria_rank_the_chains_of_a_model_torch_pruning_cannot_trace_whole(shufflenet, importance):
    # each chain's private widths are pruned, its channels scored on the whole model's calibration pass
    model, calib, by_l2 = shufflenet
    pruned, summary = prune(model, calib[:1], calib, Plan(keep_ratio=0.5, importance=importance))
    assert pruned(calib[:2]).shape == (2, 1000)
    assert summary.channels and all(name.endswith((".branch2.0", ".branch2.3")) for name in summary.channels)
    assert all(after < before and after % 8 == 0 for before, after in summary.channels.values())
    assert layer_widths(pruned) == layer_widths(by_l2)
    chains = [n for n in summary.channels if n.endswith(".branch2.0")]
    dense = dict(model.named_modules())
    mine, l2s = dict(pruned.named_modules()), dict(by_l2.named_modules())
    differ = [n for n in chains
              if _kept_rows(dense[n].weight, mine[n].weight) != _kept_rows(dense[n].weight, l2s[n].weight)]
    assert differ, f"{importance} kept the same channels as l2 in every chain"
    again, _ = prune(model, calib[:1], calib, Plan(keep_ratio=0.5, importance=importance))
    a, b = pruned.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
