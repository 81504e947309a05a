"""Models whose forward returns several tensors: a dict (nested one level) and a tuple (holding a dict), built for
ExecuTorch, LiteRT and ONNX on the host runner; every output comes back from each runtime in the model's order, is
listed in the manifest by key, shape and dtype, and is judged for parity output by output. Outputs that are not
tensors are refused early with one line naming the output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.cli import main
from edgeprune.data import generated_data
from edgeprune.errors import ConfigError, ModelError
from edgeprune.judge import OUTPUT_PARITY_LIMITS, assess_quality, output_parity
from edgeprune.outputs import describe, read_remote
from edgeprune.pipeline import BuildRequest, build
from edgeprune.runners import remote_measure
from edgeprune.runners.host import HostRunner
from edgeprune.validation import validate

SHAPE = (1, 3, 16, 16)
TARGETS = ("executorch", "tflite", "onnx")


class Trunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class DictHeads(nn.Module):
    """Keys inserted out of alphabetical order, one level nested, every output a different shape."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.score = nn.Conv2d(8, 3, 1)
        self.box = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.embed = nn.Linear(8, 6)
        self.depth = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> dict:
        f = self.trunk(x)
        return {"scores": self.score(f), "boxes": self.box(f),
                "aux": {"embedding": self.embed(f.mean((2, 3))), "depth": self.depth(f)}}


class TupleHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.cls = nn.Linear(8, 5)
        self.mask = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        f = self.trunk(x)
        return self.cls(f.mean((2, 3))), f[:, :4], {"mask": self.mask(f)}


DICT_KEYS = [("scores", (1, 3, 16, 16)), ("boxes", (1, 4, 8, 8)), ("aux.embedding", (1, 6)), ("aux.depth", (1, 1, 16, 16))]
TUPLE_KEYS = [("0", (1, 5)), ("1", (1, 4, 16, 16)), ("2.mask", (1, 2, 16, 16))]


def _model(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = cls().eval()
    with torch.no_grad():  # BatchNorm statistics of a trained model, not the identity of a fresh one
        model.trunk.bn.running_mean.uniform_(-0.5, 0.5)
        model.trunk.bn.running_var.uniform_(0.5, 2.0)
    return model


def _build(model: nn.Module, out, quant: str = "fp32"):
    # generated inputs (no data given): `validate` regenerates the same test split
    request = BuildRequest(model=model, out=out, input_shape=SHAPE, data=None, targets=TARGETS,
                           quant=quant, runs=3, warmup=1, blocks=1)
    return build(request)


@pytest.fixture(scope="module")
def dict_build(tmp_path_factory):
    model = _model(DictHeads)
    return model, _build(model, tmp_path_factory.mktemp("dict") / "dist")


@pytest.fixture(scope="module")
def tuple_build(tmp_path_factory):
    model = _model(TupleHeads)
    return model, _build(model, tmp_path_factory.mktemp("tuple") / "dist")


def _torch_outputs(model: nn.Module, x: np.ndarray, keys: list[str]) -> dict[str, np.ndarray]:
    rows = []
    with torch.no_grad():
        for i in range(len(x)):
            out = model(torch.from_numpy(x[i : i + 1]))
            flat = {"0": out[0], "1": out[1], "2.mask": out[2]["mask"]} if isinstance(out, tuple) else {
                "scores": out["scores"], "boxes": out["boxes"], "aux.embedding": out["aux"]["embedding"],
                "aux.depth": out["aux"]["depth"]}
            rows.append(flat)
    return {k: np.concatenate([r[k].numpy() for r in rows]) for k in keys}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["dict", "tuple"])
