"""ONNX exporter, ORT-format conversion and runtime session, on the real torch.onnx / onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeprune._io import sha256_file
from edgeprune.errors import ConfigError, UnsupportedModelError
from edgeprune.export import get_exporter
from edgeprune.export.onnx import to_ort_format
from edgeprune.runners.host import HostRunner
from edgeprune.runners.runtimes import open_session
from edgeprune.types import Plan

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
    out = tmp_path_factory.mktemp("onnx")
    exporter = get_exporter("onnx")
    results = {
        s: exporter.export(model, calib[:1], calib, Plan(target="onnx", scheme=s), out / f"tiny_{s}.onnx")
        for s in SCHEMES
    }
    return model, out, results


def _run_ort(path, x: np.ndarray) -> np.ndarray:
    """Every row through a fresh onnxruntime InferenceSession on the CPU provider."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_loads_in_onnxruntime_and_matches_reference(exported, data, scheme):
    model, _, results = exported
    result = results[scheme]
    got = _run_ort(result.artifact.path, data[1].numpy())
    ref = result.reference(data[1]).numpy()
    assert got.shape == ref.shape == (64, 10) and got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    span = float(np.abs(ref).max())
    if scheme == "fp32":
        assert diff <= 1e-4
    elif scheme == "fp16":
        # Reference is the same half-precision module in PyTorch. Both round weights and every intermediate to
        # fp16 (unit roundoff 2^-11) but at different points and with different accumulation; 8 ulps at the
        # output's magnitude (~3.9e-3 * span) bounds that, and still fails an int8-quality artifact.
        assert result.artifact.lowering["reference"] == "fp16_module"
        assert diff <= 8 * 2.0**-11 * span, (diff, span)
        with torch.no_grad():
            fp32 = model(data[1]).numpy()
        assert _top1(got, fp32) >= 0.9
        proto = onnx.load(str(result.artifact.path))
        weights = {i.data_type for i in proto.graph.initializer if len(i.dims) > 1}
        assert weights == {onnx.TensorProto.FLOAT16}
    elif scheme == "int8":
        # The reference is the QDQ graph run unfused (float ops between Q/DQ pairs): the runtime's int8 kernels
        # differ from it only by requantisation rounding, a few quantisation steps of the logits; a wrong scale,
        # zero point or channel order is off by a large fraction of their range.
        assert result.artifact.lowering["reference"] == "qdq_unfused"
        assert _top1(got, ref) >= 0.98
        assert diff <= 0.05 * float(np.ptp(ref)), (diff, float(np.ptp(ref)))
        with torch.no_grad():  # and the quantised model still tracks the float one
            fp32 = model(data[1]).numpy()
        assert _top1(got, fp32) >= 0.9
        assert float(np.abs(got - fp32).max()) <= 0.05 * span
    else:
        # Dynamic quantisation has no twin to compare with: the reference is the fp32 module, so parity is top-1
        # agreement, plus a loose logits bound (int8 weights, activations quantised per inference).
        assert result.artifact.lowering["reference"] == "fp32"
        assert _top1(got, ref) >= 0.9
        assert diff <= 0.05 * span, (diff, span)


def test_artifact_facts_match_file(exported):
    _, out, results = exported
    for scheme, result in results.items():
        art = result.artifact
        assert art.target == "onnx" and art.scheme == scheme and art.path.suffix == ".onnx"
        assert art.size_bytes == art.path.stat().st_size > 0
        assert art.sha256 == sha256_file(art.path)
        assert art.export_s > 0
        assert art.inputs[0].shape == (1, 3, 16, 16) and art.inputs[0].dtype == "float32"
        assert art.outputs[0].shape == (1, 10) and art.outputs[0].dtype == "float32"
        assert art.outputs[0].name == "output"
        assert art.lowering["opset"] == 18
        proto = onnx.load(str(art.path))
        assert not any(n.metadata_props for n in proto.graph.node), "exporter stack traces left in the model"
    nodes = {s: r.artifact.lowering["nodes"] for s, r in results.items()}
    assert "BatchNormalization" not in nodes["fp32"] and nodes["fp32"]["Conv"] == 3
    assert nodes["int8"]["QuantizeLinear"] >= 1 and nodes["int8"]["DequantizeLinear"] >= 1
    assert "ConvInteger" in nodes["int8-dynamic"] and "MatMulInteger" in nodes["int8-dynamic"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"tiny_{s}.onnx" for s in SCHEMES)  # no temp files


