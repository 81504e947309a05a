"""Shared fixtures: one model cache per test session, and one trained digits model."""

from __future__ import annotations

import os
import textwrap

import pytest


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """Point edgeprune's model cache at a folder private to this test session."""
    path = tmp_path_factory.mktemp("edgeprune-cache")
    old = os.environ.get("EDGEPRUNE_CACHE_DIR")
    os.environ["EDGEPRUNE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EDGEPRUNE_CACHE_DIR", None)
    else:
        os.environ["EDGEPRUNE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits_model(cache_dir):
    """The bundled example, trained once for the whole session (the first call trains and caches it)."""
    from edgeprune.examples import digits

    return digits.load_trained()


TINY_FACTORY = textwrap.dedent(
    '''
    import torch
    from torch import nn

    class Tiny(nn.Module):
        example_input_shape = (1, 1, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            return self.head(x.mean((2, 3)))

    def tiny():
        torch.manual_seed(0)
        return Tiny()

    def not_a_module():
        return {"weights": 1}
    '''
)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A user model package `user_models` importable as `user_models:tiny`."""
    (tmp_path / "user_models.py").write_text(TINY_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_models"
