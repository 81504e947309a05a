"""Labels of every kind (class ids, masks, float values, detections) from a .npz, the two new folder layouts, a
pkg.module:callable, the bundled shapes examples and in-memory arrays; and each bad-label case as a one-line
ConfigError naming the value."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest

from edgeprune.data import VOID_LABEL, dataset_from_arrays, label_kind, load_data
from edgeprune.errors import ConfigError

N = 20
SHAPE = (1, 1, 2, 2)
SPLITS = ("train", "val", "eval")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert exc.type is ConfigError
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _x(n: int = N) -> np.ndarray:
    """Sample i is filled with the value i, so any split tells which samples it holds."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *SHAPE[1:])).copy()


def _index(x: np.ndarray) -> list[int]:
    return [int(v) for v in x.reshape(len(x), -1)[:, 0]]


def _parts(d) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    return {name: (getattr(d, f"{name}_x"), getattr(d, f"{name}_y")) for name in SPLITS}


def _same_target(got: dict, want: dict) -> None:
    assert got["boxes"].dtype == np.float32 and got["boxes"].shape == (len(want["labels"]), 4)
    assert got["labels"].dtype == np.int64
    np.testing.assert_array_equal(got["boxes"], np.asarray(want["boxes"], np.float32).reshape(-1, 4))
    np.testing.assert_array_equal(got["labels"], np.asarray(want["labels"], np.int64))


def _check_split(d, y, n: int = N) -> None:
    """Disjoint splits covering the samples, calibration from train, and every label travelling with its input."""
    idx = {name: _index(x) for name, (x, _) in _parts(d).items()}
    assert all(idx.values())
    assert sum(map(len, idx.values())) == n and set().union(*idx.values()) == set(range(n))
    assert set(_index(d.calib_x)) <= set(idx["train"])
    for name, (x, labels) in _parts(d).items():
        assert len(labels) == len(x)
        for i, got in zip(idx[name], labels):
            if isinstance(y[i], dict):
                _same_target(got, y[i])
            else:
                np.testing.assert_allclose(got, y[i], rtol=1e-6, atol=0)  # float values are stored as float32


# --- kinds ----------------------------------------------------------------------------------------

KINDS = {
    "classes": (lambda n: np.arange(n) % 3, np.int64, 3),
    "masks": (lambda n: np.arange(n * 9).reshape(n, 3, 3) % 4, np.int64, 4),
    "values": (lambda n: np.linspace(-1.0, 1.0, n * 2).reshape(n, 2), np.float32, None),
}


def test_label_kind_from_the_labels_alone():
    target = {"boxes": np.zeros((1, 4)), "labels": np.zeros(1, int)}
    assert label_kind(np.arange(4)) == "classes" == label_kind([0, 1, 2]) == label_kind(np.array([True, False]))
    assert label_kind(np.zeros((3, 2, 2), np.uint8)) == "masks" == label_kind(np.zeros((3, 5), np.int32))
    assert label_kind(np.zeros(3)) == "values" == label_kind(np.zeros((3, 4), np.float16))
    objects = np.empty(2, dtype=object)
    objects[:] = [target, target]
    assert label_kind([target, target]) == "detections" == label_kind(objects)
    with pytest.raises(ConfigError) as exc:
        label_kind(np.array(["cat", "dog"]))
    assert "<U3" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        label_kind(np.int64(7))
    assert "(7)" in _one_line(exc)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_npz_of_each_kind_splits_deterministically(tmp_path, kind):
    make, dtype, num_classes = KINDS[kind]
    y = make(N)
    path = tmp_path / f"{kind}.npz"
    np.savez(path, x=_x(), y=y)
    d = load_data(str(path), SHAPE, seed=2)
    assert d.source == str(path) and d.labelled and d.num_classes == num_classes
    assert (len(d.train_x), len(d.val_x), len(d.eval_x), len(d.calib_x)) == (12, 4, 4, 2)
    for _, labels in _parts(d).values():
        assert label_kind(labels) == kind and labels.dtype == dtype and labels.shape[1:] == y.shape[1:]
    _check_split(d, y)
    again, other = load_data(str(path), SHAPE, seed=2), load_data(str(path), SHAPE, seed=3)
    assert all(_index(again_x) == _index(x) for (again_x, _), (x, _) in zip(_parts(again).values(),
                                                                            _parts(d).values()))
    assert any(_index(a) != _index(b) for (a, _), (b, _) in zip(_parts(other).values(), _parts(d).values()))


