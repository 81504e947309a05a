"""Estimated coefficients from public figures: a roofline per kernel type, anchored to published latencies.

Method (also in calibration/README.md):

1. Peak MACs/us of the `threads` fastest cores = sum of clock (GHz) x fp32 FMA lanes per cycle of each core
   (NEON: 4 lanes per 128-bit pipe; Cortex-X / Apple P-cores 4 pipes = 16, Cortex-A7x / Apple E-cores 2 pipes = 8,
   Cortex-A5x 4; x86 AVX2 16, AVX-512 32). int8 peak = `INT8_PEAK_FACTOR` x fp32 (dot-product instructions).
2. Per kernel type, an efficiency (share of peak reached by XNNPACK's microkernels, `EFFICIENCY`) and a memory
   term at `BW_GBPS_PER_THREAD` per thread (capped at 4 threads); a fixed per-call cost (thread-pool dispatch).
3. One global scale per scheme, fitted (geometric mean) so that the roofline reproduces the published latencies in
   `calibration/anchors.yaml` (MobileNet V1/V2 on Pixel 2/3/3a/4, TFLite/XNNPACK, 1 and 4 threads), each anchor
   evaluated with its own device's CPU layout. The anchors' residual spread is the profile's
   `expected_error_pct`: how far to trust an estimated profile.

The same roofline, with the same scales, is the fallback for a profile without coefficients ('uncalibrated').
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from edgeprune._io import atomic_write_bytes
from edgeprune.profiles import CostModel, CpuCluster, DeviceProfile, KernelCoefficients, LatencyCoefficients

EFFICIENCY = {
    "conv": 0.55, "conv_in": 0.30, "pwconv": 0.65, "gconv": 0.30, "linear": 0.30, "dwconv": 0.25, "dwconv5": 0.20,
    "dwconv_large": 0.03,
    "maxpool": 0.10, "avgpool": 0.10, "gap": 0.10,
}
"""Share of the cores' peak MAC rate each kernel type reaches (assumed from XNNPACK microkernel behaviour)."""
INT8_PEAK_FACTOR = 2.5
BW_GBPS_PER_THREAD = 6.0
US_PER_CALL = 1.5
OVERHEAD_US = 40.0
SCALE = {"fp32": 1.436, "int8": 2.070}
"""Anchor scales (published / roofline), refreshed by `derive_scales()`; see calibration/README.md."""
ANCHOR_ERROR_PCT = {"fp32": 43.7, "int8": 121.7}

MEM_TYPES = ("add", "mul", "act", "act2", "concat", "copy", "other")


def fp32_macs_per_cycle(core: str) -> int:
    c = core.lower()
    if any(x in c for x in ("x1", "x2", "x3", "x4", "x925", "everest", "avalanche", "firestorm", "performance")):
        return 16
    if any(x in c for x in ("a73", "a75", "a76", "a77", "a78", "a710", "a715", "a720", "a725", "sawtooth",
                            "blizzard", "icestorm", "efficiency")):
        return 8
    if any(x in c for x in ("a53", "a55", "a510", "a520", "a7 ", "a35")):
        return 4
    if any(x in c for x in ("avx512", "xeon", "sapphire")):
        return 32
    if any(x in c for x in ("epyc", "ryzen", "intel", "amd", "core(tm)", "x86")):
        return 16
    return 8


def peak_macs_per_us(clusters: Sequence[CpuCluster], threads: int) -> float:
    cores = sorted(
        (cl.max_ghz * 1e3 * fp32_macs_per_cycle(cl.core) for cl in clusters for _ in range(cl.count)), reverse=True
    )
    return sum(cores[: max(1, threads)])


