"""Device profiles: the built-in YAMLs, the `host` auto-profile, budget arithmetic and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from edgeprune._resources import data_dir
from edgeprune.errors import ProfileError
from edgeprune.profiles import (
    HOST,
    Budget,
    builtin_profiles,
    host_profile,
    load_profile,
    parse_profile,
)

PROFILE_DIR = data_dir("device_profiles")
PIXEL_8_TEXT = (PROFILE_DIR / "pixel-8.yaml").read_text()
HARDWARE_SOURCES = ("soc", "cpu_clusters", "ram_gb", "power")
REQUIRED_DEVICES = (
    "pixel-8",
    "pixel-6a",
    "galaxy-a54",
    "galaxy-a14",
    "iphone-15",
    "raspberry-pi-5",
    "jetson-orin-nano",
)


def _pixel8() -> dict:
    return yaml.safe_load(PIXEL_8_TEXT)


def _write(tmp_path: Path, data: dict | str, name: str = "my-phone.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _profile_error(path: Path) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    msg = str(info.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    assert path.name in msg, f"error message does not name the file: {msg!r}"
    return msg


# ---------------------------------------------------------------- built-in profiles


def test_builtin_profiles_load_and_cover_the_tiers():
    profiles = builtin_profiles()
    assert len(profiles) >= 9
    assert HOST in profiles
    for name in REQUIRED_DEVICES:
        assert name in profiles, f"built-in profile {name!r} is missing"
    assert any(n.startswith("galaxy-s24") for n in profiles)
    tiers = {p.tier for p in profiles.values()}
    assert {"flagship", "mid", "low", "board", "host"} <= tiers


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_builtin_file_is_consistent(path: Path):
    prof = parse_profile(path.read_text(), path.name)
    assert prof.name == path.stem, "file name and profile name must match, or load_profile(name) finds the wrong one"
    for key in HARDWARE_SOURCES:
        assert len(prof.sources.get(key, "").strip()) > 10, f"{path.name}: sources.{key} is missing or empty"
    assert 0 < prof.default_threads <= prof.total_cores
    assert prof.ram_gb > 0
    assert all(c.max_ghz < 5 for c in prof.cpu_clusters), "clock looks like MHz, not GHz"
    # every profile carries an energy limit, either directly or via the battery
    assert prof.energy_limit_mj is not None and prof.energy_limit_mj > 0
    assert prof.budget.latency_ms is not None and prof.budget.peak_memory_mb is not None
    if prof.tier == "board":
        assert prof.power.battery_wh is None
        assert prof.budget.energy_mj is not None
    else:
        assert prof.power.battery_wh is not None and 5 < prof.power.battery_wh < 40
    if prof.platform == "ios":
        assert prof.abi == "arm64"
        assert set(prof.supported_targets) <= {"executorch", "tflite", "onnx"}


def test_builtin_budgets_follow_the_tiers():
    profiles = builtin_profiles()
    flagship = [p for p in profiles.values() if p.tier == "flagship"]
    low = [p for p in profiles.values() if p.tier == "low"]
    assert flagship and low
    assert max(p.budget.latency_ms for p in flagship) < min(p.budget.latency_ms for p in low)
    assert max(p.budget.peak_memory_mb for p in low) < min(p.budget.peak_memory_mb for p in flagship)
    assert max(p.budget.model_size_mb for p in low) < min(p.budget.model_size_mb for p in flagship)


def test_load_profile_by_name_returns_that_profile():
    prof = load_profile("pixel-8")
    assert prof.soc == "Google Tensor G3"
    assert prof.total_cores == 9
    assert load_profile("raspberry-pi-5").platform == "linux"
    assert load_profile("iphone-15").platform == "ios"


# ---------------------------------------------------------------- host


def test_host_profile_reflects_this_machine():
    prof = host_profile()
    assert prof.name == HOST and prof.is_host and prof.tier == "host"
    assert prof.total_cores == len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    assert prof.ram_gb > 0
    assert 0 < prof.default_threads <= prof.total_cores
    assert prof.power.battery_wh is None
    assert load_profile(HOST).total_cores == prof.total_cores


def test_host_profile_counts_the_cores_a_cpuset_allows(tmp_path):
    """Pinned to one core (as `taskset` or a container's cpuset does), the host profile and the process pool see
    one core, however many the machine has."""
    import subprocess
    import sys

    probe = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
             "from edgeprune.profiles import host_profile; from edgeprune.executor import get_executor; "
             "p = host_profile(); print(p.total_cores, p.default_threads, get_executor('process').workers)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1", "1"]


# ---------------------------------------------------------------- budgets


def test_battery_budget_converts_to_mj():
    # 10 Wh = 36 000 J = 3.6e7 mJ; 1 % of it = 3.6e5 mJ, spread over 3600 inferences = 100 mJ each.
    budget = Budget(battery_pct_per_hour=1.0, inferences_per_hour=3600)
    assert budget.energy_limit_mj(10.0) == pytest.approx(100.0)
    assert budget.energy_limit_mj(None) is None  # no battery: nothing to convert
    # Pixel 8: 18 Wh, 2 %/h at 36 000 inferences/h -> 18 * 3.6e6 * 0.02 / 36000 = 36 mJ
    assert load_profile("pixel-8").energy_limit_mj == pytest.approx(36.0)


def test_explicit_energy_budget_wins():
    budget = Budget(energy_mj=42.0)
    assert budget.energy_limit_mj(10.0) == 42.0
    assert budget.energy_limit_mj(None) == 42.0
    assert Budget().energy_limit_mj(10.0) is None


def test_with_budget_overrides_and_validates():
    base = load_profile("pixel-8")
    faster = base.with_budget(latency_ms=5)
    assert faster.budget.latency_ms == 5
    assert base.budget.latency_ms == 20, "the original profile must not change"
    assert faster.budget.peak_memory_mb == base.budget.peak_memory_mb
    assert base.with_budget(latency_ms=None) is base
    with_energy = base.with_budget(energy_mj=50)
    assert with_energy.energy_limit_mj == 50
    assert with_energy.budget.battery_pct_per_hour is None
    with pytest.raises(ProfileError) as info:
        base.with_budget(latency_ms=-1)
    msg = str(info.value)
    assert "\n" not in msg
    assert "pixel-8" in msg and "latency_ms" in msg


def test_budget_needs_both_battery_fields():
    with pytest.raises(ValueError):
        Budget(battery_pct_per_hour=1.0)
    with pytest.raises(ValueError):
        Budget(energy_mj=10.0, battery_pct_per_hour=1.0, inferences_per_hour=10)


# ---------------------------------------------------------------- user profiles and errors


def test_user_profile_from_path(tmp_path: Path):
    data = _pixel8()
    data.update(name="my-phone", display_name="My phone", ram_gb=12)
    data["budget"]["latency_ms"] = 15
    path = _write(tmp_path, data)
    prof = load_profile(str(path))
    assert prof.name == "my-phone"
    assert prof.ram_gb == 12
    assert prof.budget.latency_ms == 15
    assert prof.total_cores == 9


def test_unknown_budget_key_is_refused(tmp_path: Path):
    data = _pixel8()
    data["budget"]["latency"] = data["budget"].pop("latency_ms")
    msg = _profile_error(_write(tmp_path, data))
    assert "budget.latency" in msg
    assert "unknown key" in msg


def test_budget_key_without_unit_is_refused(tmp_path: Path):
    data = _pixel8()
    data["budget"]["model_size"] = 5
    msg = _profile_error(_write(tmp_path, data))
    assert "budget.model_size" in msg
    assert "unknown key" in msg


def test_unknown_top_level_key_is_refused(tmp_path: Path):
    data = _pixel8()
    data["ram"] = 8
    msg = _profile_error(_write(tmp_path, data))
    assert "'ram'" in msg and "unknown key" in msg


def test_negative_budget_is_refused(tmp_path: Path):
    text = PIXEL_8_TEXT.replace("latency_ms: 20", "latency_ms: -1")
    assert text != PIXEL_8_TEXT
    msg = _profile_error(_write(tmp_path, text))
    assert "budget.latency_ms" in msg
    assert "-1" in msg


def test_missing_required_key_is_reported(tmp_path: Path):
    data = _pixel8()
    del data["ram_gb"]
    msg = _profile_error(_write(tmp_path, data))
    assert "ram_gb" in msg and "missing" in msg


def test_missing_source_is_reported(tmp_path: Path):
    data = _pixel8()
    del data["sources"]["power"]
    msg = _profile_error(_write(tmp_path, data))
    assert "sources" in msg and "power" in msg


def test_too_many_threads_is_reported(tmp_path: Path):
    data = _pixel8()
    data["default_threads"] = 16
    msg = _profile_error(_write(tmp_path, data))
    assert "default_threads" in msg and "9 cores" in msg


def test_malformed_yaml_is_reported(tmp_path: Path):
    text = PIXEL_8_TEXT.replace("supported_targets: [executorch, tflite, onnx]", "supported_targets: [executorch, tflite")
    assert text != PIXEL_8_TEXT
    msg = _profile_error(_write(tmp_path, text))
    assert "malformed" in msg.lower()


def test_non_mapping_yaml_is_reported(tmp_path: Path):
    msg = _profile_error(_write(tmp_path, "- just\n- a list\n"))
    assert "mapping" in msg


def test_unknown_device_name_lists_known_ones():
    with pytest.raises(ProfileError) as info:
        load_profile("pixel9")
    msg = str(info.value)
    assert "\n" not in msg
    assert "pixel9" in msg
    assert "pixel-8" in msg and "raspberry-pi-5" in msg and HOST in msg


def test_missing_profile_file_is_reported(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    msg = str(info.value)
    assert "\n" not in msg and "nope.yaml" in msg
