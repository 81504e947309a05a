"""Data for planning and judging: the bundled digits set, a `.npz` file, a folder of class subfolders, in-memory
arrays, or generated inputs.

Every loader returns a `Dataset` whose arrays are float32 shaped (N, *input_shape[1:]) and whose labels are int64,
split three ways, deterministically for a given seed and stratified by label where every class has enough samples:

- train (60%): what fine-tuning learns from; the calibration set (10% of all samples, for int8 and BatchNorm
  calibration) is drawn from it, because calibration fits the model to data just as training does;
- validation (20%): what every planner choice is scored on;
- test (20%): held out from every choice; only the reported accuracies and the accuracy budget's verdict use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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

ACCEPTED_FORMS = (
    "'examples:digits', a .npz file with arrays x (float, shaped like the model input without the batch axis) "
    "and y (integer labels), a folder with one subfolder of images (png/jpg/bmp) per class, "
    "or no data for generated random inputs"
)


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


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


def _split(
    x: np.ndarray, y: np.ndarray | None, seed: int, *, source: str, num_classes: int | None
) -> Dataset:
    """Deterministic train / validation / test split (calibration drawn from train), stratified when labelled."""
    n = len(x)
    if n < 3:
        raise ConfigError(f"{source}: {n} sample(s) cannot be split into train, validation and test; give at least 3")
    n_test, n_val, n_calib = _split_sizes(n)
    rest, test = _part(np.arange(n), n_test, seed, y)
    train, val = _part(rest, n_val, seed, y)
    _, calib = _part(train, n_calib, seed, y)

    def take(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[idx])

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


def _labels(y: np.ndarray, n: int, where: str) -> tuple[np.ndarray, int]:
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(f"{where}: y has shape {_shape_str(y.shape)} but must be 1-D with one label per sample ({n})")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.equal(np.mod(y, 1), 0).all():
            raise ConfigError(f"{where}: y holds non-integer values; labels must be integer class indices")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ConfigError(f"{where}: y has dtype {y.dtype}; labels must be integer class indices")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ConfigError(f"{where}: y holds negative label {int(y.min())}; labels must be class indices 0..C-1")
    return y, int(y.max()) + 1 if len(y) else 0


def _arrays_to_dataset(x: object, y: object | None, input_shape: Sequence[int], seed: int, source: str,
                       where: str) -> Dataset:
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
    if y is None:
        return _split(x, None, seed, source=source, num_classes=None)
    labels, num_classes = _labels(np.asarray(y), len(x), where)
    return _split(x, labels, seed, source=source, num_classes=num_classes)


def dataset_from_arrays(x: object, y: object | None, input_shape: Sequence[int], *, seed: int = 0,
                        source: str = "in-memory arrays") -> Dataset:
    """Split in-memory inputs `x` (N, *input_shape[1:]) and integer labels `y` (N,) into a `Dataset`.

    `y` None gives an unlabelled dataset: accuracy is then agreement with the unpruned model. Integer or boolean
    inputs are cast to float32; NaN / infinite inputs, a shape that does not match the model or bad labels raise
    ConfigError. The split is deterministic for a given seed.
    """
    return _arrays_to_dataset(x, y, tuple(int(d) for d in input_shape), seed, source, source)


def _load_npz(path: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"data file '{path}'"
    expected = tuple(int(d) for d in input_shape[1:])
    must_hold = (
        f"it must hold an array 'x' (float inputs shaped (N, {', '.join(map(str, expected))})) "
        "and an array 'y' (N integer labels)"
    )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            for key in ("x", "y"):
                if key not in keys:
                    found = ", ".join(sorted(keys)) or "none"
                    raise ConfigError(f"{where} has no array '{key}' (arrays found: {found}); {must_hold}")
            x = npz["x"]
            y = npz["y"]
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a zip / npz, truncated, or object arrays (pickles)
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{where} cannot be read as a numpy .npz without pickles ({msg}); {must_hold}") from exc
    return _arrays_to_dataset(x, y, input_shape, seed, str(path), where)


def _load_image_folder(root: Path, input_shape: Sequence[int], seed: int) -> Dataset:
    where = f"image folder '{root}'"
    if len(input_shape) != 4 or int(input_shape[1]) not in (1, 3):
        raise ConfigError(
            f"{where}: the model input {_shape_str(input_shape)} is not an image shaped (1, C, H, W) with C 1 or 3; "
            "give a .npz file instead"
        )
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError("PIL", "vision") from exc

    _, channels, height, width = (int(d) for d in input_shape)
    mode = "L" if channels == 1 else "RGB"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"{where} has no subfolders; it must hold one subfolder of images per class")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            empty.append(name)
            continue
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert(mode)
                    if img.size != (width, height):
                        img = img.resize((width, height), Image.Resampling.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                msg = " ".join(str(exc).split())
                raise ConfigError(f"{where}: image '{file}' cannot be read ({msg}); remove or replace it") from exc
            xs.append(arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1))
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


def load_data(spec: str | os.PathLike[str] | None, input_shape: tuple[int, ...], *, seed: int = 0) -> Dataset:
    """Load data split into train / validation / test (calibration from train) for a model taking `input_shape`.

    `spec` is 'examples:digits', a `.npz` path, a folder of class subfolders of images, or None for generated inputs.
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
    if text.startswith("examples:"):
        raise ConfigError(f"data '{text}' is not a bundled example; known: {DIGITS_SPEC}")
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_image_folder(path, input_shape, seed)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _load_npz(path, input_shape, seed)
        raise ConfigError(f"data file '{text}' is not a .npz file; accepted data: {ACCEPTED_FORMS}")
    raise ConfigError(f"data '{text}' is not a known example, file or folder; accepted data: {ACCEPTED_FORMS}")
