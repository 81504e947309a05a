"""Shifted inputs for the robustness guard: a fixed, seeded set of corruptions per data modality.

Pruning and quantisation often cost more on inputs a little off the training distribution than on clean ones. The
guard (`max_shift_drop_pts`) judges top-1 on the test split with every corruption below applied, pooled, against
the unpruned model on the same corrupted inputs. Severities are fixed so that figures compare across builds:

- images (N, C, H, W) and signals (N, C, L):
  - `noise`: additive Gaussian noise, standard deviation 0.1 x the split's standard deviation (one draw per seed);
  - `blur`: a 3-wide box filter over each spatial axis (edges repeated);
  - `contrast`: each sample pulled halfway to its own mean (x -> mean + 0.5 (x - mean));
  - `shift`: translated by 1/8 of each spatial size (at least 1) towards higher indices, the edge repeated;
- any other shape (N, F): `noise` and `contrast` as above.
"""

from __future__ import annotations

import numpy as np

NOISE_STD = 0.1
"""Noise standard deviation, as a share of the inputs' own standard deviation."""
CONTRAST = 0.5
SHIFT_FRACTION = 1 / 8
SEED = 0


def _blur(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    out = x
    for axis in axes:
        padded = np.concatenate([np.take(out, [0], axis=axis), out, np.take(out, [-1], axis=axis)], axis=axis)
        size = out.shape[axis]
        out = (np.take(padded, range(0, size), axis=axis) + np.take(padded, range(1, size + 1), axis=axis)
               + np.take(padded, range(2, size + 2), axis=axis)) / 3.0
    return out


def _shift(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    out = x
    for axis in axes:
        size = out.shape[axis]
        step = max(1, int(round(size * SHIFT_FRACTION)))
        index = np.clip(np.arange(size) - step, 0, size - 1)
        out = np.take(out, index, axis=axis)
    return out


def corruptions(x: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """Every corruption of `x` (N, ...) for its modality, by name, each float32 and shaped like `x`."""
    x = np.asarray(x, dtype=np.float32)
    spatial = tuple(range(2, x.ndim)) if x.ndim >= 3 else ()
    rng = np.random.default_rng(seed)
    scale = float(x.std()) or 1.0
    per_sample = tuple(range(1, x.ndim))
    out = {
        "noise": x + rng.normal(0.0, NOISE_STD * scale, size=x.shape).astype(np.float32),
        "contrast": x.mean(axis=per_sample, keepdims=True) + CONTRAST * (x - x.mean(axis=per_sample, keepdims=True)),
    }
    if spatial:
        out["blur"] = _blur(x, spatial)
        out["shift"] = _shift(x, spatial)
    return {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in out.items()}


def shifted(x: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, list[str]]:
    """All corruptions of `x` stacked (corruption-major: the first len(x) rows are the first corruption's) and the
    names in that order."""
    found = corruptions(x, seed)
    return np.concatenate(list(found.values())), list(found)
