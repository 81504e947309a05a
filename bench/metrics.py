"""Metric benchmark (issue 23): the bundled shapes examples planned under three latency budgets on the host, judged by
their own metric (mIoU, mAP50) on the test split.

For each example and target: the dense fp32 build (its test metric with a 95% interval and its measured latency),
then a planned build per budget (a share of that dense latency; the planner chooses on the validation split by the
example's metric), and the uniform baseline: one keep ratio everywhere (--keeps), fp32 and int8, the same fine-tune,
of which the best that meets each budget on its measured latency is shown beside the plan. Every build goes through
the public API (`edgeprune.build`), so what is measured is what a user gets: the artifact through its runtime.

    python bench/metrics.py --examples segment --targets executorch,tflite --out metrics.json
    python bench/metrics.py --markdown metrics.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import edgeprune
from edgeprune._cores import usable_cores
from edgeprune._deps import package_version
from edgeprune.errors import BudgetInfeasibleError

EXAMPLES = {"segment": "examples:shapes-segment", "detect": "examples:shapes-detect"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _figures(result: Any, target: str) -> dict[str, Any]:
    """The artifact's test metric (with intervals), its measured latency and the verdict."""
    rep = result.devices["host"].artifact(target)
    m, meas = rep.quality.metric, rep.measurement
    assert m is not None, "the shapes examples declare a task, so a metric is always scored"
    plan = result.devices["host"].plan
    return {"plan": {"scheme": plan.scheme, "threads": plan.threads, "keep": plan.keep_ratio,
                     "layer_keep_ratios": plan.layer_keep_ratios},
            "metric": m.metric, "higher_is_better": m.higher_is_better, "value": m.artifact_value,
            "ci95": list(m.artifact_ci95),
            "dense_value": m.reference_value, "loss": m.drop, "loss_ci95": list(m.drop_ci95),
            "p50_ms": meas.latency_p50_ms, "p90_ms": meas.latency_p90_ms, "passed": result.passed}


def run(example: str, target: str, fractions: list[float], keeps: list[float], epochs: int, work: Path,
        measure: edgeprune.Measure) -> dict[str, Any]:
    spec = EXAMPLES[example]
    out = {"example": spec, "target": target}
    start = time.perf_counter()
    dense = edgeprune.build(spec, spec, out=work / "dense", targets=[target], plan=edgeprune.FixedPlan(),
                            measure=measure)
    out["dense"] = _figures(dense, target)
    dense_ms = out["dense"]["p50_ms"]
    _log(f"{spec} {target}: dense {out['dense']['metric']} {out['dense']['value']:.4f}, p50 {dense_ms:.3f} ms")
    out["uniform"] = []
    for keep in keeps:
        for scheme in ("fp32", "int8"):
            built = edgeprune.build(spec, spec, out=work / f"u{keep}{scheme}", targets=[target], measure=measure,
                                    plan=edgeprune.FixedPlan(prune=round(1 - keep, 4), quant=scheme,
                                                             finetune_epochs=epochs))
            out["uniform"].append({"keep": keep, "scheme": scheme, **_figures(built, target)})
            _log(f"  uniform keep {keep} {scheme}: {out['uniform'][-1]['value']:.4f} "
                 f"p50 {out['uniform'][-1]['p50_ms']:.3f} ms")
    out["budgets"] = []
    for frac in fractions:
        budget = round(dense_ms * frac, 4)
        row: dict[str, Any] = {"fraction": frac, "budget_ms": budget}
        t0 = time.perf_counter()
        try:
            planned = edgeprune.build(spec, spec, out=work / f"p{frac}", targets=[target], latency_ms=budget,
                                      measure=measure, plan=edgeprune.PlanSettings(finetune_epochs=epochs,
                                                                                   rank_epochs=1))
            row |= _figures(planned, target) | {"status": "planned"}
        except BudgetInfeasibleError as exc:
            row |= {"status": "infeasible", "reason": str(exc)[:300]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        fits = [u for u in out["uniform"] if u["p50_ms"] <= budget]
        best = max(fits, key=lambda u: u["value"] if u["higher_is_better"] else -u["value"], default=None)
        row["best_uniform"] = best and {k: best[k] for k in ("keep", "scheme", "value", "ci95", "p50_ms")}
        if row["status"] == "planned":
            row["speedup_vs_dense"] = dense_ms / row["p50_ms"]
        out["budgets"].append(row)
        _log(f"  budget {frac:.2f} ({budget:.3f} ms): {row['status']} "
             + (f"{row['value']:.4f} p50 {row['p50_ms']:.3f} ms" if row["status"] == "planned" else ""))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _ci(ci: list[float]) -> str:
    return f"({ci[0]:.3f}-{ci[1]:.3f})"


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for r in result["runs"]:
        d = r["dense"]
        lines += [f"#### {r['example']}, {r['target']}: dense {d['metric']} {d['value']:.3f} {_ci(d['ci95'])}, "
                  f"p50 {d['p50_ms']:.3f} ms", "",
                  "| budget | plan: test metric (95% CI) | loss vs dense (95% CI) | p50 ms | speed-up | "
                  "best uniform that fits | search + fine-tune s |", "|---|---|---|---|---|---|---|"]
        for b in r["budgets"]:
            u = b["best_uniform"]
            uni = (f"keep {u['keep']} {u['scheme']}: {u['value']:.3f} {_ci(u['ci95'])}, {u['p50_ms']:.3f} ms"
                   if u else "none")
            if b["status"] != "planned":
                lines.append(f"| {b['fraction']:.0%} ({b['budget_ms']:.3f} ms) | infeasible | | | | {uni} | "
                             f"{b['seconds']} |")
                continue
            lines.append(f"| {b['fraction']:.0%} ({b['budget_ms']:.3f} ms) | {b['value']:.3f} {_ci(b['ci95'])} | "
                         f"{b['loss']:+.3f} {_ci(b['loss_ci95'])} | {b['p50_ms']:.3f} | "
                         f"{b['speedup_vs_dense']:.2f}x | {uni} | {b['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default="segment", help="segment, detect (comma-separated)")
    parser.add_argument("--targets", default="executorch,tflite")
    parser.add_argument("--fractions", default="0.8,0.6,0.4", help="budgets as shares of the dense p50")
    parser.add_argument("--keeps", default="0.75,0.5", help="uniform baseline keep ratios")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", help="write the JSON here as well")
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a bench JSON and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, {usable_cores()} usable cores",
        "versions": {d: package_version(d) for d in ("torch", "executorch", "ai-edge-litert", "onnxruntime")},
        "runs": [],
    }
    measure = edgeprune.Measure(runs=args.runs, warmup=10, blocks=3)
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-metrics-") as tmp:
        for example in args.examples.split(","):
            for target in args.targets.split(","):
                work = Path(tmp) / f"{example}-{target}"
                result["runs"].append(run(example, target, [float(f) for f in args.fractions.split(",")],
                                          [float(k) for k in args.keeps.split(",")], args.finetune_epochs, work,
                                          measure))
                if args.out:
                    Path(args.out).write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
