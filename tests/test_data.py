from __future__ import annotations

import numpy as np
import pytest

from edgeprune.data import (
    DIGITS_PREPROCESSING,
    check_inputs,
    dataset_from_arrays,
    digits_split,
    generated_data,
    load_data,
)
from edgeprune.errors import ConfigError

DIGITS_SHAPE = (1, 1, 8, 8)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a.reshape(len(a), -1)}


# --- digits ---------------------------------------------------------------------------------------


def _parts(d):
    return {"train": d.train_x, "validation": d.val_x, "test": d.eval_x}


def test_digits_split_sizes_dtype_and_range():
    d = digits_split()
    assert d.source == "examples:digits"
    assert d.num_classes == 10 and d.labelled
    assert (len(d.train_x), len(d.val_x), len(d.eval_x), len(d.calib_x)) == (1079, 359, 359, 180)
    assert len(d.train_x) + len(d.val_x) + len(d.eval_x) == 1797
    for x in (d.train_x, d.val_x, d.calib_x, d.eval_x):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8)
        assert x.min() >= 0.0 and x.max() <= 1.0
    for y in (d.train_y, d.val_y, d.eval_y):
        assert y.dtype == np.int64
    assert d.train_x.max() == 1.0  # 16 / 16: scaled, not left at 0..16
    assert "16" in DIGITS_PREPROCESSING and "\n" not in DIGITS_PREPROCESSING
    assert d.summary()["test"] == 359 and d.summary()["validation"] == 359 and d.summary()["calibration_from"] == "train"


