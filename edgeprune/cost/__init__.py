"""Cost model: predict latency, model size, peak memory and energy of a model on a device, and calibrate it.

    from edgeprune.cost import predict
    p = predict(profile, model, example_input, target="executorch", scheme="int8", threads=4)
    p.latency_p50_ms, p.model_size_mb, p.peak_memory_mb, p.energy_mj, p.battery_pct_per_hour, p.status

`edgeprune.cost.calibrate.run_calibration(...)` times the calibration suite on this machine and writes a
calibrated profile; `append_measurement(profile_name, measurement_record(...))` feeds real measurements back.

Layering: this package sits above profiles and below the pipeline stages. `features`, `model`, `fit`, `table`,
`suite` and `estimate` never import `export`, `runners` or `prune`; only `calibrate` (a measuring stage) drives the
exporters and the host runner, and it is imported only when called.
"""

from __future__ import annotations

from typing import Any

import torch

from edgeprune.cost.features import KERNEL_TYPES, Kernel, ModelFeatures, extract_features
from edgeprune.cost.model import (
    Prediction,
    describe_cost_model,
    predict,
    predict_features,
    predict_many,
    version_notes,
)
from edgeprune.cost.table import append_measurement, feedback_path, read_table

__all__ = [
    "KERNEL_TYPES",
    "Kernel",
    "ModelFeatures",
    "Prediction",
    "append_measurement",
    "describe_cost_model",
    "extract_features",
    "feedback_path",
    "measurement_record",
    "predict",
    "predict_features",
    "predict_many",
    "read_table",
    "version_notes",
]


def measurement_record(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    target: str,
    scheme: str,
    measurement: Any,
    *,
    model_name: str | None = None,
) -> dict[str, Any]:
    """A feedback record for `append_measurement`: one measured artifact of `model` plus the model's kernel
    features (so the next fit can use it without the model). `measurement` is an `edgeprune.types.Measurement`."""
    from edgeprune.cost.fit import compact_kernels
    from edgeprune.cost.table import now_utc

    f = extract_features(model, example_input, target, scheme)
    return {
        "kind": "feedback",
        "network": f"feedback-{model_name or type(model).__name__}-{now_utc()}",
        "model": model_name or type(model).__name__,
        "target": target,
        "scheme": scheme,
        "threads": int(measurement.threads),
        "latency_p50_ms": float(measurement.latency_p50_ms),
        "latency_p90_ms": float(measurement.latency_p90_ms),
        "runs": int(measurement.runs),
        "size_bytes": int(measurement.size_bytes),
        "peak_memory_mb": measurement.peak_memory_mb,
        "memory_method": measurement.memory_method,
        "runner": measurement.runner,
        "where": measurement.where,
        "runtime_versions": dict(measurement.runtime_versions),
        "time_utc": now_utc(),
        "features": compact_kernels(f),
    }
