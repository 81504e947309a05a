"""The conformance suite every runner passes (host, adb, ssh): subclass `RunnerConformance` and provide `runner`.

    class TestMyRunnerConformance(RunnerConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def runner(cls, my_device):
            return MyRunner(my_device)

It exports one tiny real model to each of `TARGETS` (ExecuTorch and ONNX; once per test session, shared by every
subclass), measures each artifact once through the runner under test and once through `HostRunner` (the
reference), and checks:

- every `Measurement` field is filled and sane (p50 <= p90, runs / warm-ups / threads echoed, size_bytes is the
  file's size, where / runner / runtime versions / memory method non-empty, peak memory positive where set);
- the figures have the same format as the host's (same `to_dict()` keys and runtime-version keys, JSON-serialisable);
- the outputs match the host's within `tolerance`;
- an input of the wrong shape raises `ConfigError`; a missing artifact file raises a typed `EdgepruneError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import ConfigError, EdgepruneError, InternalError
from edgeprune.runners.base import Runner
from edgeprune.runners.host import HostRunner
from edgeprune.types import Artifact, Measurement, Plan

TARGETS = ("executorch", "onnx")
INPUT_SHAPE = (1, 3, 8, 8)
N_INPUTS = 4
WARMUP, RUNS, THREADS = 3, 7, 2
"""Not the defaults, so that echoing them back is actually checked."""

_ARTIFACTS: dict[str, Artifact] = {}
_HOST: dict[str, Measurement] = {}


def _tiny_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


def conformance_artifacts(tmp_path_factory: pytest.TempPathFactory, targets=TARGETS) -> dict[str, Artifact]:
    """One real fp32 artifact per target, exported once per test session through edgeprune's own exporters."""
    import torch

    from edgeprune.export import get_exporter

    for target in targets:
        if target not in _ARTIFACTS:
            exporter = get_exporter(target)
            out = tmp_path_factory.mktemp(f"conformance-{target}") / f"tiny{exporter.suffix}"
            example = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
            calibration = torch.randn(8, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(2))
            result = exporter.export(_tiny_model(), example, calibration, Plan(target=target, scheme="fp32"), out)
            _ARTIFACTS[target] = result.artifact
    return {t: _ARTIFACTS[t] for t in targets}


def conformance_inputs(n: int = N_INPUTS) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *INPUT_SHAPE[1:])).astype(np.float32)


def host_reference(artifact: Artifact) -> Measurement:
    """The artifact measured in this process by `HostRunner` (cached per target)."""
    if artifact.target not in _HOST:
        _HOST[artifact.target] = HostRunner().measure(artifact, conformance_inputs(), warmup=1, runs=2, threads=1)
    return _HOST[artifact.target]


class RunnerConformance:
    """Base class of each runner's conformance tests; subclasses provide a class-scoped `runner` fixture."""

    tolerance = 1e-5

    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls) -> Runner:
        raise NotImplementedError("a RunnerConformance subclass provides a class-scoped `runner` fixture")

    @pytest.fixture(scope="class", params=TARGETS)
    @classmethod
    def artifact(cls, request, tmp_path_factory) -> Artifact:
        """One artifact per target; a runner that cannot run some target overrides this with fewer params."""
        return conformance_artifacts(tmp_path_factory, (request.param,))[request.param]

    @pytest.fixture(scope="class")
    @classmethod
    def measured(cls, runner, artifact) -> Measurement:
        return runner.measure(artifact, conformance_inputs(), warmup=WARMUP, runs=RUNS, threads=THREADS)

    # ------------------------------------------------------------------ checks

    def test_fields_are_filled_and_sane(self, runner, artifact, measured):
        m = measured
        for name in ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms"):
            value = getattr(m, name)
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
        assert m.latency_p50_ms <= m.latency_p90_ms
        assert (m.runs, m.warmup_runs, m.threads) == (RUNS, WARMUP, THREADS)
        assert m.size_bytes == artifact.path.stat().st_size == artifact.size_bytes
        if m.peak_memory_mb is not None:
            assert math.isfinite(m.peak_memory_mb) and m.peak_memory_mb > 0
        assert isinstance(m.memory_method, str) and m.memory_method.strip()
        assert m.where and m.where == runner.where
        assert isinstance(m.runner, str) and m.runner.strip()
        assert m.runtime_versions and all(k and v for k, v in m.runtime_versions.items())
        assert isinstance(m.outputs, np.ndarray) and m.outputs.dtype == np.float32
        assert m.outputs.shape == (N_INPUTS, *artifact.outputs[0].shape[1:])
        assert np.isfinite(m.outputs).all()

    def test_same_figures_format_as_host(self, artifact, measured):
        host = host_reference(artifact)
        assert measured.to_dict().keys() == host.to_dict().keys()
        assert set(measured.runtime_versions) == set(host.runtime_versions)
        assert measured.runner == host.runner
        json.dumps(measured.to_dict())  # what goes into the manifest

    def test_outputs_match_host(self, artifact, measured):
        host = host_reference(artifact)
        assert measured.outputs.shape == host.outputs.shape
        assert np.abs(measured.outputs - host.outputs).max() <= self.tolerance

    def test_wrong_input_shape_is_a_config_error(self, runner, artifact):
        wrong = np.zeros((2, *INPUT_SHAPE[1:-1], INPUT_SHAPE[-1] + 1), dtype=np.float32)
        with pytest.raises(ConfigError):
            runner.measure(artifact, wrong, warmup=0, runs=1, threads=1)

    def test_missing_artifact_is_a_typed_error(self, runner, artifact, tmp_path):
        gone = dataclasses.replace(artifact, path=Path(tmp_path) / f"gone{artifact.path.suffix}")
        with pytest.raises(EdgepruneError) as info:
            runner.measure(gone, conformance_inputs(), warmup=0, runs=1, threads=1)
        assert not isinstance(info.value, InternalError)
        assert "gone" in str(info.value)
