"""Transformer structure bench (issue 20): p50 latency of head / MLP / depth pruning and their joint plan on each
target runtime, and for the text encoder its test top-1 through each runtime before and after a brief fine-tune.

Models (`--models`):

- `deit_tiny`: timm `deit_tiny_patch16_224`, 1x3x224x224, random init: latency only (random weights give no
  meaningful accuracy, and it is not trained). Variants: dense, heads 50% (2 of 3), MLP 50%, depth 8 of 12, all three.
- `text`: the bundled text encoder (`edgeprune/examples/text.py`: a 2-layer BERT trained on the generated markers
  task, cached like the other examples), 1x32 token ids. Variants: dense, heads 50% (2 of 4), MLP 50%, depth 1 of
  2, all three. Each variant's test top-1 is the argmax of the runtime's outputs on the example's test split, with
  95% Wilson intervals and the paired difference vs dense on the same target (Newcombe), before and after a
  recovery fine-tune of `--finetune-epochs` (distillation from the dense model on the train split).

Pruning and recovery are the pipeline's: `schedule.prune_and_recover` with a `Plan`'s head_keep_ratio /
mlp_keep_ratio / keep_blocks (one thread). Each variant is exported with edgeprune's exporter for every target
(`--targets`, fp32) and run with `HostRunner`; `parity_max_abs` compares the runtime's outputs with the PyTorch
model's. All of one model's artifacts (variants x targets; for text the fine-tuned ones, whose shapes are those
before the fine-tune) are timed interleaved, in `--rounds` rounds of one block each (10 warmups, `--runs` timed runs,
`--threads` threads), the order rotating each round, so that load on a shared machine falls on all of them alike.
A p50 is the median of the rounds' p50s with a 95% bootstrap interval (`stats.timing_summary`); `min_ms` is the
fastest run (the least disturbed by other processes). Speed-ups are against dense on the same target.

    OMP_NUM_THREADS=1 python bench/structure.py --models deit_tiny,text --targets executorch,tflite \
        --runs 20 --rounds 8 --text-runs 200 --finetune-epochs 2 --out structure.json
    python bench/structure.py --markdown structure.json    # the tables for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._deps import package_version
from edgeprune._io import atomic_write_json
from edgeprune._torch import torch_threads
from edgeprune.criteria import IMPORTANCE
from edgeprune.errors import EdgepruneError
from edgeprune.export import Exporter, get_exporter
from edgeprune.runners.host import HostRunner
from edgeprune.schedule import prune_and_recover
from edgeprune.stats import paired_difference_interval, timing_summary, wilson_interval
from edgeprune.structure import describe
from edgeprune.types import Artifact, Dataset, Plan

WARMUP = 10


def _variants(blocks_kept: int, blocks: int) -> dict[str, dict[str, Any]]:
    """Half the heads, half the MLP neurons, `blocks_kept` of `blocks` blocks, and all three (plus the dense model)."""
    depth = {"keep_blocks": blocks_kept}
    return {"dense": {}, "heads 50%": {"head_keep_ratio": 0.5}, "MLP 50%": {"mlp_keep_ratio": 0.5},
            f"depth {blocks_kept} of {blocks}": depth,
            "all three": {"head_keep_ratio": 0.5, "mlp_keep_ratio": 0.5, **depth}}


VARIANTS = {"deit_tiny": _variants(8, 12), "text": _variants(1, 2)}
TARGET_LABELS = {"executorch": "ExecuTorch", "tflite": "LiteRT", "onnx": "ONNX Runtime"}
STAGES = ("before_finetune", "after_finetune")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class _Subject:
    """One model as the bench sees it: what to prune, what to feed it, and labelled data where there is any."""

    key: str
    name: str
    weights: str
    module: nn.Module
    example: torch.Tensor
    calibration: torch.Tensor
    check_x: np.ndarray
    """Inputs the runtime's outputs are compared on: the test split (text), a few random inputs (deit)."""
    dataset: Dataset | None


