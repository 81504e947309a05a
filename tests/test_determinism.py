"""The same inputs and seed give the same artifacts, byte for byte, on every target, and the same plan.yaml; another
seed gives another fine-tuned model; the manifest records the seeds and versions behind its artifacts.

Measured on this project's host (ExecuTorch XNNPACK, LiteRT and ONNX, digits pruned and fine-tuned): every converter
is deterministic, so no target is an exception. Before, plan.yaml recorded the fine-tune's wall time and so differed
between two runs of the same plan; it no longer does (build.json keeps the time)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import edgeprune
from edgeprune._deps import package_version

TARGETS = ("executorch", "tflite", "onnx")
FIXED = edgeprune.FixedPlan(prune=0.5, quant="fp32", finetune_epochs=1)
QUICK = edgeprune.Measure(runs=2, warmup=0, blocks=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _artifacts(out: Path) -> dict[str, str]:
    """target -> sha256 of the file the host manifest lists (checked against the manifest's own digest)."""
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    digests = {}
    for art in manifest["artifacts"]:
        digests[art["target"]] = _sha(out / "host" / art["path"])
        assert digests[art["target"]] == art["sha256"]
    return digests


@pytest.fixture(scope="module")
def twice(tmp_path_factory, digits_model) -> tuple[Path, Path]:
    """The digits example pruned by half and fine-tuned, built twice with seed 0 into two folders, every target."""
    outs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name) / "dist"
        edgeprune.build("examples:digits", targets=TARGETS, plan=FIXED, measure=QUICK, seed=0, out=out)
        outs.append(out)
    return outs[0], outs[1]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_artifact_bytes_on_every_target(twice):
    first, second = twice
    a, b = _artifacts(first), _artifacts(second)
    assert set(a) == set(TARGETS)
    assert a == b, {t: (a[t][:12], b[t][:12]) for t in TARGETS if a[t] != b[t]}


@pytest.mark.slow
def test_the_manifest_records_seeds_and_versions(twice):
    first, _ = twice
    manifest = json.loads((first / "host" / "manifest.json").read_text())
    assert manifest["seeds"] == {"split": manifest["data"]["split_seed"], "plan": 0, "recovery": 0}
    assert manifest["versions"]["edgeprune"] == edgeprune.__version__
    for dist in ("torch", "executorch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime"):
        assert manifest["versions"][dist] == package_version(dist) is not None, dist
    build = json.loads((first / "build.json").read_text())
    assert build["seeds"] == manifest["seeds"]


@pytest.mark.slow
def test_another_seed_gives_another_fine_tuned_model(twice, tmp_path):
    first, _ = twice
    out = tmp_path / "dist"
    edgeprune.build("examples:digits", targets=["onnx"], plan=FIXED, measure=QUICK, seed=1, out=out)
    assert _artifacts(out)["onnx"] != _artifacts(first)["onnx"]
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    # the bundled example's split is fixed (its held-out parts never move); the plan and fine-tune take the seed
    assert manifest["seeds"] == {"split": manifest["data"]["split_seed"], "plan": 1, "recovery": 1}


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))


@pytest.mark.slow
def test_planning_twice_with_the_same_seed_writes_the_same_plan_yaml(tmp_path):
    # labelled data, so the ranking and the chosen plan are fine-tuned; pixel-8 measured here rests on predictions,
    # so no timing noise steers the search
    rng = np.random.default_rng(0)
    data = rng.random((300, 1, 8, 8), dtype=np.float32), rng.integers(0, 4, 300)
    settings = edgeprune.PlanSettings(schemes=("fp32",), importances=("l2",), threads=1, finetune_epochs=1,
                                      rank_epochs=1, top_k=2, max_rounds=1, seed=0)
    texts = []
    for name in ("a", "b"):
        edgeprune.plan(_small_model(), data, input_shape=(1, 1, 8, 8), devices=["pixel-8"], targets=["executorch"],
                       size_mb=0.006, max_accuracy_drop_pts=100, plan=settings, seed=0, out=tmp_path / name)
        texts.append((tmp_path / name / "pixel-8" / "plan.yaml").read_text())
    recipe = yaml.safe_load(texts[0])
    assert any(k < 1.0 for k in recipe["plan"]["layer_keep_ratios"].values()), recipe["plan"]  # it pruned
    assert recipe["recovery"]["config"]["seed"] == 0 and "seconds" not in recipe["recovery"]  # and fine-tuned
    assert texts[0] == texts[1]
