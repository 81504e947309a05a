"""Prediction: a model's features + a device's coefficients -> latency, size, peak memory, energy.

Latency (per target, scheme, threads) is a sum over the kernels the target runs:

    t = overhead_us + us_per_io_mb * (input + output MB) + us_per_partition * (delegate partitions - 1)
        + sum over kernels k of  c[key(k)].us_per_call + c[key(k)].us_per_mmac * MMACs_padded(k)
                                 + c[key(k)].us_per_mb * activation MB(k) + c[key(k)].us_per_weight_mb * weight MB(k)

where MMACs_padded counts a GEMM's M, N, K (and a depthwise conv's channels) rounded up to the microkernel tiles
each kernel type's coefficients were fitted with, so a pruned layer whose width falls just past a tile edge costs what the
runtime really spends on it. Model size is the stored weight bytes plus per-kernel and per-file serialisation
overhead; peak memory follows the runner's memory method for the target; energy is the profile's active power
times the latency.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch

from edgeprune.cost.features import GEMM_TYPES, Kernel, ModelFeatures, extract_features
from edgeprune.errors import ConfigError
from edgeprune.profiles import DeviceProfile, KernelCoefficients, LatencyCoefficients, SizeCoefficients
from edgeprune.target_specs import TARGET_SPECS
from edgeprune.types import SCHEMES, TARGETS

Status = str  # "calibrated" | "estimated" | "uncalibrated"

GROUPS = {
    "gemm": ("conv", "conv_in", "pwconv", "gconv", "linear"),
    "dw": ("dwconv", "dwconv5", "dwconv_large"),
}
"""Kernel groups whose costs are rescaled together when a target is fitted on whole-model timings only."""


def group_of(key: str) -> str:
    base = key.removesuffix("_nd").removesuffix("_fp")
    for g, members in GROUPS.items():
        if base in members:
            return g
    return "mem"


def kernel_key(k: Kernel, scheme: str) -> str:
    """The coefficient key of a kernel: its type, refined where the runtime runs it differently."""
    t = k.type
    if t == "dwconv":
        taps = k.kernel_hw[0] * k.kernel_hw[1]
        # XNNPACK's depthwise microkernels come in 9- and 25-tap families; beyond 25 taps it runs a grouped IGEMM.
        t = "dwconv" if taps <= 9 else ("dwconv5" if taps <= 25 else "dwconv_large")
    elif t == "conv" and len(k.in_shape) == 4 and k.in_shape[1] <= 4:
        t = "conv_in"  # a first layer on 1-4 input channels: short reductions, its own (slower per MAC) path
    if t == "act":
        t = "act2" if k.source in ("silu", "hardsigmoid", "gelu", "mish", "softplus", "elu") else "act"
    if not k.delegated:
        return t + "_nd"
    if scheme == "int8" and k.dtype == "float32" and t not in ("copy", "concat"):
        return t + "_fp"  # a float island in an int8 graph: converts around it
    return t


def _ceil_to(x: int, t: int) -> int:
    return -(-x // t) * t if t > 1 else x


def kernel_work(k: Kernel, tiles: tuple[int, int, int] = (1, 1, 1)) -> tuple[float, float, float]:
    """(MMACs counted on tile-padded shapes, activation MB read + written, weight MB) of one kernel.

    `tiles` = (tile_m, tile_n, tile_k): a GEMM's pixels, output channels and reduction length (a depthwise conv's
    channels: tile_n) are rounded up to them, as the runtime's microkernels compute whole tiles."""
    tm, tn, tk = tiles
    if k.type in GEMM_TYPES:
        m, n, kk, g = k.gemm_dims()
        work = _ceil_to(m, tm) * _ceil_to(n, tn) * _ceil_to(kk, tk) * g
    elif k.type == "dwconv":
        n, c, h, w = (tuple(k.out_shape) + (1, 1, 1, 1))[:4]
        work = _ceil_to(n * h * w, tm) * _ceil_to(c, tn) * k.kernel_hw[0] * k.kernel_hw[1]
    elif k.type in ("maxpool", "avgpool", "gap"):
        work = k.macs
    else:
        work = k.elems
    return work / 1e6, (k.in_bytes + k.out_bytes) / 1e6, k.weight_bytes / 1e6


def tiles_of(kc: KernelCoefficients) -> tuple[int, int, int]:
    return (kc.tile_m, kc.tile_n, kc.tile_k)


def kernel_cost(kc: KernelCoefficients, k: Kernel) -> float:
    work, act_mb, w_mb = kernel_work(k, tiles_of(kc))
    return kc.us_per_call + kc.us_per_mmac * work + kc.us_per_mb * act_mb + kc.us_per_weight_mb * w_mb


