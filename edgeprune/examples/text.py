"""A generated text task and a tiny BERT for it: the text encoder that structure pruning (`edgeprune.structure`)
is shown on. Needs the `transformers` package (imported only here, when a model is built).

The task ("markers"): sequences of `SEQ_LEN` token ids from a vocabulary of `VOCAB_SIZE`: token 0 first (the
class token BERT pools), then filler tokens drawn uniformly from `FILLER_FIRST`..`VOCAB_SIZE - 1`, among which
each of the `NUM_CLASSES` marker tokens 1..NUM_CLASSES appears 0 to 3 times, except the class's own marker, which
appears 1 to 2 times more than the most frequent other one. The class is the marker that appears most often:
counting over the whole sequence, which attention does. `SAMPLES` sequences from seed `SEED`, split like every
labelled dataset (`edgeprune.data`: train / validation / test 60/20/20, stratified, calibration from train).

The model: `BertForSequenceClassification` built from `CONFIG` (no download; eager attention, so that every
target's exporter sees plain matmul / softmax), wrapped as `TokenClassifier`, whose forward takes one (N, L) tensor
of token ids and returns the logits (N, C). The ids may be int64 or float32: every edgeprune stage feeds float32
inputs (the ExecuTorch exporter refuses a non-float example input, the runners feed float32), so the wrapper casts
them to int64 itself and the exported graph takes float32 ids. Trained on first use from `RECIPE` (one thread,
deterministic) and cached as `<cache>/text-markers-<recipe_key>.pt`, like `examples:digits`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._deps import require
from edgeprune._torch import torch_threads
from edgeprune.data import SPLIT_RULE, _split
from edgeprune.errors import ConfigError
from edgeprune.examples._cache import load_or_train
from edgeprune.examples.digits import accuracy, resolve_cache_dir
from edgeprune.types import Dataset

SPEC = "examples:text-markers"
VOCAB_SIZE = 48
SEQ_LEN = 32
NUM_CLASSES = 3
FILLER_FIRST = 1 + NUM_CLASSES
SAMPLES = 4000
SEED = 0
INPUT_SHAPE: tuple[int, ...] = (1, SEQ_LEN)

CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": SEQ_LEN,
    "type_vocab_size": 1,
    "num_labels": NUM_CLASSES,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "attn_implementation": "eager",
}
"""The BertConfig keywords of the example's encoder: 2 layers, hidden 64, 4 heads of 16, MLP 128."""

RECIPE: dict[str, Any] = {
    "arch": "bert-markers-v1",
    "config": CONFIG,
    "data": SPEC,
    "samples": SAMPLES,
    "data_seed": SEED,
    "split": SPLIT_RULE,
    "epochs": 6,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 0.01,
    "schedule": "onecycle",
    "seed": 0,
    "threads": 1,
}

ProgressFn = Callable[[int, int], None]


def generate(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(ids float32 (n, SEQ_LEN), labels int64 (n,)): `n` sequences of the markers task, seeded."""
    rng = np.random.default_rng(seed)
    x = rng.integers(FILLER_FIRST, VOCAB_SIZE, size=(n, SEQ_LEN))
    x[:, 0] = 0
    y = rng.integers(0, NUM_CLASSES, size=n)
    markers = np.arange(1, NUM_CLASSES + 1)
    for i in range(n):
        counts = rng.integers(0, 4, size=NUM_CLASSES)
        counts[y[i]] = 0
        counts[y[i]] = counts.max() + rng.integers(1, 3)
        positions = rng.permutation(np.arange(1, SEQ_LEN))[: counts.sum()]
        x[i, positions] = np.repeat(markers, counts)
    return x.astype(np.float32), y.astype(np.int64)


def text_split(seed: int = SEED) -> Dataset:
    """The markers task's `SAMPLES` sequences, split train / validation / test (calibration from train)."""
    x, y = generate(SAMPLES, SEED)
    return _split(x, y, seed, source=SPEC, num_classes=NUM_CLASSES)


class TokenClassifier(nn.Module):
    """A transformers sequence classifier behind one tensor: token ids (N, L), int64 or float32, to logits (N, C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids.long()).logits


def build_model(config: dict[str, Any] | None = None) -> TokenClassifier:
    """An untrained TokenClassifier over a BertForSequenceClassification built from `config` (default `CONFIG`)."""
    transformers = require("transformers", extra="text")
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(**(config or CONFIG)))
    return TokenClassifier(bert).eval()


def recipe_key(recipe: dict[str, Any] = RECIPE) -> str:
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def weights_path(cache: Path | None = None) -> Path:
    return resolve_cache_dir(cache) / f"text-markers-{recipe_key()}.pt"


def train(dataset: Dataset, recipe: dict[str, Any] = RECIPE, progress: ProgressFn | None = None) -> TokenClassifier:
    """A fresh model trained on `dataset`'s train split with `recipe`; deterministic for a given recipe and data.
    Leaves torch's global random state and thread count as it found them. Returns the model in eval mode."""
    if dataset.train_x is None or dataset.train_y is None:
        raise ConfigError(f"data '{dataset.source}' has no labelled train split; the text example trains on one")
    if recipe["optimizer"] != "adamw":
        raise ConfigError(f"recipe optimizer '{recipe['optimizer']}' is unknown; the text example uses adamw")
    x = torch.from_numpy(np.ascontiguousarray(dataset.train_x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(dataset.train_y, dtype=np.int64))
    epochs, batch_size = int(recipe["epochs"]), int(recipe["batch_size"])
    with torch_threads(int(recipe.get("threads", 1))), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe["seed"]))
        generator = torch.Generator().manual_seed(int(recipe["seed"]))
        model = build_model(recipe["config"])
        opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        steps = epochs * ((len(x) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.2)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                loss = loss_fn(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if progress is not None:
                progress(epoch + 1, epochs)
    return model.eval()


def _load_cached(path: Path) -> TokenClassifier | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model()
        model.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError):  # corrupt or stale file: retrain and replace it
        return None
    return model.eval()


def load_trained(cache_dir: Path | None = None, progress: ProgressFn | None = None) -> TokenClassifier:
    """The trained text model in eval mode: loaded from the cache, or trained now and cached atomically."""
    return load_or_train(weights_path(cache_dir), _load_cached,
                         lambda: train(text_split(), RECIPE, progress=progress))


__all__ = ["SPEC", "INPUT_SHAPE", "NUM_CLASSES", "TokenClassifier", "accuracy", "build_model", "generate",
           "load_trained", "text_split", "train", "weights_path"]