@pytest.mark.parametrize("kind", ["masks", "values", "detections"])
def test_labels_other_than_classes_split_without_stratification(kind):
    y = _detections(N) if kind == "detections" else KINDS[kind][0](N)
    for seed in (0, 4):
        labelled = dataset_from_arrays(_x(), y, SHAPE, seed=seed)
        plain = dataset_from_arrays(_x(), None, SHAPE, seed=seed)
        for (a, _), (b, _) in zip(_parts(labelled).values(), _parts(plain).values()):
            assert _index(a) == _index(b)
        assert _index(labelled.calib_x) == _index(plain.calib_x)


def test_masks_void_pixels_do_not_count_as_a_class():
    masks = np.zeros((6, 2, 2), np.uint8)
    masks[1, 0, 0] = 2
    masks[2] = VOID_LABEL
    d = dataset_from_arrays(_x(6), masks, SHAPE)
    assert VOID_LABEL == 255 and d.num_classes == 3 and d.eval_y.dtype == np.int64
    assert VOID_LABEL in np.concatenate([d.train_y, d.val_y, d.eval_y])  # kept, for the metrics to ignore
    all_void = dataset_from_arrays(_x(3), np.full((3, 2, 2), VOID_LABEL), SHAPE)
    assert all_void.num_classes == 0


# --- detections -----------------------------------------------------------------------------------

BOX_COUNTS = [2, 0, 1, 3, 1, 2, 0, 1, 1, 2]


def _detections(n: int) -> list[dict]:
    return [{"boxes": [[i, j, i + 2 + j, j + 3] for j in range(BOX_COUNTS[i % 10])],
             "labels": [(i + j) % 3 for j in range(BOX_COUNTS[i % 10])]} for i in range(n)]


def test_detection_npz_layout_round_trip(tmp_path):
    n = len(BOX_COUNTS)
    targets = _detections(n)
    rows = [(i, box, label) for i, t in enumerate(targets) for box, label in zip(t["boxes"], t["labels"])]
    rows = [rows[k] for k in np.random.default_rng(0).permutation(len(rows))]  # boxes of an image need not be adjacent
    # the file's order of an image's boxes is the order they come back in
    targets = [{"boxes": [b for i, b, _ in rows if i == k], "labels": [c for i, _, c in rows if i == k]}
               for k in range(n)]
    path = tmp_path / "det.npz"
    np.savez(path, x=_x(n), boxes=np.array([r[1] for r in rows], np.float32),
             box_labels=np.array([r[2] for r in rows]), box_image=np.array([r[0] for r in rows]))
    d = load_data(str(path), SHAPE, seed=1)
    assert d.num_classes == 3 and d.labelled
    for _, labels in _parts(d).values():
        assert isinstance(labels, np.ndarray) and labels.dtype == object and labels.ndim == 1
        assert label_kind(labels) == "detections"
    _check_split(d, targets, n)
    counts = {i: len(t["labels"]) for _, (x, y) in _parts(d).items() for i, t in zip(_index(x), y)}
    assert counts == dict(enumerate(BOX_COUNTS))  # images 1 and 6 have no box, and are kept
    assert all(t["boxes"].shape == (0, 4) for _, (x, y) in _parts(d).items() for i, t in zip(_index(x), y)
               if BOX_COUNTS[i] == 0)


