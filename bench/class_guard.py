"""Class-guard benchmark (issue 20): the worst-class drop of the best plan with and without `max_class_drop_pts`.

The digits (scikit-learn, 1797 8x8 images) with 85% of one class (8 by default) removed, seeded, before the split:
the class is rare in train, validation and test alike (the public API splits the (x, y) it is given). A fresh
digits-architecture model (`edgeprune.examples.digits.build_model`) is trained on the train split of that same
split (seed 0, as `build` draws it), then three builds run through `edgeprune.build` on the host, target ExecuTorch:

- dense: a FixedPlan (no pruning, fp32, no fine-tune), whose measured p50 sets the latency budget;
- plain: a planned build, latency_ms = --budget x the dense p50;
- guarded: the same plus max_class_drop_pts.

A build that ends infeasible is recorded as such, and that build is retried once at --loose-budget x the dense p50.
Each build's manifest gives the test top-1 through the runtime, per-class accuracy with paired intervals, the chosen
plan and the verdict; search time is the build's wall time.

    OMP_NUM_THREADS=1 python bench/class_guard.py --out class_guard.json [--max-accuracy-drop-pts 5]

`--max-accuracy-drop-pts` loosens the overall accuracy budget (the host profile's is 2 points), so that at a tight
latency budget the class guard, not the overall budget, decides between the plans.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner import _train_steps  # noqa: E402  (the planner bench's training loop)

import edgeprune  # noqa: E402
from edgeprune._deps import package_version  # noqa: E402
from edgeprune._io import atomic_write_json  # noqa: E402
from edgeprune._torch import torch_threads  # noqa: E402
from edgeprune.data import DIGITS_INPUT_SHAPE, dataset_from_arrays, load_data  # noqa: E402
from edgeprune.errors import EdgepruneError  # noqa: E402
from edgeprune.examples.digits import build_model  # noqa: E402
from edgeprune.prune import as_tensor  # noqa: E402


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def thinned_digits(rare: int, drop: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All digits (the bundled split's parts joined) with a `drop` share of class `rare` removed at random."""
    d = load_data("examples:digits", DIGITS_INPUT_SHAPE)
    x = np.concatenate([d.train_x, d.val_x, d.eval_x])
    y = np.concatenate([d.train_y, d.val_y, d.eval_y])
    rare_idx = np.flatnonzero(y == rare)
    gone = np.random.default_rng(seed).choice(rare_idx, size=int(round(drop * len(rare_idx))), replace=False)
    keep = np.setdiff1d(np.arange(len(y)), gone)
    return x[keep], y[keep]


