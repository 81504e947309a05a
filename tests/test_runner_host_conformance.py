"""HostRunner against the runner conformance suite (real ExecuTorch and ONNX Runtime, in this process)."""

from __future__ import annotations

import pytest
from runner_conformance import RunnerConformance

from edgeprune.runners.host import HostRunner


class TestHostRunnerConformance(RunnerConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls):
        return HostRunner()
