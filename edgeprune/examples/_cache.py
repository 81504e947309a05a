"""The bundled examples' weights cache: load a trained model, or train it now and cache it atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from edgeprune._io import atomic_write_bytes
from edgeprune.errors import ConfigError

M = TypeVar("M", bound=nn.Module)


def load_or_train(path: Path, load_cached: Callable[[Path], M | None], train: Callable[[], M]) -> M:
    """`load_cached(path)` when it gives a model; else `train()`, its weights written to `path` atomically. A cache
    folder that cannot be created or written is a one-line ConfigError naming it and the fix."""
    model = load_cached(path)
    if model is not None:
        return model
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the example cache folder '{path.parent}' ({exc.strerror}); "
                          "set EDGEPRUNE_CACHE_DIR to a writable folder") from exc
    model = train()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise ConfigError(f"cannot write the trained example to '{path}' ({exc.strerror}); set EDGEPRUNE_CACHE_DIR "
                          "to a writable folder") from exc
    return model