def _per_class(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict[int, list[float]]:
    with torch.no_grad():
        pred = model(as_tensor(x)).argmax(1).numpy()
    return {int(c): [int((y == c).sum()), round(float((pred[y == c] == c).mean()), 4)] for c in np.unique(y)}


def _report(result: edgeprune.BuildResult | None, out: Path, seconds: float, budget_ms: float,
            error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"latency_budget_ms": round(budget_ms, 4), "wall_s": round(seconds, 1)}
    if error is not None:
        return row | {"outcome": "error", "error": error}
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    art = manifest["artifacts"][0]
    quality, checks = art["quality"], {c["name"]: c for c in art["verdict"]["checks"]}
    per_class = quality.get("per_class") or []
    worst = max(per_class, key=lambda c: c["drop_pts"]) if per_class else None
    return row | {
        "outcome": "passed" if result is not None and result.passed else "failed",
        "plan": art["plan"],
        "p50_ms": art["measured"].get("latency_p50_ms"),
        "test_top1": quality.get("artifact_accuracy"),
        "reference_top1": quality.get("reference_accuracy"),
        "worst_class": worst,
        "per_class": per_class,
        "checks": {name: {k: c.get(k) for k in ("status", "value", "limit", "note")} for name, c in checks.items()},
    }


def _build(model: torch.nn.Module, data: tuple, out: Path, **options: Any) -> tuple[Any, float, str | None]:
    start = time.perf_counter()
    try:
        result = edgeprune.build(model, data, out=out, targets=["executorch"], input_shape=DIGITS_INPUT_SHAPE,
                                 **options)
        return result, time.perf_counter() - start, None
    except EdgepruneError as exc:
        return None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rare-class", type=int, default=8)
    parser.add_argument("--drop", type=float, default=0.85, help="share of the rare class removed")
    parser.add_argument("--budget", type=float, default=0.5, help="latency budget, share of the dense p50")
    parser.add_argument("--loose-budget", type=float, default=0.75, help="retry budget after an infeasible build")
    parser.add_argument("--max-class-drop-pts", type=float, default=10.0)
    parser.add_argument("--max-accuracy-drop-pts", type=float,
                        help="overall accuracy budget of the planned builds (default: the host profile's)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--builds", default="plain,guarded", help="planned builds to run: plain, guarded")
    parser.add_argument("--dense-p50-ms", type=float, help="the dense p50 a previous run measured (skips that build)")
    parser.add_argument("--out", default="class_guard.json")
    args = parser.parse_args()

    x, y = thinned_digits(args.rare_class, args.drop, seed=0)
    split = dataset_from_arrays(x, y, DIGITS_INPUT_SHAPE, seed=0)  # the split build() draws from (x, y)
    torch.manual_seed(0)  # the initial weights: a rerun (or a --builds run beside another) trains the same model
    model = build_model()
    with torch_threads(1):
        _train_steps(model, split.train_x, split.train_y, epochs=20, lr=4e-3, seed=0)
    counts = {s: int((getattr(split, f"{s}_y") == args.rare_class).sum()) for s in ("train", "val", "eval")}
    _log(f"rare class {args.rare_class}: {counts}; dense per-class test {_per_class(model, split.eval_x, split.eval_y)}")

    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "versions": {p: package_version(p) for p in ("torch", "torch-pruning", "executorch")},
        "data": {"source": "examples:digits", "rare_class": args.rare_class, "dropped_share": args.drop,
                 "samples": len(y), "rare_samples_by_split": counts, "split": split.summary()},
        "dense_per_class_test_pytorch": _per_class(model, split.eval_x, split.eval_y),
        "plan_settings": {"finetune_epochs": args.finetune_epochs, "rank_epochs": 1, "importances": ["l2"],
                          "executor": "serial"},
        "builds": {},
    }
    settings = edgeprune.PlanSettings(finetune_epochs=args.finetune_epochs, rank_epochs=1, importances=("l2",),
                                      executor="serial")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dense_ms = args.dense_p50_ms
        if dense_ms is None:
            result, secs, err = _build(model, (x, y), work / "dense", plan=edgeprune.FixedPlan(finetune_epochs=0))
            out["builds"]["dense"] = _report(result, work / "dense", secs, float("nan"), err)
            if err is not None:
                raise SystemExit(f"dense build failed: {err}")
            dense_ms = result.devices["host"].artifact("executorch").measurement.latency_p50_ms
        out["dense_p50_ms"] = dense_ms
        _log(f"dense p50 {dense_ms:.4f} ms")
        overall = {} if args.max_accuracy_drop_pts is None else {"max_accuracy_drop_pts": args.max_accuracy_drop_pts}
        guards = {"plain": overall, "guarded": overall | {"max_class_drop_pts": args.max_class_drop_pts}}
        for name in args.builds.split(","):
            guard = guards[name]
            for share in (args.budget, args.loose_budget):
                budget = share * dense_ms
                result, secs, err = _build(model, (x, y), work / name, latency_ms=budget, plan=settings, **guard)
                row = _report(result, work / name, secs, budget, err) | {"budget_share": share} | guard
                out["builds"].setdefault(name, []).append(row)
                _log(f"{name} at {share:.2f} x dense: {row.get('outcome')} {row.get('error', '')} "
                     f"top1 {row.get('test_top1')} worst {row.get('worst_class')}")
                atomic_write_json(Path(args.out), out)
                if err is None:
                    break
    atomic_write_json(Path(args.out), out)
    for name in args.builds.split(","):
        for row in out["builds"][name]:
            w = row.get("worst_class") or {}
            print(f"{name} budget {row['latency_budget_ms']} ms: {row['outcome']} top1 {row.get('test_top1')} "
                  f"worst class {w.get('label')} drop {w.get('drop_pts')} {w.get('drop_ci95_pts')} "
                  f"plan {row.get('plan')} wall {row['wall_s']} s {row.get('error', '')}")


if __name__ == "__main__":
    main()
