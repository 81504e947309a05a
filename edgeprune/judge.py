"""Judge a measured artifact: its quality (accuracy, parity) and a verdict per budget of the device.

A budget measured somewhere other than the device it is for is never passed: it is `unverified`, with the
figure that was measured beside it. Accuracy is judged on the test split, latency on the measured p50/p90; where
the figure's 95% interval reaches both sides of the limit, the check's note says the verdict is within noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeprune.limits import Limits, measured_on_device, within
from edgeprune.profiles import DeviceProfile
from edgeprune.stats import class_drops, paired_difference_interval, straddles, wilson_interval
from edgeprune.types import (SINGLE_OUTPUT_KEY, BudgetCheck, ClassAccuracy, Measurement, OutputParity, Quality,
                             ShiftQuality, Verdict)

FP32_MAX_ABS_DIFF = 1e-4
FP16_MAX_REL_DIFF = 2e-2
"""fp16 keeps ~3 decimal digits; 2% of the output range allows accumulated rounding but not a wrong lowering."""
INT8_MIN_TOP1_AGREEMENT = 0.98
"""The three limits above judge the class-logits output (`parity`), as they always have."""

OUTPUT_PARITY_LIMITS: dict[str, dict[str, float]] = {
    "fp32": {"relative_error": 1e-4, "sqnr_db": 70.0},
    "fp16": {"relative_error": 2e-2, "sqnr_db": 35.0},
    "int8": {"relative_error": 0.25, "sqnr_db": 20.0},
}
"""Scheme -> limits every output that is not class logits must meet against the PyTorch model it came from (the
export reference: the fp32 module, the half module, the fake-quantised twin for static int8, the fp32 module for
int8-dynamic, which uses int8's row): relative error at most, SQNR in dB at least. Measured on honest exports
of three models on the three targets (README "Models with several outputs"): fp32 at most 6e-7 relative and at least
133 dB, fp16 1.2e-3 and 64 dB, static int8 against its twin 7.6e-3 and 54 dB, int8-dynamic 1.7e-2 and 36 dB. The
limits leave room for deeper models (fp32 accumulates rounding with depth; an int8 element may sit a few
quantisation steps off its twin, 25% of the range on random-weight mobilenet_v3_small) and still catch a wrong
lowering (ExecuTorch int8-dynamic of a stride-2 conv head: 5 dB)."""
SQNR_CEILING_DB = 150.0
"""SQNR is reported at most this: a difference below float32 resolution (about 144 dB) reads as identical."""


def top1(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def parity(scheme: str, outputs: np.ndarray, reference: np.ndarray) -> tuple[str, float, float, bool]:
    """(metric, value, limit, passed) comparing runtime outputs with the PyTorch model they came from: the rule for
    class logits."""
    if scheme in ("int8", "int8-dynamic"):
        agreement = float((top1(outputs) == top1(reference)).mean())
        return "top1_agreement", agreement, INT8_MIN_TOP1_AGREEMENT, agreement >= INT8_MIN_TOP1_AGREEMENT
    diff = float(np.max(np.abs(outputs.astype(np.float64) - reference.astype(np.float64))))
    if scheme == "fp16":
        limit = FP16_MAX_REL_DIFF * max(1.0, float(np.ptp(reference)))
    else:
        limit = FP32_MAX_ABS_DIFF
    return "max_abs_diff", diff, limit, diff <= limit


def _limits_of(scheme: str) -> dict[str, float]:
    return OUTPUT_PARITY_LIMITS["int8" if scheme.startswith("int8") else scheme]


def error_figures(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, relative error, SQNR dB) of `outputs` against `reference`: relative error is the max abs
    error over the reference's largest magnitude; SQNR is 10·log10(Σ ref² / Σ err²), clipped to ±`SQNR_CEILING_DB`."""
    out, ref = outputs.astype(np.float64), reference.astype(np.float64)
    err = out - ref
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    relative = max_abs / max(peak, float(np.finfo(np.float32).tiny))
    noise, signal = float(np.sum(err * err)), float(np.sum(ref * ref))
    if noise == 0.0:
        sqnr = SQNR_CEILING_DB
    elif signal == 0.0:
        sqnr = -SQNR_CEILING_DB
    else:
        sqnr = float(np.clip(10.0 * np.log10(signal / noise), -SQNR_CEILING_DB, SQNR_CEILING_DB))
    return max_abs, relative, sqnr


def output_parity(scheme: str, key: str, outputs: np.ndarray, reference: np.ndarray,
                  class_logits: bool = False) -> OutputParity:  # fmt: skip
    """One output against its reference. Class logits are judged as ever (`parity`: top-1 agreement for int8, max
    abs diff otherwise); any other output by the scheme's `OUTPUT_PARITY_LIMITS`. Every figure is reported."""
    shape = tuple(int(d) for d in outputs.shape[1:])
    if outputs.shape != reference.shape:
        return OutputParity(key, shape, float("nan"), float("nan"), -SQNR_CEILING_DB, None, class_logits, {}, False,
                            f"output '{key}' has shape {tuple(outputs.shape)}, its reference {tuple(reference.shape)}")
    max_abs, relative, sqnr = error_figures(outputs, reference)
    agreement = float((top1(outputs) == top1(reference)).mean()) if class_logits and len(outputs) else None
    if class_logits:
        metric, value, limit, passed = parity(scheme, outputs, reference)
        limits = {metric: limit}
        failure = "" if passed else (f"output '{key}' {metric.replace('_', ' ')} {value:.4g} "
                                     f"{'under' if metric == 'top1_agreement' else 'over'} the {scheme} limit {limit:.4g}")
        return OutputParity(key, shape, max_abs, relative, sqnr, agreement, True, limits, passed, failure)
    limits = dict(_limits_of(scheme))
    failure = ""
    if not relative <= limits["relative_error"]:
        failure = f"output '{key}' relative error {relative:.3g} over the {scheme} limit {limits['relative_error']:g}"
    elif not sqnr >= limits["sqnr_db"]:
        failure = f"output '{key}' SQNR {sqnr:.1f} dB under the {scheme} limit {limits['sqnr_db']:g} dB"
    return OutputParity(key, shape, max_abs, relative, sqnr, None, False, limits, not failure, failure)


def is_class_ids(labels: object) -> bool:
    """Whether labels are one integer class id per sample (N,): what top-1 is scored against."""
    return isinstance(labels, np.ndarray) and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)


