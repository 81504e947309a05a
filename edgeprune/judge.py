"""Judge a measured artifact: its quality (accuracy, parity) and a verdict per budget of the device.

A budget measured somewhere other than the device it is for is never passed: it is `unverified`, with the
figure that was measured beside it. Accuracy is judged on the test split, latency on the measured p50/p90; where
the figure's 95% interval reaches both sides of the limit, the check's note says the verdict is within noise.
"""

from __future__ import annotations

import numpy as np

from edgeprune.limits import Limits, measured_on_device, within
from edgeprune.profiles import DeviceProfile
from edgeprune.stats import paired_difference_interval, straddles, wilson_interval
from edgeprune.types import BudgetCheck, Measurement, Quality, Verdict

FP32_MAX_ABS_DIFF = 1e-4
FP16_MAX_REL_DIFF = 2e-2
"""fp16 keeps ~3 decimal digits; 2% of the output range allows accumulated rounding but not a wrong lowering."""
INT8_MIN_TOP1_AGREEMENT = 0.98


def top1(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def parity(scheme: str, outputs: np.ndarray, reference: np.ndarray) -> tuple[str, float, float, bool]:
    """(metric, value, limit, passed) comparing runtime outputs with the PyTorch model they came from."""
    if scheme in ("int8", "int8-dynamic"):
        agreement = float((top1(outputs) == top1(reference)).mean())
        return "top1_agreement", agreement, INT8_MIN_TOP1_AGREEMENT, agreement >= INT8_MIN_TOP1_AGREEMENT
    diff = float(np.max(np.abs(outputs.astype(np.float64) - reference.astype(np.float64))))
    if scheme == "fp16":
        limit = FP16_MAX_REL_DIFF * max(1.0, float(np.ptp(reference)))
    else:
        limit = FP32_MAX_ABS_DIFF
    return "max_abs_diff", diff, limit, diff <= limit


def assess_quality(
    scheme: str,
    outputs: np.ndarray,
    reference_outputs: np.ndarray,
    dense_outputs: np.ndarray,
    labels: np.ndarray | None,
) -> Quality:
    """Accuracy through the runtime on the test split, and parity with the export reference.

    With labels, accuracies are test top-1 of the unpruned model (`dense_outputs`) and of the artifact, each with its
    95% Wilson interval, and the drop with its paired 95% interval (both are scored on the same samples). Without,
    the artifact's figure is top-1 agreement with the unpruned model, and no reference accuracy is given (so no
    accuracy budget is judged).
    """
    metric, value, limit, passed = parity(scheme, outputs, reference_outputs)
    n = len(outputs)
    if labels is not None:
        kind = "eval_accuracy"
        ref_ok = top1(dense_outputs) == labels
        art_ok = top1(outputs) == labels
        ref_acc: float | None = float(ref_ok.mean())
        ref_ci: tuple[float, float] | None = wilson_interval(int(ref_ok.sum()), n)
        _, low, high = paired_difference_interval(ref_ok, art_ok)
        drop_ci: tuple[float, float] | None = (100.0 * low, 100.0 * high)
    else:
        kind = "agreement_with_reference"
        art_ok = top1(outputs) == top1(dense_outputs)
        ref_acc, ref_ci, drop_ci = None, None, None
    return Quality(
        kind=kind,
        samples=n,
        reference_accuracy=ref_acc,
        artifact_accuracy=float(art_ok.mean()),
        parity_metric=metric,
        parity_value=value,
        parity_limit=limit,
        parity_passed=passed,
        split="test",
        reference_accuracy_ci95=ref_ci,
        artifact_accuracy_ci95=wilson_interval(int(art_ok.sum()), n),
        accuracy_drop_ci95_pct=drop_ci,
    )


def noise_note(interval: tuple[float, float] | list[float] | None, limit: float, unit: str) -> str:
    """'within noise: ...' when the 95% interval reaches both sides of `limit`, else ''."""
    if not straddles(interval, limit):
        return ""
    assert interval is not None
    return f"within noise: the 95% interval {interval[0]:.4g}..{interval[1]:.4g} {unit} reaches both sides of the limit"


def _latency_note(measurement: Measurement, percentile: str, limit: float) -> str:
    note = f"{percentile} over {measurement.runs} runs at {measurement.threads} threads"
    timing = measurement.timing
    if not timing:
        return note
    interval = timing.get(f"{percentile}_ci95_ms")
    if interval is not None:
        note += f", 95% interval {interval[0]:.4g}..{interval[1]:.4g} ms over {timing['blocks']} blocks"
    if timing.get("multimodal"):
        modes = ", ".join(f"{m['center_ms']:.4g} ms ({m['share']:.0%})" for m in timing["modes"])
        note += f"; multi-modal timings: {modes}"
    noise = noise_note(interval, limit, "ms")
    return f"{noise}; {note}" if noise else note


def modelled_energy_mj(profile: DeviceProfile, latency_ms: float, threads: int | None = None) -> float:
    """Energy per inference from the profile's power model: active watts at `threads` × latency (W·ms = mJ)."""
    return profile.active_power_w(threads) * latency_ms


def _limit_check(name: str, unit: str, value: float | None, limit: float, on_device: bool, note: str) -> BudgetCheck:
    if value is None:
        return BudgetCheck(name, unit, None, limit, "unverified", note or "not measured")
    if not on_device:
        return BudgetCheck(name, unit, value, limit, "unverified", note)
    return BudgetCheck(name, unit, value, limit, "pass" if within(value, limit) else "fail", note)


EMULATED_CHECKS = ("latency", "peak_memory", "energy")
"""Checks an emulated device's measurement cannot judge (`Measurement.extra['emulated']` names the emulator)."""


def judge(profile: DeviceProfile, measurement: Measurement, quality: Quality) -> Verdict:
    """One check per budget the profile sets. Only figures measured on `profile`'s own device can pass or fail."""
    budget, limits = profile.budget, Limits.of(profile)
    on_device = measured_on_device(profile, measurement.where)
    elsewhere = "" if on_device else f"measured on {measurement.where}, not on {profile.name}; validate on the device"
    checks: list[BudgetCheck] = []

    if limits.latency_ms is not None:
        value = measurement.latency_p50_ms if budget.latency_percentile == "p50" else measurement.latency_p90_ms
        note = _latency_note(measurement, budget.latency_percentile, limits.latency_ms)
        checks.append(_limit_check("latency", "ms", value, limits.latency_ms, on_device, elsewhere or note))
    if limits.model_size_mb is not None:
        # The file is byte-identical on every device, so its size is judged wherever it was measured.
        size_mb = measurement.size_bytes / 1e6
        checks.append(_limit_check("model_size", "MB", size_mb, limits.model_size_mb, True, "artifact file size"))
    if limits.peak_memory_mb is not None:
        note = elsewhere or measurement.memory_method
        checks.append(_limit_check("peak_memory", "MB", measurement.peak_memory_mb, limits.peak_memory_mb, on_device, note))
    energy_limit = limits.energy_mj
    if energy_limit is not None:
        energy = measurement.extra.get("energy_mj")
        if energy is not None:
            checks.append(_limit_check("energy", "mJ", energy, energy_limit, on_device, "measured"))
        else:
            modelled = modelled_energy_mj(profile, measurement.latency_p50_ms, measurement.threads)
            note = (
                f"modelled, not measured: {profile.active_power_w(measurement.threads):.3g} W active at "
                f"{measurement.threads} thread(s) × p50 latency "
                f"measured on {measurement.where}; no energy counter was read"
            )
            checks.append(BudgetCheck("energy", "mJ", modelled, energy_limit, "unverified", note))
    if budget.max_accuracy_drop_pct is not None:
        drop = quality.accuracy_drop_pct
        if drop is None:
            checks.append(
                BudgetCheck("accuracy_drop", "points", None, budget.max_accuracy_drop_pct, "unverified",
                            "accuracy not measured: no labelled eval data, or the runner returned no outputs")
            )
        else:
            # Accuracy belongs to the program, not to the device's speed: it is judged from the runtime's outputs.
            note = f"{quality.split} top-1 through {measurement.runner} on {quality.samples} samples"
            interval = quality.accuracy_drop_ci95_pct
            if interval is not None:
                note += f", 95% interval {interval[0]:.3g}..{interval[1]:.3g} points"
                noise = noise_note(interval, budget.max_accuracy_drop_pct, "points")
                note = f"{noise}; {note}" if noise else note
            checks.append(_limit_check("accuracy_drop", "points", drop, budget.max_accuracy_drop_pct, True, note))
    emulated = measurement.extra.get("emulated")
    if emulated:  # emulated time and memory are no device's: never passed or failed on them
        checks = [BudgetCheck(c.name, c.unit, None, c.limit, "unverified", f"not measured: emulated device ({emulated})")
                  if c.name in EMULATED_CHECKS else c for c in checks]
    return Verdict(device=profile.name, checks=tuple(checks))
