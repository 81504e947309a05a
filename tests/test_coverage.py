"""Model coverage, the fast part: representative torchvision architectures through prune 30% -> each target x
{fp32, int8 static} -> the real runtime -> parity; and a named miss for an architecture that cannot go through.

The whole zoo runs in `bench/coverage.py`. Random weights (torchvision architectures only, `weights=None`),
64x64 inputs: every architecture here pools globally, so the small input changes nothing but the time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from edgeprune.errors import UnsupportedModelError
from edgeprune.export import get_exporter
from edgeprune.prune import prune
from edgeprune.runners.host import HostRunner
from edgeprune.types import TARGETS, Plan

SIZE = 64
MODELS = ("mobilenet_v3_small", "resnet18")
"""Depthwise + squeeze-excite + hardswish, and plain residual blocks: the two families most edge models are made of."""


def _load_bench():
    """bench/coverage.py, whose `judge_cell` is the rule the zoo bench judges every cell by."""
    path = Path(__file__).resolve().parents[1] / "bench" / "coverage.py"
    spec = importlib.util.spec_from_file_location("edgeprune_bench_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=MODELS)
def pruned(request):
    torch.manual_seed(0)
    model = torchvision.models.get_model(request.param, weights=None).eval()
    example, calibration = _inputs(1, 0), _inputs(8, 1)
    small, summary = prune(model, example, calibration, Plan(keep_ratio=0.7))
    assert summary.params_after < 0.75 * summary.params_before  # channels really went
    return request.param, small, example, calibration


@pytest.mark.parametrize("scheme", ["fp32", "int8"])
@pytest.mark.parametrize("target", TARGETS)
def test_pruned_architecture_exports_runs_and_meets_parity(pruned, target, scheme, tmp_path):
    name, model, example, calibration = pruned
    exporter = get_exporter(target)
    plan = Plan(target=target, scheme=scheme, keep_ratio=0.7)
    result = exporter.export(model, example, calibration, plan, tmp_path / f"{name}{exporter.suffix}")
    eval_x = _inputs(8, 2)
    measurement = HostRunner().measure(result.artifact, eval_x.numpy(), warmup=0, runs=1, threads=1)

    def reference(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([result.reference(x[i : i + 1]).float().numpy() for i in range(len(x))])

    ref = reference(eval_x)
    out = measurement.outputs.reshape(ref.shape)
    assert out.shape == (8, 1000)
    kind = result.artifact.lowering["reference"]
    if scheme == "fp32":
        verdict = bench.judge_cell(scheme, kind, out, ref)
        assert verdict["status"] == "pass" and verdict["basis"] == "judge.parity", verdict
        assert verdict["rel_max_abs_diff"] < 1e-4
        return
    # int8: against the quantised twin the artifact was made from; judge.parity's top-1 rule, or (random-weight
    # logits being near-tied) the bench's rounding rule: every output as close to the twin as the twin is to itself
    # under sub-quantisation-step input noise, and never further than a fraction of the output range.
    assert kind in bench.TWIN_REFERENCES
    noisy = reference(eval_x + bench.TWIN_NOISE_STD * torch.randn(eval_x.shape, generator=torch.Generator().manual_seed(3)))
    verdict = bench.judge_cell(scheme, kind, out, ref, noisy)
    assert verdict["status"] == "pass", verdict
    assert verdict["rel_max_abs_diff"] <= 0.25, verdict
    assert verdict["rel_mean_abs_diff"] <= 0.05, verdict


def test_architecture_that_cannot_be_pruned_is_a_named_one_line_miss():
    # ShuffleNetV2's channel shuffle (view -> transpose -> view) is a reshape torch-pruning cannot map channels
    # through: edgeprune names the stage ('pruning'), the op and the module next to it, not a ZeroDivisionError.
    torch.manual_seed(0)
    model = torchvision.models.get_model("shufflenet_v2_x0_5", weights=None).eval()
    with pytest.raises(UnsupportedModelError) as info:
        prune(model, _inputs(1, 0), _inputs(4, 1), Plan(keep_ratio=0.7))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("pruning: ")
    assert "reshape op after module 'stage" in message and "ZeroDivisionError" in message
    assert info.value.exit_code == 2
    assert info.value.__cause__ is not None  # the library's traceback stays reachable for --debug
