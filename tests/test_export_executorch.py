"""ExecuTorch exporter and runtime session, against the real executorch runtime (no mocks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.export import get_exporter
from edgeprune.export.executorch import EXPORTER, ExecuTorchExporter
from edgeprune.runners.host import HostRunner
from edgeprune.types import Plan

INPUT_SHAPE = (1, 3, 16, 16)


class TinyNet(nn.Module):
    """Conv+BN, depthwise conv+BN, a residual add, global average pool and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.stem(x)))
        y = y + torch.relu(self.bn2(self.dw(y)))
        return self.fc(self.pool(y).flatten(1))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so that BN folding is actually exercised
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        net.fc.weight.mul_(4.0)  # spread the logits so top-1 is not decided by rounding noise
    return net.eval()


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent Python control flow: torch.export cannot capture it
            return x * 2
        return x - 1


class BranchyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv(x))


class InverseNet(nn.Module):
    """Captures fine, but aten.linalg_inv_ex is not in the Core ATen opset ExecuTorch lowers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[0, 0, :4, :4])


def _gen(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(seed))


def _run_pte(path: Path, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Run every row of `x` through the .pte with executorch.runtime directly (not through edgeprune)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    rows = [method.execute((x[i : i + 1].to(dtype),))[0].to(torch.float32) for i in range(len(x))]
    return torch.cat(rows)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each scheme exported once for the module: {scheme: (ExportResult, out_dir)}."""
    model = tiny_net()
    example = _gen(1, 1)
    calibration = _gen(2, 32)
    results = {}
    for scheme in EXPORTER.schemes:
        out_dir = tmp_path_factory.mktemp(f"et-{scheme}")
        plan = Plan(target="executorch", scheme=scheme)
        results[scheme] = (EXPORTER.export(model, example, calibration, plan, out_dir / f"tiny-{scheme}.pte"), out_dir)
    return results


TEST_X = _gen(3, 64)


def test_registry_returns_the_exporter():
    exporter = get_exporter("executorch")
    assert isinstance(exporter, ExecuTorchExporter)
    assert (exporter.name, exporter.suffix) == ("executorch", ".pte")
    assert exporter.schemes == ("fp32", "fp16", "int8", "int8-dynamic")


@pytest.mark.parametrize("scheme", ["fp32", "fp16", "int8", "int8-dynamic"])
def test_artifact_facts(exported, scheme):
    result, out_dir = exported[scheme]
    art = result.artifact
    assert art.path.exists() and art.path.suffix == ".pte"
    assert art.target == "executorch" and art.scheme == scheme
    data = art.path.read_bytes()
    assert art.size_bytes == len(data)
    assert art.sha256 == hashlib.sha256(data).hexdigest()
    assert [p.name for p in out_dir.iterdir()] == [art.path.name]  # no temp files left behind
    dtype = "float16" if scheme == "fp16" else "float32"
    assert [(s.name, s.shape, s.dtype) for s in art.inputs] == [("input_0", INPUT_SHAPE, dtype)]
    assert [(s.name, s.shape, s.dtype) for s in art.outputs] == [("output_0", (1, 10), dtype)]
    low = art.lowering
    assert low["backend"] == "XnnpackBackend"
    assert low["planned_arena_bytes"] > 0
    assert low["delegated_ops"] > 0 and 0.0 <= low["delegated_share"] <= 1.0
    assert low["non_delegated_ops"] == sum(low["non_delegated"].values())
    assert "getitem" not in low["non_delegated"]
    assert low["executorch_version"]
    assert art.export_s > 0


def test_fp32_is_fully_delegated(exported):
    low = exported["fp32"][0].artifact.lowering
    assert low["delegated_share"] > 0.9, low


def test_fp32_parity(exported):
    result, _ = exported["fp32"]
    out = _run_pte(result.artifact.path, TEST_X)
    ref = result.reference(TEST_X)
    assert (out - ref).abs().max().item() <= 1e-4


def test_fp16_parity(exported):
    result, _ = exported["fp16"]
    out = _run_pte(result.artifact.path, TEST_X, torch.float16)
    ref = result.reference(TEST_X)
    assert ref.dtype == torch.float32
    # fp16 has unit roundoff 2**-11 ~ 4.9e-4. The net rounds at ~7 stages (conv, relu, dw conv, add, pool,
    # linear; BN folded) and XNNPACK accumulates in a different order than torch's CPU half kernels, so a few
    # ulps of the output scale per stage is expected: 1e-2 of the logit scale (~20 ulps) leaves room for that,
    # while a broken lowering (wrong or unfolded BN, transposed weights, fp32 weights read as fp16) is off by
    # O(1) of the scale.
    scale = max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= 1e-2 * scale
    fp32 = tiny_net()(TEST_X).detach()
    assert (out - fp32).abs().max().item() <= 1e-2 * scale


