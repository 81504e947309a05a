"""Sparsity on this CPU (issue 20): does zeroing weights make any target runtime faster, and how much smaller does it
make the artifact once compressed?

torchvision mobilenet_v2 (10 classes, seeded random init; timing does not depend on training) at 1x3x224x224. The
dense fp32 model is the reference; each sparse variant zeroes weights of a copy in place, so the architecture, the
graph and the dense kernels stay the same and only the values change:

- ``unstructured 50/75/90%``: per conv / linear layer (stem, depthwise, 1x1, classifier), the smallest |w|.
- ``2:4``: in each row of a layer (one output channel, its weights in (kh, kw, in) order, input channels innermost as
  in the NHWC/OHWI kernels of XNNPACK and LiteRT), of every 4 consecutive weights the 2 largest |w| stay; a row's
  tail of fewer than 4 keeps its larger half (rounded up). For 1x1 convs and the classifier this is 2:4 along the
  input channels.
- ``1x1 convs 75%``: only the 1x1 (pointwise) convolutions at 75%, the pattern XNNPACK's sparse inference wants
  (it needs at least 2/3 of each 1x1 convolution's weights zero).

Each variant is exported with edgeprune's exporters (``Plan(target, scheme="fp32", keep_ratio=1.0)``) to ExecuTorch
(.pte, XNNPACK), LiteRT (.tflite, ai_edge_litert with its default XNNPACK delegate) and ONNX Runtime (.onnx, CPU
provider). XNNPACK runs a model sparse only when the runtime asks it to (``XNN_FLAG_HINT_SPARSE_INFERENCE``):
ExecuTorch never does, and the LiteRT XNNPACK delegate does only when the flatbuffer holds sparse-encoded weights
behind DENSIFY ops (TensorFlow's converter with ``Optimize.EXPERIMENTAL_SPARSITY``), which litert-torch has no option
for. So the sparse variants are also converted to a fourth artifact, ``tflite+densify``: litert-torch with the LiteRT
converter's own ``tfl-dense-to-sparse`` MLIR pass run after its passes (through litert-torch's private converter
module, in a child process, since a crash there must not end the bench). That row says whether the sparse path
pays where it exists; it is not what the project's LiteRT exporter writes.

All artifacts are timed side by side in `--passes` passes (as bench/planner.py's `time_passes`): each pass times
every artifact once at each thread count (HostRunner: a fresh session, `--warmup` runs, then `--runs` timed runs;
its p50), the order rotated by one each pass. A variant's latency is the median of its passes' p50s; its speed-up
is dense / sparse on the same runtime and thread count (> 1: faster), with the range of the per-pass ratios
(dense and sparse of the same pass, seconds apart). Verdict: "faster" when the median ratio is >= 1.10 and no pass
ratio is below 1.0, "slower" when the median is <= 0.91 and no pass ratio is above 1.0, else "same".
Size: the artifact's bytes, and gzip's (level 6): zeros compress, which is what sparsity buys where it is not
faster. Parity: max |artifact - PyTorch| of the sparse model's logits on the timing input.

    python bench/sparsity.py --out sparsity.json > sparsity.log   # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from edgeprune._cores import usable_cores
from edgeprune._deps import package_version
from edgeprune._io import atomic_write_json, native_stderr_silenced
from edgeprune._torch import torch_threads
from edgeprune.export import get_exporter
from edgeprune.runners.base import BLOCK_PAUSE_S
from edgeprune.runners.host import HostRunner
from edgeprune.types import Artifact, Plan

TARGETS = ("executorch", "tflite", "onnx")
DENSIFY = "tflite+densify"
VARIANTS = ("dense", "unstructured 50%", "unstructured 75%", "unstructured 90%", "2:4", "1x1 convs 75%")
DENSE_TO_SPARSE = "builtin.module(func.func(tfl-dense-to-sparse))"
"""The LiteRT converter's pass that writes constant weights with >= 30% zeros sparse-encoded behind DENSIFY ops."""
FASTER, SLOWER = 1.10, 0.91
INPUT_SHAPE = (1, 3, 224, 224)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the variants


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _is_pointwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1


