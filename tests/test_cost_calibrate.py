"""Calibration on the real host runtimes: a short run, interruption + resume, the noise refusal, feedback, and
model-size prediction against a real export."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgeprune.cost import (
    append_measurement,
    describe_cost_model,
    feedback_path,
    measurement_record,
    predict,
    read_table,
)
from edgeprune.cost.calibrate import CalibrationNoiseError, noise_spread_pct, run_calibration
from edgeprune.cost.fit import fit_profile_cost_model
from edgeprune.cost.table import table_path_for
from edgeprune.errors import DeviceError
from edgeprune.export import get_exporter
from edgeprune.profiles import builtin_profiles, host_profile, load_profile
from edgeprune.runners.host import HostRunner
from edgeprune.types import Plan


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, reuse_calibration_exports):
    """A one-target calibration interrupted after its first network, then resumed to the end (the resumed run and the
    noise test below time the reference network the first run exported: `reuse_calibration_exports`)."""
    out = tmp_path_factory.mktemp("cal") / "my-host.yaml"
    calls = []

    def interrupt(done_s: int, total_s: int) -> None:
        calls.append(done_s)
        if len(calls) == 1:
            raise _Stop

    # A shared CI machine may be noisier than the default limit: the noise check has its own test below.
    kwargs = dict(targets=["executorch"], minutes=0.75, out_path=out, schemes=("fp32",), max_networks=3,
                  max_spread_pct=1000.0)
    with pytest.raises(_Stop):
        run_calibration(host_profile(), progress=interrupt, **kwargs)
    first = [r for r in read_table(table_path_for(out)) if r["kind"] == "suite"]
    assert not out.exists(), "an interrupted run must not write a profile"
    profile = run_calibration(host_profile(), **kwargs)
    return out, profile, first, [r for r in read_table(table_path_for(out)) if r["kind"] == "suite"]


def test_short_calibration_writes_a_loadable_calibrated_profile(calibrated):
    out, profile, _, records = calibrated
    loaded = load_profile(str(out))
    cm = loaded.cost_model
    assert cm is not None and cm.status == "calibrated"
    assert cm.date and "runtime session" in cm.runner and cm.runtime_versions.get("executorch")
    assert cm.table == table_path_for(out).name and len(cm.table_sha256) == 64
    assert cm.threads == profile.cost_model.threads and cm.networks == len({r["network"] for r in records})
    (coeffs,) = cm.latency
    assert (coeffs.target, coeffs.scheme, coeffs.status) == ("executorch", "fp32", "calibrated")
    assert coeffs.kernels and coeffs.fit is not None and coeffs.fit.models == len(records)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 4))
    p = predict(loaded, model.eval(), torch.zeros(1, 3, 32, 32), "executorch", "fp32")
    assert p.status == "calibrated" and p.latency_p50_ms > 0 and not any("calibrated with" in n for n in p.notes)
    assert describe_cost_model(loaded).startswith("calibrated")
    # every record carries its provenance and its measurement
    for r in records:
        assert r["where"] == "host" and r["runner"] == "executorch.runtime" and r["time_utc"]
        assert r["latency_p50_ms"] == min(r["round_p50s_ms"]) and r["ops"] and r["size_bytes"] > 0
        assert 0 < r["latency_ms"] <= r["latency_p50_ms"] * 1.001


def test_interrupted_calibration_resumes(calibrated):
    _, _, first, after = calibrated
    assert first, "the interrupted run kept what it had measured"
    keys = [(r["network"], r["target"], r["scheme"]) for r in after]
    assert len(keys) == len(set(keys)), "a resumed run measures nothing twice"
    assert {(r["network"], r["target"], r["scheme"]) for r in first} <= set(keys)
    assert len(after) > len(first)


def test_runtime_version_mismatch_is_reported(calibrated, tmp_path):
    out, *_ = calibrated
    data = yaml.safe_load(out.read_text())
    data["cost_model"]["runtime_versions"]["executorch"] = "0.9.0"
    other = tmp_path / "old-host.yaml"
    other.write_text(yaml.safe_dump(data))
    with pytest.warns(UserWarning, match=r"executorch 0\.9\.0 but executorch .* is installed"):
        p = predict(load_profile(str(other)), torch.nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 3, 16, 16),
                    "executorch", "fp32")
    assert any("recalibrate" in n for n in p.notes)


def test_noisy_machine_is_refused(tmp_path, reuse_calibration_exports):
    out = tmp_path / "noisy.yaml"
    with pytest.raises(CalibrationNoiseError) as info:
        run_calibration(host_profile(), ["executorch"], 1.0, out, schemes=("fp32",), noise_pct=60.0)
    msg = str(info.value)
    assert "spread" in msg and "%" in msg and "no profile was written" in msg and "\n" not in msg
    assert isinstance(info.value, DeviceError)
    assert not out.exists()
    assert [r for r in read_table(table_path_for(out)) if r["kind"] == "reference"]  # measurements kept
    assert noise_spread_pct([10.0, 10.2, 30.0, 10.1]) == pytest.approx(1.0)  # a slow outlier round is tolerated
    assert noise_spread_pct([10.0, 14.0, 13.0, 30.0]) > 25.0


def test_phone_profiles_cannot_be_calibrated_on_the_host(tmp_path):
    with pytest.raises(DeviceError, match="needs measurements on that device"):
        run_calibration(builtin_profiles()["pixel-8"], ["executorch"], 1.0, tmp_path / "p.yaml")


def test_feedback_is_appended_and_used_by_the_fit(calibrated):
    _, _, _, records = calibrated
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 1)).eval()
    x = torch.zeros(1, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        art = get_exporter("executorch").export(model, x, x, Plan(target="executorch"), Path(tmp) / "m.pte").artifact
        m = HostRunner().measure(art, x.numpy().astype(np.float32), warmup=2, runs=10, threads=records[0]["threads"])
    rec = measurement_record(model, x, "executorch", "fp32", m, model_name="tiny")
    path = append_measurement("host", rec)
    assert path == feedback_path("host") and path.is_file()
    (back,) = [r for r in read_table(path) if r.get("model") == "tiny"]
    assert back["kind"] == "feedback" and back["latency_p50_ms"] == pytest.approx(m.latency_p50_ms)
    prov = {"date": "2025-01-01", "runner": "test", "runtime_versions": {"executorch": "x"}}
    without = fit_profile_cost_model(records, ["executorch"], ["fp32"], back["threads"], prov)
    with_fb = fit_profile_cost_model(records + [back], ["executorch"], ["fp32"], back["threads"], prov)
    assert with_fb.latency[0].fit.models == without.latency[0].fit.models + 1


def test_size_prediction_within_two_percent_of_a_real_export(tmp_path):
    """squeezenet1_1 (1.2 M parameters, 26 convolutions) exported for ExecuTorch fp32 vs the predicted size."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None).eval()
    x = torch.zeros(1, 3, 224, 224)
    art = get_exporter("executorch").export(model, x, x, Plan(target="executorch"), tmp_path / "m.pte").artifact
    p = predict(host_profile(), model, x, "executorch", "fp32")
    assert abs(p.model_size_mb * 1e6 / art.size_bytes - 1) < 0.02
    # ExecuTorch's peak memory as its runner reports it: program bytes + the planned arena
    assert abs(p.peak_memory_mb / (p.model_size_mb + art.lowering["planned_arena_bytes"] / 1e6) - 1) < 0.01