def test_digits_split_deterministic_and_seed_dependent():
    a, b, c = digits_split(0), digits_split(0), digits_split(1)
    for name in ("eval_x", "val_x", "calib_x", "train_y", "val_y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.eval_x, c.eval_x) and not np.array_equal(a.val_x, c.val_x)


def test_digits_split_no_sample_in_two_parts_and_calibration_from_train():
    from sklearn.datasets import load_digits

    d = digits_split()
    raw = (load_digits().images.astype(np.float32) / 16)[:, None]
    assert len(_rows(raw)) == 1797  # no duplicate images, so rows identify samples
    tr, va, te, ca = _rows(d.train_x), _rows(d.val_x), _rows(d.eval_x), _rows(d.calib_x)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == _rows(raw)
    assert ca <= tr and len(ca) == 180  # calibration fits the model like training: never validation or test


def test_digits_split_stratified():
    d = digits_split()
    full = np.bincount(np.concatenate([d.train_y, d.val_y, d.eval_y]), minlength=10)
    for y in (d.val_y, d.eval_y):
        counts = np.bincount(y, minlength=10)
        # stratified: each class's share of the part matches its share overall within about one sample
        expected = full / full.sum() * len(y)
        assert np.all(np.abs(counts - expected) <= 1.5)
        assert counts.min() >= 33


def test_load_data_digits_and_seed_does_not_move_the_held_out_split():
    d = load_data("examples:digits", DIGITS_SHAPE, seed=7)
    np.testing.assert_array_equal(d.eval_x, digits_split().eval_x)
    np.testing.assert_array_equal(d.val_x, digits_split().val_x)


def test_digits_example_is_trained_on_the_train_part_of_this_split():
    from edgeprune.data import SPLIT_RULE
    from edgeprune.examples import digits

    assert digits.RECIPE["split"] == SPLIT_RULE  # a new split rule changes the cache key, so the model retrains
    assert "validation" in SPLIT_RULE and "calibration" in SPLIT_RULE


@pytest.mark.parametrize("n", [3, 4, 7, 20, 101])
def test_every_split_is_disjoint_covers_the_data_and_is_stable_under_its_seed(n):
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = np.arange(n) % 3
    for seed in (0, 5):
        d = dataset_from_arrays(x, y, (1, 1), seed=seed)
        parts = {k: set(v[:, 0].tolist()) for k, v in _parts(d).items()}
        assert all(parts.values()), parts  # every part holds at least one sample
        assert sum(len(p) for p in parts.values()) == n and set().union(*parts.values()) == set(range(n))
        assert set(d.calib_x[:, 0].tolist()) <= parts["train"] and d.split_seed == seed
        again = dataset_from_arrays(x, y, (1, 1), seed=seed)
        for k, v in _parts(again).items():
            np.testing.assert_array_equal(v, _parts(d)[k])
    with pytest.raises(ConfigError) as exc:
        dataset_from_arrays(x[:2], y[:2], (1, 1))
    assert "at least 3" in _one_line(exc)


def test_load_data_digits_wrong_model_shape():
    with pytest.raises(ConfigError) as exc:
        load_data("examples:digits", (1, 3, 32, 32))
    msg = _one_line(exc)
    assert "(1, 8, 8)" in msg and "(1, 3, 32, 32)" in msg


def test_unknown_example():
    with pytest.raises(ConfigError) as exc:
        load_data("examples:cifar", DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "examples:cifar" in msg and "examples:digits" in msg


# --- npz ------------------------------------------------------------------------------------------


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((100, 3, 4, 5)).astype(np.float64)
    y = np.repeat(np.arange(4), 25)
    path = _write_npz(tmp_path / "d.npz", x=x, y=y)
    d = load_data(path, (1, 3, 4, 5), seed=3)
    assert d.source == path and d.num_classes == 4 and d.labelled
    assert (len(d.train_x), len(d.val_x), len(d.eval_x), len(d.calib_x)) == (60, 20, 20, 10)
    for a in (d.train_x, d.val_x, d.calib_x, d.eval_x):
        assert a.dtype == np.float32 and a.shape[1:] == (3, 4, 5)
    # the union of the splits is the file's content, each sample once
    got = _rows(np.concatenate([d.train_x, d.val_x, d.eval_x]))
    assert got == _rows(x.astype(np.float32)) and len(got) == 100
    # labels travel with their inputs
    lookup = {r.tobytes(): int(t) for r, t in zip(x.astype(np.float32).reshape(100, -1), y)}
    assert [lookup[r.tobytes()] for r in d.eval_x.reshape(len(d.eval_x), -1)] == d.eval_y.tolist()
    assert np.bincount(d.eval_y).tolist() == [5, 5, 5, 5] == np.bincount(d.val_y).tolist()  # stratified
    again = load_data(path, (1, 3, 4, 5), seed=3)
    np.testing.assert_array_equal(again.eval_x, d.eval_x)


def test_npz_uint8_cast_and_singleton_class(tmp_path):
    x = np.arange(20 * 4, dtype=np.uint8).reshape(20, 1, 2, 2)
    y = np.array([0] * 10 + [1] * 9 + [2])  # class 2 has a single sample: no stratification
    d = load_data(_write_npz(tmp_path / "u.npz", x=x, y=y), (1, 1, 2, 2))
    assert d.eval_x.dtype == np.float32 and d.num_classes == 3
    assert len(d.train_x) + len(d.val_x) + len(d.eval_x) == 20
    assert float(np.concatenate([d.train_x, d.val_x, d.eval_x]).max()) == 79.0


def test_npz_missing_y_names_key(tmp_path):
    path = _write_npz(tmp_path / "noy.npz", x=np.zeros((10, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError) as exc:
        load_data(path, DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "'y'" in msg and "noy.npz" in msg and "'x'" in msg


def test_npz_missing_x_names_key(tmp_path):
    path = _write_npz(tmp_path / "nox.npz", inputs=np.zeros((10, 1, 8, 8), np.float32), y=np.zeros(10, int))
    with pytest.raises(ConfigError) as exc:
        load_data(path, DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "no array 'x'" in msg and "inputs" in msg


def test_npz_wrong_shape_names_both(tmp_path):
    path = _write_npz(tmp_path / "s.npz", x=np.zeros((10, 3, 8, 8), np.float32), y=np.zeros(10, int))
    with pytest.raises(ConfigError) as exc:
        load_data(path, DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "(10, 3, 8, 8)" in msg and "(1, 8, 8)" in msg and "s.npz" in msg


def test_npz_nan(tmp_path):
    x = np.zeros((10, 1, 8, 8), np.float32)
    x[3, 0, 2, 2] = np.nan
    with pytest.raises(ConfigError) as exc:
        load_data(_write_npz(tmp_path / "n.npz", x=x, y=np.zeros(10, int)), DIGITS_SHAPE)
    assert "NaN" in _one_line(exc)


def test_npz_bad_labels(tmp_path):
    x = np.zeros((10, 1, 8, 8), np.float32)
    with pytest.raises(ConfigError) as exc:
        load_data(_write_npz(tmp_path / "l.npz", x=x, y=np.zeros(9, int)), DIGITS_SHAPE)
    assert "one label per sample" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_data(_write_npz(tmp_path / "m.npz", x=x, y=-np.ones(10, int)), DIGITS_SHAPE)
    assert "negative" in _one_line(exc)


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.zeros((10, 1, 8, 8), np.float32), y=np.array([{"a": 1}] * 10, dtype=object))
    with pytest.raises(ConfigError) as exc:
        load_data(str(path), DIGITS_SHAPE)
    assert "o.npz" in _one_line(exc)


def test_not_an_npz(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip file\n")
    with pytest.raises(ConfigError) as exc:
        load_data(str(bad), DIGITS_SHAPE)
    assert "junk.npz" in _one_line(exc)
    other = tmp_path / "data.csv"
    other.write_text("1,2\n")
    with pytest.raises(ConfigError) as exc:
        load_data(str(other), DIGITS_SHAPE)
    assert "data.csv" in _one_line(exc) and ".npz" in str(exc.value)


def test_dataset_from_arrays_labelled_and_unlabelled():
    rng = np.random.default_rng(1)
    x = rng.random((50, 2, 3)).astype(np.float64)
    y = np.repeat(np.arange(5), 10)
    d = dataset_from_arrays(x, y, (1, 2, 3), seed=4)
    assert d.source == "in-memory arrays" and d.labelled and d.num_classes == 5
    assert d.eval_x.dtype == np.float32 and d.train_y.dtype == np.int64
    np.testing.assert_array_equal(dataset_from_arrays(x, y, (1, 2, 3), seed=4).eval_x, d.eval_x)
    u = dataset_from_arrays(x, None, (1, 2, 3), source="my arrays")
    assert u.source == "my arrays" and not u.labelled and u.train_y is None and u.num_classes is None
    assert len(u.train_x) + len(u.val_x) + len(u.eval_x) == 50 and u.val_y is None
    with pytest.raises(ConfigError) as exc:
        dataset_from_arrays(x, y, (1, 3, 2))
    msg = _one_line(exc)
    assert "in-memory arrays" in msg and "(50, 2, 3)" in msg and "(3, 2)" in msg
    with pytest.raises(ConfigError) as exc:
        dataset_from_arrays(x, y[:-1], (1, 2, 3))
    assert "one label per sample" in _one_line(exc)


# --- image folder ---------------------------------------------------------------------------------


def _write_images(root, classes=("cat", "dog"), per_class=5, size=(12, 10), mode="RGB"):
    from PIL import Image

    values = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            v = 20 * c + 3 * i  # a distinct flat grey per image
            img = Image.new(mode, size, (v, v, v) if mode == "RGB" else v)
            img.save(root / name / f"{i}.png")
            values[v] = c
    return values


def test_image_folder_round_trip_gray(tmp_path):
    values = _write_images(tmp_path, classes=("b_dog", "a_cat", "c_eel"), per_class=4)
    d = load_data(str(tmp_path), (1, 1, 6, 7))
    assert d.num_classes == 3 and d.labelled
    xs = np.concatenate([d.train_x, d.val_x, d.eval_x])
    assert xs.shape == (12, 1, 6, 7) and xs.dtype == np.float32
    assert 0.0 <= xs.min() and xs.max() <= 1.0
    # flat images stay flat through the resize, and the grey level tells which class folder they came from
    # labels follow sorted folder names: a_cat=0, b_dog=1, c_eel=2 (values were written in the order given)
    remap = {0: 1, 1: 0, 2: 2}
    for x, y in ((d.train_x, d.train_y), (d.eval_x, d.eval_y)):
        for img, label in zip(x, y):
            v = round(float(img.mean()) * 255)
            assert np.allclose(img, img.flat[0])
            assert remap[values[v]] == int(label)


def test_image_folder_rgb(tmp_path):
    _write_images(tmp_path, mode="L", per_class=6)
    d = load_data(str(tmp_path), (1, 3, 4, 4))
    assert d.eval_x.shape[1:] == (3, 4, 4) and d.num_classes == 2
    np.testing.assert_allclose(d.eval_x[:, 0], d.eval_x[:, 2])


def test_image_folder_without_subfolders(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "no subfolders" in msg and str(tmp_path) in msg


def test_image_folder_without_images(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), DIGITS_SHAPE)
    msg = _one_line(exc)
    assert "one" in msg and "two" in msg and "images" in msg


def test_image_folder_corrupt_image(tmp_path):
    _write_images(tmp_path, per_class=3)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), DIGITS_SHAPE)
    assert "broken.png" in _one_line(exc)


def test_image_folder_needs_image_model(tmp_path):
    _write_images(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), (1, 16))
    assert "(1, 16)" in _one_line(exc)


# --- generated, bad specs, check_inputs -----------------------------------------------------------


def test_generated_data():
    d = load_data(None, (1, 3, 5, 7), seed=2)
    assert d.source == "generated" and not d.labelled and d.eval_y is None and d.train_x is None
    assert d.calib_x.shape == (32, 3, 5, 7) and d.eval_x.shape == (64, 3, 5, 7) and d.val_x.shape == (64, 3, 5, 7)
    assert not (_rows(d.val_x) & _rows(d.eval_x))
    assert d.calib_x.dtype == np.float32 and d.eval_x.dtype == np.float32
    assert abs(float(d.eval_x.mean())) < 0.1 and 0.9 < float(d.eval_x.std()) < 1.1
    np.testing.assert_array_equal(generated_data((1, 3, 5, 7), 2).eval_x, d.eval_x)
    assert not np.array_equal(generated_data((1, 3, 5, 7), 3).eval_x, d.eval_x)


@pytest.mark.parametrize("spec", ["/no/such/file.npz", "hf:mnist", "nowhere"])
def test_bad_spec(spec):
    with pytest.raises(ConfigError) as exc:
        load_data(spec, DIGITS_SHAPE)
    msg = _one_line(exc)
    assert spec in msg and "examples:digits" in msg and ".npz" in msg and "folder" in msg


def test_check_inputs():
    check_inputs(np.zeros((2, 1, 8, 8), np.float32), DIGITS_SHAPE, "calibration data")
    with pytest.raises(ConfigError) as exc:
        check_inputs(np.zeros((2, 8, 8), np.float32), DIGITS_SHAPE, "calibration data")
    msg = _one_line(exc)
    assert "calibration data" in msg and "(2, 8, 8)" in msg and "(1, 1, 8, 8)" in msg
    with pytest.raises(ConfigError) as exc:
        check_inputs(np.zeros((2, 1, 8, 8), np.int32), DIGITS_SHAPE, "calibration data")
    assert "int32" in _one_line(exc)
    with pytest.raises(ConfigError):
        check_inputs(np.zeros((0, 1, 8, 8), np.float32), DIGITS_SHAPE, "calibration data")
    with pytest.raises(ConfigError):
        check_inputs(np.full((1, 1, 8, 8), np.inf, np.float32), DIGITS_SHAPE, "calibration data")
    with pytest.raises(ConfigError):
        check_inputs([[0.0]], DIGITS_SHAPE, "calibration data")