def test_detections_from_lists_keep_extra_keys_and_subsets_stay_object_arrays():
    y = _detections(N)
    y[3]["iscrowd"] = [0]
    d = dataset_from_arrays(_x(), y, SHAPE, seed=3)
    assert d.num_classes == 3
    _check_split(d, y)
    found = [t for _, (x, ys) in _parts(d).items() for i, t in zip(_index(x), ys) if i == 3]
    assert found[0]["iscrowd"] == [0]
    for _, labels in _parts(d).values():
        assert labels.dtype == object and all(isinstance(t, dict) for t in labels)


@pytest.mark.parametrize(
    ("arrays", "needles"),
    [
        ({}, ["'y'", "box_image", "arrays found: x"]),
        ({"boxes": np.zeros((2, 4)), "box_labels": np.zeros(2, int)}, ["'box_image'", "boxes, box_labels"]),
        ({"y": np.zeros(N, int), "boxes": np.zeros((2, 4))}, ["both", "'y'", "boxes"]),
        ({"boxes": np.zeros((2, 4)), "box_labels": np.zeros(2, int), "box_image": np.array([0, N])},
         ["box_image", f"holds {N}", f"0..{N - 1}"]),
        ({"boxes": np.zeros((2, 3)), "box_labels": np.zeros(2, int), "box_image": np.zeros(2, int)}, ["(2, 3)"]),
        ({"boxes": np.zeros((2, 4)), "box_labels": np.zeros(2), "box_image": np.zeros(2, int)},
         ["box_labels", "float64"]),
        ({"boxes": np.zeros((2, 4)), "box_labels": np.zeros(3, int), "box_image": np.zeros(2, int)},
         ["box_labels", "shape (3)", "2 boxes"]),
        ({"boxes": np.array([[0, 0, 1, 1], [4, 4, 2, 5]], np.float32), "box_labels": np.zeros(2, int),
          "box_image": np.array([5, 7])}, ["sample 7", "[4, 4, 2, 5]"]),
    ],
    ids=["no-labels", "partial-layout", "y-and-boxes", "box-image-out-of-range", "box-shape", "float-box-labels",
         "box-label-count", "inverted-box"],
)
def test_npz_detection_layout_errors_name_the_arrays(tmp_path, arrays, needles):
    path = tmp_path / "bad.npz"
    np.savez(path, x=_x(), **arrays)
    with pytest.raises(ConfigError) as exc:
        load_data(str(path), SHAPE)
    msg = _one_line(exc)
    assert "bad.npz" in msg and all(n in msg for n in needles), msg


# --- bad labels -----------------------------------------------------------------------------------


def _with(i: int, target: dict) -> list[dict]:
    y = _detections(N)
    y[i] = target
    return y


def _set(a: np.ndarray, where: tuple, value) -> np.ndarray:
    a = a.copy()
    a[where] = value
    return a


