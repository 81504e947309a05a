"""ViT structure accuracy bench (issue 20): test top-1 of timm `deit_tiny_patch16_224` with half its heads, half its
MLP neurons, 8 of its 12 blocks, or all three removed, before and after a recovery fine-tune.

`bench/structure.py` measures these variants' latency on random weights; this bench gives their accuracy on a
trained model. deit_tiny (random init, 10 classes) is trained from scratch on scikit-learn's digits upscaled to
224x224 (`planner._digits_upscaled`, split 60/20/20 by `edgeprune.data.load_data`) with the planner bench's loop
(`planner._train`: AdamW, one-cycle, batches of 64, every usable core), and cached with its recipe. Each variant is
pruned with the pipeline's `schedule.prune_and_recover` and a `Plan`'s head_keep_ratio / mlp_keep_ratio /
keep_blocks, as `bench/structure.py` builds them, and scored in PyTorch fp32 on the test split (structure.py shows
the runtimes match PyTorch within ~1e-6) with a 95% Wilson interval and the paired difference vs dense (Newcombe),
before and after `--finetune-epochs` of the pipeline's distillation fine-tune on the train split.

    python bench/vit_accuracy.py --out vit_accuracy.json --markdown vit_accuracy.md
    python bench/vit_accuracy.py --limit 16 --train-epochs 1 --finetune-epochs 1 --work /tmp/vitwork   # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner import _digits_upscaled, _log, _train  # noqa: E402  (the planner bench's data and training loop)
from structure import VARIANTS as STRUCTURE_VARIANTS  # noqa: E402  (the latency bench's variants and scoring)
from structure import _acc, _pts, _scored  # noqa: E402

from edgeprune._cores import usable_cores  # noqa: E402
from edgeprune._deps import package_version  # noqa: E402
from edgeprune._io import atomic_write_json  # noqa: E402
from edgeprune._torch import torch_threads  # noqa: E402
from edgeprune.data import load_data  # noqa: E402
from edgeprune.prune import as_tensor  # noqa: E402
from edgeprune.schedule import prune_and_recover  # noqa: E402
from edgeprune.structure import describe  # noqa: E402
from edgeprune.types import Dataset, Plan  # noqa: E402

MODEL = "deit_tiny_patch16_224"
SIZE = 224
INPUT_SHAPE = (1, 3, SIZE, SIZE)
VARIANTS: dict[str, dict[str, Any]] = STRUCTURE_VARIANTS["deit_tiny"]
"""dense, heads 50% (2 of 3), MLP 50%, depth 8 of 12, all three: `bench/structure.py`'s deit_tiny variants."""
LATENCY_SPEEDUP = {
    "dense": (1.00, 1.00),
    "heads 50%": (1.23, 1.33),
    "MLP 50%": (1.17, 1.54),
    "depth 8 of 12": (1.42, 1.71),
    "all three": (2.25, 2.83),
}
"""(ExecuTorch, LiteRT) p50 speed-up vs dense, fp32, 1 thread, from docs/benchmarks.md "Transformer structure"
(`bench/structure.py`, deit_tiny with random weights and 1000 classes, 2026-12-07 15:21 UTC)."""


def _subset(data: Dataset, limit: int | None) -> Dataset:
    """The first `limit` samples of every split (a smoke run); all of them when `limit` is None."""
    if limit is None:
        return data
    cut = {k: getattr(data, k)[:limit] for k in ("calib_x", "eval_x", "eval_y", "train_x", "train_y", "val_x",
                                                  "val_y") if getattr(data, k) is not None}  # fmt: skip
    return dataclasses.replace(data, **cut)


