from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import digits_split
from edgeprune.examples import digits


def test_build_model_forward_shape():
    model = digits.build_model().eval()
    out = model(torch.zeros(digits.INPUT_SHAPE))
    assert out.shape == (1, 10)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 10
    assert digits.INPUT_SHAPE == (1, 1, 8, 8)


def test_architecture_has_residuals_one_downsample_and_widths_multiple_of_8():
    model = digits.build_model()
    blocks = [m for m in model.modules() if isinstance(m, digits.InvertedResidual)]
    assert sum(b.use_residual for b in blocks) >= 3
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels > 1:
            assert m.out_channels % 8 == 0 and m.in_channels % 8 == 0
    feats = model.blocks(model.stem(torch.zeros(2, 1, 8, 8)))
    assert feats.shape[-2:] == (4, 4)


def test_macs_in_range():
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(digits.build_model().eval(), torch.zeros(digits.INPUT_SHAPE))
    assert 5e6 <= macs <= 15e6
    assert params < 1e6


def test_model_exports():
    model = digits.build_model().eval()
    x = torch.randn(digits.INPUT_SHAPE)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))


def test_recipe_key_is_stable_and_recipe_sensitive():
    assert digits.recipe_key() == digits.recipe_key(dict(digits.RECIPE))
    assert len(digits.recipe_key()) == 12
    assert digits.recipe_key(dict(digits.RECIPE, epochs=digits.RECIPE["epochs"] + 1)) != digits.recipe_key()


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert digits.resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert digits.resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("EDGEPRUNE_CACHE_DIR")
    assert digits.resolve_cache_dir() == tmp_path / "xdg" / "edgeprune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert digits.resolve_cache_dir() == tmp_path / "home" / ".cache" / "edgeprune"


def test_shift_augmentation_moves_by_at_most_one_pixel():
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    out = digits._shift(x, torch.Generator().manual_seed(0))
    assert out.sum(dim=(1, 2, 3)).eq(1).all()
    ys, xs = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert ys.sub(4).abs().max() <= 1 and xs.sub(4).abs().max() <= 1
    assert len({(int(a), int(b)) for a, b in zip(ys, xs)}) == 9


# --- one real training run for the whole file -----------------------------------------------------


@pytest.fixture(scope="module")
def trained(digits_training):
    """The session's one real training run (tests/conftest.py): `load_trained` into an empty cache folder of its own,
    with its progress calls and seconds recorded."""
    return digits_training


@pytest.mark.slow
def test_trained_model_accuracy(trained):
    data = digits_split()
    model = trained["model"]
    assert not model.training
    acc = digits.accuracy(model, data.eval_x, data.eval_y)
    assert acc >= 0.97, acc
    epochs = digits.RECIPE["epochs"]
    assert trained["progress"] == [(e, epochs) for e in range(1, epochs + 1)]


@pytest.mark.slow
def test_second_call_loads_from_cache(trained):
    path = trained["cache"] / f"digits-{digits.recipe_key()}.pt"
    assert path.is_file()
    assert [p.name for p in trained["cache"].iterdir()] == [path.name]  # no temp files left behind
    mtime = path.stat().st_mtime_ns
    calls: list[tuple[int, int]] = []
    start = time.perf_counter()
    again = digits.load_trained(cache_dir=trained["cache"], progress=lambda e, n: calls.append((e, n)))
    seconds = time.perf_counter() - start
    assert calls == []  # no training epoch ran
    assert path.stat().st_mtime_ns == mtime
    assert seconds < trained["seconds"] / 5
    assert not again.training
    x = torch.from_numpy(digits_split().eval_x[:16])
    with torch.no_grad():
        torch.testing.assert_close(again(x), trained["model"](x))


def test_corrupt_cache_is_retrained_and_replaced(tmp_path, monkeypatch):
    path = tmp_path / f"digits-{digits.recipe_key()}.pt"
    path.write_bytes(b"truncated")
    ran: list[int] = []

    def fake_train(dataset, recipe=digits.RECIPE, progress=None):  # stands in for the real (slow) training
        ran.append(len(dataset.train_x))
        return digits.build_model().eval()

    monkeypatch.setattr(digits, "train", fake_train)
    model = digits.load_trained(cache_dir=tmp_path)
    assert ran == [len(digits_split().train_x)]
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())
    ran.clear()
    digits.load_trained(cache_dir=tmp_path)
    assert ran == []  # the replaced file loads


def test_train_is_deterministic_on_a_short_recipe():
    data = digits_split()
    small = type(data)(
        source=data.source,
        calib_x=data.calib_x,
        eval_x=data.eval_x,
        eval_y=data.eval_y,
        train_x=data.train_x[:128],
        train_y=data.train_y[:128],
        num_classes=10,
    )
    recipe = dict(digits.RECIPE, epochs=1)
    before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    a = digits.train(small, recipe)
    assert torch.equal(torch.random.get_rng_state(), before)  # caller's RNG left alone
    assert torch.get_num_threads() == threads
    b = digits.train(small, recipe)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert np.isfinite(digits.accuracy(a, data.eval_x, data.eval_y))