@pytest.mark.parametrize("scheme", ["int8", "int8-dynamic"])
def test_int8_parity(exported, scheme):
    result, _ = exported[scheme]
    out = _run_pte(result.artifact.path, TEST_X)
    ref = result.reference(TEST_X)
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.98
    # The runtime runs the same integer arithmetic the fake-quantised reference simulates; differences are
    # requantisation rounding (~1 quantisation step of the logits, i.e. < 1% of their range). A wrong scale,
    # zero point or channel order is off by a large fraction of the range.
    logit_range = (ref.max() - ref.min()).item()
    assert (out - ref).abs().max().item() <= 0.05 * logit_range
    # and the quantised model still tracks the float one
    fp32 = tiny_net()(TEST_X).detach()
    assert (out - fp32).abs().max().item() <= 0.1 * logit_range
    assert (out.argmax(1) == fp32.argmax(1)).float().mean().item() >= 0.9


def test_host_runner_end_to_end(exported):
    result, _ = exported["fp32"]
    inputs = TEST_X[:8].numpy()
    m = HostRunner().measure(result.artifact, inputs, warmup=2, runs=5, threads=1)
    ref = result.reference(TEST_X[:8]).numpy()
    assert m.outputs.shape == (8, 10) and m.outputs.dtype == np.float32
    assert np.abs(m.outputs - ref).max() <= 1e-4
    assert 0 < m.latency_p50_ms <= m.latency_p90_ms
    assert m.latency_mean_ms > 0
    assert m.peak_memory_mb > 0
    assert "memory plan" in m.memory_method
    assert m.runner == "executorch.runtime" and m.where == "host"
    assert set(m.runtime_versions) == {"executorch", "torch"}
    assert (m.runs, m.warmup_runs, m.threads) == (5, 2, 1)


def test_host_runner_fp16_casts_io(exported):
    result, _ = exported["fp16"]
    inputs = TEST_X[:4].numpy()
    m = HostRunner().measure(result.artifact, inputs, warmup=1, runs=2, threads=1)
    assert m.outputs.dtype == np.float32
    ref = result.reference(TEST_X[:4]).numpy()
    assert np.abs(m.outputs - ref).max() <= 1e-2 * max(1.0, np.abs(ref).max())


def test_session_memory_reads_the_pte(exported):
    from edgeprune.runners.runtimes import open_session

    art = exported["int8"][0].artifact
    session = open_session(art, 1)
    try:
        mb, method = session.memory()
    finally:
        session.close()
    assert mb == pytest.approx((art.lowering["planned_arena_bytes"] + art.size_bytes) / 1e6)
    assert method == "planned activation arena + program bytes (ExecuTorch memory plan)"


def test_data_dependent_control_flow_is_unsupported(tmp_path):
    out = tmp_path / "branchy.pte"
    with pytest.raises(UnsupportedModelError) as info:
        EXPORTER.export(BranchyNet().eval(), _gen(1, 1), _gen(2, 4), Plan(scheme="fp32"), out)
    msg = str(info.value)
    assert "\n" not in msg
    assert "executorch" in msg
    assert "'gate'" in msg and "data-dependent" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_data_dependent_control_flow_is_unsupported_for_int8(tmp_path):
    with pytest.raises(UnsupportedModelError) as info:
        EXPORTER.export(BranchyNet().eval(), _gen(1, 1), _gen(2, 4), Plan(scheme="int8"), tmp_path / "b.pte")
    assert "\n" not in str(info.value) and "'gate'" in str(info.value)


def test_lowering_failure_names_target_scheme_and_op(tmp_path):
    with pytest.raises(UnsupportedModelError) as info:
        EXPORTER.export(InverseNet().eval(), _gen(1, 1), _gen(2, 4), Plan(scheme="fp32"), tmp_path / "inv.pte")
    msg = str(info.value)
    assert "\n" not in msg
    assert "executorch" in msg and "fp32" in msg and "linalg_inv" in msg
    assert list(tmp_path.iterdir()) == []


def test_wrong_calibration_shape_is_a_config_error(tmp_path):
    bad = torch.randn(4, 3, 8, 8)
    with pytest.raises(ConfigError) as info:
        EXPORTER.export(tiny_net(), _gen(1, 1), bad, Plan(scheme="int8"), tmp_path / "x.pte")
    assert not isinstance(info.value, UnsupportedModelError)
    assert "(4, 3, 8, 8)" in str(info.value) and "(1, 3, 16, 16)" in str(info.value)


def test_non_float_calibration_is_a_config_error(tmp_path):
    bad = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ConfigError) as info:
        EXPORTER.export(tiny_net(), _gen(1, 1), bad, Plan(scheme="int8"), tmp_path / "x.pte")
    assert "uint8" in str(info.value)


def test_unknown_scheme_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        EXPORTER.export(tiny_net(), _gen(1, 1), _gen(2, 4), Plan(scheme="int4"), tmp_path / "x.pte")
    assert "int4" in str(info.value) and "int8-dynamic" in str(info.value)
    assert list(tmp_path.iterdir()) == []