def test_every_output_comes_back_from_every_runtime_in_the_models_order(which, dict_build, tuple_build):
    model, result = dict_build if which == "dict" else tuple_build
    expected = DICT_KEYS if which == "dict" else TUPLE_KEYS
    keys = [k for k, _ in expected]
    manifest = json.loads((result.out / "host" / "manifest.json").read_text())
    assert {a["target"] for a in manifest["artifacts"]} == set(TARGETS)
    for rep in result.devices["host"].artifacts:
        entry = next(a for a in manifest["artifacts"] if a["target"] == rep.target)
        # the manifest lists each output by key, shape and dtype, in the order forward returns them
        assert [(o["key"], tuple(o["shape"]), o["dtype"]) for o in entry["outputs"]] == [
            (k, s, "float32") for k, s in expected], rep.target
        named = rep.measurement.named_outputs
        assert list(named) == keys and rep.measurement.outputs is named[keys[0]]
        for (key, shape), parity in zip(expected, entry["quality"]["outputs_parity"]):
            assert parity["output"] == key and parity["passed"] is True and parity["failure"] == ""
            assert named[key].shape[1:] == shape[1:]
            assert parity["relative_error"] <= OUTPUT_PARITY_LIMITS["fp32"]["relative_error"]
            assert parity["sqnr_db"] >= OUTPUT_PARITY_LIMITS["fp32"]["sqnr_db"]
            assert parity["max_abs_error"] <= 1e-4 * max(1.0, float(np.abs(named[key]).max()))
        quality = entry["quality"]
        assert quality["parity_passed"] is True and quality["class_logits"] is None
        assert quality["parity_metric"] == "relative_error" and quality["artifact_accuracy"] is None
    # each runtime's outputs are the model's, output by output (a swapped order would not be within 1e-4)
    test_x = generated_data(SHAPE).eval_x
    want = _torch_outputs(model, test_x, keys)
    for rep in result.devices["host"].artifacts:
        for key in keys:
            np.testing.assert_allclose(rep.measurement.named_outputs[key], want[key], atol=1e-4, rtol=1e-4,
                                       err_msg=f"{rep.target} output {key}")


@pytest.mark.slow
def test_validate_and_the_remote_script_carry_every_output(dict_build, tmp_path):
    _, result = dict_build
    folder = result.out / "host"
    records = validate(folder, HostRunner(), runs=1, warmup=0, blocks=1)
    assert len(records) == 3
    for record in records:
        parity = record["device_parity"]
        assert parity["passed"] is True
        assert [p["output"] for p in parity["outputs"]] == [k for k, _ in DICT_KEYS]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert all(e["host_reference"]["path"].endswith(".npz") for e in manifest["artifacts"])
    # remote_measure.py (what ssh and adb run on a device), here with this host's real runtimes: an .npz keyed by
    # the runtime's names, put back in the model's order by name
    rep = {r.target: r for r in result.devices["host"].artifacts}
    test_x = generated_data(SHAPE).eval_x
    np.save(tmp_path / "inputs.npy", test_x)
    for target in TARGETS:
        art = rep[target].export.artifact
        dest = tmp_path / f"{target}.npz"
        entry = next(a for a in manifest["artifacts"] if a["target"] == target)
        assert remote_measure.main(["--artifact", str(folder / entry["path"]), "--inputs", str(tmp_path / "inputs.npy"),
                                    "--outputs", str(dest), "--runs", "1", "--warmup", "0"]) == 0
        first, named = read_remote(dest.read_bytes(), art.outputs, len(test_x), "test")
        assert list(named) == [k for k, _ in DICT_KEYS]
        for key in named:
            np.testing.assert_allclose(named[key], rep[target].measurement.named_outputs[key], atol=1e-6)
        assert np.array_equal(first, named["scores"])