BAD_LABELS = {
    "class-count": (np.arange(N - 1) % 3, [f"{N - 1} labels", f"{N} samples", "does not match the data"]),
    "mask-count": (np.zeros((N + 1, 2, 2), int), [f"{N + 1} labels", f"{N} samples", "(21, 2, 2)"]),
    "values-count": (np.zeros(5), ["5 labels", f"{N} samples"]),
    "detections-count": (_detections(N - 1), [f"{N - 1} per-sample detection targets", f"{N} samples"]),
    "negative-class": (_set(np.arange(N) % 3, 4, -1), ["negative label -1"]),
    "negative-mask": (_set(np.zeros((N, 2, 2), int), (2, 1, 1), -3), ["negative class id -3", "255"]),
    "nan-value": (_set(np.zeros((N, 2)), (7, 1), np.nan), ["nan", "(7, 1)", "finite"]),
    "inf-value": (_set(np.zeros(N), 3, np.inf), ["inf", "(3,)"]),
    "inverted-box": (_with(4, {"boxes": [[5, 1, 2, 4]], "labels": [1]}), ["sample 4", "[5, 1, 2, 4]", "x2 >= x1"]),
    "non-finite-box": (_with(2, {"boxes": [[0, 0, np.inf, 1]], "labels": [1]}), ["sample 2", "inf", "finite"]),
    "box-shape": (_with(0, {"boxes": np.zeros((2, 3)), "labels": [1, 1]}), ["sample 0", "(2, 3)", "(K, 4)"]),
    "box-label-count": (_with(5, {"boxes": [[0, 0, 1, 1], [1, 1, 2, 2]], "labels": [1]}),
                        ["2 box(es)", "labels shaped (1)"]),
    "negative-box-label": (_with(6, {"boxes": [[0, 0, 1, 1]], "labels": [-2]}), ["sample 6", "label -2"]),
    "float-box-label": (_with(1, {"boxes": [[0, 0, 1, 1]], "labels": [1.5]}), ["float64", "1.5"]),
    "no-labels-key": (_with(8, {"boxes": [[0, 0, 1, 1]]}), ["sample 8", "no 'labels'", "keys: boxes"]),
    "not-a-dict": (_detections(N - 1) + ["cat"], ["sample 19", "str"]),
    "string-labels": (np.array(["cat"] * N), ["<U3"]),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_labels_are_one_line_errors_naming_the_value(case):
    y, needles = BAD_LABELS[case]
    with pytest.raises(ConfigError) as exc:
        dataset_from_arrays(_x(), y, SHAPE, source="my data")
    msg = _one_line(exc)
    assert msg.startswith("my data: ") and all(n in msg for n in needles), msg


# --- folders --------------------------------------------------------------------------------------


def _grey(i: int) -> int:
    return 10 + 40 * i


def _which(x: np.ndarray) -> list[int]:
    """The image index of each sample from its flat grey level."""
    out = []
    for img in x:
        assert np.allclose(img, img.flat[0], atol=1e-6)
        out.append((round(float(img.flat[0]) * 255) - 10) // 40)
    return out


def _segmentation_folder(root, n: int = 4) -> list[np.ndarray]:
    """Images 8 wide x 6 high; masks constant on 2x2 blocks, so a nearest-neighbour halving is exact."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    small = []
    for i in range(n):
        Image.new("RGB", (8, 6), (_grey(i),) * 3).save(root / "images" / f"im{i}.png")
        blocks = (np.arange(12).reshape(3, 4) + i) % 3
        blocks[0, 0] = VOID_LABEL if i == 1 else blocks[0, 0]
        Image.fromarray(np.kron(blocks, np.ones((2, 2), int)).astype(np.uint8)).save(root / "masks" / f"im{i}.png")
        small.append(blocks)
    return small


def test_segmentation_folder(tmp_path):
    expected = _segmentation_folder(tmp_path)
    d = load_data(str(tmp_path), (1, 3, 3, 4))
    assert d.num_classes == 3 and d.source == str(tmp_path)  # 255 is void, not a fourth class
    seen = []
    for _, (x, y) in _parts(d).items():
        assert x.shape[1:] == (3, 3, 4) and label_kind(y) == "masks" and y.shape[1:] == (3, 4)
        for i, mask in zip(_which(x), y):
            np.testing.assert_array_equal(mask, expected[i])
            seen.append(i)
    assert sorted(seen) == [0, 1, 2, 3]


def test_segmentation_folder_errors(tmp_path):
    from PIL import Image

    _segmentation_folder(tmp_path)
    (tmp_path / "masks" / "im2.png").unlink()
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), (1, 3, 3, 4))
    msg = _one_line(exc)
    assert "im2.png" in msg and "masks" in msg
    Image.new("RGB", (8, 6)).save(tmp_path / "masks" / "im2.png")
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), (1, 3, 3, 4))
    msg = _one_line(exc)
    assert "im2.png" in msg and "mode RGB" in msg


ANNOTATIONS = {
    "im0.png": {"boxes": [[2, 2, 10, 8]], "labels": [1]},
    "im1.png": {"boxes": [], "labels": []},
    "im2.png": {"boxes": [[0, 0, 20, 10], [4, 2, 6, 4]], "labels": [2, 0]},
    "im3.png": {"boxes": [[1, 1, 3, 3]], "labels": [1]},
}


def _detection_folder(root, annotations=ANNOTATIONS) -> None:
    """Images 20 wide x 10 high, flat grey."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(4):
        Image.new("L", (20, 10), _grey(i)).save(root / "images" / f"im{i}.png")
    (root / "annotations.json").write_text(json.dumps(annotations))


def test_detection_folder_rescales_boxes_to_the_input_size(tmp_path):
    _detection_folder(tmp_path)
    d = load_data(str(tmp_path), (1, 1, 5, 10))  # half the width and half the height
    assert d.num_classes == 3
    seen = []
    for _, (x, y) in _parts(d).items():
        assert y.dtype == object and label_kind(y) == "detections"
        for i, target in zip(_which(x), y):
            want = ANNOTATIONS[f"im{i}.png"]
            _same_target(target, {"boxes": np.asarray(want["boxes"], np.float32).reshape(-1, 4) / 2,
                                  "labels": want["labels"]})
            seen.append(i)
    assert sorted(seen) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("annotations", "needles"),
    [
        ({k: v for k, v in ANNOTATIONS.items() if k != "im3.png"}, ["im3.png", "no entry"]),
        ({**ANNOTATIONS, "nope.png": {"boxes": [], "labels": []}}, ["nope.png", "not an image"]),
        ({**ANNOTATIONS, "im0.png": {"boxes": [[10, 2, 2, 8]], "labels": [1]}}, ["im0.png", "[10, 2, 2, 8]"]),
        ([1, 2], ["list", "annotations.json"]),
        ("{broken", ["annotations.json", "line 1"]),
    ],
    ids=["image-without-entry", "entry-without-image", "inverted-box", "not-an-object", "not-json"],
)
def test_detection_folder_errors(tmp_path, annotations, needles):
    _detection_folder(tmp_path, annotations)
    if isinstance(annotations, str):
        (tmp_path / "annotations.json").write_text(annotations)
    with pytest.raises(ConfigError) as exc:
        load_data(str(tmp_path), (1, 1, 5, 10))
    msg = _one_line(exc)
    assert all(n in msg for n in needles), msg


# --- pkg.module:callable --------------------------------------------------------------------------

MODULE = "edgeprune_test_label_data"
MODULE_SOURCE = '''
import numpy as np


def _x(n=20):
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, 2, 2)).copy()


def classes():
    return _x(), np.arange(20) % 2


def masks():
    return {"x": _x(), "y": np.ones((20, 2, 2), np.int64)}


def detections():
    return _x(), [{"boxes": [[0, 0, i + 1, 1]], "labels": [i % 2]} for i in range(20)]


def unlabelled():
    return {"x": _x()}


def boom():
    raise RuntimeError("disk on fire")


def wrong():
    return 42


not_callable = 3
'''


@pytest.fixture
def data_module(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)
    yield MODULE
    sys.modules.pop(MODULE, None)


def test_callable_spec_of_each_form(data_module):
    d = load_data(f"{data_module}:classes", SHAPE, seed=1)
    assert d.source == f"{data_module}:classes" and d.num_classes == 2 and label_kind(d.eval_y) == "classes"
    _check_split(d, np.arange(N) % 2)
    m = load_data(f"{data_module}:masks", SHAPE)
    assert label_kind(m.eval_y) == "masks" and m.num_classes == 2
    det = load_data(f"{data_module}:detections", SHAPE)
    assert det.eval_y.dtype == object and det.num_classes == 2
    _check_split(det, [{"boxes": [[0, 0, i + 1, 1]], "labels": [i % 2]} for i in range(N)])
    u = load_data(f"{data_module}:unlabelled", SHAPE)
    assert not u.labelled and u.num_classes is None and len(u.train_x) == 12
    np.testing.assert_array_equal(load_data(f"{data_module}:classes", SHAPE, seed=1).eval_x, d.eval_x)


@pytest.mark.parametrize(
    ("attr", "needles"),
    [
        ("boom", ["RuntimeError: disk on fire"]),
        ("wrong", ["returned a int", "(x, y)"]),
        ("not_callable", ["no callable 'not_callable'"]),
        ("missing", ["no callable 'missing'"]),
    ],
)
def test_callable_spec_errors_name_the_spec(data_module, attr, needles):
    with pytest.raises(ConfigError) as exc:
        load_data(f"{data_module}:{attr}", SHAPE)
    msg = _one_line(exc)
    assert f"'{data_module}:{attr}'" in msg and all(n in msg for n in needles), msg


def test_callable_spec_module_that_does_not_import_and_a_path_with_a_colon(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as exc:
        load_data("edgeprune_no_such_module:load", SHAPE)
    msg = _one_line(exc)
    assert "edgeprune_no_such_module" in msg and "ModuleNotFoundError" in msg and ".npz" in msg
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "mod:fn.npz", x=_x(), y=np.arange(N) % 2)  # an existing path is read as a path
    assert load_data("mod:fn.npz", SHAPE).source == "mod:fn.npz"


# --- the shapes examples --------------------------------------------------------------------------

SHAPES_SHAPE = (1, 3, 64, 64)


@pytest.fixture(scope="module")
def shapes_data():
    """Both examples through load_data and the real shapes_split; the two tasks draw the same 2000 images, so they
    are generated once (3 s of one core) and shared."""
    from functools import cache

    from edgeprune.examples import shapes

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shapes, "generate", cache(shapes.generate))
        return {spec: load_data(spec, SHAPES_SHAPE) for spec in ("examples:shapes-detect", "examples:shapes-segment")}


