"""Criteria benchmark (issue 20): test accuracy of l2, fpgm, taylor and wanda at equal latency.

One uniform keep ratio gives the same architecture whatever the criterion (a criterion only picks WHICH channels
stay), so equal latency holds by construction; the script checks that every criterion's pruned model has the same
parameter and MAC counts per keep ratio. For each keep ratio and criterion: prune the trained model (BatchNorm
re-estimated on the calibration split), score the test split, fine-tune briefly with distillation on the train
split, score again. Accuracy is PyTorch's argmax on the test split (the runtime adds nothing to a comparison of
criteria), with 95% Wilson intervals and the paired difference vs l2 (Newcombe). prune()'s wall time per criterion
is the scoring plus the pruning.

    OMP_NUM_THREADS=1 python bench/criteria.py --models mnist1d --out criteria.json

Models and data come from bench/planner.py (MNIST-1D CNN; mobilenet_v2 on the digits at 224x224, cached there).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner import _model  # noqa: E402  (the planner bench's models, data and cached weights)

from edgeprune._deps import package_version  # noqa: E402
from edgeprune._io import atomic_write_json  # noqa: E402
from edgeprune._torch import torch_threads  # noqa: E402
from edgeprune.prune import as_tensor, prune  # noqa: E402
from edgeprune.recover import RecoveryConfig, distill  # noqa: E402
from edgeprune.stats import paired_difference_interval, wilson_interval  # noqa: E402
from edgeprune.types import Plan  # noqa: E402

CRITERIA = ("l2", "fpgm", "taylor", "wanda")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _correct(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One bool per sample: PyTorch's argmax equals the label."""
    with torch.no_grad():
        pred = torch.cat([model(as_tensor(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)])
    return pred.numpy() == y


def _scored(correct: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
    low, high = wilson_interval(int(correct.sum()), len(correct))
    out: dict[str, Any] = {"top1": round(float(correct.mean()), 4), "ci95": [round(low, 4), round(high, 4)]}
    if reference is not None:
        diff, dlow, dhigh = paired_difference_interval(correct, reference)
        out["vs_l2_pts"] = [round(100 * diff, 2), round(100 * dlow, 2), round(100 * dhigh, 2)]
    return out


def run_model(name: str, keeps: list[float], epochs: int, work: Path, size: int) -> dict[str, Any]:
    spec, data = _model(name, work, size)
    model = spec.module.eval()
    example = torch.zeros(spec.input_shape)
    calib = as_tensor(data.calib_x)
    dense = _correct(model, data.eval_x, data.eval_y)
    result: dict[str, Any] = {"model": spec.name, "data": data.summary(), "dense": _scored(dense, None), "keeps": []}
    _log(f"{name}: dense test top-1 {dense.mean():.4f}")
    for keep in keeps:
        rows: dict[str, dict[str, Any]] = {}
        ref_before = ref_after = None
        counts = set()
        for crit in CRITERIA:
            start = time.perf_counter()
            with torch_threads(1):
                pruned, summary = prune(model, example, calib, Plan(target="executorch", keep_ratio=keep,
                                                                  importance=crit))
            prune_s = time.perf_counter() - start
            counts.add((summary.params_after, summary.macs_after))
            before = _correct(pruned, data.eval_x, data.eval_y)
            row: dict[str, Any] = {"prune_s": round(prune_s, 2), "params": summary.params_after,
                                   "macs": summary.macs_after, "before_finetune": _scored(before, ref_before)}
            if epochs > 0:
                rec = distill(pruned, model, data.train_x, data.train_y, RecoveryConfig(epochs=epochs, threads=1))
                after = _correct(pruned, data.eval_x, data.eval_y)
                row["after_finetune"] = _scored(after, ref_after)
                row["finetune_s"] = round(rec.seconds, 1)
            if crit == "l2":
                ref_before, ref_after = before, (after if epochs > 0 else None)
            rows[crit] = row
            _log(f"{name} keep {keep} {crit}: prune {prune_s:.2f}s, before {row['before_finetune']['top1']}"
                 + (f", after {row['after_finetune']['top1']}" if epochs > 0 else ""))
        if len(counts) != 1:
            raise SystemExit(f"keep {keep}: criteria gave different architectures {sorted(counts)}; "
                             "equal latency does not hold")
        result["keeps"].append({"keep_ratio": keep, "same_architecture": True, "criteria": rows})
    return result


def _table(result: dict[str, Any], stage: str) -> str:
    lines = [f"| keep | params | MACs | {' | '.join(CRITERIA)} |", "|---|---|---|" + "---|" * len(CRITERIA)]
    for k in result["keeps"]:
        first = k["criteria"]["l2"]
        cells = []
        for crit in CRITERIA:
            s = k["criteria"][crit].get(stage)
            if s is None:
                cells.append("-")
                continue
            cell = f"{100 * s['top1']:.2f} [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"
            if "vs_l2_pts" in s:
                d = s["vs_l2_pts"]
                cell += f"; {d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"
            cells.append(cell)
        lines.append(f"| {k['keep_ratio']} | {first['params']} | {first['macs']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mnist1d", help="comma-separated: mnist1d, mobilenet_v2")
    parser.add_argument("--keeps", default="0.75,0.5,0.35")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="0 skips the fine-tune")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/edgeprune/bench-planner"))
    parser.add_argument("--out", default="criteria.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    keeps = [float(k) for k in args.keeps.split(",")]
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "versions": {p: package_version(p) for p in ("torch", "torch-pruning", "executorch")},
        "scored_by": "PyTorch argmax on the test split; 95% Wilson intervals; vs_l2_pts = paired difference "
                     "(Newcombe) in points, [diff, low, high]",
        "finetune": {"epochs": args.finetune_epochs, "method": "edgeprune.recover.distill, train split, 1 thread"},
        "models": [],
    }
    for name in args.models.split(","):
        out["models"].append(run_model(name, keeps, args.finetune_epochs, work, args.size))
        atomic_write_json(Path(args.out), out)
    for result in out["models"]:
        for stage in ("before_finetune", "after_finetune"):
            print(f"\n{result['model']} {stage} (test top-1 %, 95% CI; paired diff vs l2 in pts)\n")
            print(_table(result, stage))
        print("\nprune() seconds: " + "; ".join(
            f"keep {k['keep_ratio']}: " + ", ".join(f"{c} {k['criteria'][c]['prune_s']}" for c in CRITERIA)
            for k in result["keeps"]))


if __name__ == "__main__":
    main()
