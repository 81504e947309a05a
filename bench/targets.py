"""Targets benchmark: per model × target × scheme, side by side in one run — file size, export time, measured p50
latency on host, parity with the PyTorch reference, and eval accuracy where there are labels.

Models: examples:digits (real data), torchvision mobilenet_v2 and resnet18 (random weights, 1×3×224×224; parity
only). Writes one JSON object to --out (litert-torch prints its conversion progress on stdout, so stdout is not
clean JSON); progress rows go to stderr.

    python bench/targets.py [--models digits,mobilenet_v2,resnet18] [--runs 50] --out targets.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from edgeprune._deps import package_version
from edgeprune._torch import torch_threads
from edgeprune.data import digits_split, generated_data
from edgeprune.errors import EdgepruneError
from edgeprune.examples import digits
from edgeprune.export import get_exporter
from edgeprune.judge import assess_quality
from edgeprune.prune import as_tensor, recalibrate_bn
from edgeprune.runners.host import HostRunner
from edgeprune.types import SCHEMES, TARGETS, Plan


def load(name: str):
    """(module, input shape, dataset) for a benchmark model."""
    if name == "digits":
        return digits.load_trained(), digits.INPUT_SHAPE, digits_split()
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.get_model(name, weights=None).eval()
    shape = (1, 3, 224, 224)
    data = generated_data(shape, seed=0)
    # Random init leaves BatchNorm at mean 0 / var 1, so activations vanish (mobilenet_v2's logits are ~1e-9) and
    # parity is trivially met. Re-estimating BN statistics on the inputs gives unit-scale activations, as trained
    # models have.
    recalibrate_bn(module, as_tensor(data.calib_x))
    return module.eval(), shape, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mobilenet_v2,resnet18")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--eval", type=int, default=0, help="cap eval samples for generated-data models (0 = all)")
    parser.add_argument("--out", type=Path, required=True, help="write the JSON here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-targets-"))
    rows = []
    for name in args.models.split(","):
        module, shape, data = load(name)
        eval_x = data.eval_x[: args.eval] if args.eval else data.eval_x
        eval_y = None if data.eval_y is None else data.eval_y[: len(eval_x)]
        example = torch.zeros(shape)
        calib = as_tensor(data.calib_x)
        with torch.no_grad(), torch_threads(1):
            dense = np.concatenate([module(as_tensor(eval_x[i : i + 1])).numpy() for i in range(len(eval_x))])
        for target in args.targets.split(","):
            exporter = get_exporter(target)
            for scheme in args.schemes.split(","):
                row = {"model": name, "target": target, "scheme": scheme}
                if scheme not in exporter.schemes:
                    rows.append(row | {"status": "unsupported", "reason": f"{target} does not offer {scheme}"})
                    continue
                try:
                    plan = Plan(target=target, scheme=scheme)
                    with torch_threads(1):
                        start = time.perf_counter()
                        result = exporter.export(module, example, calib, plan, tmp / f"{name}-{scheme}{exporter.suffix}")
                        export_s = time.perf_counter() - start
                        reference = np.concatenate(
                            [result.reference(as_tensor(eval_x[i : i + 1])).detach().float().numpy() for i in range(len(eval_x))]
                        )
                    m = HostRunner().measure(result.artifact, eval_x, warmup=5, runs=args.runs, threads=args.threads)
                    q = assess_quality(scheme, m.outputs, reference, dense, eval_y)
                    row |= {
                        "status": "ok" if q.parity_passed else "parity_failed",
                        "size_bytes": result.artifact.size_bytes,
                        "export_s": round(export_s, 2),
                        "latency_p50_ms": round(m.latency_p50_ms, 3),
                        "parity": [q.parity_metric, round(q.parity_value, 6), q.parity_limit],
                        "accuracy_kind": q.kind,
                        "accuracy": round(q.artifact_accuracy, 4),
                        "lowering": {k: v for k, v in result.artifact.lowering.items()
                                     if k in ("delegated_share", "non_delegated", "not_delegated_to_xnnpack", "float_compute_ops")},
                    }
                except EdgepruneError as exc:
                    row |= {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
                except Exception as exc:  # noqa: BLE001 - a benchmark records failures and goes on
                    row |= {"status": "error", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                    traceback.print_exc(file=sys.stderr)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    for row in rows:
        fp32 = next((r for r in rows if r["model"] == row["model"] and r["target"] == row["target"]
                     and r["scheme"] == "fp32" and r.get("status") == "ok"), None)
        if fp32 and row.get("status") == "ok":
            row["speedup_vs_fp32_same_target"] = round(fp32["latency_p50_ms"] / row["latency_p50_ms"], 3)
    args.out.write_text(json.dumps({
        "benchmark": "targets",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": {"machine": platform.machine(), "cores": os.cpu_count(), "threads": args.threads},
        "versions": {d: package_version(d) for d in ("torch", "executorch", "torchao", "litert-torch", "ai-edge-litert",
                                                     "ai-edge-quantizer", "onnx", "onnxruntime")},
        "runs": args.runs,
        "rows": rows,
    }, indent=2))
    print(f"results -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