def roofline(clusters: Sequence[CpuCluster], abi: str, target: str, scheme: str, threads: int,
             scale: float = 1.0, status: str = "estimated") -> LatencyCoefficients:
    """Coefficients of the roofline for a CPU description (before or after the anchor scale)."""
    peak = peak_macs_per_us(clusters, threads)
    quant = scheme == "int8"
    if quant:
        peak *= INT8_PEAK_FACTOR
    bw = BW_GBPS_PER_THREAD * 1e3 * min(threads, 4)  # bytes per us
    us_per_mb = 1e6 / bw
    call = US_PER_CALL * (1.0 if threads == 1 else 2.0)
    kernels: dict[str, KernelCoefficients] = {}
    x86 = abi.startswith("x86")
    tile_n = 16 if x86 else 8
    for t, eff in EFFICIENCY.items():
        gemm = t in ("conv", "conv_in", "pwconv", "gconv", "linear")
        dw = t.startswith("dwconv")
        kernels[t] = KernelCoefficients(
            us_per_call=call * scale, us_per_mmac=1e6 / (peak * eff) * scale, us_per_mb=us_per_mb * scale,
            us_per_weight_mb=us_per_mb * scale, tile_n=tile_n if (gemm or dw) else 1,
            tile_k=4 if (gemm and quant) else 1,
        )
    for t in MEM_TYPES:
        kernels[t] = KernelCoefficients(us_per_call=call * scale, us_per_mmac=0.0, us_per_mb=us_per_mb * scale)
    return LatencyCoefficients(
        target=target, scheme=scheme, threads=threads, status=status,  # type: ignore[arg-type]
        overhead_us=OVERHEAD_US * scale, us_per_io_mb=us_per_mb * 2 * scale, us_per_partition=10.0 * scale,
        kernels=kernels,
    )


def estimated_coefficients(profile: DeviceProfile, target: str, scheme: str, threads: int) -> LatencyCoefficients:
    """The anchored roofline for a profile's CPU (used when it carries no coefficients for the pair)."""
    s = "int8" if scheme == "int8" else "fp32"
    return roofline(profile.cpu_clusters, profile.abi, target, scheme, threads, SCALE[s])


# --------------------------------------------------------------------------------------------- derivation


def _anchor_models() -> dict[str, Any]:
    import torch
    from torch import nn

    from edgeprune._deps import require

    tv = require("torchvision.models", extra="vision")

    def dw(cin: int, cout: int, s: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, s, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
        )

    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    v1 = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                       *[dw(a, b, s) for a, b, s in cfg], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))
    return {"mobilenet_v1": v1.eval(), "mobilenet_v2": tv.mobilenet_v2(weights=None).eval(),
            "input": torch.zeros(1, 3, 224, 224)}


def derive_scales(anchors: dict[str, Any]) -> tuple[dict[str, float], dict[str, float], list[dict[str, Any]]]:
    """(scale per scheme, expected error % per scheme, per-anchor rows) from the published anchors."""
    from edgeprune.cost.features import extract_features
    from edgeprune.cost.model import latency_us

    models = _anchor_models()
    rows = []
    for a in anchors["latencies"]:
        dev = anchors["devices"][a["device"]]
        clusters = [CpuCluster(**c) for c in dev["cpu_clusters"]]
        f = extract_features(models[a["model"]], models["input"], a["runtime"], a["scheme"])
        c = roofline(clusters, "arm64-v8a", a["runtime"], a["scheme"], a["threads"], 1.0)
        pred = latency_us(f, c) / 1e3
        rows.append(a | {"roofline_ms": round(pred, 3), "ratio": a["latency_ms"] / pred})
    scales, errors = {}, {}
    for s in ("fp32", "int8"):
        logs = [math.log(r["ratio"]) for r in rows if r["scheme"] == s]
        mu = sum(logs) / len(logs)
        scales[s] = math.exp(mu)
        errors[s] = round(100.0 * (math.exp(max(abs(x - mu) for x in logs)) - 1.0), 1)
    return scales, errors, rows


