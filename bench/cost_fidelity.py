"""Cost-model fidelity: calibrate `host` from scratch, then predict and measure held-out models side by side.

    python bench/cost_fidelity.py --out /tmp/fidelity.json                   # full run (hours on 2 cores)
    python bench/cost_fidelity.py --models mobilenet_v2,resnet18,mnasnet1_0 --keeps 1.0,0.4 \
        --targets executorch --profile /tmp/host-cal.yaml --out /tmp/fid.json    # reduced, reusing a profile

Held-out models (none is in the calibration suite): torchvision mobilenet_v2, mobilenet_v3_small/large, resnet18,
shufflenet_v2_x1_0, mnasnet1_0, efficientnet_b0, squeezenet1_1, regnet_x_400mf (random weights, 224x224), each
pruned with edgeprune.prune at keep ratios {1.0, 0.7, 0.4}, exported for each target x scheme {fp32, int8 static}
at batch 1, measured with the HostRunner at the profile's thread count.

Measured latency uses the calibration's estimator (`edgeprune.cost.calibrate.fast_ms`) over `--rounds` rounds of
`--runs` runs through the HostRunner's runtime session, the rounds spread over the run (one round after each of the
next exports): at one thread the median CPU time per run, at more threads the 10th percentile of wall time, i.e.
the latency without competing work, the quantity the cost model predicts. The plain wall-clock p50 of the fastest
round is reported beside it. Each cell is appended to a JSON-lines file as it finishes (`--cells`), so a rerun
resumes; `--repredict` recomputes the predictions of recorded cells with `--profile` without measuring again.

Reported per (target, scheme) and overall, for the cost model and for a MACs-proportional baseline
(latency = a * GMACs + b, fitted on the same calibration table): share within +/-10% and +/-20%, median absolute
% error, Spearman rank correlation; plus model-size error (vs the file export wrote) and peak-memory error (vs the
runner's memory figure), the calibration time and the prediction time per call. JSON on stdout (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._deps import package_version
from edgeprune._torch import torch_threads
from edgeprune.cost import table as cost_table
from edgeprune.cost.calibrate import fast_ms, run_calibration, time_round
from edgeprune.cost.features import extract_features
from edgeprune.cost.fit import FeatureCache, fit_macs_baseline, summarize
from edgeprune.cost.model import predict_features
from edgeprune.errors import EdgepruneError
from edgeprune.export import get_exporter
from edgeprune.profiles import host_profile, load_profile
from edgeprune.prune import prune
from edgeprune.types import Plan

MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "shufflenet_v2_x1_0",
          "mnasnet1_0", "efficientnet_b0", "squeezenet1_1", "regnet_x_400mf")


def _log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _model(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--keeps", default="1.0,0.7,0.4")
    ap.add_argument("--schemes", default="fp32,int8")
    ap.add_argument("--targets", default="executorch,tflite")
    ap.add_argument("--threads", type=int, default=None, help="default: the host profile's thread count")
    ap.add_argument("--profile", default=None, help="reuse a calibrated profile instead of calibrating")
    ap.add_argument("--calibrate-minutes", type=float, default=8.0)
    ap.add_argument("--workdir", default=None, help="where the calibrated profile and its table go")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cells", default=None, help="JSON-lines file of finished cells (resume)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--repredict", action="store_true", help="recompute predictions of recorded cells, no measuring")
    ap.add_argument("--markdown", metavar="JSON", help="print the tables of an earlier run's JSON as markdown, and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return

    targets, schemes = args.targets.split(","), args.schemes.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgeprune-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    calibration_s = None
    if args.profile:
        profile_path = Path(args.profile)
        profile = load_profile(str(profile_path))
    else:
        profile_path = work / "host-calibrated.yaml"
        _log(f"calibrating host ({args.calibrate_minutes} min) -> {profile_path}")
        t0 = time.perf_counter()
        profile = run_calibration(host_profile(), targets, args.calibrate_minutes, profile_path, resume=False)
        calibration_s = time.perf_counter() - t0
    threads = args.threads or min(profile.default_threads, os.cpu_count() or 1)
    table_records = cost_table.read_table(cost_table.table_path_for(profile_path))
    cache = FeatureCache()
    baseline = {}
    for t in targets:
        for s in schemes:
            recs = [r for r in table_records if r.get("kind") == "suite" and (r["target"], r["scheme"]) == (t, s)]
            if recs:
                baseline[(t, s)] = fit_macs_baseline(recs, cache)

    cells_path = Path(args.cells) if args.cells else work / "cells.jsonl"
    cells = {(c["model"], c["keep"], c["target"], c["scheme"]): c for c in cost_table.read_table(cells_path)}
    pending: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []

    def later_rounds(final: bool) -> None:
        for p in list(pending):
            if len(p["rounds"]) < args.rounds:
                p["rounds"].append(time_round(p["artifact"], p["x"], threads, 3, args.runs)[0])
            if len(p["rounds"]) >= args.rounds or final:
                pending.remove(p)
                walls = [float(np.percentile([w for w, _ in r], 50)) for r in p["rounds"]]
                cell = p["cell"] | {"measured_ms": fast_ms(p["rounds"], threads), "latency_p50_ms": min(walls),
                                    "round_p50s_ms": [round(v, 4) for v in walls]}
                cost_table.append_record(cells_path, cell)
                cells[(cell["model"], cell["keep"], cell["target"], cell["scheme"])] = cell
                shutil.rmtree(p["dir"], ignore_errors=True)

    example = torch.zeros(1, 3, 224, 224)
    gen = torch.Generator().manual_seed(0)
    calib = torch.randn(16, 3, 224, 224, generator=gen)
    with torch_threads(1):
        for name in args.models.split(","):
            for keep in [float(k) for k in args.keeps.split(",")]:
                todo = [(t, s) for t in targets for s in schemes if (name, keep, t, s) not in cells]
                if args.repredict:
                    todo = [(t, s) for t in targets for s in schemes if (name, keep, t, s) in cells]
                if not todo:
                    continue
                model = _model(name)
                try:
                    pruned = model if keep == 1.0 else prune(model, example, calib, Plan(keep_ratio=keep))[0]
                except EdgepruneError as exc:  # a model edgeprune cannot prune is reported, not fatal
                    _log(f"{name} keep {keep}: not pruned: {exc}")
                    skipped.append({"model": name, "keep": keep, "reason": str(exc)})
                    continue
                for t, s in todo:
                    t0 = time.perf_counter()
                    f = extract_features(pruned, example, t, s)
                    pred = predict_features(profile, f, threads)
                    predict_s = time.perf_counter() - t0
                    a, b = baseline.get((t, s), (float("nan"), float("nan")))
                    update = {"predicted_ms": pred.latency_p50_ms, "status": pred.status,
                              "macs_baseline_ms": a * f.macs / 1e9 + b, "macs": f.macs, "params": f.params,
                              "predicted_size_bytes": pred.model_size_mb * 1e6,
                              "predicted_peak_memory_mb": pred.peak_memory_mb, "predict_s": round(predict_s, 4)}
                    if args.repredict:
                        cells[(name, keep, t, s)] = cells[(name, keep, t, s)] | update
                        continue
                    d = Path(tempfile.mkdtemp(dir=work))
                    try:
                        art = get_exporter(t).export(pruned, example, calib[:8], Plan(target=t, scheme=s, keep_ratio=keep),
                                                     d / f"m{get_exporter(t).suffix}").artifact
                    except Exception as exc:  # noqa: BLE001 - a cell that cannot export is reported, not fatal
                        _log(f"{name} keep {keep} {t} {s}: export failed: {exc}")
                        shutil.rmtree(d, ignore_errors=True)
                        continue
                    samples, (mem_mb, _) = time_round(art, example, threads, 3, args.runs)
                    cell = {
                        "kind": "fidelity", "model": name, "keep": keep, "target": t, "scheme": s, "threads": threads,
                        "size_bytes": art.size_bytes, "peak_memory_mb": mem_mb,
                        "lowering": {k: v for k, v in art.lowering.items() if k in ("non_delegated", "delegated_share")},
                    } | update
                    later_rounds(final=False)
                    pending.append({"cell": cell, "rounds": [samples], "artifact": art, "x": example, "dir": d})
                    _log(f"{name} keep {keep} {t} {s}: predicted {pred.latency_p50_ms:.3f} ms, "
                         f"first round {fast_ms([samples], threads):.3f} ms")
        for _ in range(args.rounds):
            if pending:
                later_rounds(final=False)
        later_rounds(final=True)

    rows = [c for c in cells.values() if c["model"] in args.models.split(",")]
    summary: dict[str, Any] = {}
    for key in [(t, s) for t in targets for s in schemes] + [("all", "all")]:
        sel = [c for c in rows if key == ("all", "all") or (c["target"], c["scheme"]) == key]
        if not sel:
            continue
        meas = [c["measured_ms"] for c in sel]
        summary[f"{key[0]}/{key[1]}"] = {
            "cells": len(sel),
            "cost_model": summarize([c["predicted_ms"] for c in sel], meas),
            "macs_baseline": summarize([c["macs_baseline_ms"] for c in sel], meas),
            "size_error_pct_median_abs": float(np.median([abs(c["predicted_size_bytes"] / c["size_bytes"] - 1) * 100 for c in sel])),
            "size_error_pct_max_abs": float(np.max([abs(c["predicted_size_bytes"] / c["size_bytes"] - 1) * 100 for c in sel])),
            "peak_memory_error_pct_median_abs": float(np.median([
                abs(c["predicted_peak_memory_mb"] / c["peak_memory_mb"] - 1) * 100 for c in sel if c["peak_memory_mb"]])),
        }
    out = {
        "bench": "cost_fidelity",
        "date_utc": cost_table.now_utc(),
        "machine": {"cpu": host_profile().soc, "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": {d: package_version(d) for d in ("torch", "executorch", "ai-edge-litert", "litert-torch", "torchvision")},
        "threads": threads,
        "calibration": {
            "profile": str(profile_path), "seconds": calibration_s,
            "cost_model": profile.cost_model.model_dump(mode="json", include={"status", "date", "noise_spread_pct",
                                                                             "networks", "calibration_s",
                                                                             "expected_error_pct"})
            if profile.cost_model else None,
        },
        "measurement": (f"edgeprune.cost.calibrate.fast_ms over {args.rounds} rounds x {args.runs} runs (threads {threads}: "
                        + ("median CPU time per run" if threads == 1 else "p10 of wall time") + "), rounds spread in time"),
        "predict_s_median": float(np.median([c["predict_s"] for c in rows])) if rows else None,
        "summary": summary,
        "skipped": skipped,
        "cells": sorted(rows, key=lambda c: (c["model"], -c["keep"], c["target"], c["scheme"])),
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.0f}%"


def markdown(out: dict[str, Any]) -> str:
    """The summary (cost model beside the MACs baseline, per target/scheme) and the per-cell table, as markdown."""
    lines = ["| target/scheme | cells | within ±10% | within ±20% | median abs error | rank corr. | "
             "MACs baseline: ±10% / ±20% / median / rank | size error median (max) | peak-memory error median |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, row in out["summary"].items():
        c, b = row["cost_model"], row["macs_baseline"]
        lines.append(
            f"| {key} | {row['cells']} | {_pct(c['within_10_pct'])} | {_pct(c['within_20_pct'])} | "
            f"{c['median_abs_error_pct']:.1f}% | {c['rank_correlation']:.3f} | {_pct(b['within_10_pct'])} / "
            f"{_pct(b['within_20_pct'])} / {b['median_abs_error_pct']:.1f}% / {b['rank_correlation']:.3f} | "
            f"{row['size_error_pct_median_abs']:.2f}% ({row['size_error_pct_max_abs']:.2f}%) | "
            f"{row['peak_memory_error_pct_median_abs']:.2f}% |")
    lines += ["", "| model | keep | target | scheme | predicted ms | measured ms | error | MACs baseline ms | "
                  "size MB (predicted error) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in out["cells"]:
        err = 100 * (c["predicted_ms"] / c["measured_ms"] - 1)
        size_err = 100 * (c["predicted_size_bytes"] / c["size_bytes"] - 1)
        lines.append(f"| {c['model']} | {c['keep']:g} | {c['target']} | {c['scheme']} | {c['predicted_ms']:.3f} | "
                     f"{c['measured_ms']:.3f} | {err:+.1f}% | {c['macs_baseline_ms']:.3f} | "
                     f"{c['size_bytes'] / 1e6:.2f} ({size_err:+.1f}%) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
