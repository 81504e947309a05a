"""torchvision detection and segmentation specs: built offline, wrapped to return raw heads (decoded on the host
exactly as torchvision's own eval forward does), refused with a typed error where they cannot be, and exportable."""

from __future__ import annotations

import socket

import pytest
import torch
from torchvision import models as tvm

from edgeprune import vision_heads
from edgeprune.errors import ModelError
from edgeprune.modelspec import resolve_model

DETECTION = tvm.list_models(module=tvm.detection)
SEGMENTATION = tvm.list_models(module=tvm.segmentation)
SMALL = (1, 3, 128, 128)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No socket may connect, and torch's download folder is an empty temporary one."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield home
    assert not home.exists() or not any(home.rglob("*")), "something was downloaded"


def test_every_detection_and_segmentation_builder_resolves_offline(offline):
    assert "ssdlite320_mobilenet_v3_large" in DETECTION and "lraspp_mobilenet_v3_large" in SEGMENTATION
    for name in DETECTION + SEGMENTATION:
        spec = f"torchvision:{name}"
        if "rcnn" in name:
            with pytest.raises(ModelError, match=f"model '{spec}' is a two-stage detector") as info:
                resolve_model(spec, input_shape=SMALL)
            assert "\n" not in str(info.value)
            continue
        if name == "ssd300_vgg16":  # VGG's extra layers need about 268 px: a typed error below that
            with pytest.raises(ModelError, match=r"fails on an input of shape \(1, 3, 128, 128\).*larger input"):
                resolve_model(spec, input_shape=SMALL)
            continue
        model = resolve_model(spec, input_shape=SMALL).module
        with torch.no_grad():
            out = model(torch.rand(SMALL))
        if name in SEGMENTATION:
            assert isinstance(out, torch.Tensor) and out.shape == (1, 21, 128, 128), name
            assert model.task == "segmentation" and "argmax" in model.postprocess_steps
        else:
            assert list(out) == list(model.output_names) and model.task == "detection", name
            anchors = model.anchors.shape[0]
            assert out["cls_logits"].shape == (1, anchors, 91) and out["bbox_regression"].shape == (1, anchors, 4)
            assert f"{anchors} anchors" in model.postprocess_steps and "NMS" in model.postprocess_steps
        for layer in model.output_layer_names:  # what pruning must keep whole exists
            assert isinstance(model.get_submodule(layer), torch.nn.Conv2d), (name, layer)


def test_default_input_shapes_of_the_mobile_specs(offline):
    ssd = resolve_model("torchvision:ssdlite320_mobilenet_v3_large")
    assert ssd.input_shape == (1, 3, 320, 320) and ssd.module.anchors.shape == (3234, 4)
    assert "normalisation is inside the model" in ssd.preprocessing
    seg = resolve_model("torchvision:lraspp_mobilenet_v3_large")
    assert seg.input_shape == (1, 3, 520, 520) and "mean (0.485" in seg.preprocessing


@pytest.mark.parametrize("name, size, kwargs", [
    ("ssdlite320_mobilenet_v3_large", 320, {}),
    ("retinanet_resnet50_fpn_v2", 128, {"min_size": 128, "max_size": 128, "score_thresh": 0.005}),
    ("fcos_resnet50_fpn", 128, {"min_size": 128, "max_size": 128, "score_thresh": 0.05}),
])
def test_postprocess_reproduces_torchvisions_own_detections(name, size, kwargs):
    torch.manual_seed(0)
    detector = tvm.get_model(name, weights=None, weights_backbone=None, **kwargs).eval()
    heads = vision_heads.wrap_detector(detector, (1, 3, size, size), name=name)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        expected = detector(list(x))
        raw = heads(x)
    got = heads.postprocess({k: v.numpy() for k, v in raw.items()})  # as a runtime hands them back
    for want, have in zip(expected, got):
        assert len(want["boxes"]) > 10
        torch.testing.assert_close(have["boxes"], want["boxes"])
        torch.testing.assert_close(have["scores"], want["scores"])
        assert torch.equal(have["labels"], want["labels"])
    assert vision_heads.postprocess_of(heads) == heads.postprocess


def test_weights_load_into_the_torchvision_model_before_wrapping(tmp_path, offline):
    torch.manual_seed(1)
    reference = tvm.get_model("deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None,
                              aux_loss=True).eval()
    path = tmp_path / "deeplab.pt"
    torch.save(reference.state_dict(), path)  # holds the aux head, as torchvision's published weights do
    spec = resolve_model("torchvision:deeplabv3_mobilenet_v3_large", weights=str(path), input_shape=SMALL)
    x = torch.rand(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(spec.module(x), reference(x)["out"])
    assert spec.module.model.aux_classifier is None and spec.weights == str(path)


@pytest.mark.parametrize("spec", ["torchvision:ssdlite320_mobilenet_v3_large", "torchvision:lraspp_mobilenet_v3_large"])
def test_wrappers_export_with_torch_export(spec, offline):
    model = resolve_model(spec).module
    x = torch.rand(model.example_input_shape)
    program = torch.export.export(model, (x,), strict=False)
    with torch.no_grad():
        eager, exported = model(x), program.module()(x)
    if isinstance(eager, dict):
        assert list(exported) == list(eager)
        for key in eager:
            torch.testing.assert_close(exported[key], eager[key])
    else:
        torch.testing.assert_close(exported, eager)
