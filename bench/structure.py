"""deit_tiny_patch16_224 (random init, 1x3x224x224): ExecuTorch fp32 p50 latency at 1 thread of the dense model and of
head / MLP / depth pruning (edgeprune.structure), each exported with edgeprune's ExecuTorch exporter and measured with
HostRunner. The variants are measured interleaved, in `ROUNDS` rounds of one block each (10 warmups, `RUNS` timed
runs), so that load on a shared machine falls on all of them alike; a variant's p50 is the median of its rounds' p50s,
and `min_ms` its fastest run (the least disturbed by other processes).

    OMP_NUM_THREADS=1 python bench/structure.py [RUNS] [ROUNDS] > structure.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from edgeprune._torch import torch_threads
from edgeprune.export import get_exporter
from edgeprune.runners.host import HostRunner
from edgeprune.structure import describe, prune_structure
from edgeprune.types import Plan

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
VARIANTS = {
    "dense": {},
    "heads 50%": {"head_keep_ratio": 0.5},
    "MLP 50%": {"mlp_keep_ratio": 0.5},
    "depth 8/12": {"keep_blocks": 8},
    "all three": {"head_keep_ratio": 0.5, "mlp_keep_ratio": 0.5, "keep_blocks": 8},
}


def main() -> None:
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, 224, 224, generator=gen)
    inputs = torch.randn(4, 3, 224, 224, generator=gen)
    exporter = get_exporter("executorch")
    tmp = Path(tempfile.mkdtemp(prefix="structure-bench-"))
    rows, artifacts = [], []
    for label, kwargs in VARIANTS.items():
        with torch_threads(1):
            start = time.perf_counter()
            pruned, summary = prune_structure(model, example, **kwargs)
            prune_s = time.perf_counter() - start
            start = time.perf_counter()
            result = exporter.export(pruned, example, inputs, Plan(target="executorch"), tmp / f"{len(rows)}.pte")
            export_s = time.perf_counter() - start
            with torch.no_grad():
                want = pruned(inputs).numpy()
        got = HostRunner().measure(result.artifact, inputs.numpy(), warmup=1, runs=1, threads=1).outputs
        shape = describe(pruned)
        rows.append({
            "variant": label,
            "heads": sorted(set(shape["heads"].values())),
            "mlp_hidden": sorted(set(shape["mlp"].values())),
            "blocks": list(shape["blocks"].values()),
            "params_m": round(summary["params_after"] / 1e6, 3),
            "size_mb": round(result.artifact.size_mb, 2),
            "prune_s": round(prune_s, 2),
            "export_s": round(export_s, 1),
            "parity_max_abs": float(np.abs(got - want).max()),
            "delegated_share": result.artifact.lowering["delegated_share"],
            "round_p50_ms": [],
            "min_ms": None,
        })
        artifacts.append(result.artifact)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for _ in range(ROUNDS):
        for row, artifact in zip(rows, artifacts):
            m = HostRunner().measure(artifact, inputs[:1].numpy(), warmup=10, runs=RUNS, threads=1)
            row["round_p50_ms"].append(round(m.latency_p50_ms, 2))
            row["min_ms"] = round(min([*m.samples_ms, row["min_ms"] or float("inf")]), 2)
    dense = float(np.median(rows[0]["round_p50_ms"]))
    for row in rows:
        row["latency_p50_ms"] = round(float(np.median(row["round_p50_ms"])), 2)
        row["speedup_vs_dense"] = round(dense / row["latency_p50_ms"], 2)
        row["min_speedup_vs_dense"] = round(rows[0]["min_ms"] / row["min_ms"], 2)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"model": "timm deit_tiny_patch16_224 (random init)", "input": [1, 3, 224, 224],
                      "target": "executorch fp32 (XNNPACK)", "threads": 1, "runs_per_round": RUNS, "rounds": ROUNDS,
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
