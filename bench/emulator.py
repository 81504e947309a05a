"""The emulated ARM64 device: output parity with the host and emulated / native time, per model, target and scheme.

    python bench/emulator.py --out /tmp/emulator.json          # digits, mobilenet_v2, mobilenet_v3_small
    python bench/emulator.py --models digits --rows 16         # quicker

Needs root and qemu-user-static with binfmt_misc (see `edgeprune emulator create`). For each model (the bundled
digits model; torchvision mobilenet_v2 and mobilenet_v3_small at 224x224 with random weights) and scheme (fp32, int8
static), the model is pruned by `--prune` (30%) and built for a Raspberry Pi 5 (cortex-a76), one target at a time
(`edgeprune build --target T`, so that one target's failure does not hide the others). Each artifact then runs
`--rows` eval inputs on this host (the HostRunner: the Python runtimes) and on the emulated board over ssh (the native
ExecuTorch runner for .pte, remote_measure.py for the others), both at one thread with `--runs` timed runs after one
warm-up, and the bench reports:

- parity: max abs diff of the board's outputs from the host's, the output range, top-1 agreement;
- emulated p50 / native p50 (the same artifact and runtime, one thread; the host's timing is the native one);
- the time to create the device (`emulator create`: the time of this run, and the one recorded when the cached root
  was made; the Debian stage is cached on its own and not counted in the latter).

JSON on stdout (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from edgeprune.cli import main as cli
from edgeprune.emulator import fronts, root
from edgeprune.runners.host import HostRunner
from edgeprune.runners.ssh import SshRunner
from edgeprune.validation import _artifact, _eval_data

MODELS = {"digits": "examples:digits", "mobilenet_v2": "torchvision:mobilenet_v2",
          "mobilenet_v3_small": "torchvision:mobilenet_v3_small"}  # fmt: skip
DEVICE = "raspberry-pi-5"


def build(model: str, scheme: str, target: str, prune: float, out: Path) -> tuple[Path | None, str | None]:
    argv = ["build", "--model", MODELS[model], "--device", DEVICE, "--prune", str(prune), "--quant", scheme,
            "--target", target, "--out", str(out), "--quiet", "--runs", "3", "--warmup", "1", "--blocks", "1"]
    if model == "digits":
        argv += ["--finetune-epochs", "1"]
    start = time.perf_counter()
    code = cli(argv)
    print(f"# build {model} {scheme} {target}: exit {code} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    folder = out / DEVICE
    return (folder, None) if (folder / "manifest.json").is_file() else (None, f"build exit {code}")


def cell(runner: SshRunner, folder: Path, rows: int, runs: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    artifact = _artifact(folder, entry)
    x = np.ascontiguousarray(_eval_data(manifest).eval_x[:rows], dtype=np.float32)
    host = HostRunner().measure(artifact, x, warmup=1, runs=runs, threads=1)
    start = time.perf_counter()
    board = runner.measure(artifact, x, warmup=1, runs=runs, threads=1)
    wall = time.perf_counter() - start
    diff = float(np.max(np.abs(board.outputs.astype(np.float64) - host.outputs.astype(np.float64))))
    agree = float((board.outputs.reshape(len(x), -1).argmax(1) == host.outputs.reshape(len(x), -1).argmax(1)).mean())
    return {
        "rows": len(x), "max_abs_diff": diff, "output_range": float(np.ptp(host.outputs)), "top1_agreement": agree,
        "host_p50_ms": host.latency_p50_ms, "emulated_p50_ms": board.latency_p50_ms,
        "emulated_over_native": board.latency_p50_ms / host.latency_p50_ms,
        "board_runner": board.runner, "board_wall_s": round(wall, 1),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--schemes", default="fp32,int8")
    parser.add_argument("--targets", default="executorch,tflite,onnx")
    parser.add_argument("--prune", type=float, default=0.3)
    parser.add_argument("--rows", type=int, default=8, help="eval inputs compared per artifact (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs on each side (default 5)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    start = time.perf_counter()
    device = root.create("arm64")
    create_s = time.perf_counter() - start
    state = fronts.start(device, adb=False)
    report = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                    "python": platform.python_version()},
        "versions": {d: metadata.version(d) for d in ("executorch", "ai-edge-litert", "onnxruntime", "torch")},
        "qemu": "qemu-user-static " + _qemu_version(),
        "emulated": device.recipe.marker,
        "create": {"this_run_s": round(create_s, 1), "cached": device.cached,
                   "recorded_s": device.created_s, "root": str(device.path)},
        "command": " ".join(sys.argv),
        "cells": [],
    }  # fmt: skip
    try:
        runner = SshRunner(state.ssh_target, identity_file=state.identity_file, known_hosts=state.known_hosts,
                           ssh_options=("-F", "/dev/null"))  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
            for model in args.models.split(","):
                for scheme in args.schemes.split(","):
                    for target in args.targets.split(","):
                        row = {"model": model, "scheme": scheme, "target": target}
                        folder, error = build(model, scheme, target, args.prune, Path(tmp) / f"{model}-{scheme}-{target}")
                        if folder is not None:
                            try:
                                row.update(cell(runner, folder, args.rows, args.runs))
                            except Exception as exc:  # noqa: BLE001 - a bench row records its failure
                                error = f"{type(exc).__name__}: {exc}"
                        if error:
                            row["error"] = error
                        print(json.dumps(row), file=sys.stderr)
                        report["cells"].append(row)
    finally:
        fronts.stop(device.path)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


def _qemu_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split("\n", 1)[0].split("version", 1)[-1].strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
