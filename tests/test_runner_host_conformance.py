"""HostRunner against the runner conformance suite (real ExecuTorch and ONNX Runtime, in this process)."""

from __future__ import annotations

import numpy as np
import pytest
from runner_conformance import RunnerConformance, conformance_artifacts, conformance_inputs

from edgeprune.errors import ConfigError
from edgeprune.runners.base import measure_in_blocks
from edgeprune.runners.host import HostRunner


class TestHostRunnerConformance(RunnerConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls):
        return HostRunner()


def test_blocks_median_is_the_latency_and_the_first_block_gives_every_output(tmp_path_factory):
    artifact = conformance_artifacts(tmp_path_factory, ("executorch",))["executorch"]
    inputs = conformance_inputs()
    m = measure_in_blocks(HostRunner(), artifact, inputs, warmup=2, runs=5, threads=1, blocks=3)
    blocks = m.extra["block_p50_ms"]
    assert len(blocks) == 3 and m.runs == 15 and m.warmup_runs == 2
    assert m.latency_p50_ms == pytest.approx(float(np.median(blocks)), abs=1e-5)
    one = HostRunner().measure(artifact, inputs, warmup=0, runs=1, threads=1)
    np.testing.assert_allclose(m.outputs, one.outputs, atol=1e-6)
    with pytest.raises(ConfigError, match="--blocks 0"):
        measure_in_blocks(HostRunner(), artifact, inputs, warmup=2, runs=5, threads=1, blocks=0)
