"""Data for planning and judging: a bundled example, a `.npz` file, a folder in one of three layouts, a
`pkg.module:callable`, in-memory arrays, or generated inputs.

Every loader returns a `Dataset` whose inputs are float32 shaped (N, *input_shape[1:]), split three ways,
deterministically for a given seed:

- train (60%): what fine-tuning learns from; the calibration set (10% of all samples, for int8 and BatchNorm
  calibration) is drawn from it, because calibration fits the model to data just as training does;
- validation (20%): what every planner choice is scored on;
- test (20%): held out from every choice; only the reported accuracies and the accuracy budget's verdict use it.

Labels come in four kinds, told apart by the labels themselves (`label_kind`):

- classes: integer class ids (N,), >= 0; `num_classes` is the largest id + 1. The split is stratified by class
  where every class has enough samples;
- masks: integer per-pixel class ids (N, H, W) (any rank >= 2), >= 0, with 255 (`VOID_LABEL`) marking void pixels
  that metrics ignore; `num_classes` is the largest id other than 255, + 1;
- values: floating regression targets of any shape (N, ...), finite; `num_classes` None;
- detections: one dict per sample with 'boxes' (K, 4; x1, y1, x2, y2 in input pixels, finite, x2 >= x1, y2 >= y1)
  and 'labels' (K,) integer class ids >= 0; K may be 0. Held as a 1-D object array of dicts (boxes float32, labels
  int64); `num_classes` is the largest label + 1.

Kinds other than classes are split to the same sizes, from the same seed, without stratification.

Sources:

- `examples:digits` (scikit-learn's digits) and `examples:shapes-detect` / `examples:shapes-segment`
  (`edgeprune.examples.shapes`): fixed splits, whatever the seed;
- a `.npz` file, read without pickles: `x` and `y` (classes, masks or values); or, for detection, `x` with
  `boxes` (M, 4) float, `box_labels` (M,) int and `box_image` (M,) int, the index in `x` of the image each box
  belongs to (an image may have no boxes);
- a folder, in one of three layouts. Images (png/jpg/jpeg/bmp) are converted to the model's 1 or 3 channels,
  resized bilinearly to its H x W and scaled to [0, 1]; files are taken in sorted name order.
  - classification: one subfolder of images per class; classes are numbered in sorted folder-name order;
  - segmentation: `images/` and `masks/`, a single-channel PNG mask per image with the same name stem whose pixel
    values are class ids (255: void), resized nearest-neighbour to H x W;
  - detection: `images/` and `annotations.json`, an object mapping every image's file name to
    {"boxes": [[x1, y1, x2, y2], ...], "labels": [...]} (empty lists for an image without objects), boxes in the
    original image's pixels, rescaled with the image;
- `pkg.module:callable`: called with no arguments, it returns (x, y) or {'x': x, 'y': y} ('y' optional: unlabelled),
  y of any kind above (detections as a list of dicts). A spec is read so when it is not an existing path, does not
  start with 'examples:' and its part before ':' is a dotted Python name;
- in-memory `(x, y)` (`dataset_from_arrays`), or no data: generated standard-normal inputs without labels.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import ConfigError, MissingDependencyError
from edgeprune.types import Dataset

DIGITS_SPEC = "examples:digits"
DIGITS_SPLIT_SEED = 0
"""The digits split is fixed: the bundled example model is trained on its train part, so its validation and test
parts must stay held out whatever seed a build runs with."""
DIGITS_INPUT_SHAPE: tuple[int, ...] = (1, 1, 8, 8)
DIGITS_PREPROCESSING = (
    "scikit-learn load_digits 8x8 grayscale image, pixel values 0..16 divided by 16 -> float32 in [0, 1], "
    "shape (1, 1, 8, 8), no mean/std normalisation"
)
SHAPES_SPECS = {"examples:shapes-detect": "detection", "examples:shapes-segment": "segmentation"}
"""The shapes examples' data specs and the `edgeprune.examples.shapes` task each gives."""
EXAMPLES = (DIGITS_SPEC, *SHAPES_SPECS)

TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
CALIB_FRACTION = 0.1
"""Of all samples, drawn from the train split."""
SPLIT_RULE = (f"train/validation/test {1 - TEST_FRACTION - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%}/{TEST_FRACTION:.0%}, "
              f"stratified; calibration {CALIB_FRACTION:.0%} drawn from train")
"""How data is split, in words: part of the digits example's recipe, so a new rule retrains the bundled model."""
GENERATED_CALIB = 32
GENERATED_EVAL = 64
GENERATED_VAL = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

LABEL_KINDS = ("classes", "masks", "values", "detections")
VOID_LABEL = 255
"""A mask pixel of this value is void: no class, ignored by metrics and by `num_classes`."""
NPZ_DETECTION_KEYS = ("boxes", "box_labels", "box_image")
IMAGES_DIR = "images"
MASKS_DIR = "masks"
ANNOTATIONS_FILE = "annotations.json"
MASK_MODES = ("1", "L", "P", "I", "I;16")
"""PIL modes a mask PNG may have: one channel of integer class ids."""
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")

ACCEPTED_FORMS = (
    "'examples:digits', 'examples:shapes-detect', 'examples:shapes-segment', "
    "a .npz file with arrays x (float, shaped like the model input without the batch axis) "
    "and y (integer labels, integer masks or float values) or, for detection, boxes, box_labels and box_image, "
    "a folder with one subfolder of images (png/jpg/bmp) per class, or with images/ and masks/ (segmentation), "
    "or with images/ and annotations.json (detection), a pkg.module:callable returning (x, y), "
    "or no data for generated random inputs"
)


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _reason(exc: BaseException) -> str:
    """'Type: first line of the message', for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_inputs(x: np.ndarray, input_shape: Sequence[int], what: str) -> None:
    """Raise ConfigError unless `x` is a non-empty, finite, floating array shaped (N, *input_shape[1:])."""
    expected = tuple(int(d) for d in input_shape[1:])
    if not isinstance(x, np.ndarray):
        raise ConfigError(f"{what} is a {type(x).__name__}, not a numpy array shaped (N, {', '.join(map(str, expected))})")
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ConfigError(
            f"{what} has shape {_shape_str(x.shape)} but the model input {_shape_str(input_shape)} needs "
            f"(N, {', '.join(map(str, expected))}); reshape or resize the data to match the model"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{what} has dtype {x.dtype}; the model takes floating-point inputs (cast to float32)")
    if len(x) == 0:
        raise ConfigError(f"{what} holds no samples; give at least one")
    if not np.isfinite(x).all():
        raise ConfigError(f"{what} contains NaN or infinite values; clean the data first")


def _split_sizes(n: int) -> tuple[int, int, int]:
    """(test, validation, calibration) sample counts for `n` samples (n >= 3): one of each at least."""
    n_test = max(1, round(TEST_FRACTION * n))
    n_val = max(1, round(VAL_FRACTION * n))
    n_calib = min(max(1, round(CALIB_FRACTION * n)), n - n_test - n_val)
    return n_test, n_val, n_calib


def _part(idx: np.ndarray, size: int, seed: int, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part): `size` of `idx` drawn at random, stratified by `y` where every class allows it."""
    from sklearn.model_selection import train_test_split

    if size >= len(idx):
        return idx[:0], idx
    if y is not None:
        counts = np.bincount(y[idx])
        if counts[counts > 0].min() >= 2:
            try:
                rest, part = train_test_split(idx, test_size=size, random_state=seed, stratify=y[idx])
                return rest, part
            except ValueError:  # a split too small to hold every class: a plain split
                pass
    rest, part = train_test_split(idx, test_size=size, random_state=seed)
    return rest, part


def _is_classes(y: np.ndarray | None) -> bool:
    """True for checked class-id labels (int64, 1-D): the only kind a split is stratified by."""
    return y is not None and y.dtype == np.int64 and y.ndim == 1