def model_terms(f: ModelFeatures) -> dict[str, float]:
    """Model-level latency features (besides the kernels)."""
    return {"io_mb": (f.input_bytes + f.output_bytes) / 1e6, "extra_partitions": float(max(f.partitions - 1, 0))}


def _fallback_kernel(c: LatencyCoefficients, key: str) -> KernelCoefficients:
    """Coefficients for a kernel key the fit never saw: the nearest relative, else the costliest memory kernel."""
    for alt in (key.removesuffix("_nd").removesuffix("_fp"), "dwconv5" if key.startswith("dwconv_l") else "",
                "dwconv" if key.startswith("dwconv") else "",
                "conv" if key.startswith(("gconv", "conv")) else "", "act" if key.startswith("act") else ""):
        if alt and alt in c.kernels:
            return c.kernels[alt]
    mem = [v for k, v in c.kernels.items() if group_of(k) == "mem"]
    if mem:
        return max(mem, key=lambda v: v.us_per_call + v.us_per_mb)
    return KernelCoefficients(us_per_call=5.0, us_per_mmac=0.0, us_per_mb=200.0)


def coefficients_for(c: LatencyCoefficients, k: Kernel, scheme: str) -> tuple[str, KernelCoefficients]:
    key = kernel_key(k, scheme)
    return key, c.kernels.get(key) or _fallback_kernel(c, key)


def latency_us(f: ModelFeatures, c: LatencyCoefficients) -> float:
    terms = model_terms(f)
    total = c.overhead_us + c.us_per_io_mb * terms["io_mb"] + c.us_per_partition * terms["extra_partitions"]
    for k in f.kernels:
        total += kernel_cost(coefficients_for(c, k, f.scheme)[1], k)
    return total


# ----------------------------------------------------------------------------------------------- size / memory

DEFAULT_SIZE: dict[tuple[str, str], tuple[float, float, float]] = {
    # (weight_factor, bytes_per_kernel, bytes_fixed): fitted on the recorded host table (calibration/README.md)
    ("executorch", "fp32"): (1.0, 190.0, 1500.0),
    ("executorch", "fp16"): (1.0, 190.0, 1500.0),
    ("executorch", "int8"): (1.0, 450.0, 2500.0),
    ("executorch", "int8-dynamic"): (1.0, 450.0, 2500.0),
    ("tflite", "fp32"): (1.0, 180.0, 1500.0),
    ("tflite", "fp16"): (1.0, 250.0, 1500.0),
    ("tflite", "int8"): (1.0, 300.0, 2000.0),
    ("tflite", "int8-dynamic"): (1.0, 250.0, 2000.0),
    ("onnx", "fp32"): (1.0, 120.0, 1000.0),
    ("onnx", "fp16"): (1.0, 120.0, 1000.0),
    ("onnx", "int8"): (1.0, 400.0, 1500.0),
    ("onnx", "int8-dynamic"): (1.0, 300.0, 1500.0),
}


def stored_weight_bytes(f: ModelFeatures) -> float:
    """Weight bytes as the target stores them for the scheme (int8-dynamic: int8 weights; fp16: 2 bytes)."""
    if f.scheme == "int8-dynamic":  # features count float weights; the target stores them as int8
        return float(sum(_int8_bytes(k) if k.type in GEMM_TYPES or k.type == "dwconv" else k.weight_bytes
                         for k in f.kernels))
    if f.scheme == "fp16":
        return f.weight_bytes / 2.0
    return float(f.weight_bytes)


def _int8_bytes(k: Kernel) -> float:
    """int8 weights + fp32 bias + fp32 per-channel scale for a float-stored kernel."""
    n_b = k.out_shape[1] if len(k.out_shape) > 1 else k.out_shape[-1]
    n_w = (k.weight_bytes / 4.0) - n_b
    return n_w + 8.0 * n_b


def size_bytes(f: ModelFeatures, coeffs: SizeCoefficients | None) -> float:
    if coeffs is not None:
        a, b, c0 = coeffs.weight_factor, coeffs.bytes_per_kernel, coeffs.bytes_fixed
    else:
        a, b, c0 = DEFAULT_SIZE.get((f.target, f.scheme), (1.0, 200.0, 2000.0))
    return a * stored_weight_bytes(f) + b * len(f.kernels) + c0


