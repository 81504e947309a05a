"""The bundled examples `examples:shapes-detect` and `examples:shapes-segment`: a seeded generator of small images
of simple shapes, a mobile detector and a mobile segmenter trained on them on first use and cached.

The data: 64x64 RGB images in [0, 1], each a dark background (a random tint, a linear gradient, up to three thin
unlabelled line segments as clutter, and Gaussian pixel noise) holding 1 to 4 non-overlapping shapes, each a circle,
a square or an upright triangle (the class: 1, 2, 3; 0 is background), 8 to 22 pixels across, in one of six bright
colours blended over the background at 50-100% (colour says nothing of the class). Per image:
`boxes` (K, 4; x1, y1, x2, y2 in pixels, the edges of the shape's pixels), `labels` (K,) and a mask (64, 64) of class
ids. Image i of seed s is drawn from `numpy.random.default_rng([s, i])`, so it is the same whatever the count asked.
Splits (`shapes_split`): of `SAMPLES` images, the first 60% train (calibration: the first 10% of all), the next 20%
validation, the last 20% test.

The models take the image as generated: (1, 3, 64, 64) in [0, 1] (the detector's mean/std step is inside it; the
segmenter was trained on [0, 1] as is):
- detector: torchvision's SSD with an SSDLite head (depthwise-separable predictors) on a small MobileNetV2-style
  backbone; three feature levels (strides 4, 8, 16), two square anchors per location, 672 anchors. Exported through
  `edgeprune.vision_heads.DetectionHeads`: raw `cls_logits` and `bbox_regression`; its `postprocess` decodes them.
- segmenter: torchvision's LR-ASPP head on the same kind of backbone (low: stride 8, high: stride 16), 4 classes,
  logits upsampled to 64x64; exported through `SegmentationLogits`.

Each trains on the train split from a fixed recipe (deterministic, one thread) and is cached as
`<cache>/shapes-<task>-<recipe_key>.pt`, like `examples:digits`; changing the recipe changes the key and retrains.
Trained so, they score on the 400-image test split: detector mAP50 0.994 (mAP50:95 0.837), segmenter mIoU 0.799
(torch 2.14.1, torchvision 0.29.1; about 3 and 1 minutes of one busy core).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._deps import require
from edgeprune._torch import torch_threads
from edgeprune.errors import ConfigError
from edgeprune.examples._cache import load_or_train
from edgeprune.examples.digits import InvertedResidual, _conv_bn, resolve_cache_dir
from edgeprune.types import Dataset

IMAGE_SIZE = 64
INPUT_SHAPE: tuple[int, ...] = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
CLASSES = ("background", "circle", "square", "triangle")
NUM_CLASSES = len(CLASSES)
SHAPES_PER_IMAGE = (1, 4)
SHAPE_PIXELS = (8, 22)
CONTRAST = (0.5, 1.0)
"""A shape's colour is blended over the background with a weight drawn from this range."""
STROKES = 3
"""Up to this many unlabelled line segments per image, in the shapes' colours: clutter a detector must ignore."""
COLOURS = np.array([[0.95, 0.25, 0.2], [0.2, 0.85, 0.3], [0.25, 0.45, 0.95], [0.95, 0.85, 0.2],
                    [0.85, 0.3, 0.9], [0.2, 0.9, 0.9]], dtype=np.float32)
NOISE_STD = 0.08
SAMPLES = 2000
SPLIT_SEED = 0
SPLIT_RULE = "first 60% train (calibration: first 10% of all), next 20% validation, last 20% test"
PREPROCESSING = ("64x64 RGB image as float32 NCHW in [0, 1] (edgeprune.examples.shapes.generate); no mean/std "
                 "normalisation by the app")
TASKS = ("detection", "segmentation")