def _split(
    x: np.ndarray, y: np.ndarray | None, seed: int, *, source: str, num_classes: int | None
) -> Dataset:
    """Deterministic train / validation / test split (calibration drawn from train), stratified by class ids;
    `y` is checked labels of any kind (`_labels`) or None."""
    n = len(x)
    if n < 3:
        raise ConfigError(f"{source}: {n} sample(s) cannot be split into train, validation and test; give at least 3")
    n_test, n_val, n_calib = _split_sizes(n)
    strata = y if _is_classes(y) else None
    rest, test = _part(np.arange(n), n_test, seed, strata)
    train, val = _part(rest, n_val, seed, strata)
    _, calib = _part(train, n_calib, seed, strata)

    def take(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[idx])  # an object array stays one

    return Dataset(
        source=source,
        calib_x=take(x, calib),
        eval_x=take(x, test),
        eval_y=take(y, test),
        train_x=take(x, train),
        train_y=take(y, train),
        num_classes=num_classes,
        val_x=take(x, val),
        val_y=take(y, val),
        split_seed=seed,
    )


def digits_split(seed: int = DIGITS_SPLIT_SEED) -> Dataset:
    """scikit-learn's digits (1797 8x8 images) scaled to [0, 1], split stratified: train 1079 (calibration 180 of
    them), validation 359, test 359."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = digits.target.astype(np.int64)
    return _split(x, y, seed, source=DIGITS_SPEC, num_classes=10)


def generated_data(input_shape: Sequence[int], seed: int = 0) -> Dataset:
    """Standard-normal float32 inputs shaped like the model input, no labels: 32 calibration, 64 test and 64
    validation samples (no train split)."""
    shape = tuple(int(d) for d in input_shape[1:])
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((GENERATED_CALIB, *shape), dtype=np.float32)
    evals = rng.standard_normal((GENERATED_EVAL, *shape), dtype=np.float32)
    val = rng.standard_normal((GENERATED_VAL, *shape), dtype=np.float32)
    return Dataset(source="generated", calib_x=calib, eval_x=evals, eval_y=None, val_x=val, split_seed=seed)


# --- labels ---------------------------------------------------------------------------------------


def _is_detections(y: object) -> bool:
    if isinstance(y, np.ndarray):
        return y.dtype == object
    return isinstance(y, (list, tuple)) and any(isinstance(t, Mapping) for t in y)


def _as_array(y: object, where: str) -> np.ndarray:
    if isinstance(y, np.ndarray):
        return y
    try:
        return np.asarray(y)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{where}: y ({type(y).__name__}) cannot be read as an array ({_reason(exc)}); give a "
                          "numpy array with one label per sample, or one detection dict per sample") from None


def label_kind(y: object, where: str = "labels") -> str:
    """'classes' (1-D integer), 'masks' (integer, 2-D or more), 'values' (floating, any shape) or 'detections'
    (a list or object array of {'boxes', 'labels'} dicts), from the labels' type, dtype and rank alone; anything
    else is a ConfigError. Values are not checked here (`dataset_from_arrays` checks them)."""
    if _is_detections(y):
        return "detections"
    arr = _as_array(y, where)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        kind = "classes" if arr.ndim == 1 else "masks"
    elif np.issubdtype(arr.dtype, np.floating):
        kind = "values"
    else:
        raise ConfigError(f"{where}: y has dtype {arr.dtype}; labels must be integer class indices (N,), integer "
                          "masks (N, H, W), floating values (N, ...) or one {'boxes', 'labels'} dict per sample")
    if arr.ndim == 0:
        raise ConfigError(f"{where}: y is a single value ({arr.item()!r}), not one label per sample; give an array "
                          "shaped (N, ...)")
    return kind


def _box_str(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def _target(t: object, what: str) -> dict[str, Any]:
    """One sample's detection target checked and normalised: boxes float32 (K, 4), labels int64 (K,); other keys
    kept. `what` names the target in messages."""
    if not isinstance(t, Mapping):
        raise ConfigError(f"{what} is a {type(t).__name__}, not a dict with 'boxes' (K, 4) and 'labels' (K,); give "
                          "one such dict per sample")
    for key in ("boxes", "labels"):
        if key not in t:
            keys = ", ".join(map(str, t)) or "none"
            raise ConfigError(f"{what} has no '{key}' (keys: {keys}); each target needs 'boxes' (K, 4) and "
                              "'labels' (K,)")
    try:
        boxes = np.asarray(t["boxes"], dtype=np.float64)
        labels = np.asarray(t["labels"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: boxes or labels are not arrays of numbers ({_reason(exc)}); give boxes as (K, 4) "
                          "numbers and labels as (K,) integers") from None
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ConfigError(f"{what}: boxes have shape {_shape_str(boxes.shape)}; give (K, 4) boxes as x1, y1, x2, y2")
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        k = int(np.argmin(finite))
        raise ConfigError(f"{what}: box {k} is {_box_str(boxes[k])}, not finite; give finite pixel coordinates")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        k = int(np.argmax(inverted))
        raise ConfigError(f"{what}: box {k} is {_box_str(boxes[k])}, with x2 < x1 or y2 < y1; boxes are x1, y1, x2, "
                          "y2 with x2 >= x1 and y2 >= y1")
    if labels.size == 0:
        labels = labels.reshape(0).astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{what}: labels have dtype {labels.dtype} ({labels.ravel()[:4].tolist()}); give integer "
                          "class ids")
    if labels.ndim != 1 or len(labels) != len(boxes):
        raise ConfigError(f"{what} has {len(boxes)} box(es) but labels shaped {_shape_str(labels.shape)}; give one "
                          "integer label per box, shaped (K,)")
    if len(labels) and labels.min() < 0:
        raise ConfigError(f"{what}: label {int(labels.min())} is negative; labels must be class ids >= 0")
    return {**t, "boxes": boxes.astype(np.float32), "labels": labels.astype(np.int64)}


def _count_error(where: str, held: str, count: int, n: int) -> ConfigError:
    return ConfigError(f"{where}: y holds {count} {held} but x holds {n} samples: labels whose count does not match "
                       f"the data; give one label per sample ({n})")


def _labels(y: object, n: int, where: str) -> tuple[np.ndarray, int | None]:
    """Labels of any kind checked against `n` samples and normalised (class ids and masks int64, values float32,
    detections an object array of dicts), with their `num_classes` (None for values)."""
    if _is_detections(y):
        items = list(y)  # type: ignore[call-overload]
        if len(items) != n:
            raise _count_error(where, "per-sample detection targets", len(items), n)
        targets = np.empty(n, dtype=object)
        for i, t in enumerate(items):
            targets[i] = _target(t, f"{where}: the detection target of sample {i}")
        top = max((int(t["labels"].max()) for t in targets if len(t["labels"])), default=-1)
        return targets, top + 1
    arr = _as_array(y, where)
    kind = label_kind(arr, where)
    if len(arr) != n:
        raise _count_error(where, f"labels (shape {_shape_str(arr.shape)})", len(arr), n)
    if kind == "values":
        values = arr.astype(np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ConfigError(f"{where}: y holds {arr[at]} at index {at}; regression values must be finite (drop or "
                              "fill those samples)")
        return values, None
    ids = arr.astype(np.int64)
    if kind == "classes":
        if len(ids) and ids.min() < 0:
            raise ConfigError(f"{where}: y holds negative label {int(ids.min())}; labels must be class indices 0..C-1")
        return ids, int(ids.max()) + 1 if len(ids) else 0
    if ids.size and ids.min() < 0:
        raise ConfigError(f"{where}: the masks in y hold negative class id {int(ids.min())}; mask pixels must be "
                          f"class ids >= 0 ({VOID_LABEL} for void)")
    real = ids[ids != VOID_LABEL]
    return ids, int(real.max()) + 1 if real.size else 0


def _inputs(x: object, input_shape: Sequence[int], where: str) -> np.ndarray:
    """`x` as float32 (N, *input_shape[1:]), or a ConfigError naming the shape, dtype or bad value."""
    expected = tuple(int(d) for d in input_shape[1:])
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: x ({type(x).__name__}) is not an array of numbers; give a numpy array "
                          f"shaped (N, {', '.join(map(str, expected))})") from exc
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        found = _shape_str(x.shape[1:]) if x.ndim > 1 else "scalars"
        raise ConfigError(
            f"{where}: x has shape {_shape_str(x.shape)}, samples shaped {found}, but the model input "
            f"{_shape_str(input_shape)} expects samples shaped {_shape_str(expected)}; give x as (N, "
            f"{', '.join(map(str, expected))})"
        )
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise ConfigError(f"{where}: x has dtype {x.dtype}; inputs must be floating-point (or integer) numbers")
    if np.isnan(x).any():
        raise ConfigError(f"{where}: x contains NaN values; clean the data first")
    if np.isinf(x).any():
        raise ConfigError(f"{where}: x contains infinite values (after casting to float32); clean the data first")
    return x


def _arrays_to_dataset(x: object, y: object | None, input_shape: Sequence[int], seed: int, source: str,
                       where: str) -> Dataset:
    x = _inputs(x, input_shape, where)
    if y is None:
        return _split(x, None, seed, source=source, num_classes=None)
    labels, num_classes = _labels(y, len(x), where)
    return _split(x, labels, seed, source=source, num_classes=num_classes)


def dataset_from_arrays(x: object, y: object | None, input_shape: Sequence[int], *, seed: int = 0,
                        source: str = "in-memory arrays") -> Dataset:
    """Split in-memory inputs `x` (N, *input_shape[1:]) and labels `y` of any kind (class ids (N,), masks
    (N, H, W), float values (N, ...), or a list of N {'boxes', 'labels'} dicts; see the module docstring) into a
    `Dataset`.

    `y` None gives an unlabelled dataset: accuracy is then agreement with the unpruned model. Integer or boolean
    inputs are cast to float32; NaN / infinite inputs, a shape that does not match the model or bad labels raise
    ConfigError. The split is deterministic for a given seed.
    """
    return _arrays_to_dataset(x, y, tuple(int(d) for d in input_shape), seed, source, source)


# --- .npz -----------------------------------------------------------------------------------------


def _npz_detections(boxes: np.ndarray, labels: np.ndarray, image: np.ndarray, n: int,
                    where: str) -> np.ndarray:
    """The npz detection layout (one row per box, `box_image` its image's index) as one dict per image."""
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ConfigError(f"{where}: 'boxes' has shape {_shape_str(boxes.shape)}; it must be (M, 4), one row x1, y1, "
                          "x2, y2 per box")
    for name, a in (("box_labels", labels), ("box_image", image)):
        if a.ndim != 1 or len(a) != len(boxes):
            raise ConfigError(f"{where}: '{name}' has shape {_shape_str(a.shape)} but 'boxes' holds {len(boxes)} "
                              f"boxes; '{name}' must be ({len(boxes)},), one per box")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ConfigError(f"{where}: '{name}' has dtype {a.dtype}; it must hold integers")
    image = image.astype(np.int64)
    outside = (image < 0) | (image >= n)
    if outside.any():
        raise ConfigError(f"{where}: 'box_image' holds {int(image[outside][0])} but x holds {n} images; each entry is "
                          f"the index in x (0..{n - 1}) of the image its box belongs to")
    order = np.argsort(image, kind="stable")  # keeps each image's boxes in file order
    ends = np.cumsum(np.bincount(image, minlength=n))
    targets = np.empty(n, dtype=object)
    for i in range(n):
        rows = order[ends[i - 1] if i else 0:ends[i]]
        targets[i] = {"boxes": boxes[rows], "labels": labels[rows]}
    return targets


def _load_npz(path: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"data file '{path}'"
    expected = tuple(int(d) for d in input_shape[1:])
    must_hold = (
        f"it must hold an array 'x' (float inputs shaped (N, {', '.join(map(str, expected))})) "
        "and an array 'y' (N integer labels, N integer masks or N float values) or, for detection, the arrays "
        "'boxes' (M, 4) float, 'box_labels' (M,) int and 'box_image' (M,) int (the index in x of each box's image)"
    )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            found = ", ".join(sorted(keys)) or "none"
            detection = [k for k in NPZ_DETECTION_KEYS if k in keys]
            if "x" not in keys:
                raise ConfigError(f"{where} has no array 'x' (arrays found: {found}); {must_hold}")
            if "y" in keys and detection:
                raise ConfigError(f"{where} holds both 'y' and the detection array(s) {', '.join(detection)} (arrays "
                                  f"found: {found}); give 'y' or the detection arrays, not both")
            if not detection and "y" not in keys:
                raise ConfigError(f"{where} has no array 'y' (arrays found: {found}); {must_hold}")
            if detection and len(detection) < len(NPZ_DETECTION_KEYS):
                missing = ", ".join(f"'{k}'" for k in NPZ_DETECTION_KEYS if k not in keys)
                raise ConfigError(f"{where} has the detection array(s) {', '.join(detection)} but no {missing} "
                                  f"(arrays found: {found}); {must_hold}")
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
            boxes = {k: npz[k] for k in detection}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a zip / npz, truncated, or object arrays (pickles)
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{where} cannot be read as a numpy .npz without pickles ({msg}); {must_hold}") from exc
    x = _inputs(x, input_shape, where)
    if boxes:
        y = _npz_detections(boxes["boxes"], boxes["box_labels"], boxes["box_image"], len(x), where)
    labels, num_classes = _labels(y, len(x), where)
    return _split(x, labels, seed, source=str(path), num_classes=num_classes)


# --- folders --------------------------------------------------------------------------------------


def _image_geometry(where: str, input_shape: Sequence[int]) -> tuple[str, int, int, int]:
    """(PIL mode, channels, height, width) for a model taking images (1, C, H, W) with C 1 or 3."""
    if len(input_shape) != 4 or int(input_shape[1]) not in (1, 3):
        raise ConfigError(
            f"{where}: the model input {_shape_str(input_shape)} is not an image shaped (1, C, H, W) with C 1 or 3; "
            "give a .npz file instead"
        )
    _, channels, height, width = (int(d) for d in input_shape)
    return ("L" if channels == 1 else "RGB"), channels, height, width


def _pil() -> tuple[Any, type[Exception]]:
    """PIL's Image module and UnidentifiedImageError (the `vision` extra)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError("PIL", "vision") from exc
    return Image, UnidentifiedImageError


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, geometry: tuple[str, int, int, int], where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as float32 (C, H, W) in [0, 1] and its original (width, height)."""
    image, unidentified = _pil()
    mode, channels, height, width = geometry
    try:
        with image.open(file) as img:
            size = img.size
            img = img.convert(mode)
            if img.size != (width, height):
                img = img.resize((width, height), image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    except (OSError, unidentified, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{where}: image '{file}' cannot be read ({msg}); remove or replace it") from exc
    return (arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1)), size


def _read_mask(file: Path, height: int, width: int, where: str) -> np.ndarray:
    """A mask PNG as int64 (H, W) class ids, resized nearest-neighbour."""
    image, unidentified = _pil()
    try:
        with image.open(file) as img:
            if img.mode not in MASK_MODES:
                raise ConfigError(f"{where}: mask '{file}' has mode {img.mode}; a mask is a single-channel PNG whose "
                                  f"pixel values are class ids ({VOID_LABEL}: void), saved in mode L or P")
            if img.size != (width, height):
                img = img.resize((width, height), image.Resampling.NEAREST)
            return np.asarray(img).astype(np.int64)
    except ConfigError:
        raise
    except (OSError, unidentified, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{where}: mask '{file}' cannot be read ({msg}); remove or replace it") from exc


def _load_image_folder(root: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"image folder '{root}'"
    geometry = _image_geometry(where, input_shape)
    _pil()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"{where} has no subfolders; it must hold one subfolder of images per class")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = _image_files(root / name)
        if not files:
            empty.append(name)
            continue
        for file in files:
            xs.append(_read_image(file, geometry, where)[0])
            ys.append(label)
    if empty:
        suffixes = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise ConfigError(
            f"{where}: class subfolder(s) {', '.join(empty)} hold no {suffixes} images; "
            "every class subfolder needs at least one image"
        )
    x = np.ascontiguousarray(np.stack(xs).astype(np.float32))
    y = np.asarray(ys, dtype=np.int64)
    return _split(x, y, seed, source=str(root), num_classes=len(classes))


def _folder_images(root: Path, where: str, beside: str) -> list[Path]:
    files = _image_files(root / IMAGES_DIR)
    if not files:
        suffixes = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise ConfigError(f"{where}: {IMAGES_DIR}/ holds no {suffixes} images; put the images there, {beside}")
    return files


def _load_segmentation_folder(root: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"image folder '{root}'"
    geometry = _image_geometry(where, input_shape)
    xs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for file in _folder_images(root, where, f"with a PNG mask of the same name stem per image in {MASKS_DIR}/"):
        mask = root / MASKS_DIR / f"{file.stem}.png"
        if not mask.is_file():
            raise ConfigError(f"{where}: image '{file.name}' has no mask '{mask}'; give every image in {IMAGES_DIR}/ a "
                              f"PNG of the same name stem in {MASKS_DIR}/ (pixel values: class ids, {VOID_LABEL} void)")
        xs.append(_read_image(file, geometry, where)[0])
        masks.append(_read_mask(mask, geometry[2], geometry[3], where))
    x = np.ascontiguousarray(np.stack(xs))
    labels, num_classes = _labels(np.stack(masks), len(x), where)
    return _split(x, labels, seed, source=str(root), num_classes=num_classes)


def _annotations(path: Path, where: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            annotations = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: '{path}' is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                          "fix the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: '{path}' cannot be read ({_reason(exc)}); fix or replace it") from None
    if not isinstance(annotations, dict):
        raise ConfigError(f"{where}: '{path}' holds a JSON {type(annotations).__name__}; it must be an object mapping "
                          'each image\'s file name to {"boxes": [[x1, y1, x2, y2], ...], "labels": [...]}')
    return annotations


def _load_detection_folder(root: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"image folder '{root}'"
    geometry = _image_geometry(where, input_shape)
    annotations = _annotations(root / ANNOTATIONS_FILE, where)
    files = _folder_images(root, where, f"each listed in {ANNOTATIONS_FILE}")
    names = {f.name for f in files}
    unknown = sorted(set(annotations) - names)
    if unknown:
        raise ConfigError(f"{where}: {ANNOTATIONS_FILE} lists '{unknown[0]}', which is not an image in {IMAGES_DIR}/; "
                          "key each entry by an image's file name")
    missing = [f.name for f in files if f.name not in annotations]
    if missing:
        raise ConfigError(f'{where}: image \'{missing[0]}\' has no entry in {ANNOTATIONS_FILE}; add "{missing[0]}": '
                          '{"boxes": [...], "labels": [...]} (empty lists for an image without objects)')
    xs: list[np.ndarray] = []
    targets = np.empty(len(files), dtype=object)
    for i, file in enumerate(files):
        target = _target(annotations[file.name], f"{where}: {ANNOTATIONS_FILE} entry '{file.name}'")
        arr, (w0, h0) = _read_image(file, geometry, where)
        height, width = geometry[2], geometry[3]
        scale = np.array([width / w0, height / h0, width / w0, height / h0], dtype=np.float32)
        targets[i] = {**target, "boxes": target["boxes"] * scale}
        xs.append(arr)
    x = np.ascontiguousarray(np.stack(xs))
    labels, num_classes = _labels(targets, len(x), where)
    return _split(x, labels, seed, source=str(root), num_classes=num_classes)


def _load_folder(root: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    """A folder in one of the three layouts of the module docstring, told apart by what it holds."""
    where = f"image folder '{root}'"
    images = (root / IMAGES_DIR).is_dir()
    masks = (root / MASKS_DIR).is_dir()
    annotations = (root / ANNOTATIONS_FILE).is_file()
    if annotations and masks:
        raise ConfigError(f"{where} holds both {MASKS_DIR}/ and {ANNOTATIONS_FILE}; keep {MASKS_DIR}/ for "
                          f"segmentation or {ANNOTATIONS_FILE} for detection, not both")
    if annotations and not images:
        raise ConfigError(f"{where} holds {ANNOTATIONS_FILE} but no {IMAGES_DIR}/ folder; put the images it lists in "
                          f"{root / IMAGES_DIR}")
    if annotations:
        return _load_detection_folder(root, input_shape, seed)
    if images and masks:
        return _load_segmentation_folder(root, input_shape, seed)
    return _load_image_folder(root, input_shape, seed)


# --- pkg.module:callable --------------------------------------------------------------------------


def _is_callable_spec(text: str) -> bool:
    module, sep, attr = text.partition(":")
    return bool(sep and attr) and not text.startswith("examples:") and _DOTTED_NAME.match(module) is not None


def _describe(value: object) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {', '.join(map(repr, value)) or 'none'}"
    return f"a {type(value).__name__}"


def _load_callable(text: str, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"data '{text}'"
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure importing the user's module is theirs to fix
        raise ConfigError(f"{where}: module '{module_name}' does not import ({_reason(exc)}); put it on the Python "
                          f"path, or give other data: {ACCEPTED_FORMS}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"{where}: module '{module_name}' has no callable '{attr}'; name a function that takes no "
                          "arguments and returns (x, y)")
    try:
        result = fn()
    except Exception as exc:  # the user's function failed: name it and what it raised
        raise ConfigError(f"{where}: {attr}() raised {_reason(exc)}; fix it so that it returns (x, y) or "
                          "{'x': x, 'y': y}") from None
    if isinstance(result, tuple) and len(result) == 2:
        x, y = result
    elif isinstance(result, Mapping) and "x" in result and set(result) <= {"x", "y"}:
        x, y = result["x"], result.get("y")
    else:
        raise ConfigError(f"{where}: {attr}() returned {_describe(result)}; it must return (x, y) or a dict with "
                          "'x' and optionally 'y'")
    return _arrays_to_dataset(x, y, input_shape, seed, text, where)


def load_data(spec: str | os.PathLike[str] | None, input_shape: tuple[int, ...], *, seed: int = 0) -> Dataset:
    """Load data split into train / validation / test (calibration from train) for a model taking `input_shape`.

    `spec` is a bundled example ('examples:digits', 'examples:shapes-detect', 'examples:shapes-segment'), a `.npz`
    path, a folder in one of the layouts of the module docstring, 'pkg.module:callable', or None for generated
    inputs.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if spec is None:
        return generated_data(input_shape, seed)
    text = os.fspath(spec)
    if text == DIGITS_SPEC:
        if input_shape[1:] != DIGITS_INPUT_SHAPE[1:]:
            raise ConfigError(
                f"data '{DIGITS_SPEC}' gives samples shaped {_shape_str(DIGITS_INPUT_SHAPE[1:])} but the model input "
                f"{_shape_str(input_shape)} expects {_shape_str(input_shape[1:])}; use it with a model taking "
                f"{_shape_str(DIGITS_INPUT_SHAPE)} (such as examples:digits) or give your own data"
            )
        return digits_split()  # fixed split: its validation and test parts are held out from the bundled model's training
    if text in SHAPES_SPECS:
        from edgeprune.examples import shapes  # imports torch: only when asked for

        if input_shape[1:] != shapes.INPUT_SHAPE[1:]:
            raise ConfigError(
                f"data '{text}' gives samples shaped {_shape_str(shapes.INPUT_SHAPE[1:])} but the model input "
                f"{_shape_str(input_shape)} expects {_shape_str(input_shape[1:])}; use it with a model taking "
                f"{_shape_str(shapes.INPUT_SHAPE)} (such as {text}) or give your own data"
            )
        return shapes.shapes_split(SHAPES_SPECS[text])  # fixed split, as digits
    if text.startswith("examples:"):
        raise ConfigError(f"data '{text}' is not a bundled example; known: {', '.join(EXAMPLES)}")
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, input_shape, seed)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _load_npz(path, input_shape, seed)
        raise ConfigError(f"data file '{text}' is not a .npz file; accepted data: {ACCEPTED_FORMS}")
    if not path.exists() and _is_callable_spec(text):
        return _load_callable(text, input_shape, seed)
    raise ConfigError(f"data '{text}' is not a known example, file or folder; accepted data: {ACCEPTED_FORMS}")
