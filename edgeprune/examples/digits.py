"""The bundled example `examples:digits`: a small MobileNetV2-style CNN for scikit-learn's 8x8 handwritten digits.

The model is trained on first use from a fixed recipe (deterministic, about a minute on 2 CPU cores) and its
state_dict is cached as `<cache>/digits-<recipe_key>.pt`; changing the recipe changes the key and so retrains.
Its inverted-residual blocks with residual adds give structured pruning real channel dependencies to respect.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._torch import torch_threads
from edgeprune.data import DIGITS_INPUT_SHAPE, DIGITS_SPLIT_SEED, SPLIT_RULE, digits_split
from edgeprune.errors import ConfigError
from edgeprune.examples._cache import load_or_train
from edgeprune.types import Dataset

INPUT_SHAPE: tuple[int, ...] = DIGITS_INPUT_SHAPE
NUM_CLASSES = 10

STEM_CHANNELS = 32
HEAD_CHANNELS = 256
BLOCKS: tuple[tuple[int, int, int], ...] = (
    # (expand ratio, output channels, stride); input 8x8, one stride-2 stage down to 4x4
    (4, 32, 1),
    (4, 48, 1),
    (4, 48, 1),
    (4, 64, 2),
    (4, 64, 1),
    (4, 64, 1),
    (4, 96, 1),
    (4, 96, 1),
)

RECIPE: dict[str, Any] = {
    "arch": "digits-mbv2-v1",
    "data": "examples:digits",
    "split_seed": DIGITS_SPLIT_SEED,
    "split": SPLIT_RULE,  # trained on the train part only: a new split rule retrains
    "epochs": 20,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 4e-3,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "label_smoothing": 0.05,
    "augmentation": "random shift of -1..1 pixels per axis, zero fill",
    "seed": 0,
    "threads": 1,
}
"""`threads` is torch's intra-op thread count while training: one thread makes the weights reproducible bit for bit
whatever the machine's core count, and tiny 8x8 tensors gain little from more (about 1.6 s per epoch on one core)
while oversubscribed OpenMP threads on a busy machine slow training by 10x or more."""

ProgressFn = Callable[[int, int], None]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 project (linear), plus the input when stride is 1 and widths match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv_bn(cin, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # fixed at construction: no data-dependent control flow
            return x + self.conv(x)
        return self.conv(x)


class DigitsNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = _conv_bn(1, STEM_CHANNELS, 3)
        blocks = []
        cin = STEM_CHANNELS
        for expand, cout, stride in BLOCKS:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, HEAD_CHANNELS, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))


def build_model(num_classes: int = NUM_CLASSES) -> nn.Module:
    """An untrained DigitsNet for (N, 1, 8, 8) inputs in [0, 1]."""
    return DigitsNet(num_classes)


def recipe_key(recipe: dict[str, Any] = RECIPE) -> str:
    """Short sha256 of the recipe's canonical JSON: names the cached weights."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by -1..1 pixels along each axis, filling with zeros."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    out = torch.empty_like(x)
    for oy in range(3):
        for ox in range(3):
            sel = (dy == oy) & (dx == ox)
            if sel.any():
                out[sel] = padded[sel, :, oy : oy + h, ox : ox + w]
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` (put in eval mode) on float inputs `x` and integer labels `y`."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        correct += int((logits.argmax(1).numpy() == y[i : i + batch_size]).sum())
    return correct / max(1, len(x))


def train(dataset: Dataset, recipe: dict[str, Any] = RECIPE, progress: ProgressFn | None = None) -> nn.Module:
    """Train a fresh model on `dataset.train_x/train_y` with `recipe`; deterministic for a given recipe and data.

    Leaves torch's global random state and thread count as it found them. Returns the model in eval mode.
    """
    if dataset.train_x is None or dataset.train_y is None:
        raise ConfigError(f"data '{dataset.source}' has no labelled train split; the digits example trains on one")
    x = torch.from_numpy(np.ascontiguousarray(dataset.train_x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(dataset.train_y, dtype=np.int64))
    with torch_threads(int(recipe.get("threads", 1))):
        return _train(x, y, dataset.num_classes or NUM_CLASSES, recipe, progress)


def _train(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, recipe: dict[str, Any], progress: ProgressFn | None
) -> nn.Module:
    epochs = int(recipe["epochs"])
    batch_size = int(recipe["batch_size"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe["seed"]))
        generator = torch.Generator().manual_seed(int(recipe["seed"]))
        model = build_model(num_classes)
        if recipe["optimizer"] == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(
                model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
            )
        elif recipe["optimizer"] == "sgd":
            opt = torch.optim.SGD(
                model.parameters(), lr=recipe["lr"], momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"]
            )
        else:
            raise ConfigError(f"recipe optimizer '{recipe['optimizer']}' is unknown; use adamw or sgd")
        steps_per_epoch = (len(x) + batch_size - 1) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.25
        )
        loss_fn = nn.CrossEntropyLoss(label_smoothing=float(recipe.get("label_smoothing", 0.0)))
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                xb = _shift(x[idx], generator) if recipe.get("augmentation") else x[idx]
                loss = loss_fn(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if progress is not None:
                progress(epoch + 1, epochs)
    return model.eval()


def resolve_cache_dir(explicit: Path | None = None) -> Path:
    """`explicit`, else $EDGEPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/edgeprune, else ~/.cache/edgeprune."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(os.environ["EDGEPRUNE_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "edgeprune"
    return Path.home() / ".cache" / "edgeprune"


def weights_path(cache: Path | None = None) -> Path:
    return resolve_cache_dir(cache) / f"digits-{recipe_key()}.pt"


def _load_cached(path: Path) -> nn.Module | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model()
        model.load_state_dict(state)
    except Exception:  # corrupt, truncated or stale file: retrain and replace it
        return None
    return model.eval()


def load_trained(cache_dir: Path | None = None, progress: ProgressFn | None = None) -> nn.Module:
    """The trained digits model in eval mode: loaded from the cache, or trained now and cached atomically."""
    return load_or_train(weights_path(cache_dir), _load_cached,
                         lambda: train(digits_split(), RECIPE, progress=progress))