def estimated_cost_model(profile: DeviceProfile, date: str, anchors_name: str = "calibration/anchors.yaml") -> CostModel:
    """The `cost_model:` section written into a built-in profile (status estimated)."""
    threads = profile.default_threads
    latency = tuple(
        estimated_coefficients(profile, t, s, threads) for t in ("executorch", "tflite") for s in ("fp32", "int8")
    )
    peak = peak_macs_per_us(profile.cpu_clusters, threads) / 1e3
    return CostModel(
        status="estimated",
        method=(
            "roofline per kernel type from the CPU description (fp32 FMA lanes x clock of the "
            f"{threads} fastest cores = {peak:.1f} GMAC/s fp32, x{INT8_PEAK_FACTOR} int8; fixed efficiencies; "
            f"{BW_GBPS_PER_THREAD} GB/s per thread), scaled by one factor per scheme fitted to published "
            f"MobileNet V1/V2 latencies ({anchors_name}); see calibration/README.md"
        ),
        date=date,
        threads=threads,
        expected_error_pct=max(ANCHOR_ERROR_PCT.values()),
        sources={
            "cpu": "cpu_clusters of this profile (sources.cpu_clusters)",
            "anchors": f"{anchors_name}: TFLite hosted_models.md / benchmarks.md (Pixel 3, Pixel 4), "
                       "google/XNNPACK README (Pixel 2, Pixel 3a)",
            "scales": f"fp32 x{SCALE['fp32']:.3f}, int8 x{SCALE['int8']:.3f} (published / roofline, geometric mean); "
                      f"worst anchor off by {ANCHOR_ERROR_PCT['fp32']}% (fp32), {ANCHOR_ERROR_PCT['int8']}% (int8)",
        },
        latency=latency,
    )


# --------------------------------------------------------------------------------------------- writing


def _num(v: float) -> float | int:
    return float(f"{v:.4g}")


def cost_model_yaml(cm: CostModel) -> str:
    """The `cost_model:` section as compact YAML (one line per kernel type)."""
    import yaml

    lines = ["cost_model:"]
    def scalar(v: Any) -> str:
        text = yaml.safe_dump(v, width=10_000).strip()
        return text[:-4].strip() if text.endswith("\n...") else text

    head = cm.model_dump(mode="json", exclude={"latency", "size"}, exclude_none=True)
    for k, v in head.items():
        if isinstance(v, dict):
            if not v:
                continue
            lines.append(f"  {k}:")
            for kk, vv in v.items():
                lines.append(f"    {kk}: {scalar(vv)}")
        else:
            lines.append(f"  {k}: {scalar(v)}")
    lines.append("  latency:")
    for c in cm.latency:
        d = c.model_dump(mode="json", exclude={"kernels", "fit"}, exclude_none=True)
        first = True
        for k, v in d.items():
            v = _num(v) if isinstance(v, float) else v
            lines.append(f"    {'- ' if first else '  '}{k}: {v}")
            first = False
        lines.append("      kernels:")
        for name, kc in c.kernels.items():
            tiles = "".join(f", {t}: {getattr(kc, t)}" for t in ("tile_m", "tile_n", "tile_k") if getattr(kc, t) != 1)
            lines.append(f"        {name}: {{us_per_call: {_num(kc.us_per_call)}, us_per_mmac: {_num(kc.us_per_mmac)}, "
                         f"us_per_mb: {_num(kc.us_per_mb)}, us_per_weight_mb: {_num(kc.us_per_weight_mb)}{tiles}}}")
    return "\n".join(lines) + "\n"


def write_estimates(paths: Sequence[str], date: str) -> None:
    """Replace (or add) the `cost_model:` section of each built-in profile YAML with a fresh estimate."""
    from pathlib import Path

    from edgeprune.profiles import parse_profile

    for p in paths:
        path = Path(p)
        text = path.read_text()
        if "\ncost_model:" in text:
            text = text[: text.index("\ncost_model:") + 1]
        prof = parse_profile(text, path.name)
        if prof.is_host:
            continue
        section = cost_model_yaml(estimated_cost_model(prof, date))
        new = text.rstrip("\n") + "\n" + section
        parse_profile(new, path.name)  # must still load
        atomic_write_bytes(path, new.encode())


if __name__ == "__main__":  # python -m edgeprune.cost.estimate device_profiles/*.yaml
    import sys

    from edgeprune.cost.table import now_utc

    write_estimates(sys.argv[1:], now_utc()[:10])