def test_to_ort_format_writes_a_loadable_ort_model(exported, data, tmp_path):
    src = exported[2]["int8"].artifact.path
    model_path = tmp_path / src.name
    model_path.write_bytes(src.read_bytes())
    ort_path = to_ort_format(model_path)
    assert ort_path == tmp_path / "tiny_int8.ort" and ort_path.stat().st_size > 0
    assert (tmp_path / "tiny_int8.required_operators.config").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tiny_int8.onnx", "tiny_int8.ort", "tiny_int8.required_operators.config"]
    )
    x = data[1][:16].numpy()
    got, ref = _run_ort(ort_path, x), exported[2]["int8"].reference(data[1][:16]).numpy()
    assert _top1(got, ref) >= 0.9
    assert np.abs(got - _run_ort(model_path, x)).max() <= 0.02 * np.abs(ref).max()
    with pytest.raises(ConfigError, match="target_platform"):
        to_ort_format(model_path, target_platform="x86")
    with pytest.raises(ConfigError, match="not an existing .onnx"):
        to_ort_format(ort_path)


def test_exporter_with_ort_format_writes_ort_beside_onnx(tmp_path, data):
    from edgeprune.export.onnx import OnnxExporter

    x = data[0][:1]
    art = OnnxExporter(ort_format=True).export(_tiny(), x, x, Plan(target="onnx"), tmp_path / "m.onnx").artifact
    assert art.lowering["ort_path"] == str(tmp_path / "m.ort")
    x4 = data[1][:4].numpy()
    np.testing.assert_allclose(_run_ort(tmp_path / "m.ort", x4), _run_ort(art.path, x4), atol=1e-5)


def test_session_reports_float_outputs_memory_and_versions(exported, data):
    result = exported[2]["fp16"]
    session = open_session(result.artifact, threads=1)
    try:
        got = session.run(data[1][:1].numpy())
        assert got.shape == (1, 10) and got.dtype == np.float32
        peak, method = session.memory()
        assert method and (peak is None or peak >= 0)
        assert session.versions()["onnxruntime"] == ort.__version__
    finally:
        session.close()


def test_unsupported_scheme_and_bad_plan_raise_config_error(tmp_path, data):
    exporter = get_exporter("onnx")
    model, x = _tiny(), data[0][:1]
    with pytest.raises(ConfigError, match="int4"):
        exporter.export(model, x, x, Plan(target="onnx", scheme="int4"), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="plan.target"):
        exporter.export(model, x, x, Plan(target="tflite"), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="calibration"):
        exporter.export(model, x, x[:0], Plan(target="onnx", scheme="int8"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_data_dependent_control_flow_raises_one_line_unsupported(tmp_path):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UnsupportedModelError) as info:
        get_exporter("onnx").export(DataDependent().eval(), x, x, Plan(target="onnx"), tmp_path / "dd.onnx")
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "onnx" in message and "fp32" in message and "data-dependent" in message
    assert list(tmp_path.iterdir()) == []  # no half-written .onnx, no temp folder


def test_host_runner_measures_onnx(exported, data):
    result = exported[2]["int8"]
    inputs = data[1][:8].numpy()
    m = HostRunner().measure(result.artifact, inputs, warmup=2, runs=5, threads=1)
    assert m.runner == "onnxruntime.InferenceSession" and m.where == "host"
    assert m.runs == 5 and m.warmup_runs == 2 and m.threads == 1
    assert 0 < m.latency_p50_ms <= m.latency_p90_ms
    assert m.size_bytes == result.artifact.size_bytes
    assert m.outputs.shape == (8, 10) and m.outputs.dtype == np.float32
    np.testing.assert_allclose(m.outputs, _run_ort(result.artifact.path, inputs), atol=1e-6)
    assert m.runtime_versions == {"onnxruntime": ort.__version__}
    assert "VmRSS" in m.memory_method or "not measured" in m.memory_method