def peak_memory_bytes(f: ModelFeatures, size: float) -> tuple[float, str]:
    """Peak memory the way the host runner measures it for the target, and how it is modelled."""
    if f.target == "executorch":
        return size + f.planned_arena_bytes, "program bytes + planned activation arena (as the ExecuTorch runner reports)"
    # LiteRT / ONNX Runtime: the mapped model, the packed weights the runtime keeps, the activation workspace and a
    # fixed runtime allowance (resident-memory growth while loading and running once).
    packed = stored_weight_bytes(f)
    return (size + packed + f.activation_peak_bytes + 4e6,
            "file + packed weights + activation workspace + 4 MB runtime allowance (resident-memory model)")


# ----------------------------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Prediction:
    """What the cost model expects one model to cost on one device, for one (target, scheme, threads)."""

    device: str
    target: str
    scheme: str
    threads: int
    latency_p50_ms: float
    model_size_mb: float
    peak_memory_mb: float
    energy_mj: float
    battery_pct_per_hour: float | None
    status: str
    """'calibrated', 'estimated' (from public figures) or 'uncalibrated' (generic fallback coefficients)."""
    macs: int = 0
    params: int = 0
    kernels: int = 0
    notes: tuple[str, ...] = field(default=())
    memory_method: str = ""
    energy_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        for k in ("latency_p50_ms", "model_size_mb", "peak_memory_mb", "energy_mj"):
            out[k] = round(out[k], 4)
        if out["battery_pct_per_hour"] is not None:
            out["battery_pct_per_hour"] = round(out["battery_pct_per_hour"], 5)
        return out


def _installed_versions() -> dict[str, str | None]:
    from edgeprune._deps import package_version

    return {d: package_version(d) for d in ("torch", *(d for s in TARGET_SPECS.values() for d in s.runtime_distributions))}


_RUNTIME_OF = {name: spec.runtime_distributions for name, spec in TARGET_SPECS.items()}


def version_notes(profile: DeviceProfile, target: str) -> list[str]:
    """A note for each runtime whose calibrated version differs from the installed one."""
    cm = profile.cost_model
    if cm is None or cm.status != "calibrated":
        return []
    installed = _installed_versions()
    notes = []
    for dist in _RUNTIME_OF.get(target, ()):
        want = cm.runtime_versions.get(dist)
        have = installed.get(dist)
        if want and have and want != have:
            notes.append(
                f"profile '{profile.name}' was calibrated with {dist} {want} but {dist} {have} is installed; "
                f"predictions for {target} may be off: recalibrate (edgeprune calibrate --device {profile.name})"
            )
    return notes


def select_coefficients(
    profile: DeviceProfile, target: str, scheme: str
) -> tuple[LatencyCoefficients, str, list[str]]:
    """The latency coefficients for (target, scheme): the profile's own, else a documented fallback."""
    from edgeprune.cost.estimate import estimated_coefficients

    notes: list[str] = []
    cm = profile.cost_model
    table = {(c.target, c.scheme): c for c in (cm.latency if cm else ())}
    if (target, scheme) in table:
        c = table[(target, scheme)]
        return c, c.status, notes
    # Same target, nearest scheme: fp16 and int8-dynamic run float activations.
    near = {"fp16": "fp32", "int8-dynamic": "fp32", "int8": None, "fp32": None}.get(scheme)
    if near and (target, near) in table:
        c = table[(target, near)]
        notes.append(f"no {scheme} coefficients for {target} on '{profile.name}': used its {near} coefficients")
        return c, "estimated", notes
    # Same scheme on another XNNPACK target.
    for other in ("executorch", "tflite"):
        if other != target and (other, scheme) in table and target in ("executorch", "tflite"):
            c = table[(other, scheme)]
            notes.append(f"no {target} coefficients on '{profile.name}': used its {other} {scheme} coefficients "
                         "(both run XNNPACK)")
            return c, "estimated", notes
    c = estimated_coefficients(profile, target, scheme, profile.default_threads)
    notes.append(
        f"profile '{profile.name}' has no cost-model coefficients for {target} {scheme}: a generic roofline from its "
        "CPU description was used (uncalibrated; run edgeprune calibrate for accurate numbers)"
    )
    return c, "uncalibrated", notes


def thread_scale(fitted_threads: int, threads: int, profile: DeviceProfile) -> float:
    """Latency multiplier from the fitted thread count to `threads` (Amdahl, 85% parallel, capped at cores)."""
    if threads == fitted_threads:
        return 1.0
    p = 0.85
    cores = profile.total_cores

    def speed(n: int) -> float:
        n = max(1, min(n, cores))
        return 1.0 / ((1 - p) + p / n)

    return speed(fitted_threads) / speed(threads)


