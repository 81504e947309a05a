"""Model specs: torchvision, timm and user factories resolve to a module in eval mode with a batch-1 input shape."""

from __future__ import annotations

import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.modelspec import parse_input_shape, resolve_model


def test_torchvision_architecture_without_weights():
    spec = resolve_model("torchvision:mobilenet_v3_small", input_shape=(1, 3, 64, 64))
    assert spec.name == "mobilenet_v3_small" and spec.input_shape == (1, 3, 64, 64)
    assert not spec.module.training
    assert spec.default_data is None


def test_torchvision_default_shape_is_imagenet():
    assert resolve_model("torchvision:squeezenet1_1").input_shape == (1, 3, 224, 224)


def test_timm_input_shape_comes_from_its_config():
    spec = resolve_model("timm:mobilenetv3_small_050")
    assert spec.input_shape == (1, 3, 224, 224)
    assert spec.module(torch.zeros(spec.input_shape)).shape == (1, 1000)


def test_unknown_torchvision_name():
    with pytest.raises(ModelError, match="torchvision:resnet9000"):
        resolve_model("torchvision:resnet9000")


def test_factory_shape_from_attribute_and_override(user_models):
    assert resolve_model("user_models:tiny").input_shape == (1, 1, 8, 8)
    assert resolve_model("user_models:tiny", input_shape=(1, 1, 12, 12)).input_shape == (1, 1, 12, 12)


def test_a_shape_the_model_cannot_take(user_models):
    with pytest.raises(ModelError, match=r"\(1, 3, 8, 8\)"):
        resolve_model("user_models:tiny", input_shape=(1, 3, 8, 8))


def test_weights_are_loaded(user_models, tmp_path):
    import user_models as um

    state = um.tiny().state_dict()
    state["head.bias"] = torch.full((10,), 7.0)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    spec = resolve_model("user_models:tiny", weights=str(path))
    assert torch.equal(spec.module.head.bias, torch.full((10,), 7.0))


@pytest.mark.parametrize(("text", "shape"), [("1,3,224,224", (1, 3, 224, 224)), ("1x1x8x8", (1, 1, 8, 8))])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("spec", ["resnet18", "examples:mnist", ":factory"])
def test_specs_that_are_not_understood(spec):
    with pytest.raises(ModelError, match=spec):
        resolve_model(spec)
