"""Resolve a model spec string to a `ModelSpec`: the module in eval mode plus its batch-1 input shape.

Forms: `examples:digits`, `examples:shapes-detect`, `examples:shapes-segment`, `torchvision:NAME`, `timm:NAME`,
`pkg.module:factory` (a callable returning an `nn.Module`). Weights are a state_dict loaded with
`torch.load(..., weights_only=True)`.

torchvision detection and segmentation builders are built offline (`weights=None, weights_backbone=None`; weights
only through `--weights`, a state_dict of the torchvision model) and wrapped by `edgeprune.vision_heads` so that
forward returns the raw heads; the wrapper's `postprocess_steps` names what the app must run on them.
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

SPEC_FORMS = ("examples:digits, examples:shapes-detect, examples:shapes-segment, torchvision:NAME, timm:NAME or "
              "pkg.module:factory")
EXAMPLES = ("examples:digits", "examples:shapes-detect", "examples:shapes-segment")
DEFAULT_IMAGE_SHAPE = (1, 3, 224, 224)
DETECTION_SHAPE = (1, 3, 512, 512)
SEGMENTATION_SHAPE = (1, 3, 520, 520)
DETECTION_PREPROCESSING = ("float32 NCHW RGB in [0, 1], resized to the input size; the mean/std normalisation is "
                           "inside the model")
SEGMENTATION_PREPROCESSING = ("float32 NCHW RGB in [0, 1] resized to the input size, then normalised with mean "
                              "(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) as torchvision's weights expect")
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


def torchvision_task(name: str) -> str | None:
    """'detection' or 'segmentation' for torchvision builders of those kinds, else None."""
    tv = require("torchvision", extra="vision")
    if name in tv.models.list_models(module=tv.models.detection):
        return "detection"
    if name in tv.models.list_models(module=tv.models.segmentation):
        return "segmentation"
    return None


def default_vision_shape(name: str) -> tuple[int, ...]:
    """Batch-1 input shape a detection/segmentation builder is resolved at when none is given: the fixed size of
    SSD300 / SSDLite320, 512x512 for RetinaNet / FCOS (their 800-1333 px desktop resize is too large for phones;
    512 keeps every FPN level whole), 520x520 for segmenters (the resize of torchvision's segmentation weights)."""
    if name.startswith("ssdlite320"):
        return (1, 3, 320, 320)
    if name.startswith("ssd300"):
        return (1, 3, 300, 300)
    if torchvision_task(name) == "segmentation":
        return SEGMENTATION_SHAPE
    return DETECTION_SHAPE


def _weights_keys(path: str) -> set[str]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_weights reports the problem in its own words
        return set()
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return set(state) if isinstance(state, dict) else set()


def _torchvision_vision(name: str, task: str, shape: tuple[int, ...], weights: str | None) -> nn.Module:
    """A detection or segmentation builder built offline (no weights, no backbone weights unless `weights` is
    given), `weights` loaded, then wrapped so forward returns the raw heads (edgeprune.vision_heads)."""
    from edgeprune import vision_heads

    tv = require("torchvision", extra="vision")
    kwargs: dict[str, object] = {"weights": None, "weights_backbone": None}
    if task == "segmentation" and weights and any(k.startswith("aux_classifier.") for k in _weights_keys(weights)):
        kwargs["aux_loss"] = True  # the file holds the aux head: build it to load, the wrapper then drops it
    try:
        model = tv.models.get_model(name, **kwargs)
    except TypeError as exc:
        raise ModelError(f"model spec 'torchvision:{name}' cannot be built offline: {exc}") from None
    if task == "detection" and vision_heads._family(model) == "two-stage":
        vision_heads.wrap_detector(model, shape, name=f"torchvision:{name}")  # raises the one-line ModelError
    if weights:
        load_weights(model, weights)
    if len(shape) != 4 or shape[:2] != (1, 3):
        raise ModelError(f"model 'torchvision:{name}': input shape {shape} must be (1, 3, H, W)")
    if task == "detection":
        return vision_heads.wrap_detector(model, shape, name=f"torchvision:{name}")
    return vision_heads.SegmentationLogits(model, shape)


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
    weights_loaded = False  # set where a branch loads `weights` itself (before wrapping the module)
    if spec == "examples:digits":
        from edgeprune.data import DIGITS_PREPROCESSING
        from edgeprune.examples import digits

        module = digits.build_model() if weights else digits.load_trained(progress=progress)
        shape, name, default_data, preprocessing = digits.INPUT_SHAPE, "digits", spec, DIGITS_PREPROCESSING
    elif spec in ("examples:shapes-detect", "examples:shapes-segment"):
        from edgeprune.examples import shapes

        task = "detection" if spec.endswith("detect") else "segmentation"
        if input_shape is not None and tuple(input_shape) != shapes.INPUT_SHAPE:
            raise ModelError(f"model spec '{spec}' takes input shape {shapes.INPUT_SHAPE}, not {tuple(input_shape)}")
        module = shapes.build_model(task) if weights else shapes.load_trained(task, progress=progress)
        shape, name, default_data, preprocessing = shapes.INPUT_SHAPE, spec.split(":", 1)[1], spec, shapes.PREPROCESSING
    elif spec.startswith("examples:"):
        raise ModelError(f"model spec '{spec}': unknown example; known: {', '.join(EXAMPLES)}")
    elif spec.startswith("torchvision:") and torchvision_task(spec.split(":", 1)[1]):
        name = spec.split(":", 1)[1]
        task = torchvision_task(name)
        shape = tuple(input_shape) if input_shape is not None else default_vision_shape(name)
        module = _torchvision_vision(name, task, shape, weights)
        weights_loaded = True
        preprocessing = DETECTION_PREPROCESSING if task == "detection" else SEGMENTATION_PREPROCESSING
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

    if weights and not weights_loaded:
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
