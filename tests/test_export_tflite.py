"""LiteRT (TFLite) exporter and runtime session, on the real litert-torch / ai-edge-quantizer / ai-edge-litert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune._io import sha256_file
from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.export import get_exporter
from edgeprune.runners.host import HostRunner
from edgeprune.runners.runtimes import open_session
from edgeprune.types import Plan

from ai_edge_litert import interpreter as litert

SCHEMES = ("fp32", "fp16", "int8", "int8-dynamic")


class TinyNet(nn.Module):
    """Conv + BN, depthwise conv + BN, pointwise conv, residual add, global pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        z = torch.relu(self.bn2(self.dw(y)))
        z = self.pw(z) + y
        return self.fc(z.mean(dim=(2, 3)))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # branch on a tensor value: torch.export cannot trace it
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


class WithCumsum(nn.Module):
    """CUMSUM has no XNNPACK kernel, so it must stay outside the delegate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cumsum(self.conv(x).mean(dim=(2, 3)), dim=1)
        return self.fc(torch.relu(y))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so BN folding is exercised
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(1)
    calib = torch.randn(32, 3, 16, 16, generator=gen)
    evalx = torch.randn(64, 3, 16, 16, generator=gen)
    return calib, evalx


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data):
    calib, _ = data
    model = _tiny()
    out = tmp_path_factory.mktemp("tflite")
    exporter = get_exporter("tflite")
    results = {
        s: exporter.export(model, calib[:1], calib, Plan(target="tflite", scheme=s), out / f"tiny_{s}.tflite")
        for s in SCHEMES
    }
    return model, out, results


def _run_interpreter(path, x: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """Run every row through a fresh ai_edge_litert Interpreter, quantising / dequantising by hand."""
    it = litert.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s) + z, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            y = (y.astype(np.float32) - z) * s
        rows.append(y[0])
    return np.stack(rows), inp, out


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_loads_in_litert_and_matches_reference(exported, data, scheme):
    _, _, results = exported
    result = results[scheme]
    art = result.artifact
    x = data[1].numpy()
    got, inp, out = _run_interpreter(art.path, x)
    ref = result.reference(data[1]).numpy()
    assert got.shape == ref.shape == (64, 10)
    diff = float(np.abs(got - ref).max())
    span = float(np.abs(ref).max())
    if scheme == "fp32":
        assert diff <= 1e-4
        assert art.lowering["reference"] == "fp32"
    elif scheme == "fp16":
        # Weight-only fp16 (compute stays fp32): each weight carries a relative rounding error <= 2^-11; through
        # four weighted layers the output error stays within a few 2^-11 of the output magnitude. 2e-3 * span is
        # ~4 ulps of fp16 at that magnitude, and well under what an int8 artifact shows (~5e-3 * span here).
        assert diff <= 2e-3 * span, (diff, span)
        assert art.lowering["reference"] == "fp32"
        it = litert.Interpreter(model_path=str(art.path))
        assert any(d["dtype"] == np.float16 for d in it.get_tensor_details()), "no fp16 weights in the file"
        assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    elif scheme == "int8":
        # Reference is the PT2E fake-quantised module that was converted: it reproduces the integer arithmetic up to
        # requantisation rounding (<= 1 LSB per quantised layer), so a few output quanta.
        assert art.lowering["reference"] == "pt2e_fake_quant"
        assert diff <= 4 * out["quantization"][0], (diff, out["quantization"])
        assert _top1(got, ref) >= 0.9
    else:
        # Dynamic int8: reference is fp32; per-channel int8 weights and per-inference int8 activations give
        # ~1/127 relative error per layer, so 5% of the output range bounds it and top-1 mostly agrees.
        assert art.lowering["reference"] == "fp32"
        assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
        assert diff <= 0.05 * span, (diff, span)
        assert _top1(got, ref) >= 0.9


def test_artifact_facts_match_file(exported):
    _, out, results = exported
    for scheme, result in results.items():
        art = result.artifact
        assert art.target == "tflite" and art.scheme == scheme
        assert art.path.suffix == ".tflite"
        assert art.size_bytes == art.path.stat().st_size > 0
        assert art.sha256 == sha256_file(art.path)
        assert art.export_s > 0
        assert art.inputs[0].shape == (1, 3, 16, 16) and art.outputs[0].shape == (1, 10)
        low = art.lowering
        assert low["litert_torch_version"] and low["ai_edge_litert_version"]
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(low["ops"])
        assert isinstance(low["not_delegated_to_xnnpack"], list)
        assert low["xnnpack_partitions"] >= 1
    # XNNPACK takes every op of the float model; no temp files are left beside the artifacts
    assert results["fp32"].artifact.lowering["not_delegated_to_xnnpack"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(f"tiny_{s}.tflite" for s in SCHEMES)
    assert results["int8"].artifact.size_bytes < results["fp32"].artifact.size_bytes * 1.2


def test_int8_static_has_int8_io_recorded_from_interpreter(exported):
    art = exported[2]["int8"].artifact
    it = litert.Interpreter(model_path=str(art.path))
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    for spec, detail in ((art.inputs[0], inp), (art.outputs[0], out)):
        assert spec.dtype == "int8"
        assert spec.scale == pytest.approx(detail["quantization"][0]) and spec.scale > 0
        assert spec.zero_point == detail["quantization"][1]
    assert exported[2]["fp32"].artifact.inputs[0].dtype == "float32"


def test_session_quantises_and_dequantises_int8_io(exported, data):
    result = exported[2]["int8"]
    art = result.artifact
    session = open_session(art, threads=1)
    try:
        got = np.concatenate([session.run(data[1][i : i + 1].numpy()) for i in range(16)])
        assert got.dtype == np.float32
        peak, method = session.memory()
        assert method and (peak is None or peak >= 0)
        assert session.versions()["ai_edge_litert"]
    finally:
        session.close()
    ref = result.reference(data[1][:16]).numpy()
    assert np.abs(got - ref).max() <= 4 * art.outputs[0].scale
    manual, _, _ = _run_interpreter(art.path, data[1][:16].numpy())
    np.testing.assert_array_equal(got, manual)


def _int8_against_twin(model: nn.Module, calib: torch.Tensor, x: torch.Tensor, path) -> tuple:
    """(export result, LiteRT int8 outputs on `x`, its PT2E twin's outputs on `x`, row by row)."""
    result = get_exporter("tflite").export(model, calib[:1], calib, Plan(target="tflite", scheme="int8"), path)
    got, _, _ = _run_interpreter(result.artifact.path, x.numpy())
    ref = np.concatenate([result.reference(x[i : i + 1]).numpy() for i in range(len(x))])
    return result, got.reshape(ref.shape), ref


class Concats(nn.Module):
    """Two branches ten times apart in range, concatenated, and the concatenation reused by a second one (the
    DenseNet pattern): int8 concatenation needs one scale for all its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)
        self.head = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():
            self.b.weight.mul_(10.0)
            self.b.bias.mul_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        z = torch.cat([y, torch.relu(self.c(y))], 1)
        return self.fc(self.head(z).mean(dim=(2, 3)))


def test_int8_concatenations_share_one_scale_and_match_their_twin(tmp_path):
    # without the shared scale the converter gave every input the first one's scale: top-1 agreement 0.4 here
    torch.manual_seed(0)
    model = Concats().eval()
    gen = torch.Generator().manual_seed(1)
    calib, x = torch.randn(16, 3, 16, 16, generator=gen), torch.randn(16, 3, 16, 16, generator=gen)
    result, got, ref = _int8_against_twin(model, calib, x, tmp_path / "cat.tflite")
    assert result.artifact.lowering["concatenations_sharing_one_scale"] == 2
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98
    assert np.abs(got - ref).max() <= 0.05 * np.ptp(ref)


class PaddedAveragePool(nn.Module):
    """MaxViT's stride-2 projection: a padded 3x3 average pool (padding counted) between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.pool(self.a(x))).flatten(1)


def test_int8_average_pool_keeps_its_input_scale_and_matches_its_twin(tmp_path):
    # with the pool's output on its own, narrower scale the converter requantised the pool's input to it first,
    # clipping: 13% of the output range off the twin here (25% on maxvit_t's projection); 0.4% with one scale
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    calib, x = torch.randn(8, 3, 16, 16, generator=gen), torch.randn(4, 3, 16, 16, generator=gen)
    result, got, ref = _int8_against_twin(PaddedAveragePool().eval(), calib, x, tmp_path / "pool.tflite")
    assert result.artifact.lowering["pools_sharing_one_scale"] == 1
    assert np.abs(got - ref).max() <= 0.02 * np.ptp(ref)


class PoolReadByThreeConvs(nn.Module):
    """GoogLeNet between two inception blocks: a concatenation, max pooled, then read by three branches (one
    through another max pool) that are concatenated again."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.b1, self.b2 = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 8, 3, padding=1)
        self.b3 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(16, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))
        return torch.cat([torch.relu(b(x)) for b in (self.b1, self.b2, self.b3)], 1).flatten(1)


def test_int8_max_pool_read_by_several_convs_matches_its_twin(tmp_path):
    # litert-torch leaves a max pool after a concatenation unannotated; its readers then each requantised it and
    # the converter fed them the unrequantised tensor: 3.5% of the output range off the twin here (googlenet
    # 23%), 0.4% with the pool on its input's scale
    torch.manual_seed(0)
    model = PoolReadByThreeConvs().eval()
    with torch.no_grad():  # biases large against the convs' outputs, as BatchNorm folding leaves them
        model.b1.bias.add_(3.0)
        model.b2.bias.add_(3.0)
    gen = torch.Generator().manual_seed(0)
    calib, x = torch.randn(8, 3, 16, 16, generator=gen), torch.randn(4, 3, 16, 16, generator=gen)
    result, got, ref = _int8_against_twin(model, calib, x, tmp_path / "fan.tflite")
    assert result.artifact.lowering["pools_sharing_one_scale"] == 2
    assert np.abs(got - ref).max() <= 0.015 * np.ptp(ref)


def test_delegation_facts_name_the_op_xnnpack_rejects(tmp_path):
    model = WithCumsum().eval()
    x = torch.randn(1, 3, 16, 16)
    art = get_exporter("tflite").export(model, x, x, Plan(target="tflite"), tmp_path / "cumsum.tflite").artifact
    low = art.lowering
    assert low["not_delegated_to_xnnpack"] == ["CUMSUM"]
    assert low["ops"]["CUMSUM"] == 1
    assert low["xnnpack_partitions"] == 2  # the graph is split around CUMSUM
    assert 0 < low["delegated_op_share"] < 1


def test_unsupported_scheme_and_bad_plan_raise_config_error(tmp_path, data):
    exporter = get_exporter("tflite")
    model, x = _tiny(), data[0][:1]
    with pytest.raises(ConfigError, match="int4"):
        exporter.export(model, x, x, Plan(target="tflite", scheme="int4"), tmp_path / "m.tflite")
    with pytest.raises(ConfigError, match="plan.target"):
        exporter.export(model, x, x, Plan(target="onnx"), tmp_path / "m.tflite")
    with pytest.raises(ConfigError, match="calibration"):
        exporter.export(model, x, x[:0], Plan(target="tflite", scheme="int8"), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_data_dependent_control_flow_raises_one_line_unsupported(tmp_path):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UnsupportedModelError) as info:
        get_exporter("tflite").export(DataDependent().eval(), x, x, Plan(target="tflite"), tmp_path / "dd.tflite")
    message = str(info.value)
    assert "\n" not in message
    assert "tflite" in message and "fp32" in message and "data-dependent" in message
    assert info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_host_runner_measures_tflite(exported, data):
    result = exported[2]["int8"]
    inputs = data[1][:8].numpy()
    m = HostRunner().measure(result.artifact, inputs, warmup=2, runs=5, threads=1)
    assert m.runner == "ai_edge_litert.Interpreter" and m.where == "host"
    assert m.runs == 5 and m.warmup_runs == 2 and m.threads == 1
    assert 0 < m.latency_p50_ms <= m.latency_p90_ms
    assert m.size_bytes == result.artifact.size_bytes
    assert m.outputs.shape == (8, 10) and m.outputs.dtype == np.float32
    assert np.abs(m.outputs - result.reference(data[1][:8]).numpy()).max() <= 4 * result.artifact.outputs[0].scale
    assert m.runtime_versions == {"ai_edge_litert": m.runtime_versions["ai_edge_litert"]}
    assert "VmRSS" in m.memory_method or "not measured" in m.memory_method