BACKBONE: tuple[tuple[int, int, int], ...] = (
    # (expand ratio, output channels, stride) after a 16-channel stride-2 stem: 32x32 -> 4x4
    (1, 16, 1),
    (4, 24, 2),   # stride 4
    (4, 24, 1),
    (4, 40, 2),   # stride 8
    (4, 40, 1),
    (4, 64, 2),   # stride 16
    (4, 64, 1),
)
FEATURE_BLOCKS = {"detection": {2: "s4", 4: "s8", 6: "s16"}, "segmentation": {4: "low", 6: "high"}}
"""Which blocks' outputs each task's head reads (index into BACKBONE)."""

RECIPES: dict[str, dict[str, Any]] = {
    "detection": {
        "arch": "shapes-ssdlite-v2", "generator": "shapes-v2",
        "data": f"shapes {IMAGE_SIZE}px, seed {SPLIT_SEED}",
        "samples": SAMPLES,
        "split": SPLIT_RULE,
        "anchors": "DefaultBoxGenerator([[], [], []], min_ratio=0.15, max_ratio=0.45)",
        "postprocess": {"score_thresh": 0.01, "nms_thresh": 0.45, "detections_per_img": 50, "topk_candidates": 100},
        "epochs": 14,
        "batch_size": 32,
        "lr": 4e-3,
        "weight_decay": 1e-4,
        "seed": 0,
        "threads": 1,
    },
    "segmentation": {
        "arch": "shapes-lraspp-v2", "generator": "shapes-v2",
        "data": f"shapes {IMAGE_SIZE}px, seed {SPLIT_SEED}",
        "samples": SAMPLES,
        "split": SPLIT_RULE,
        "epochs": 8,
        "batch_size": 32,
        "lr": 4e-3,
        "weight_decay": 1e-4,
        "seed": 0,
        "threads": 1,
    },
}
"""`threads`: torch's intra-op threads while training, one for bit-reproducible weights (as examples:digits)."""

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Shapes:
    """Generated images with their detection targets and segmentation masks."""

    images: np.ndarray
    """(N, 3, H, W) float32 in [0, 1]"""
    masks: np.ndarray
    """(N, H, W) int64 class ids"""
    boxes: list[np.ndarray]
    """per image (K, 4) float32 x1, y1, x2, y2"""
    labels: list[np.ndarray]
    """per image (K,) int64 in 1..3"""

    def targets(self) -> np.ndarray:
        """Detection labels: an object array of one {'boxes', 'labels'} dict per image."""
        out = np.empty(len(self.boxes), dtype=object)
        for i, (b, c) in enumerate(zip(self.boxes, self.labels)):
            out[i] = {"boxes": b, "labels": c}
        return out