def predict_features(
    profile: DeviceProfile, f: ModelFeatures, threads: int | None = None
) -> Prediction:
    """Predict from already-extracted features (the planner can reuse one extraction per (target, scheme))."""
    threads = int(threads or profile.default_threads)
    coeffs, status, notes = select_coefficients(profile, f.target, f.scheme)
    notes = version_notes(profile, f.target) + notes
    scale = thread_scale(coeffs.threads, threads, profile)
    if scale != 1.0:
        notes.append(f"coefficients were fitted at {coeffs.threads} threads; scaled to {threads} (Amdahl, 85% parallel)")
        if status == "calibrated":
            status = "estimated"
    lat_ms = latency_us(f, coeffs) * scale / 1000.0
    size_c = None
    if profile.cost_model is not None:
        size_c = next((s for s in profile.cost_model.size if (s.target, s.scheme) == (f.target, f.scheme)), None)
    size = size_bytes(f, size_c)
    mem, mem_method = peak_memory_bytes(f, size)
    power_w = profile.active_power_w(threads)
    energy_mj = power_w * lat_ms  # W x ms = mJ
    battery = None
    rate = profile.budget.inferences_per_hour
    if profile.power.battery_wh and rate:
        battery = 100.0 * energy_mj * rate / (profile.power.battery_wh * 3.6e6)
    return Prediction(
        device=profile.name,
        target=f.target,
        scheme=f.scheme,
        threads=threads,
        latency_p50_ms=lat_ms,
        model_size_mb=size / 1e6,
        peak_memory_mb=mem / 1e6,
        energy_mj=energy_mj,
        battery_pct_per_hour=battery,
        status=status,
        macs=f.macs,
        params=f.params,
        kernels=len(f.kernels),
        notes=tuple(notes) + tuple(f.notes),
        memory_method=mem_method,
        energy_method=(f"active power {power_w:.3g} W at {threads} thread(s) x predicted latency (profile power model: "
                       f"{profile.power.active_w} W at {profile.default_threads}, dynamic part scaled by threads)"),
    )


def predict(
    profile: DeviceProfile,
    model: torch.nn.Module,
    example_input: torch.Tensor,
    target: str,
    scheme: str,
    threads: int | None = None,
) -> Prediction:
    """Predict latency (p50), model size, peak memory, energy and battery drain of `model` on `profile`."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme '{scheme}'; known: {', '.join(SCHEMES)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads {threads} must be >= 1")
    f = extract_features(model, example_input, target, scheme)
    p = predict_features(profile, f, threads)
    for note in p.notes:
        if "was calibrated with" in note:
            warnings.warn(note, stacklevel=2)
    return p


def predict_many(
    profile: DeviceProfile, model: torch.nn.Module, example_input: torch.Tensor,
    pairs: Iterable[tuple[str, str]], threads: int | None = None,
) -> list[Prediction]:
    """Predictions for several (target, scheme) pairs from one trace of the model."""
    from edgeprune.cost.features import lower, trace

    nodes = trace(model, example_input)
    return [predict_features(profile, lower(nodes, tuple(example_input.shape), t, s), threads) for t, s in pairs]


def describe_cost_model(profile: DeviceProfile) -> str:
    """One line on how far to trust a profile's cost model (for `edgeprune profile show`)."""
    cm = profile.cost_model
    if cm is None:
        return ("uncalibrated: no cost-model coefficients; predictions use a generic roofline from the CPU description "
                f"(expect errors of 2x or more); run: edgeprune calibrate --device {profile.name}")
    if cm.status == "estimated":
        return (f"estimated from public figures ({cm.date or 'undated'}), not measured on this device: expect errors "
                f"up to about {cm.expected_error_pct:g}% (see calibration/README.md); calibrating on the device replaces it")
    fits = [c.fit for c in cm.latency if c.fit is not None and c.fit.within_10_pct is not None]
    acc = ""
    if fits:
        n = sum(f.models for f in fits)
        w10 = sum((f.within_10_pct or 0) * f.models for f in fits) / max(n, 1)
        acc = f"; cross-validated on {n} suite networks: {100 * w10:.0f}% within +/-10%, median error {cm.expected_error_pct}%"
    versions = ", ".join(f"{k} {v}" for k, v in sorted(cm.runtime_versions.items()))
    notes = [n for t in {c.target for c in cm.latency} for n in version_notes(profile, t)]
    warn = f"; WARNING: {notes[0]}" if notes else ""
    return (f"calibrated {cm.date} at {cm.threads} thread(s), measured with {cm.runner} ({versions}){acc}; "
            f"noise spread {cm.noise_spread_pct}%{warn}")
