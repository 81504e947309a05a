"""Resume benchmark (issue 19): a planned search killed with SIGKILL at about half its time, then resumed with
--resume: evaluations lost (recomputed after the resume) and the time added over an uninterrupted run.

    python bench/resume.py [--model examples:digits] [--device pixel-8] [--size-mb 0.1] [--kill-at 0.5]

Runs `edgeprune plan` three times in subprocesses: uninterrupted (its time T and the evaluations it journals, E);
killed at `--kill-at` x T (the evaluations recorded by then, R); resumed (its time and the evaluations it reused and
wrote). Every evaluation is journalled when it completes, so what the kill loses is the work in flight (at most one
evaluation per executor worker, and the process's start-up): `recorded_work_redone` (recorded at the kill but not
reused; 0 by design) and `extra_s` (killed time + resumed time - uninterrupted time) measure it. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _plan(args: argparse.Namespace, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli", "plan", "--model", args.model, "--device", args.device,
            "--target", "executorch", "--size-mb", str(args.size_mb), "--executor", args.executor, "--quiet",
            "--json", "--out", str(out), *extra]


def _timed(cmd: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="examples:digits")
    p.add_argument("--device", default="pixel-8", help="pixel-8 on a laptop plans on predictions: repeatable runs")
    p.add_argument("--size-mb", type=float, default=0.1)
    p.add_argument("--executor", default="process")
    p.add_argument("--kill-at", type=float, default=0.5, help="share of the uninterrupted time at which to kill")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-resume-") as tmp:
        work = Path(tmp)
        whole_s, whole = _timed(_plan(args, work / "whole"))
        journalled = whole["journal"]["written"]

        killed_out = work / "killed"
        proc = subprocess.Popen(_plan(args, killed_out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        start = time.perf_counter()
        time.sleep(args.kill_at * whole_s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_s = time.perf_counter() - start
        recorded = len([f for f in Path(f"{killed_out}.journal").glob("*-*.json")])

        resumed_s, resumed = _timed(_plan(args, killed_out, "--resume"))
        j = resumed["journal"]
        same_plan = (killed_out / args.device / "plan.yaml").read_text() == \
            (work / "whole" / args.device / "plan.yaml").read_text()
    result = {
        "bench": "resume", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "model": args.model, "device": args.device, "executor": args.executor,
        "uninterrupted_s": round(whole_s, 1), "evaluations_journalled": journalled,
        "killed_after_s": round(killed_s, 1), "evaluations_recorded_at_kill": recorded,
        "resumed_s": round(resumed_s, 1), "reused": j["reused"], "written_after_resume": j["written"],
        "recorded_work_redone": recorded - j["reused"],
        "evaluations_total": j["reused"] + j["written"],
        "extra_s": round(killed_s + resumed_s - whole_s, 1),
        "extra_share": round((killed_s + resumed_s - whole_s) / whole_s, 3),
        "same_plan_as_uninterrupted": same_plan,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