def _shape_mask(kind: int, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    if kind == 1:  # circle inscribed in the side x side square
        r = side / 2
        return (xs - x0 - r) ** 2 + (ys - y0 - r) ** 2 <= r * r
    if kind == 2:  # axis-aligned square
        return (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
    # upright isosceles triangle: apex at the top centre, base along the bottom edge
    depth = ys - y0
    return (depth >= 0) & (depth <= side) & (np.abs(xs - x0 - side / 2) <= depth / 2)


def _stroke(rng: np.random.Generator, size: int) -> np.ndarray:
    """Pixels within 0.5-1 px of a random segment: an unlabelled distractor."""
    (x1, y1), (x2, y2) = rng.uniform(0, size, size=(2, 2))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((xs - x1) * dx + (ys - y1) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.hypot(xs - x1 - t * dx, ys - y1 - t * dy) <= rng.uniform(0.5, 1.0)


def _image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tint = rng.uniform(0.05, 0.35, size=3).astype(np.float32)
    slope = rng.uniform(-0.15, 0.15, size=2).astype(np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    image = tint[:, None, None] + (slope[0] * xs + slope[1] * ys)[None]
    for _ in range(int(rng.integers(0, STROKES + 1))):
        image[:, _stroke(rng, size)] = COLOURS[int(rng.integers(len(COLOURS)))][:, None]
    image = image + rng.normal(0.0, NOISE_STD, size=(3, size, size)).astype(np.float32)
    mask = np.zeros((size, size), dtype=np.int64)
    boxes, labels = [], []
    for _ in range(int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1))):
        for _try in range(20):  # place without touching an earlier shape
            kind = int(rng.integers(1, NUM_CLASSES))
            side = int(rng.integers(SHAPE_PIXELS[0], SHAPE_PIXELS[1] + 1))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if all(x0 > b[2] or y0 > b[3] or x0 + side < b[0] or y0 + side < b[1] for b in boxes):
                break
        else:
            continue
        pixels = _shape_mask(kind, x0, y0, side, size)
        alpha = rng.uniform(*CONTRAST)
        colour = alpha * COLOURS[int(rng.integers(len(COLOURS)))][:, None] + (1 - alpha) * image[:, pixels]
        image[:, pixels] = colour + rng.normal(0.0, NOISE_STD, size=(3, int(pixels.sum())))
        mask[pixels] = kind
        rows, cols = np.nonzero(pixels)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        labels.append(kind)
    return (np.clip(image, 0.0, 1.0).astype(np.float32), mask, np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64))


def generate(n: int, seed: int = 0, size: int = IMAGE_SIZE, start: int = 0) -> Shapes:
    """Images `start .. start + n - 1` of `seed` (each from its own generator: the same whatever `n`)."""
    if n < 0 or size < 2 * SHAPE_PIXELS[1]:
        raise ConfigError(f"shapes: need n >= 0 and size >= {2 * SHAPE_PIXELS[1]}, got n={n}, size={size}")
    made = [_image(np.random.default_rng([seed, i]), size) for i in range(start, start + n)]
    return Shapes(
        images=np.stack([m[0] for m in made]) if made else np.zeros((0, 3, size, size), np.float32),
        masks=np.stack([m[1] for m in made]) if made else np.zeros((0, size, size), np.int64),
        boxes=[m[2] for m in made],
        labels=[m[3] for m in made],
    )


def shapes_split(task: str, samples: int = SAMPLES, seed: int = SPLIT_SEED) -> Dataset:
    """A `Dataset` of generated shapes split as `SPLIT_RULE`; labels are masks (segmentation) or an object array of
    per-image {'boxes', 'labels'} dicts (detection)."""
    if task not in TASKS:
        raise ConfigError(f"shapes task '{task}' is unknown; use one of {', '.join(TASKS)}")
    data = generate(samples, seed)
    y = data.targets() if task == "detection" else data.masks
    n_train, n_val = int(0.6 * samples), int(0.2 * samples)
    train, val, test = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, samples)
    return Dataset(
        source=f"examples:shapes-{'detect' if task == 'detection' else 'segment'}",
        calib_x=data.images[: int(0.1 * samples)],
        eval_x=data.images[test],
        eval_y=y[test],
        train_x=data.images[train],
        train_y=y[train],
        num_classes=NUM_CLASSES,
        val_x=data.images[val],
        val_y=y[val],
        split_seed=None,  # a fixed split: the bundled models are trained on its train part
    )


class ShapesBackbone(nn.Module):
    """A small MobileNetV2-style backbone (the digits example's inverted residuals) returning the feature maps
    named in `features` ({block index: name})."""

    def __init__(self, features: dict[int, str]):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2)
        blocks, cin = [], 16
        for expand, cout, stride in BACKBONE:
            blocks.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.features = dict(features)
        self.out_channels = [BACKBONE[i][1] for i in sorted(self.features)]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.features:
                out[self.features[i]] = x
        return out


def _raw_model(task: str, recipe: dict[str, Any]) -> nn.Module:
    """The torchvision detector (SSD) or segmenter (LRASPP) before its export-friendly wrapper."""
    require("torchvision", extra="vision")
    backbone = ShapesBackbone(FEATURE_BLOCKS[task])
    if task == "segmentation":
        from torchvision.models.segmentation.lraspp import LRASPP

        low, high = backbone.out_channels
        return LRASPP(backbone, low, high, NUM_CLASSES, inter_channels=64)
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    anchors = DefaultBoxGenerator([[] for _ in backbone.out_channels], min_ratio=0.15, max_ratio=0.45)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), NUM_CLASSES, norm)
    return SSD(backbone, anchors, (IMAGE_SIZE, IMAGE_SIZE), NUM_CLASSES, head=head,
                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], **recipe["postprocess"])