@pytest.mark.slow
def test_a_parity_failure_names_the_output_and_the_figure(dict_build):
    _, result = dict_build
    rep = next(r for r in result.devices["host"].artifacts if r.target == "onnx")
    measured = rep.measurement.output_map()
    reference = {k: v.copy() for k, v in measured.items()}
    reference["boxes"] = reference["boxes"] + np.random.default_rng(1).normal(
        0.0, 0.3 * float(np.std(reference["boxes"])), reference["boxes"].shape).astype(np.float32)
    quality = assess_quality("int8", measured, reference, reference, None)
    assert quality.parity_passed is False and quality.parity_metric == "sqnr_db"
    failure = quality.parity_failure
    assert failure.startswith("output 'boxes' SQNR ") and "under the int8 limit 20 dB" in failure, failure
    assert [p.passed for p in quality.outputs_parity] == [True, False, True, True]
    # fp32: a 1% error in one element is beyond its relative-error limit
    ref = reference["scores"]
    off = ref.copy()
    off.flat[7] += 0.01 * float(np.abs(ref).max())
    parity = output_parity("fp32", "scores", off, ref)
    assert not parity.passed and parity.failure.startswith("output 'scores' relative error 0.01 over the fp32 limit")


class Detections(nn.Module):
    """Post-processing inside forward, as torchvision's detectors do: a list of per-image dicts."""

    example_input_shape = SHAPE

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        scores = self.conv(x).flatten(2).amax(1)[0]
        keep = scores > scores.mean()
        return [{"boxes": torch.stack([scores[keep]] * 4, 1), "scores": scores[keep]}]


class WithNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return {"logits": self.conv(x), "aux": None}


class Thresholded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return {"dense": y, "peaks": y[y > 0.3].reshape(1, -1)}


DETECTIONS_FACTORY = "from test_multi_output import Detections\n\n\ndef detector():\n    return Detections()\n"


def test_detection_post_processing_in_forward_is_a_one_line_error_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_detector.py").write_text(DETECTIONS_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "dist"
    code = main(["build", "--model", "user_detector:detector", "--out", str(out), "--quiet", "--prune", "0",
                 "--target", "onnx", "--runs", "1", "--warmup", "0"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "model's output is a list of 1 dict(s), one per image" in lines[0]
    assert "export the heads' raw outputs and run post-processing such as NMS in the app" in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(("cls", "needle"), [
    (WithNone, "model output 'aux' is None, not a tensor"),
    (Thresholded, "model output 'peaks' "),
    (Detections, "model's output is a list of 1 dict(s)"),
])
def test_outputs_that_are_not_fixed_tensors_are_refused_naming_the_output(cls, needle):
    torch.manual_seed(0)
    with pytest.raises(ModelError) as info:
        describe(cls().eval(), torch.zeros(SHAPE))
    message = str(info.value)
    assert needle in message and "NMS in the app" in message and "\n" not in message


def test_pruning_a_model_with_several_outputs_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"pruning of a model with several outputs \(scores, boxes, aux.embedding, "
                                          r".*\) needs the layers that produce them: set `output_layer_names`"):
        build(BuildRequest(model=_model(DictHeads), out=tmp_path / "dist", input_shape=SHAPE, targets=("onnx",),
                           prune=0.5))
    assert not (tmp_path / "dist").exists()


def test_class_logits_keep_the_top1_rule_and_dense_outputs_get_per_output_figures():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    labels = logits.argmax(1)
    # a lone (N, C) output is class logits: int8 is judged by top-1 agreement, as classifiers always were
    quality = assess_quality("int8", logits, logits, logits, labels)
    assert (quality.parity_metric, quality.parity_value, quality.class_logits) == ("top1_agreement", 1.0, "output")
    assert quality.kind == "eval_accuracy" and quality.artifact_accuracy == 1.0
    # a lone dense output on unlabelled data (a segmenter's logits) is not: SQNR and relative error judge it
    masks = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
    quality = assess_quality("int8", masks, masks, masks, None)
    assert quality.parity_metric == "sqnr_db" and quality.class_logits is None and quality.artifact_accuracy is None
    # a declared class-logits output of a model with several
    named = {"boxes": masks[:, :1], "cls": logits[:8]}
    quality = assess_quality("fp32", named, named, named, labels[:8], class_logits="cls")
    assert [p.class_logits for p in quality.outputs_parity] == [False, True] and quality.artifact_accuracy == 1.0