def _trained(data: Dataset, weights: Path, recipe: dict[str, Any]) -> tuple[nn.Module, float]:
    """deit_tiny trained to `recipe` on the train split, loaded from `weights` when they were saved with the same
    recipe (in a sidecar .json with the training time), else trained and saved there; (model, training seconds)."""
    import timm

    torch.manual_seed(recipe["seed"])
    model = timm.create_model(MODEL, pretrained=False, num_classes=10)
    sidecar = weights.with_suffix(".json")
    saved = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if weights.exists() and saved.get("recipe") == recipe:
        model.load_state_dict(torch.load(weights, weights_only=True))
        _log(f"loaded {weights} ({recipe}, trained in {saved['train_s']:.0f} s)")
        return model.eval(), saved["train_s"]
    _log(f"training {MODEL} on {len(data.train_x)} images, {recipe}")
    start = time.perf_counter()
    _train(model, data.train_x, data.train_y, epochs=recipe["epochs"], lr=recipe["lr"], seed=recipe["seed"])
    seconds = time.perf_counter() - start
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    sidecar.write_text(json.dumps({"recipe": recipe, "train_s": round(seconds, 1)}))
    _log(f"trained in {seconds:.0f} s, saved to {weights}")
    return model.eval(), seconds


def _correct(model: nn.Module, data: Dataset) -> np.ndarray:
    """One bool per test sample: the model's top-1 is the label."""
    with torch.no_grad(), torch_threads(usable_cores()):
        x = as_tensor(data.eval_x)
        pred = torch.cat([model(x[i : i + 64]).argmax(1) for i in range(0, len(x), 64)]).numpy()
    return pred == data.eval_y


