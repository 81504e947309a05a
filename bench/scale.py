"""Scale-out benchmark (issue 19): the planner's sensitivity analysis of torchvision mobilenet_v2 on 1 worker
(serial), 2 workers (a local process pool) and a local Ray instance with 2 CPUs, side by side in one run.

The analysis is the planner's own (`Planner.sensitivity`: the dense model, then each of its stages pruned alone at
three keep ratios, BatchNorm re-estimated, scored on a validation subset), run through the executor the settings
name. The model has random weights (torchvision `weights=None`): the timing does not depend on them. Data: the
generated standard-normal inputs (32 calibration, 64 validation samples); accuracy is agreement with the unpruned
model. Every run must give the same sensitivity table as the serial one (checked, reported).

Per executor: the analysis's wall time (executor start-up and shipping included, as a user waits for it), the
speed-up against 1 worker, and the overhead measured apart on a fresh executor: start-up (start and a first empty
map) and shipping the model and data to every worker (a map of no-ops with them, minus one without; it includes a
worker's first import of what unpickling the model needs: torchvision, and torch too in a Ray worker, which the
process pool's forkserver has preloaded). The serial baseline runs torch on one thread, as each worker does;
`--threaded-serial` adds a serial run with torch's default thread count.

    python bench/scale.py --size 224 --out bench-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._deps import package_version
from edgeprune._io import atomic_write_bytes
from edgeprune.data import generated_data
from edgeprune.evaluator import planner_for
from edgeprune.executor import get_executor
from edgeprune.modelspec import resolve_model
from edgeprune.planner import PlanSettings
from edgeprune.profiles import host_profile
from edgeprune.prune import as_tensor


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def noop(shared: Any, item: int) -> int:
    return item


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def analysis(spec, dataset, kind: str, workers: int | None, threads: int) -> dict[str, Any]:
    """One sensitivity analysis through executor `kind`; torch in this process on `threads` threads."""
    torch.set_num_threads(threads)
    settings = PlanSettings(importances=("l2",), sensitivity_samples=64, executor=kind, workers=workers, seed=0)
    with planner_for(spec, dataset, settings) as planner:
        space = planner.space(("executorch",), ("fp32",), host_profile())
        start = time.perf_counter()
        sens = planner.sensitivity(space, "l2")
        wall = time.perf_counter() - start
        table = {k: v for k, v in sens.to_dict(space).items() if k != "seconds"}
    return {"wall_s": round(wall, 2), "evaluations": 1 + len(space.buckets) * len(sens.probe_keeps),
            "buckets": len(space.buckets), "table": table}


def overhead(spec, dataset, kind: str, workers: int) -> dict[str, float]:
    """Start-up (start + a first empty map) and shipping what a sensitivity analysis ships (the model, an example
    input, the calibration and validation data) to every worker."""
    val = dataset.val_x[:64]
    job = (spec.module, torch.zeros(spec.input_shape), as_tensor(dataset.calib_x), val, np.zeros(len(val), np.int64))
    start = time.perf_counter()
    ex = get_executor(kind, workers=workers)
    ex.map(noop, list(range(workers)), None)
    startup = time.perf_counter() - start
    try:
        t = time.perf_counter()
        ex.map(noop, list(range(workers)), None)
        empty = time.perf_counter() - t
        t = time.perf_counter()
        ex.map(noop, list(range(workers)), job)
        shipped = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        ex.close()
        close = time.perf_counter() - t
    return {"startup_s": round(startup, 2), "ship_model_s": round(max(0.0, shipped - empty), 3),
            "close_s": round(close, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--threaded-serial", action="store_true",
                        help="also run serially with torch's default thread count (on a loaded machine this "
                             "oversubscribes the cores badly)")
    args = parser.parse_args()

    load_before = _uptime()
    spec = resolve_model("torchvision:mobilenet_v2", input_shape=(1, 3, args.size, args.size))
    dataset = generated_data(spec.input_shape, seed=0)
    params_m = sum(p.numel() for p in spec.module.parameters()) / 1e6
    runs = [("serial", None, 1, "1 worker (serial, torch on 1 thread)"),
            ("process", 2, 1, "2 workers (process pool)"),
            ("ray", 2, 1, "local Ray instance, 2 CPUs")]
    if args.threaded_serial:
        n = torch.get_num_threads()
        runs.append(("serial", None, n, f"serial, torch on {n} threads"))
    results = []
    for kind, workers, threads, label in runs:
        _log(f"{label}: analysis")
        r = analysis(spec, dataset, kind, workers, threads)
        if kind != "serial":
            _log(f"{label}: overhead")
            r["overhead"] = overhead(spec, dataset, kind, workers)
        results.append({"executor": kind, "workers": workers or 1, "torch_threads_main": threads, "label": label,
                        **r})
        _log(f"{label}: {r['wall_s']} s")
    base = results[0]
    for r in results:
        r["speedup_vs_1_worker"] = round(base["wall_s"] / r["wall_s"], 2)
        r["same_table_as_serial"] = r["table"] == base["table"]
        if r["executor"] != "serial":
            ideal = base["wall_s"] / r["workers"]
            r["overhead"]["vs_ideal_s"] = round(r["wall_s"] - ideal, 2)  # time above a perfect split of the work
    out = {
        "benchmark": "scale",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "model": f"torchvision:mobilenet_v2 (random weights), input 1x3x{args.size}x{args.size}, {params_m:.2f} M params",
        "data": "generated: 32 calibration, 64 validation samples (standard normal)",
        "evaluations": base["evaluations"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor(),
                    "load_before": load_before, "load_after": _uptime()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": package_version("torchvision"), "ray": package_version("ray"),
                     "torch-pruning": package_version("torch-pruning")},
        "runs": [{k: v for k, v in r.items() if k != "table"} for r in results],
        "sensitivity_table": base["table"],
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        atomic_write_bytes(Path(args.out), (text + "\n").encode())


if __name__ == "__main__":
    main()
