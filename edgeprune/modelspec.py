"""Resolve a model spec string to a `ModelSpec`: the module in eval mode plus its batch-1 input shape.

Forms: `examples:digits`, `torchvision:NAME`, `timm:NAME`, `pkg.module:factory` (a callable returning an
`nn.Module`). Weights are a state_dict loaded with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import copy
import importlib
import pickle
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgeprune._deps import require
from edgeprune.errors import ModelError
from edgeprune.types import ModelSpec

SPEC_FORMS = "examples:digits, torchvision:NAME, timm:NAME or pkg.module:factory"
DEFAULT_IMAGE_SHAPE = (1, 3, 224, 224)
IMAGE_PREPROCESSING = "float32 NCHW; apply the preprocessing the model was trained with (not recorded by edgeprune)"


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' -> (1, 3, 224, 224); batch must be 1 (mobile inference is batch 1)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ModelError(f"--input-shape '{text}' is malformed; give comma-separated integers like 1,3,224,224") from None
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise ModelError(f"--input-shape '{text}' needs at least 2 positive dimensions, like 1,3,224,224")
    if shape[0] != 1:
        raise ModelError(f"--input-shape '{text}' has batch {shape[0]}; edgeprune builds batch-1 models, use 1,{','.join(map(str, shape[1:]))}")
    return shape


def load_weights(module: nn.Module, path: str) -> None:
    """Load a state_dict file into `module`, refusing pickled code and naming the first mismatched key."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"weights file '{path}' does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"weights file '{path}' holds pickled objects that are not plain tensors; refused (not run). "
            "Save a state_dict with torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"weights file '{path}' could not be read as a torch state_dict: {reason}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file '{path}' is not a state_dict (a mapping of names to tensors)")
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ModelError(f"weights file '{path}' does not match the model: key '{key}' is missing")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"weights file '{path}' does not match the model: key '{key}' has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelError(f"weights file '{path}' does not match the model: unexpected key '{extra[0]}'")
    module.load_state_dict(state)


def _factory(spec: str) -> Callable[[], object]:
    module_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model spec '{spec}': module '{module_name}' does not import ({exc}); forms: {SPEC_FORMS}") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ModelError(f"model spec '{spec}': '{module_name}' has no callable '{attr}'")
    return factory


def _torchvision(name: str) -> nn.Module:
    tv = require("torchvision", extra="vision")
    if name not in tv.models.list_models():
        raise ModelError(f"model spec 'torchvision:{name}': unknown architecture; see torchvision.models.list_models()")
    return tv.models.get_model(name, weights=None)


def _timm(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    timm = require("timm", extra="vision")
    try:
        module = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        raise ModelError(f"model spec 'timm:{name}': {str(exc).splitlines()[0]}") from None
    shape = tuple(module.pretrained_cfg.get("input_size", DEFAULT_IMAGE_SHAPE[1:]))
    return module, (1, *shape)


def spec_from_module(
    module: nn.Module, *, input_shape: tuple[int, ...] | None = None, name: str | None = None,
) -> ModelSpec:
    """A `ModelSpec` for a module the caller already holds (the Python API): its input shape comes from
    `input_shape` or the module's `example_input_shape` attribute."""
    if not isinstance(module, nn.Module):
        raise ModelError(f"model is a {type(module).__name__}, not a torch.nn.Module; pass the module or a spec string "
                         f"({SPEC_FORMS})")
    name = name or type(module).__name__
    shape = input_shape if input_shape is not None else getattr(module, "example_input_shape", None)
    if shape is None:
        raise ModelError(f"model '{name}': input shape unknown; pass input_shape=(1, C, H, W) or set the module's "
                         "example_input_shape attribute")
    module = copy.deepcopy(module)  # eval mode and export must not change the caller's module
    return _settle(module, tuple(int(d) for d in shape), spec=f"python:{name}", name=name,
                   preprocessing=IMAGE_PREPROCESSING, default_data=None, weights=None)


def resolve_model(
    spec: str,
    *,
    weights: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ModelSpec:
    """Build the module named by `spec`, load `weights` into it, and settle its input shape.

    The input shape comes from `input_shape` when given, else from the example or architecture, else
    from a `example_input_shape` attribute on a user factory's module.
    """
    default_data = None
    preprocessing = IMAGE_PREPROCESSING
    if spec == "examples:digits":
        from edgeprune.data import DIGITS_PREPROCESSING
        from edgeprune.examples import digits

        module = digits.build_model() if weights else digits.load_trained(progress=progress)
        shape, name, default_data, preprocessing = digits.INPUT_SHAPE, "digits", spec, DIGITS_PREPROCESSING
    elif spec.startswith("examples:"):
        raise ModelError(f"model spec '{spec}': unknown example; known: examples:digits")
    elif spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        module, shape = _torchvision(name), DEFAULT_IMAGE_SHAPE
    elif spec.startswith("timm:"):
        name = spec.split(":", 1)[1]
        module, shape = _timm(name)
    elif ":" in spec and all(spec.split(":", 1)):
        name = spec.split(":", 1)[1]
        made = _factory(spec)()
        if not isinstance(made, nn.Module):
            raise ModelError(f"model spec '{spec}': the factory returned {type(made).__name__}, not a torch.nn.Module")
        module = made
        shape = getattr(module, "example_input_shape", None)
        if shape is None and input_shape is None:
            raise ModelError(f"model spec '{spec}': input shape unknown; pass --input-shape, e.g. 1,3,224,224")
    else:
        raise ModelError(f"model spec '{spec}' is not understood; forms: {SPEC_FORMS}")

    if weights:
        load_weights(module, weights)
    shape = tuple(input_shape) if input_shape is not None else tuple(shape)
    return _settle(module, shape, spec=spec, name=name, preprocessing=preprocessing, default_data=default_data,
                   weights=weights)


def _settle(module: nn.Module, shape: tuple[int, ...], *, spec: str, name: str, preprocessing: str,
            default_data: str | None, weights: str | None) -> ModelSpec:
    """Put `module` in eval mode and check that it runs on a batch-1 input of `shape`."""
    if len(shape) < 2 or shape[0] != 1 or any(d <= 0 for d in shape):
        raise ModelError(f"model '{spec}': input shape {shape} must be batch 1 with positive dimensions, like (1, 3, 224, 224)")
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(shape))
    except Exception as exc:  # the user's model and shape disagree: say so in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"model '{spec}' fails on an input of shape {shape}: {reason}; check --input-shape") from None
    return ModelSpec(
        spec=spec,
        name=name,
        module=module,
        input_shape=shape,
        preprocessing=preprocessing,
        default_data=default_data,
        weights=weights,
    )