def _variant(model: nn.Module, data: Dataset, label: str, kwargs: dict[str, Any], epochs: int, importance: str,
             dense: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:  # fmt: skip
    """One variant pruned and scored before and after its fine-tune; (row, its per-sample outcomes after)."""
    plan = Plan(importance=importance, **kwargs)
    example = as_tensor(data.calib_x[:1])
    calibration = as_tensor(data.calib_x)
    threads = usable_cores()
    start = time.perf_counter()
    pruned, summary, _ = prune_and_recover(model, example, calibration, plan, data, 0, threads=threads)
    prune_s = time.perf_counter() - start
    before = _correct(pruned, data)
    after, finetune_s, recovery = before, None, None
    if plan.restructures and epochs > 0:
        tuned, _, recovery = prune_and_recover(model, example, calibration, plan, data, epochs, threads=threads)
        finetune_s = round(recovery.seconds, 1)
        after = _correct(tuned, data)
    shape = describe(pruned)
    row = {
        "variant": label,
        "plan": kwargs,
        "heads": sorted(set(shape["heads"].values())),
        "mlp_hidden": sorted(set(shape["mlp"].values())),
        "blocks": list(shape["blocks"].values()),
        "blocks_kept": {k: {"kept": v["kept"], "chosen_by": v["chosen_by"]}
                        for k, v in summary.structure.get("blocks", {}).items()},
        "params": summary.params_after,
        "params_kept": round(summary.params_after / summary.params_before, 4),
        "macs_kept": round(summary.macs_after / summary.macs_before, 4) if summary.macs_before else None,
        "prune_s": round(prune_s, 2),
        "before_finetune": _scored(before, dense),
        "after_finetune": _scored(after, dense),
        "finetune_s": finetune_s,
        "finetune_final_loss": None if recovery is None else round(recovery.final_loss, 4),
        "speedup_executorch_litert": LATENCY_SPEEDUP[label],
    }
    _log(f"{label}: params kept {row['params_kept']:.3f}, top-1 before {row['before_finetune']['top1']:.4f}, after "
         f"{row['after_finetune']['top1']:.4f}" + ("" if finetune_s is None else f" (fine-tune {finetune_s} s)"))
    return row, after


# ------------------------------------------------------------------------------------------ markdown


def markdown(result: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md from one bench JSON."""
    s, d, dense = result["settings"], result["data"], result["rows"][0]
    trained = f"{s['train_seconds'] / 60:.1f} min on {s['threads']} threads"
    lines = [
        f"`{result['command']}` ({result['date']}; {result['machine']['cpu']}, {result['machine']['cores']} cores). "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v) + ".",
        "",
        f"timm `{MODEL}`, random init, 10 classes, trained from scratch on the digits upscaled to {SIZE}x{SIZE} "
        f"({d['train']} train / {d['validation']} validation / {d['test']} test images): {s['train_epochs']} epoch(s), "
        f"AdamW lr {s['lr']:g} one-cycle, weight decay 1e-4, batches of 64, no augmentation ({trained}). Dense test "
        f"top-1 {_acc(dense['after_finetune'])}. Pruning: `prune_and_recover`, importance {s['importance']}; "
        f"fine-tune: {s['finetune_epochs']} epoch(s) of distillation from the dense model on the train split. Top-1 "
        "in PyTorch fp32 (95% Wilson CI); vs dense: paired difference (Newcombe) in points. Speed-ups: p50 vs dense, "
        "fp32, 1 thread, from the latency table above (random weights).",
        "",
        "| variant | params kept | top-1 before fine-tune | after fine-tune | after vs dense, pts | fine-tune s "
        "| speed-up ExecuTorch / LiteRT |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        et, lite = row["speedup_executorch_litert"]
        label = row["variant"].replace("heads 50%", "heads 50% (2 of 3)")
        cells = [label, f"{100 * row['params_kept']:.1f}%", _acc(row["before_finetune"]),
                 "—" if row["finetune_s"] is None else _acc(row["after_finetune"]),
                 _pts(row["after_finetune"]), "—" if row["finetune_s"] is None else f"{row['finetune_s']:.0f}",
                 f"{et:.2f} / {lite:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-epochs", type=int, default=20, help="epochs training the dense model from scratch")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak (one-cycle) learning rate of that training")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="recovery fine-tune of each pruned variant")
    parser.add_argument("--importance", default="l2", help="the plan's criterion")
    parser.add_argument("--limit", type=int, help="use only the first N images of each split (smoke runs)")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/edgeprune/bench-planner"),
                        help="folder of the cached data and trained weights")
    parser.add_argument("--out", default="vit_accuracy.json", help="the JSON written (after each variant)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the markdown table to FILE")
    args = parser.parse_args()
    if args.train_epochs < 1 or args.finetune_epochs < 0 or args.lr <= 0 or (args.limit is not None and
                                                                            args.limit < 1):  # fmt: skip
        parser.error("--train-epochs and --limit must be at least 1, --finetune-epochs at least 0, --lr positive")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = _subset(load_data(str(_digits_upscaled(work, SIZE)), INPUT_SHAPE), args.limit)
    recipe = {"model": MODEL, "epochs": args.train_epochs, "lr": args.lr, "seed": 0, "limit": args.limit,
              "train": len(data.train_x)}  # fmt: skip
    weights = work / f"deit_tiny-digits{SIZE}{'' if args.limit is None else f'-limit{args.limit}'}.pt"
    model, train_s = _trained(data, weights, recipe)
    from edgeprune.profiles import host_profile

    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu": host_profile().soc, "cores": os.cpu_count(),
                    "usable_cores": usable_cores(), "python": platform.python_version()},
        "versions": {p: package_version(p) for p in ("torch", "timm", "torch-pruning")},
        "command": shlex.join(["python", *sys.argv]),
        "settings": {"model": MODEL, "input": list(INPUT_SHAPE), "train_epochs": args.train_epochs, "lr": args.lr,
                     "train_seconds": round(train_s, 1), "weights": str(weights),
                     "finetune_epochs": args.finetune_epochs, "importance": args.importance, "limit": args.limit,
                     "threads": usable_cores()},
        "data": data.summary(),
        "latency_source": "speed-ups from docs/benchmarks.md 'Transformer structure' (bench/structure.py, deit_tiny "
                          "random weights, 1000 classes, fp32, 1 thread)",
        "rows": [],
    }  # fmt: skip
    dense: np.ndarray | None = None
    for label, kwargs in VARIANTS.items():
        row, after = _variant(model, data, label, kwargs, args.finetune_epochs, args.importance, dense)
        if dense is None:
            dense = after
        out["rows"].append(row)
        atomic_write_json(Path(args.out), out)
    table = markdown(out)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
