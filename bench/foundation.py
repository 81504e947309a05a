"""Foundation benchmark: examples:digits on host at keep ratios × {fp32, int8} through ExecuTorch.

Prints one JSON object: per cell params, MACs, .pte bytes, measured p50 latency, eval accuracy through the runtime,
plus an independent re-measurement of each .pte with executorch.runtime (no edgeprune code) beside the pipeline's
own p50. Cells run interleaved in one process so they share the machine's conditions.

    python bench/foundation.py [--keep 1.0,0.75,0.5,0.25] [--runs 200] > foundation.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune._deps import package_version
from edgeprune._torch import torch_threads
from edgeprune.data import digits_split
from edgeprune.examples import digits
from edgeprune.export import get_exporter
from edgeprune.judge import assess_quality
from edgeprune.prune import as_tensor, prune
from edgeprune.recover import RecoveryConfig, distill
from edgeprune.runners.host import HostRunner
from edgeprune.types import Plan


def independent_p50_ms(path: Path, x: np.ndarray, runs: int, threads: int) -> float:
    """Time the .pte with executorch.runtime directly, as a user would."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    inp = (torch.from_numpy(x[:1]),)
    for _ in range(10):
        method.execute(inp)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        method.execute(inp)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default="1.0,0.75,0.5,0.25")
    parser.add_argument("--schemes", default="fp32,int8")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--finetune-epochs", type=int, default=10)
    args = parser.parse_args()

    data = digits_split()
    dense = digits.load_trained()
    example = torch.zeros(digits.INPUT_SHAPE)
    calib = as_tensor(data.calib_x)
    with torch.no_grad(), torch_threads(1):
        dense_out = dense(as_tensor(data.eval_x)).numpy()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    for keep in [float(k) for k in args.keep.split(",")]:
        with torch_threads(1):
            plan = Plan(keep_ratio=keep)
            pruned, summary = prune(dense, example, calib, plan)
            if keep < 1.0 and args.finetune_epochs:
                distill(pruned, dense, data.train_x, data.train_y, RecoveryConfig(epochs=args.finetune_epochs))
        for scheme in args.schemes.split(","):
            plan = Plan(scheme=scheme, keep_ratio=keep)
            with torch_threads(1):
                result = get_exporter("executorch").export(pruned, example, calib, plan, tmp / f"k{keep}-{scheme}.pte")
                reference = np.concatenate([result.reference(as_tensor(data.eval_x[i : i + 1])).detach().float().numpy()
                                            for i in range(len(data.eval_x))])
            m = HostRunner().measure(result.artifact, data.eval_x, warmup=10, runs=args.runs, threads=args.threads)
            q = assess_quality(scheme, m.outputs, reference, dense_out, data.eval_y)
            rows.append({
                "keep_ratio": keep,
                "scheme": scheme,
                "params": summary.params_after,
                "macs": summary.macs_after,
                "pte_bytes": result.artifact.size_bytes,
                "delegated_share": result.artifact.lowering.get("delegated_share"),
                "latency_p50_ms": round(m.latency_p50_ms, 4),
                "latency_p90_ms": round(m.latency_p90_ms, 4),
                "independent_p50_ms": round(independent_p50_ms(result.artifact.path, data.eval_x, args.runs, args.threads), 4),
                "eval_accuracy": round(q.artifact_accuracy, 4),
                "unpruned_accuracy": round(q.reference_accuracy, 4),
                "parity": [q.parity_metric, q.parity_value],
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    dense_fp32 = next(r for r in rows if r["keep_ratio"] == 1.0 and r["scheme"] == "fp32")
    for r in rows:
        r["speedup_vs_dense_fp32"] = round(dense_fp32["latency_p50_ms"] / r["latency_p50_ms"], 3)
        r["mac_ratio_vs_dense"] = round(dense_fp32["macs"] / r["macs"], 3)
    print(json.dumps({
        "benchmark": "foundation",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads},
        "versions": {d: package_version(d) for d in ("torch", "executorch", "torchao", "torch-pruning")},
        "runs": args.runs,
        "finetune_epochs": args.finetune_epochs,
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
