"""Schedule benchmark (issue 20 scope 4): iterative vs one-shot pruning at equal fine-tune epochs.

The MNIST-1D 1-D CNN of bench/planner.py (trained and cached there), uniform keep ratios, one criterion (l2), fp32.
Each schedule is `edgeprune.schedule.prune_and_recover`, the function the planner and `apply` use:

- one-shot: prune, then fine-tune --epochs;
- iterative: `Plan.prune_steps` = --steps, the plan the planner's `_scheduled` builds with `dataclasses.replace`:
  prune a step, fine-tune `step_epochs` (an equal share of --epochs, at least 1), repeat, then fine-tune the
  epochs left (`final_epochs`, at least 1). So it trains --epochs in all, as one-shot does (before commit
  "Iterative schedule: ..." it fine-tuned --epochs after the last step, (steps - 1) x step_epochs more);
- one-shot at the iterative schedule's total epochs, where that differs from --epochs (fewer epochs than steps):
  the control for the extra training (--no-matched leaves it out);
- both schedules with no fine-tune at all (epochs 0): what there is to recover.

Accuracy is PyTorch's argmax on the test split (fp32: the runtime adds nothing to a comparison of schedules), with
95% Wilson intervals and paired differences (Newcombe). The schedules must give the same architecture (checked and
recorded: params and MACs per schedule). Seconds are each call's fine-tunes (those between steps included) on
--threads torch threads; wall_s adds the pruning.

    OMP_NUM_THREADS=1 nice -n 10 python bench/schedule.py --out schedule.json --markdown schedule.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from criteria import _correct, _log  # noqa: E402  (the criteria bench's test-split scoring and log line)
from planner import _model  # noqa: E402  (the planner bench's MNIST-1D model, data and cached weights)

from edgeprune._deps import package_version  # noqa: E402
from edgeprune._io import atomic_write_json  # noqa: E402
from edgeprune._torch import torch_threads  # noqa: E402
from edgeprune.prune import as_tensor  # noqa: E402
from edgeprune.schedule import final_epochs, prune_and_recover, step_epochs  # noqa: E402
from edgeprune.stats import paired_difference_interval, wilson_interval  # noqa: E402
from edgeprune.types import Dataset, Plan  # noqa: E402


def _top1(correct: np.ndarray) -> dict[str, Any]:
    low, high = wilson_interval(int(correct.sum()), len(correct))
    return {"top1": round(float(correct.mean()), 4), "ci95": [round(low, 4), round(high, 4)]}


def _diff_pts(first: np.ndarray, second: np.ndarray) -> list[float]:
    """[difference, low, high] of first - second in points (Newcombe's paired 95% interval)."""
    return [round(100 * v, 2) for v in paired_difference_interval(first, second)]


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{platform.platform()}; {os.cpu_count()} cores; {cpu}"


def run_keep(model: torch.nn.Module, example: torch.Tensor, calib: torch.Tensor, data: Dataset, keep: float,
             args: argparse.Namespace) -> dict[str, Any]:
    """Every schedule of one keep ratio, scored on the test split."""
    base = Plan(target="executorch", scheme="fp32", keep_ratio=keep, importance=args.importance, seed=args.seed)
    iterative = dataclasses.replace(base, prune_steps=args.steps)  # as the planner's `_scheduled` builds it
    brief = step_epochs(args.epochs, args.steps)
    total = (args.steps - 1) * brief + final_epochs(args.epochs, args.steps)
    runs = [("no_finetune", base, 0), ("iterative_no_finetune", iterative, 0),
            ("one_shot", base, args.epochs), ("iterative", iterative, args.epochs)]
    if args.matched and total != args.epochs:
        runs.append(("one_shot_matched", base, total))
    correct: dict[str, np.ndarray] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, plan, epochs in runs:
        start = time.perf_counter()
        with torch_threads(args.threads):
            pruned, summary, recovery = prune_and_recover(model, example, calib, plan, data, epochs,
                                                          seed=args.seed, threads=args.threads)
        wall_s = time.perf_counter() - start
        correct[name] = _correct(pruned, data.eval_x, data.eval_y)
        rows[name] = {"prune_steps": summary.prune_steps, "finetune_epochs": epochs,
                      "finetune_epochs_total": (recovery.config.epochs + recovery.step_epochs * recovery.between_steps
                                                if recovery else 0),
                      "params": summary.params_after, "macs": summary.macs_after,
                      "params_kept": round(summary.params_after / summary.params_before, 4),
                      "macs_kept": round(summary.macs_after / summary.macs_before, 4),
                      "finetune_s": round(recovery.seconds, 1) if recovery else 0.0, "wall_s": round(wall_s, 1),
                      **_top1(correct[name])}
        _log(f"keep {keep} {name}: {summary.prune_steps} step(s), {rows[name]['finetune_epochs_total']} epochs, "
             f"test top-1 {rows[name]['top1']:.4f}, fine-tune {rows[name]['finetune_s']}s, wall {wall_s:.1f}s")
    shapes = {(r["params"], r["macs"]) for r in rows.values()}
    if len(shapes) != 1:
        _log(f"keep {keep}: the schedules gave different architectures {sorted(shapes)}")
    diffs = {"iterative_vs_one_shot_pts": _diff_pts(correct["iterative"], correct["one_shot"]),
             "one_shot_vs_no_finetune_pts": _diff_pts(correct["one_shot"], correct["no_finetune"]),
             "iterative_vs_no_finetune_pts": _diff_pts(correct["iterative"], correct["no_finetune"])}
    if "one_shot_matched" in correct:
        diffs["iterative_vs_one_shot_matched_pts"] = _diff_pts(correct["iterative"], correct["one_shot_matched"])
    return {"keep_ratio": keep, "same_architecture": len(shapes) == 1, "schedules": rows, "paired": diffs}


def _cell(row: dict[str, Any]) -> str:
    return f"{100 * row['top1']:.2f} [{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}]"


def _diff(d: list[float]) -> str:
    return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"


def markdown(out: dict[str, Any]) -> str:
    """Two tables: test top-1 with the paired differences, and the architecture and fine-tune seconds."""
    s = out["settings"]
    matched = any("one_shot_matched" in k["schedules"] for k in out["keeps"])
    final = s.get("final_epochs", s["epochs"])  # older runs fine-tuned --epochs after the last step
    total = (s["steps"] - 1) * s["step_epochs"] + final
    head = (f"| keep | no fine-tune | one-shot {s['epochs']} ep | iterative {s['steps']} steps | "
            "iterative − one-shot (pts) |")
    rule = "|---|---|---|---|---|"
    if matched:
        head += f" one-shot {total} ep | iterative − one-shot {total} ep (pts) |"
        rule += "---|---|"
    lines = [f"Test top-1 % [95% Wilson] on {out['data']['test']} samples (dense "
             f"{100 * out['dense']['top1']:.2f}); differences paired (Newcombe 95%). Iterative: "
             f"{s['steps']} steps, {s['step_epochs']} epoch(s) between them, then {final} "
             f"= {total} epochs in all.", "", head, rule]
    for k in out["keeps"]:
        r, p = k["schedules"], k["paired"]
        line = (f"| {k['keep_ratio']} | {_cell(r['no_finetune'])} | {_cell(r['one_shot'])} | {_cell(r['iterative'])}"
                f" | {_diff(p['iterative_vs_one_shot_pts'])} |")
        if matched:
            line += (f" {_cell(r['one_shot_matched'])} | {_diff(p['iterative_vs_one_shot_matched_pts'])} |"
                     if "one_shot_matched" in r else " - | - |")
        lines.append(line)
    lines += ["", f"| keep | params kept | MACs kept | same architecture | fine-tune s: one-shot {s['epochs']} ep"
              f" / iterative{f' / one-shot {total} ep' if matched else ''} |", "|---|---|---|---|---|"]
    for k in out["keeps"]:
        r = k["schedules"]
        names = ["one_shot", "iterative"] + (["one_shot_matched"] if "one_shot_matched" in r else [])
        seconds = " / ".join(f"{r[n]['finetune_s']:.0f}" for n in names)
        o = r["one_shot"]
        lines.append(f"| {k['keep_ratio']} | {o['params']} ({100 * o['params_kept']:.1f}%) | {o['macs']} "
                     f"({100 * o['macs_kept']:.1f}%) | {'yes' if k['same_architecture'] else 'NO'} | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keeps", default="0.5,0.35,0.25", help="comma-separated uniform keep ratios")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs of both schedules (at least 1)")
    parser.add_argument("--steps", type=int, default=3, help="the iterative schedule's prune_steps (at least 2)")
    parser.add_argument("--importance", default="l2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for pruning and fine-tuning")
    parser.add_argument("--no-matched", dest="matched", action="store_false",
                        help="leave out one-shot at the iterative schedule's total epochs")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/edgeprune/bench-planner"))
    parser.add_argument("--out", default="schedule.json")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    if args.epochs < 1 or args.steps < 2:
        parser.error("need --epochs >= 1 and --steps >= 2: otherwise both schedules are the same")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    keeps = [float(k) for k in args.keeps.split(",")]
    spec, data = _model("mnist1d", work, 224)
    model = spec.module.eval()
    example = torch.zeros(spec.input_shape)
    calib = as_tensor(data.calib_x)
    with torch_threads(args.threads):
        dense = _top1(_correct(model, data.eval_x, data.eval_y))
    _log(f"mnist1d: dense test top-1 {dense['top1']:.4f}")
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "versions": {p: package_version(p) for p in ("torch", "torch-pruning", "numpy", "mnist1d")},
        "command": shlex.join(["python", *sys.argv]),
        "scored_by": "PyTorch argmax on the test split; 95% Wilson intervals; *_pts = paired difference "
                     "(Newcombe) in points, [diff, low, high]",
        "settings": {"epochs": args.epochs, "steps": args.steps, "step_epochs": step_epochs(args.epochs, args.steps),
                     "final_epochs": final_epochs(args.epochs, args.steps),
                     "importance": args.importance, "scheme": "fp32", "seed": args.seed, "threads": args.threads,
                     "finetune": "edgeprune.schedule.prune_and_recover (recover: distillation + labels, train split)"},
        "model": spec.name,
        "data": data.summary(),
        "dense": dense,
        "keeps": [],
    }
    for keep in keeps:
        out["keeps"].append(run_keep(model, example, calib, data, keep, args))
        atomic_write_json(Path(args.out), out)
    table = markdown(out)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
