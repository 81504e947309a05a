"""Judge a measured artifact: its quality (accuracy, parity) and a verdict per budget of the device.

A budget measured somewhere other than the device it is for is never passed: it is `unverified`, with the
figure that was measured beside it.
"""

from __future__ import annotations

import numpy as np

from edgeprune.profiles import DeviceProfile
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
    """Accuracy through the runtime and parity with the export reference.

    With labels, accuracies are eval top-1 of the unpruned model (`dense_outputs`) and of the artifact.
    Without, the artifact's figure is top-1 agreement with the unpruned model, and no reference accuracy is
    given (so no accuracy budget is judged).
    """
    metric, value, limit, passed = parity(scheme, outputs, reference_outputs)
    if labels is not None:
        kind = "eval_accuracy"
        ref_acc: float | None = float((top1(dense_outputs) == labels).mean())
        art_acc = float((top1(outputs) == labels).mean())
    else:
        kind = "agreement_with_reference"
        ref_acc = None
        art_acc = float((top1(outputs) == top1(dense_outputs)).mean())
    return Quality(
        kind=kind,
        samples=len(outputs),
        reference_accuracy=ref_acc,
        artifact_accuracy=art_acc,
        parity_metric=metric,
        parity_value=value,
        parity_limit=limit,
        parity_passed=passed,
    )


def modelled_energy_mj(profile: DeviceProfile, latency_ms: float, threads: int | None = None) -> float:
    """Energy per inference from the profile's power model: active watts at `threads` × latency (W·ms = mJ)."""
    return profile.active_power_w(threads) * latency_ms


def _limit_check(name: str, unit: str, value: float | None, limit: float, on_device: bool, note: str) -> BudgetCheck:
    if value is None:
        return BudgetCheck(name, unit, None, limit, "unverified", note or "not measured")
    if not on_device:
        return BudgetCheck(name, unit, value, limit, "unverified", note)
    return BudgetCheck(name, unit, value, limit, "pass" if value <= limit else "fail", note)


def measured_on_device(profile: DeviceProfile, where: str) -> bool:
    """Whether a figure measured at `where` ('host', 'adb:SERIAL', 'ssh:...') is one of `profile`'s device."""
    return where == "host" if profile.is_host else where != "host"


def judge(profile: DeviceProfile, measurement: Measurement, quality: Quality) -> Verdict:
    """One check per budget the profile sets. Only figures measured on `profile`'s own device can pass or fail."""
    budget = profile.budget
    on_device = measured_on_device(profile, measurement.where)
    elsewhere = "" if on_device else f"measured on {measurement.where}, not on {profile.name}; validate on the device"
    checks: list[BudgetCheck] = []

    if budget.latency_ms is not None:
        value = measurement.latency_p50_ms if budget.latency_percentile == "p50" else measurement.latency_p90_ms
        note = f"{budget.latency_percentile} over {measurement.runs} runs at {measurement.threads} threads"
        checks.append(_limit_check("latency", "ms", value, budget.latency_ms, on_device, elsewhere or note))
    if budget.model_size_mb is not None:
        # The file is byte-identical on every device, so its size is judged wherever it was measured.
        size_mb = measurement.size_bytes / 1e6
        checks.append(_limit_check("model_size", "MB", size_mb, budget.model_size_mb, True, "artifact file size"))
    if budget.peak_memory_mb is not None:
        note = elsewhere or measurement.memory_method
        checks.append(_limit_check("peak_memory", "MB", measurement.peak_memory_mb, budget.peak_memory_mb, on_device, note))
    energy_limit = profile.energy_limit_mj
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
            checks.append(_limit_check("accuracy_drop", "points", drop, budget.max_accuracy_drop_pct, True,
                                       f"eval top-1 through {measurement.runner} on {quality.samples} samples"))
    return Verdict(device=profile.name, checks=tuple(checks))
