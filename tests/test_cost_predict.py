"""Cost-model prediction: statuses, profiles with and without coefficients, energy, version warnings, size."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from edgeprune.cost import describe_cost_model, predict, predict_many
from edgeprune.cost.estimate import estimated_coefficients
from edgeprune.errors import ConfigError, ProfileError
from edgeprune.profiles import CostModel, builtin_profiles, host_profile, load_profile

PHONES = [p for p in builtin_profiles().values() if not p.is_host]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


X = torch.zeros(1, 3, 64, 64)


def _calibrated(profile, versions: dict[str, str]):
    """A profile carrying 'calibrated' coefficients (the anchored roofline relabelled) for given versions."""
    lat = tuple(estimated_coefficients(profile, t, s, profile.default_threads).model_copy(update={"status": "calibrated"})
                for t in ("executorch", "tflite") for s in ("fp32", "int8"))
    cm = CostModel(status="calibrated", method="test", date="2025-01-01T00:00:00+00:00", runner="test",
                   runtime_versions=versions, threads=profile.default_threads, latency=lat)
    return profile.model_copy(update={"cost_model": cm})


def test_host_without_coefficients_is_uncalibrated():
    p = predict(host_profile(), _net(), X, "executorch", "fp32")
    assert p.status == "uncalibrated"
    assert p.latency_p50_ms > 0 and p.model_size_mb > 0 and p.peak_memory_mb > p.model_size_mb
    assert p.energy_mj == pytest.approx(host_profile().power.active_w * p.latency_p50_ms)
    assert p.battery_pct_per_hour is None  # the host runs on mains
    assert any("uncalibrated" in n for n in p.notes)
    assert describe_cost_model(host_profile()).startswith("uncalibrated")
    assert "estimated" in describe_cost_model(builtin_profiles()["pixel-8"])
    d = p.to_dict()
    assert {"latency_p50_ms", "model_size_mb", "peak_memory_mb", "energy_mj", "battery_pct_per_hour", "status"} <= d.keys()


@pytest.mark.parametrize("profile", PHONES, ids=lambda p: p.name)
def test_builtin_phone_profiles_carry_estimated_coefficients(profile):
    cm = profile.cost_model
    assert cm is not None and cm.status == "estimated"
    assert cm.expected_error_pct and cm.method and cm.sources
    assert {(c.target, c.scheme) for c in cm.latency} >= {("executorch", "fp32"), ("executorch", "int8"),
                                                        ("tflite", "fp32"), ("tflite", "int8")}
    p = predict(profile, _net(), X, "tflite", "int8")
    assert p.status == "estimated" and p.latency_p50_ms > 0
    if profile.power.battery_wh and profile.budget.inferences_per_hour:
        expected = 100 * p.energy_mj * profile.budget.inferences_per_hour / (profile.power.battery_wh * 3.6e6)
        assert p.battery_pct_per_hour == pytest.approx(expected)


def test_estimated_phones_rank_sensibly():
    """A flagship is predicted faster than a low-end phone, int8 faster than fp32 on the same phone."""
    profiles = builtin_profiles()
    m = _net()
    x = torch.zeros(1, 3, 224, 224)
    fast = predict(profiles["pixel-8"], m, x, "tflite", "fp32").latency_p50_ms
    slow = predict(profiles["galaxy-a14"], m, x, "tflite", "fp32").latency_p50_ms
    assert fast < slow
    q = predict(profiles["pixel-8"], m, x, "tflite", "int8").latency_p50_ms
    assert q < fast


def test_runtime_version_mismatch_warns_and_names_the_versions():
    prof = _calibrated(host_profile(), {"executorch": "0.0.1", "torch": "0.0.1"})
    with pytest.warns(UserWarning, match="executorch 0.0.1"):
        p = predict(prof, _net(), X, "executorch", "fp32")
    assert p.status == "calibrated"
    note = next(n for n in p.notes if "calibrated with" in n)
    assert "0.0.1" in note and "installed" in note
    # no warning for the other runtime, whose version is not recorded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(prof, _net(), X, "tflite", "fp32")


def test_fallback_for_missing_scheme_and_threads():
    from edgeprune._deps import package_version

    prof = _calibrated(host_profile(), {"executorch": package_version("executorch")})
    p = predict(prof, _net(), X, "executorch", "int8-dynamic")
    assert p.status == "estimated" and any("fp32 coefficients" in n for n in p.notes)
    phone = _calibrated(builtin_profiles()["pixel-8"], {"executorch": package_version("executorch")})
    base = predict(phone, _net(), X, "executorch", "fp32", threads=4)
    one = predict(phone, _net(), X, "executorch", "fp32", threads=1)
    assert base.status == "calibrated" and one.latency_p50_ms > base.latency_p50_ms
    assert one.status == "estimated" and any("scaled" in n for n in one.notes)


def test_predict_many_matches_predict():
    prof = builtin_profiles()["pixel-8"]
    many = predict_many(prof, _net(), X, [("executorch", "fp32"), ("tflite", "int8")])
    one = predict(prof, _net(), X, "tflite", "int8")
    assert many[1].latency_p50_ms == pytest.approx(one.latency_p50_ms)


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="unknown target"):
        predict(host_profile(), _net(), X, "coreml", "fp32")
    with pytest.raises(ConfigError, match="unknown scheme"):
        predict(host_profile(), _net(), X, "executorch", "int4")


def test_profiles_load_with_and_without_cost_model(tmp_path: Path):
    data = yaml.safe_load((Path(__file__).parents[1] / "device_profiles" / "pixel-8.yaml").read_text())
    data.pop("cost_model", None)
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_profile(str(path)).cost_model is None
    data["cost_model"] = {"status": "calibrated", "method": "x", "threads": 4}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="date, runner and runtime_versions"):
        load_profile(str(path))
    data["cost_model"] = {"status": "estimated", "method": "x", "threads": 4, "latency_ms_per_mac": 1.0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="unknown key"):
        load_profile(str(path))