def _zero_smallest(weight: torch.Tensor, ratio: float) -> None:
    """Zero the `ratio` share of `weight`'s entries with the smallest |w|, in place."""
    flat = weight.detach().reshape(-1).clone()
    k = int(round(ratio * flat.numel()))
    if k:
        flat[flat.abs().argsort()[:k]] = 0.0
        weight.data.copy_(flat.view_as(weight))


def _two_of_four(weight: torch.Tensor) -> None:
    """Keep the 2 largest |w| of every 4 consecutive weights of each row (OHWI order), in place; a tail of r < 4
    weights keeps its ceil(r/2) largest."""
    conv = weight.dim() == 4
    rows = (weight.detach().permute(0, 2, 3, 1) if conv else weight.detach()).reshape(weight.shape[0], -1).clone()
    full = rows.shape[1] // 4 * 4
    groups = rows[:, :full].reshape(rows.shape[0], -1, 4)
    drop = groups.abs().argsort(dim=-1)[..., :2]
    groups.scatter_(-1, drop, 0.0)
    rows[:, :full] = groups.reshape(rows.shape[0], full)
    tail = rows.shape[1] - full
    if tail:
        part = rows[:, full:]
        part.scatter_(-1, part.abs().argsort(dim=-1)[:, : tail // 2], 0.0)
        rows[:, full:] = part
    if conv:
        o, i, kh, kw = weight.shape
        rows = rows.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
    weight.data.copy_(rows.reshape(weight.shape))


def _sparsify(model: nn.Module, variant: str) -> nn.Module:
    for m in _weighted(model):
        if variant.startswith("unstructured"):
            _zero_smallest(m.weight, int(variant.split()[1].rstrip("%")) / 100)
        elif variant == "2:4":
            _two_of_four(m.weight)
        elif variant == "1x1 convs 75%" and _is_pointwise(m):
            _zero_smallest(m.weight, 0.75)
    return model


def build_variants() -> tuple[dict[str, nn.Module], torch.Tensor]:
    """{variant: model} and the batch-1 input, the same in every process (seeded)."""
    import torchvision

    torch.manual_seed(0)
    base = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    models = {v: base if v == "dense" else _sparsify(copy.deepcopy(base), v).eval() for v in VARIANTS}
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    return models, x


def zero_shares(model: nn.Module) -> dict[str, float]:
    """Share of zero weights over all conv / linear layers, and over the 1x1 convs alone."""
    def share(mods: list[nn.Module]) -> float:
        total = sum(m.weight.numel() for m in mods)
        return round(sum(int((m.weight == 0).sum()) for m in mods) / total, 4)

    mods = _weighted(model)
    return {"all": share(mods), "pointwise": share([m for m in mods if _is_pointwise(m)])}


# ------------------------------------------------------------------------------------------------ the artifacts


@contextlib.contextmanager
def dense_to_sparse_pass() -> Iterator[None]:
    """While the block runs, litert-torch runs `DENSE_TO_SPARSE` after its own LiteRT converter passes (it has no
    option for sparse weights); the module is swapped back afterwards."""
    from litert_converter.mlir import passmanager
    from litert_torch._convert import litert_converter as converter

    real = converter.converter_api_ext

    class _WithDenseToSparse:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def run_convert_to_tfl_passes(module: Any, pass_manager: Any, config: Any) -> Any:
            result = real.run_convert_to_tfl_passes(module, pass_manager, config)
            passmanager.PassManager.parse(DENSE_TO_SPARSE).run(getattr(module, "operation", module))
            return result

    converter.converter_api_ext = _WithDenseToSparse()
    try:
        yield
    finally:
        converter.converter_api_ext = real


def _plan(target: str) -> Plan:
    return Plan(target=target, scheme="fp32", keep_ratio=1.0)


def export_densified(variants: list[str], folder: str) -> list[tuple[str, Artifact | None, str | None]]:
    """(variant, artifact or None, why not) for each sparse variant converted with `DENSE_TO_SPARSE`; runs in a
    child process."""
    models, x = build_variants()
    exporter = get_exporter("tflite")
    out: list[tuple[str, Artifact | None, str | None]] = []
    with dense_to_sparse_pass(), torch_threads(2):
        for variant in variants:
            path = Path(folder) / f"{_slug(variant)}.densify.tflite"
            try:
                out.append((variant, exporter.export(models[variant], x, x, _plan("tflite"), path).artifact, None))
            except Exception as exc:  # noqa: BLE001 - the reason goes into the results
                out.append((variant, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))
    return out


def _slug(variant: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in variant).strip("_")


def _gzip_mb(path: Path) -> float:
    return round(len(gzip.compress(path.read_bytes(), compresslevel=6)) / 1e6, 3)


@dataclass
class Entry:
    target: str
    variant: str
    artifact: Artifact
    p50s_ms: dict[int, list[float]] = field(default_factory=dict)
    parity_max_abs: float | None = None


# ------------------------------------------------------------------------------------------------ timing


def time_passes(entries: list[Entry], x: np.ndarray, wants: dict[str, np.ndarray], threads: list[int], passes: int,
                warmup: int, runs: int) -> None:
    """Each pass times every artifact once per thread count, the order rotated by one per pass."""
    for e in entries:
        e.p50s_ms = {t: [] for t in threads}
    for p in range(passes):
        time.sleep(BLOCK_PAUSE_S)
        k = p % len(entries)
        order = entries[k:] + entries[:k]
        for t in threads:
            for e in order:
                m = HostRunner().measure(e.artifact, x, warmup=warmup, runs=runs, threads=t)
                e.p50s_ms[t].append(m.latency_p50_ms)
                if e.parity_max_abs is None:
                    e.parity_max_abs = float(np.abs(m.outputs - wants[e.variant]).max())
        _log(f"timing pass {p + 1}/{passes} over {len(entries)} artifacts x threads {threads} done "
             f"(load average {os.getloadavg()[0]:.2f})")


def _verdict(median: float, ratios: list[float]) -> str:
    if median >= FASTER and min(ratios) >= 1.0:
        return "faster"
    if median <= SLOWER and max(ratios) <= 1.0:
        return "slower"
    return "same"


def summarise(entries: list[Entry], threads: list[int]) -> list[dict[str, Any]]:
    dense = {e.target: e for e in entries if e.variant == "dense"}
    dense[DENSIFY] = dense.get("tflite")  # the densified artifacts run on the same runtime as tflite
    rows = []
    for e in entries:
        ref = dense.get(e.target)
        row: dict[str, Any] = {
            "target": e.target, "variant": e.variant,
            "size_mb": round(e.artifact.size_bytes / 1e6, 3), "gzip_mb": _gzip_mb(Path(e.artifact.path)),
            "parity_max_abs": e.parity_max_abs, "export_s": e.artifact.export_s,
        }
        if e.target == DENSIFY:
            ops = e.artifact.lowering.get("ops", {})
            row["densify_ops"] = int(ops.get("DENSIFY", 0))
            row["not_delegated_to_xnnpack"] = e.artifact.lowering.get("not_delegated_to_xnnpack")
        for t in threads:
            p50 = float(np.median(e.p50s_ms[t]))
            cell: dict[str, Any] = {"p50_ms": round(p50, 3), "pass_p50s_ms": [round(v, 3) for v in e.p50s_ms[t]]}
            if ref is not None:
                ratios = [d / s for d, s in zip(ref.p50s_ms[t], e.p50s_ms[t])]
                median = float(np.median(ref.p50s_ms[t])) / p50
                cell.update(speedup=round(median, 3), pass_speedups=[round(r, 3) for r in ratios],
                            verdict="reference" if e is ref else _verdict(median, ratios))
            row[f"threads_{t}"] = cell
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], shares: dict[str, dict[str, float]], threads: list[int]) -> str:
    head = "| target | variant | zeros all / 1x1 | size MB | gzip MB |"
    rule = "|---|---|---|---|---|"
    for t in threads:
        head += f" p50 {t}T ms | dense/sparse {t}T [pass range] |"
        rule += "---|---|"
    lines = [head + " parity |", rule + "---|"]
    for r in rows:
        s = shares[r["variant"]]
        line = (f"| {r['target']} | {r['variant']} | {100 * s['all']:.0f}% / {100 * s['pointwise']:.0f}% | "
                f"{r['size_mb']:.2f} | {r['gzip_mb']:.2f} |")
        for t in threads:
            c = r[f"threads_{t}"]
            if "speedup" in c and c["verdict"] != "reference":
                ratio = f"{c['speedup']:.2f} [{min(c['pass_speedups']):.2f}-{max(c['pass_speedups']):.2f}] {c['verdict']}"
            else:
                ratio = "reference" if "speedup" in c else "-"
            line += f" {c['p50_ms']:.2f} | {ratio} |"
        parity = r["parity_max_abs"]
        lines.append(line + (f" {parity:.1e} |" if parity is not None else " - |"))
    return "\n".join(lines)