def _hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(img.tobytes()).digest() for img in x}


@pytest.mark.parametrize(("spec", "kind"), [("examples:shapes-detect", "detections"),
                                             ("examples:shapes-segment", "masks")])
def test_shapes_examples_through_load_data(shapes_data, spec, kind):
    d = shapes_data[spec]
    assert d.source == spec and d.num_classes == 4
    assert (len(d.train_x), len(d.val_x), len(d.eval_x), len(d.calib_x)) == (1200, 400, 400, 200)
    for _, (x, y) in _parts(d).items():
        assert x.shape[1:] == (3, 64, 64) and len(y) == len(x) and label_kind(y) == kind
    if kind == "masks":
        assert d.eval_y.shape == (400, 64, 64)
    else:
        assert d.eval_y.dtype == object and set(d.eval_y[0]) == {"boxes", "labels"}
    train, val, test = _hashes(d.train_x), _hashes(d.val_x), _hashes(d.eval_x)
    assert len(train) == 1200 and len(val) == 400 and len(test) == 400
    assert not (train & val) and not (train & test) and not (val & test)  # no image in two splits
    assert _hashes(d.calib_x) <= train


@pytest.mark.parametrize("spec", ["examples:shapes-detect", "examples:shapes-segment"])
def test_shapes_examples_check_the_input_shape(spec):
    with pytest.raises(ConfigError) as exc:
        load_data(spec, (1, 3, 32, 32))
    msg = _one_line(exc)
    assert spec in msg and "(3, 64, 64)" in msg and "(1, 3, 32, 32)" in msg and "(1, 3, 64, 64)" in msg


def test_unknown_example_lists_the_shapes_examples():
    with pytest.raises(ConfigError) as exc:
        load_data("examples:shapes", SHAPES_SHAPE)
    msg = _one_line(exc)
    assert "examples:shapes-detect" in msg and "examples:shapes-segment" in msg and "examples:digits" in msg