def _subject(key: str) -> _Subject:
    if key == "deit_tiny":
        import timm

        torch.manual_seed(0)
        module = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(1, 3, 224, 224, generator=gen)
        inputs = torch.randn(4, 3, 224, 224, generator=gen)
        return _Subject(key, "timm deit_tiny_patch16_224", "random init (torch seed 0): latency only, accuracy not "
                        "measured", module, example, inputs, inputs.numpy(), None)  # fmt: skip
    from edgeprune.examples import text

    module = text.load_trained(progress=lambda e, n: _log(f"text: training the example model, epoch {e}/{n}"))
    data = text.text_split()
    calibration = torch.from_numpy(np.ascontiguousarray(data.calib_x))
    return _Subject(key, "edgeprune examples text encoder (BertForSequenceClassification, examples/text.py)",
                    f"trained on {text.SPEC} (cached recipe {text.recipe_key()})", module, calibration[:1],
                    calibration, np.ascontiguousarray(data.eval_x, dtype=np.float32), data)  # fmt: skip


def _torch_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad(), torch_threads(1):
        return torch.cat([model(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)]).numpy()


def _scored(correct: np.ndarray, dense: np.ndarray | None) -> dict[str, Any]:
    low, high = wilson_interval(int(correct.sum()), len(correct))
    out: dict[str, Any] = {"top1": round(float(correct.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
                           "correct": int(correct.sum()), "n": len(correct)}  # fmt: skip
    if dense is not None:
        diff, dlow, dhigh = paired_difference_interval(correct, dense)
        out["vs_dense_pts"] = [round(100 * diff, 2), round(100 * dlow, 2), round(100 * dhigh, 2)]
    return out


def _variant(s: _Subject, label: str, kwargs: dict[str, Any], exporters: dict[str, Exporter], epochs: int,
             importance: str, work: Path, dense_correct: dict[str, np.ndarray],
             timed: list[tuple[dict[str, Any], Artifact]]) -> dict[str, Any]:  # fmt: skip
    """One variant: pruned (and, for a labelled model, fine-tuned), exported to every target, checked against its
    PyTorch outputs and scored; its deployable artifacts are appended to `timed`."""
    plan = Plan(importance=importance, **kwargs)
    start = time.perf_counter()
    pruned, summary, _ = prune_and_recover(s.module, s.example, s.calibration, plan, s.dataset, 0, threads=1)
    prune_s = time.perf_counter() - start
    stages = {"before_finetune": pruned}
    finetune_s = None
    if s.dataset is not None and plan.restructures and epochs > 0:
        tuned, _, recovery = prune_and_recover(s.module, s.example, s.calibration, plan, s.dataset, epochs, threads=1)
        stages["after_finetune"] = tuned
        finetune_s = round(recovery.seconds, 1)
    deployed = list(stages.values())[-1]
    shape = describe(deployed)
    row: dict[str, Any] = {
        "variant": label,
        "plan": kwargs,
        "heads": sorted(set(shape["heads"].values())),
        "mlp_hidden": sorted(set(shape["mlp"].values())),
        "blocks": list(shape["blocks"].values()),
        "blocks_kept": {k: {"kept": v["kept"], "chosen_by": v["chosen_by"]} for k, v in summary.structure.get(
            "blocks", {}).items()},
        "params": summary.params_after,
        "params_m": round(summary.params_after / 1e6, 3),
        "prune_s": round(prune_s, 2),
        "finetune_s": finetune_s,
        "targets": {},
    }
    wants = {stage: _torch_outputs(model, s.check_x) for stage, model in stages.items()}
    for target, exporter in exporters.items():
        entry: dict[str, Any] = {}
        for stage, model in stages.items():
            slug = label.replace(" ", "-").replace("%", "pct")
            path = work / f"{s.key}-{slug}-{stage}-{target}{exporter.suffix}"
            start = time.perf_counter()
            with torch_threads(1):
                result = exporter.export(model, s.example, s.calibration, Plan(target=target), path)
            export_s = time.perf_counter() - start
            got = HostRunner().measure(result.artifact, s.check_x, warmup=1, runs=1, threads=1).outputs
            parity = float(np.abs(got - wants[stage]).max())
            if s.dataset is not None:
                correct = got.argmax(1) == s.dataset.eval_y
                if label == "dense":
                    dense_correct[target] = correct
                entry.setdefault("accuracy", {})[stage] = _scored(correct, None if label == "dense" else
                                                                  dense_correct[target])  # fmt: skip
            entry.setdefault("parity_max_abs", {})[stage] = parity
            if model is deployed:
                entry.update({"file": path.name, "size_mb": round(result.artifact.size_mb, 3),
                              "export_s": round(export_s, 1),
                              "delegated_share": result.artifact.lowering.get("delegated_share")})  # fmt: skip
                timed.append((entry, result.artifact))
        row["targets"][target] = entry
        _log(f"{s.key} {label} {target}: {entry['size_mb']} MB, export {entry['export_s']} s, parity "
             f"{max(entry['parity_max_abs'].values()):.2e}"
             + "".join(f", {st} top-1 {a['top1']}" for st, a in entry.get("accuracy", {}).items()))
    return row


def _time(timed: list[tuple[dict[str, Any], Artifact]], one: np.ndarray, runs: int, rounds: int,
          threads: int) -> None:  # fmt: skip
    """Every artifact timed in `rounds` interleaved rounds (order rotating); the figures go into its entry."""
    blocks: list[list[list[float]]] = [[] for _ in timed]
    runtimes: list[dict[str, str]] = [{} for _ in timed]
    for r in range(rounds):
        for k in range(len(timed)):
            j = (r + k) % len(timed)
            m = HostRunner().measure(timed[j][1], one, warmup=WARMUP, runs=runs, threads=threads)
            blocks[j].append(list(m.samples_ms))
            runtimes[j] = m.runtime_versions
        _log(f"round {r + 1}/{rounds}: " + ", ".join(f"{np.median(b[-1]):.3f}" for b in blocks))
    for (entry, _), b, versions in zip(timed, blocks, runtimes):
        p50s = [float(np.percentile(x, 50)) for x in b]
        summary = timing_summary(b, p50s, [float(np.percentile(x, 90)) for x in b])
        entry.update({"round_p50_ms": [round(v, 4) for v in p50s], "latency_p50_ms": round(summary["p50_ms"], 4),
                      "p50_ci95_ms": [round(v, 4) for v in summary["p50_ci95_ms"]],
                      "min_ms": round(min(min(x) for x in b), 4), "multimodal": summary["multimodal"],
                      "runtime_versions": versions})  # fmt: skip


def run_model(key: str, args: argparse.Namespace, exporters: dict[str, Exporter], work: Path) -> dict[str, Any]:
    s = _subject(key)
    _log(f"{key}: {s.name}, {s.weights}")
    out: dict[str, Any] = {"model": key, "name": s.name, "weights": s.weights, "input": list(s.example.shape),
                           "data": s.dataset.summary() if s.dataset is not None else None,
                           "finetune_epochs": args.finetune_epochs if s.dataset is not None else None,
                           "variants": []}  # fmt: skip
    timed: list[tuple[dict[str, Any], Artifact]] = []
    dense_correct: dict[str, np.ndarray] = {}
    for label, kwargs in VARIANTS[key].items():
        out["variants"].append(_variant(s, label, kwargs, exporters, args.finetune_epochs, args.importance, work,
                                        dense_correct, timed))  # fmt: skip
    runs = args.text_runs if key == "text" else args.runs
    out["timing"] = {"runs_per_round": runs, "rounds": args.rounds, "warmup": WARMUP, "threads": args.threads}
    _time(timed, s.example.numpy(), runs, args.rounds, args.threads)
    dense = out["variants"][0]["targets"]
    for row in out["variants"]:
        for target, entry in row["targets"].items():
            entry["speedup_vs_dense"] = round(dense[target]["latency_p50_ms"] / entry["latency_p50_ms"], 2)
            entry["min_speedup_vs_dense"] = round(dense[target]["min_ms"] / entry["min_ms"], 2)
    return out


# ------------------------------------------------------------------------------------------ markdown


def _acc(a: dict[str, Any] | None) -> str:
    return "—" if a is None else f"{100 * a['top1']:.2f}% ({100 * a['ci95'][0]:.1f}–{100 * a['ci95'][1]:.1f})"


def _pts(a: dict[str, Any] | None) -> str:
    if a is None or "vs_dense_pts" not in a:
        return "—"
    d = a["vs_dense_pts"]
    return f"{d[0]:+.2f} ({d[1]:+.2f}, {d[2]:+.2f})"


def markdown(result: dict[str, Any]) -> str:
    """The tables for `docs/benchmarks.md` from one bench JSON."""
    v = result["versions"]
    lines = [f"`{result['command']}` ({result['date']}; {result['machine']['cpu']}, {result['machine']['cores']} "
             f"cores). " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".", ""]  # fmt: skip
    for m in result["models"]:
        t = m["timing"]
        labelled = m["data"] is not None
        lines += [f"#### {m['name']} {tuple(m['input'])}", "",
                  f"Weights: {m['weights']}. Timing: {t['rounds']} interleaved round(s) of {t['runs_per_round']} runs "
                  f"({t['warmup']} warmups), {t['threads']} thread(s); p50 = median of the rounds' p50s (95% "
                  "bootstrap CI); speed-up vs dense on the same target (p50 / fastest run)."]  # fmt: skip
        if labelled:
            d = m["data"]
            lines[-1] += (f" Test top-1 through each runtime on {d['test']} test samples (95% Wilson CI), before and "
                          f"after {m['finetune_epochs']} epoch(s) of distillation fine-tune on {d['train']} train "
                          "samples; vs dense: paired difference (Newcombe) in points.")
        head = "| variant | heads | MLP | blocks | params (M) | target | file (MB) | p50 ms (95% CI) | fastest ms | " \
               "speed-up | parity |"
        rule = "|---|---|---|---|---|---|---|---|---|---|---|"
        if labelled:
            head += " top-1 before fine-tune | after fine-tune | after vs dense, pts | fine-tune s |"
            rule += "---|---|---|---|"
        lines += ["", head, rule]
        for row in m["variants"]:
            for target, e in row["targets"].items():
                cells = [row["variant"], "/".join(map(str, row["heads"])), "/".join(map(str, row["mlp_hidden"])),
                         "/".join(map(str, row["blocks"])), f"{row['params_m']:.3f}", TARGET_LABELS.get(target, target),
                         f"{e['size_mb']:.2f}",
                         f"{e['latency_p50_ms']:.3f} ({e['p50_ci95_ms'][0]:.3f}–{e['p50_ci95_ms'][1]:.3f})",
                         f"{e['min_ms']:.3f}", f"{e['speedup_vs_dense']:.2f} / {e['min_speedup_vs_dense']:.2f}",
                         f"{max(e['parity_max_abs'].values()):.1e}"]  # fmt: skip
                if labelled:
                    acc = e["accuracy"]
                    after = acc.get("after_finetune")
                    cells += [_acc(acc.get("before_finetune")), _acc(after), _pts(after),
                              "—" if row["finetune_s"] is None else str(row["finetune_s"])]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def _names(value: str, known: tuple[str, ...], what: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        parser.error(f"{what} '{value}': give a comma-separated list of {', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="deit_tiny,text", help="comma-separated: deit_tiny, text")
    parser.add_argument("--targets", default="executorch,tflite", help="comma-separated edgeprune targets")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per round (deit_tiny)")
    parser.add_argument("--text-runs", type=int, default=200, help="timed runs per round (text: ~0.1–0.2 ms a run)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads while timing")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="recovery fine-tune of the text variants")
    parser.add_argument("--importance", default="l2", help="the plan's criterion (taylor/wanda: heads, neurons "
                        "ranked by activation, as the pipeline does)")
    parser.add_argument("--work", default=None, help="folder for the artifacts (default: a new temporary one)")
    parser.add_argument("--out", default="structure.json", help="the JSON written (after each model)")
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a bench JSON and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if min(args.runs, args.text_runs, args.rounds, args.threads) < 1 or args.finetune_epochs < 0:
        parser.error("--runs, --text-runs, --rounds and --threads must be at least 1, --finetune-epochs at least 0")
    models = _names(args.models, tuple(VARIANTS), "--models", parser)
    if args.importance not in IMPORTANCE:
        parser.error(f"--importance '{args.importance}' is unknown; known: {', '.join(IMPORTANCE)}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    try:
        exporters = {t: get_exporter(t) for t in targets}
    except EdgepruneError as exc:
        parser.error(f"--targets '{args.targets}': {exc}")
    if not exporters:
        parser.error("--targets is empty; give e.g. executorch,tflite")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="structure-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from edgeprune.profiles import host_profile

    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu": host_profile().soc, "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {p: package_version(p) for p in ("torch", "executorch", "ai-edge-litert", "litert-torch",
                                                     "onnxruntime", "timm", "transformers")},
        "command": shlex.join([*(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ),
                               "python", *sys.argv]),
        "targets": targets,
        "importance": args.importance,
        "models": [],
    }  # fmt: skip
    for key in models:
        out["models"].append(run_model(key, args, exporters, work))
        atomic_write_json(Path(args.out), out)
        _log(f"{key}: written to {args.out}")
    print(markdown(out))


if __name__ == "__main__":
    main()