def _wrap(task: str, raw: nn.Module) -> nn.Module:
    from edgeprune import vision_heads

    if task == "detection":
        return vision_heads.DetectionHeads(raw, INPUT_SHAPE)
    return vision_heads.SegmentationLogits(raw, INPUT_SHAPE)


def build_model(task: str, recipe: dict[str, Any] | None = None) -> nn.Module:
    """An untrained example model in its export-friendly form (input (1, 3, 64, 64))."""
    if task not in TASKS:
        raise ConfigError(f"shapes task '{task}' is unknown; use one of {', '.join(TASKS)}")
    recipe = RECIPES[task] if recipe is None else recipe
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe["seed"]))
        return _wrap(task, _raw_model(task, recipe))


def recipe_key(recipe: dict[str, Any]) -> str:
    """Short sha256 of the recipe's canonical JSON: names the cached weights."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def weights_path(task: str, cache: Path | None = None, recipe: dict[str, Any] | None = None) -> Path:
    recipe = RECIPES[task] if recipe is None else recipe
    return resolve_cache_dir(cache) / f"shapes-{task}-{recipe_key(recipe)}.pt"


def train(task: str, dataset: Dataset, recipe: dict[str, Any] | None = None,
          progress: ProgressFn | None = None) -> nn.Module:
    """Train a fresh example model on `dataset`'s train split; deterministic for a recipe and data. Leaves torch's
    random state and thread count as it found them; returns the export-friendly model in eval mode."""
    recipe = RECIPES[task] if recipe is None else recipe
    if dataset.train_x is None or dataset.train_y is None:
        raise ConfigError(f"data '{dataset.source}' has no labelled train split; the shapes examples train on one")
    with torch_threads(int(recipe.get("threads", 1))), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe["seed"]))
        raw = _raw_model(task, recipe)
        _fit(task, raw, dataset.train_x, dataset.train_y, recipe, progress)
        return _wrap(task, raw).eval()


def _fit(task: str, raw: nn.Module, x: np.ndarray, y: np.ndarray, recipe: dict[str, Any],
         progress: ProgressFn | None) -> None:
    epochs, batch_size = int(recipe["epochs"]), int(recipe["batch_size"])
    generator = torch.Generator().manual_seed(int(recipe["seed"]))
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    opt = torch.optim.AdamW(raw.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.2)
    if task == "segmentation":
        masks = torch.from_numpy(np.asarray(y, dtype=np.int64))
    else:
        targets = [{"boxes": torch.from_numpy(np.asarray(t["boxes"], dtype=np.float32)),
                    "labels": torch.from_numpy(np.asarray(t["labels"], dtype=np.int64))} for t in y]
    raw.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), batch_size):
            idx = order[i:i + batch_size]
            if task == "segmentation":
                loss = nn.functional.cross_entropy(raw(images[idx])["out"], masks[idx])
            else:
                losses = raw(list(images[idx]), [targets[j] for j in idx.tolist()])
                loss = losses["bbox_regression"] + losses["classification"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    raw.eval()


def _load_cached(task: str, path: Path, recipe: dict[str, Any]) -> nn.Module | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(task, recipe)
        model.load_state_dict(state)
    except Exception:  # corrupt, truncated or stale file: retrain and replace it
        return None
    return model.eval()


def load_trained(task: str, cache_dir: Path | None = None, progress: ProgressFn | None = None,
                 recipe: dict[str, Any] | None = None) -> nn.Module:
    """The trained example model in eval mode: loaded from the cache, or trained now and cached atomically."""
    if task not in TASKS:
        raise ConfigError(f"shapes task '{task}' is unknown; use one of {', '.join(TASKS)}")
    recipe = RECIPES[task] if recipe is None else recipe
    return load_or_train(weights_path(task, cache_dir, recipe), lambda path: _load_cached(task, path, recipe),
                         lambda: train(task, shapes_split(task, samples=int(recipe["samples"])), recipe,
                                       progress=progress))