def class_logits_key(outputs: dict[str, np.ndarray], labelled: bool, declared: str | None = None) -> str | None:
    """The output top-1 is read from: `declared` (a model's `class_logits_output`), else a lone output when the data
    has class labels or the output is one vector per input (N, C), as classification always was; else None."""
    if declared is not None:
        return declared
    if len(outputs) == 1:
        (array,) = outputs.values()
        if labelled or array.ndim == 2:
            return next(iter(outputs))
    return None


def _as_map(outputs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(outputs) if isinstance(outputs, dict) else {SINGLE_OUTPUT_KEY: outputs}


def parity_per_output(scheme: str, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                      class_logits: str | None) -> tuple[OutputParity, ...]:  # fmt: skip
    """`output_parity` of every output of `reference` (the artifact's order); an output the runtime did not return
    fails, named."""
    found = []
    for key, ref in reference.items():
        if key not in outputs:
            found.append(OutputParity(key, tuple(ref.shape[1:]), float("nan"), float("nan"), -SQNR_CEILING_DB, None,
                                      key == class_logits, {}, False, f"output '{key}' was not returned by the runtime"))
        else:
            found.append(output_parity(scheme, key, outputs[key], ref, key == class_logits))
    return tuple(found)


def _summary(scheme: str, found: tuple[OutputParity, ...]) -> tuple[str, float, float, bool]:
    """(metric, value, limit, passed) standing for every output: the first failing output's failed figure; else the
    lone class-logits output's (as single-output models always reported), or the worst other output's: SQNR for
    int8, relative error otherwise."""
    passed = all(p.passed for p in found)
    pick = next((p for p in found if not p.passed), None)
    if pick is None:
        others = [p for p in found if not p.class_logits]
        if not others:
            pick = found[0]
        elif scheme.startswith("int8"):
            pick = min(others, key=lambda p: p.sqnr_db)
        else:
            pick = max(others, key=lambda p: p.relative_error)
    if pick.class_logits and pick.limits:
        ((metric, limit),) = pick.limits.items()
        value = pick.top1_agreement if metric == "top1_agreement" else pick.max_abs_error
        return metric, float(value if value is not None else 0.0), float(limit), passed
    limits = _limits_of(scheme)
    by_relative = not pick.relative_error <= limits["relative_error"] if not pick.passed else not scheme.startswith("int8")
    if by_relative:
        return "relative_error", pick.relative_error, limits["relative_error"], passed
    return "sqnr_db", pick.sqnr_db, limits["sqnr_db"], passed


def assess_quality(
    scheme: str,
    outputs: np.ndarray | dict[str, np.ndarray],
    reference_outputs: np.ndarray | dict[str, np.ndarray],
    dense_outputs: np.ndarray | dict[str, np.ndarray],
    labels: np.ndarray | None,
    *,
    class_logits: str | None = None,
) -> Quality:
    """Accuracy through the runtime on the test split, and parity with the export reference, output by output.

    Outputs are one array (a single-output model) or every output by key, in the artifact's order. Top-1 is read
    from the class-logits output (`class_logits_key`: declared, or a lone output with class labels or shaped (N, C)).
    With labels, accuracies are test top-1 of the unpruned model (`dense_outputs`) and of the artifact, each with its
    95% Wilson interval, and the drop with its paired 95% interval (both are scored on the same samples). Without,
    the artifact's figure is top-1 agreement with the unpruned model, and no reference accuracy is given (so no
    accuracy budget is judged). Without a class-logits output no accuracy is given at all.
    """
    outs, refs, dense = _as_map(outputs), _as_map(reference_outputs), _as_map(dense_outputs)
    if labels is not None and not is_class_ids(labels):
        labels = None  # masks, values or boxes: top-1 does not apply (the build's metric scores them)
    logits = class_logits_key(refs, labels is not None, class_logits)
    found = parity_per_output(scheme, outs, refs, logits)
    metric, value, limit, passed = _summary(scheme, found)
    n = len(next(iter(outs.values())))
    ref_acc: float | None = None
    art_acc: float | None = None
    ref_ci = art_ci = drop_ci = None
    per_class: tuple[ClassAccuracy, ...] = ()
    kind = "eval_accuracy" if labels is not None and logits is not None else "agreement_with_reference"
    if logits is not None and logits in outs and logits in dense:
        if labels is not None:
            ref_ok = top1(dense[logits]) == labels
            art_ok = top1(outs[logits]) == labels
            ref_acc = float(ref_ok.mean())
            ref_ci = wilson_interval(int(ref_ok.sum()), n)
            _, low, high = paired_difference_interval(ref_ok, art_ok)
            drop_ci = (100.0 * low, 100.0 * high)
            per_class = per_class_accuracy(ref_ok, art_ok, labels)
        else:
            art_ok = top1(outs[logits]) == top1(dense[logits])
        art_acc = float(art_ok.mean())
        art_ci = wilson_interval(int(art_ok.sum()), n)
    return Quality(
        kind=kind,
        samples=n,
        reference_accuracy=ref_acc,
        artifact_accuracy=art_acc,
        parity_metric=metric,  # type: ignore[arg-type]
        parity_value=value,
        parity_limit=limit,
        parity_passed=passed,
        split="test",
        reference_accuracy_ci95=ref_ci,
        artifact_accuracy_ci95=art_ci,
        accuracy_drop_ci95_pct=drop_ci,
        outputs_parity=found,
        class_logits=logits,
        per_class=per_class,
    )


def assess_shift(names: Sequence[str], reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray) -> ShiftQuality:
    """Top-1 of the unpruned model (`reference`) and of the artifact on the shifted test inputs (class logits,
    corruption-major as `shifts.shifted` stacks them; `labels` the test split's, repeated for each corruption)."""
    tiled = np.tile(labels, len(names))
    ref_ok, art_ok = top1(reference) == tiled, top1(artifact) == tiled
    diff, low, high = paired_difference_interval(ref_ok, art_ok)
    n = len(labels)
    per = {name: (float(ref_ok[i * n : (i + 1) * n].mean()), float(art_ok[i * n : (i + 1) * n].mean()))
           for i, name in enumerate(names)}
    return ShiftQuality(tuple(names), len(tiled), float(ref_ok.mean()), float(art_ok.mean()), round(100.0 * diff, 4),
                        (100.0 * low, 100.0 * high), per)


def per_class_accuracy(reference_ok: np.ndarray, artifact_ok: np.ndarray, labels: np.ndarray) -> tuple[ClassAccuracy, ...]:
    """Top-1 of the unpruned model and of the artifact on each class's test samples, with the paired drop."""
    out = []
    for label, (drop, low, high) in class_drops(labels, reference_ok, artifact_ok).items():
        mask = labels == label
        out.append(ClassAccuracy(label, int(mask.sum()), float(reference_ok[mask].mean()),
                                 float(artifact_ok[mask].mean()), round(drop, 4), (low, high)))
    return tuple(out)


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


def _drop_check(name: str, unit: str, drop: float, interval: tuple[float, float], limit: float,
                note: str) -> BudgetCheck:
    """A drop judged on the artifact's outputs (any device's: they belong to the program, not to the device's
    speed), with its 95% interval in the note and "within noise" when that interval reaches both sides."""
    noise = noise_note(interval, limit, unit)
    note = f"{note}, 95% interval of the drop {interval[0]:.4g}..{interval[1]:.4g} {unit}"
    return _limit_check(name, unit, drop, limit, True, f"{noise}; {note}" if noise else note)


def _metric_check(quality: Quality, measurement: Measurement, limit: float) -> BudgetCheck:
    """The metric budget: the artifact's loss vs the unpruned model on the test split, in the metric's units."""
    mq = quality.metric
    if mq is None:
        return BudgetCheck("metric_drop", "metric units", None, limit, "unverified",
                           "no metric was scored: name one with --metric (or metric= in the API)")
    return _drop_check("metric_drop", mq.metric, mq.drop, mq.drop_ci95, limit,
                       f"{mq.split} {mq.metric} through {measurement.runner} on {mq.n} {mq.items}: "
                       f"{mq.reference_value:.4g} unpruned, {mq.artifact_value:.4g} artifact "
                       f"({'higher' if mq.higher_is_better else 'lower'} is better)")


def _class_check(quality: Quality, measurement: Measurement, limit: float) -> BudgetCheck:
    """The class guard: the largest top-1 drop of any one class vs the unpruned model, in points."""
    worst = quality.worst_class
    if worst is None:
        return BudgetCheck("class_drop", "points", None, limit, "unverified",
                           "per-class accuracy not measured: it needs class labels and a class-logits output")
    return _drop_check("class_drop", "points", worst.drop_pts, worst.drop_ci95_pts, limit,
                       f"worst of {len(quality.per_class)} classes: class {worst.label} ({worst.samples} "
                       f"{quality.split} samples) {worst.reference_accuracy:.1%} -> {worst.artifact_accuracy:.1%} "
                       f"through {measurement.runner}")


def _shift_check(quality: Quality, measurement: Measurement, limit: float) -> BudgetCheck:
    """The robustness guard: the top-1 drop on shifted test inputs vs the unpruned model on the same, in points."""
    shift = quality.shift
    if shift is None:
        return BudgetCheck("shift_drop", "points", None, limit, "unverified",
                           "shifted-input accuracy not measured: it needs class labels and a class-logits output")
    return _drop_check("shift_drop", "points", shift.drop_pts, shift.drop_ci95_pts, limit,
                       f"{quality.split} split under {', '.join(shift.corruptions)} ({shift.samples} shifted "
                       f"samples) through {measurement.runner}: {shift.reference_accuracy:.1%} -> "
                       f"{shift.artifact_accuracy:.1%}")


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
    if budget.max_metric_drop is not None:
        checks.append(_metric_check(quality, measurement, budget.max_metric_drop))
    if budget.max_class_drop_pts is not None:
        checks.append(_class_check(quality, measurement, budget.max_class_drop_pts))
    if budget.max_shift_drop_pts is not None:
        checks.append(_shift_check(quality, measurement, budget.max_shift_drop_pts))
    emulated = measurement.extra.get("emulated")
    if emulated:  # emulated time and memory are no device's: never passed or failed on them
        checks = [BudgetCheck(c.name, c.unit, None, c.limit, "unverified", f"not measured: emulated device ({emulated})")
                  if c.name in EMULATED_CHECKS else c for c in checks]
    return Verdict(device=profile.name, checks=tuple(checks))