def _cpu() -> dict[str, Any]:
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {"model": model or platform.processor(), "usable_cores": usable_cores(),
            "isa": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per artifact per pass")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-densify", action="store_true", help="skip the tflite+densify artifacts")
    parser.add_argument("--out", default="sparsity.json")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    targets = args.targets.split(",")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sparsity-bench-"))
    try:
        models, x = build_variants()
        shares = {v: zero_shares(m) for v, m in models.items()}
        with torch.no_grad(), torch_threads(1):
            wants = {v: m(x).numpy() for v, m in models.items()}
        for v in VARIANTS:
            _log(f"{v}: zero weights {100 * shares[v]['all']:.1f}% of all conv/linear, "
                 f"{100 * shares[v]['pointwise']:.1f}% of the 1x1 convs")
        entries: list[Entry] = []
        with torch_threads(2):
            for target in targets:
                exporter = get_exporter(target)
                for v in VARIANTS:
                    t0 = time.perf_counter()
                    with native_stderr_silenced():
                        result = exporter.export(models[v], x, x, _plan(target), tmp / f"{_slug(v)}{exporter.suffix}")
                    entries.append(Entry(target, v, result.artifact))
                    _log(f"exported {target} {v}: {result.artifact.size_bytes / 1e6:.2f} MB "
                         f"in {time.perf_counter() - t0:.1f} s")
        densify_failures: dict[str, str] = {}
        if not args.no_densify and "tflite" in targets:
            t0 = time.perf_counter()
            sparse = [v for v in VARIANTS if v != "dense"]
            try:
                with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                    done = pool.submit(export_densified, sparse, str(tmp)).result()
            except Exception as exc:  # noqa: BLE001 - a crashed child (BrokenProcessPool) is a result too
                done = [(v, None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                        for v in sparse]
            for v, artifact, why in done:
                if artifact is None:
                    densify_failures[v] = why or "no artifact"
                    _log(f"{DENSIFY} {v}: not converted: {why}")
                else:
                    entries.append(Entry(DENSIFY, v, artifact))
                    _log(f"exported {DENSIFY} {v}: {artifact.size_bytes / 1e6:.2f} MB, "
                         f"{artifact.lowering.get('ops', {}).get('DENSIFY', 0)} DENSIFY ops")
            _log(f"{DENSIFY} conversions took {time.perf_counter() - t0:.1f} s")
        _log(f"timing {len(entries)} artifacts: {args.passes} passes x threads {threads} x "
             f"({args.warmup} warmup + {args.runs} runs)")
        time_passes(entries, x.numpy(), wants, threads, args.passes, args.warmup, args.runs)
        rows = summarise(entries, threads)
        import onnxruntime

        out = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": platform.platform(), "cpu": _cpu(),
            "versions": {p: package_version(p) for p in
                         ("torch", "torchvision", "executorch", "ai-edge-litert", "litert-torch", "onnxruntime")},
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "model": "torchvision mobilenet_v2, num_classes=10, random init (seed 0)", "input": list(INPUT_SHAPE),
            "scheme": "fp32", "threads": threads, "passes": args.passes, "warmup": args.warmup, "runs": args.runs,
            "zero_shares": shares, "dense_to_sparse_pipeline": DENSE_TO_SPARSE,
            "densify_failures": densify_failures,
            "verdict_rule": f"faster: median dense/sparse >= {FASTER} and every pass ratio >= 1.0; slower: median <= "
                            f"{SLOWER} and every pass ratio <= 1.0; else same",
            "rows": rows, "wall_s": round(time.perf_counter() - start, 1),
        }
        atomic_write_json(Path(args.out), out)
        print(table(rows, shares, threads))
        if densify_failures:
            print("\n" + "\n".join(f"- {DENSIFY} {v}: {why}" for v, why in densify_failures.items()))
        _log(f"done in {out['wall_s']:.0f} s; results in {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
