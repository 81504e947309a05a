"""Device profiles: a phone's or board's hardware, power model and default budgets.

Built-in profiles are YAML files in `device_profiles/`; `host` is built at run time from this machine.
Every field name carries its unit; unknown keys are refused (`extra="forbid"`).
"""

from __future__ import annotations

import os
import platform as _platform
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeprune._resources import data_dir
from edgeprune.errors import ProfileError
from edgeprune.types import TARGETS

SCHEMA_VERSION = 1
HOST = "host"


class _Strict(BaseModel):
    # No NaN/inf; numbers must be numbers (YAML `true` or "8" is refused, not read as 1.0 or 8).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CpuCluster(_Strict):
    core: str = Field(description="Core micro-architecture, e.g. 'Cortex-X3'.")
    count: int = Field(strict=True, gt=0, description="Number of cores of this type.")
    max_ghz: float = Field(strict=True, gt=0, description="Maximum clock in GHz.")


class PowerModel(_Strict):
    active_w: float = Field(strict=True, gt=0, description="Average package power while running inference on the CPU, in watts.")
    idle_w: float = Field(strict=True, ge=0, description="Power when idle with the screen off, in watts.")
    battery_wh: float | None = Field(strict=True, default=None, gt=0, description="Battery capacity in watt-hours (None: mains).")


class Budget(_Strict):
    """Limits one inference must meet on the device. None means 'no limit'."""

    latency_ms: float | None = Field(strict=True, default=None, gt=0, description="Latency limit per inference, in ms.")
    latency_percentile: Literal["p50", "p90"] = Field(default="p90", description="Percentile judged.")
    model_size_mb: float | None = Field(strict=True, default=None, gt=0, description="Artifact file size limit, in MB (1e6 bytes).")
    peak_memory_mb: float | None = Field(strict=True, default=None, gt=0, description="Peak memory limit while running, in MB.")
    energy_mj: float | None = Field(strict=True, default=None, gt=0, description="Energy limit per inference, in millijoules.")
    battery_pct_per_hour: float | None = Field(strict=True, 
        default=None, gt=0, le=100, description="Battery share per hour allowed at `inferences_per_hour`."
    )
    inferences_per_hour: float | None = Field(strict=True, default=None, gt=0, description="Rate for `battery_pct_per_hour`.")
    max_accuracy_drop_pct: float | None = Field(strict=True, 
        default=None, ge=0, description="Largest top-1 accuracy loss allowed vs the unpruned model, in points."
    )

    @model_validator(mode="after")
    def _energy_forms(self) -> Budget:
        if (self.battery_pct_per_hour is None) != (self.inferences_per_hour is None):
            raise ValueError("battery_pct_per_hour and inferences_per_hour must be given together")
        if self.energy_mj is not None and self.battery_pct_per_hour is not None:
            raise ValueError("give energy_mj or battery_pct_per_hour (+ inferences_per_hour), not both")
        return self

    def energy_limit_mj(self, battery_wh: float | None) -> float | None:
        """Energy per inference allowed, in mJ, converting a battery %/hour budget when one is set."""
        if self.energy_mj is not None:
            return self.energy_mj
        if self.battery_pct_per_hour is None or battery_wh is None:
            return None
        battery_mj = battery_wh * 3600.0 * 1000.0
        return battery_mj * (self.battery_pct_per_hour / 100.0) / self.inferences_per_hour


class DeviceProfile(_Strict):
    schema_version: int = Field(strict=True, default=SCHEMA_VERSION, description="Profile format version.")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Short name used on the command line.")
    display_name: str
    tier: Literal["flagship", "mid", "low", "board", "host"]
    platform: Literal["android", "ios", "linux"]
    soc: str
    abi: str = Field(description="e.g. arm64-v8a, arm64, x86_64.")
    cpu_clusters: tuple[CpuCluster, ...] = Field(min_length=1)
    ram_gb: float = Field(strict=True, gt=0)
    supported_targets: tuple[Literal["executorch", "tflite", "onnx"], ...] = Field(min_length=1)
    default_threads: int = Field(strict=True, gt=0, description="Threads the app runs inference with.")
    power: PowerModel
    budget: Budget
    sources: dict[str, str] = Field(description="Where each hardware figure comes from, keyed by field name.")

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is newer than this edgeprune reads ({SCHEMA_VERSION})")
        missing = [k for k in ("soc", "cpu_clusters", "ram_gb", "power") if not self.sources.get(k)]
        if missing:
            raise ValueError(f"sources must name where each hardware figure comes from; missing: {', '.join(missing)}")
        if self.default_threads > self.total_cores:
            raise ValueError(f"default_threads {self.default_threads} exceeds the {self.total_cores} cores listed")
        return self

    @property
    def total_cores(self) -> int:
        return sum(c.count for c in self.cpu_clusters)

    @property
    def is_host(self) -> bool:
        return self.name == HOST

    @property
    def energy_limit_mj(self) -> float | None:
        return self.budget.energy_limit_mj(self.power.battery_wh)

    def with_budget(self, **overrides: float | None) -> DeviceProfile:
        """A copy whose budget has the given (non-None) fields replaced, validated again."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        if "energy_mj" in changes:  # an explicit energy limit replaces a battery-based one, and vice versa
            changes.update(battery_pct_per_hour=None, inferences_per_hour=None)
        elif {"battery_pct_per_hour", "inferences_per_hour"} & changes.keys():
            changes["energy_mj"] = None
        data = self.budget.model_dump() | changes
        try:
            budget = Budget.model_validate(data)
        except ValidationError as exc:
            raise ProfileError(f"budget override for '{self.name}': {_first_error(exc)}") from None
        return self.model_copy(update={"budget": budget})


def _first_error(exc: ValidationError) -> str:
    """The first validation error as one line: the key, what is wrong, and the value given."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling and the unit in the name, e.g. latency_ms)"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
    else:
        value = repr(err["input"])
        msg = f"{err['msg']} (got {value[:80]})"
    return f"key '{loc}': {msg}" if loc else msg


def parse_profile(text: str, source: str) -> DeviceProfile:
    """Parse and validate one profile's YAML; errors name `source` and the offending key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ProfileError(f"profile {source}: malformed YAML{where}: {problem or 'syntax error'}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ProfileError(f"profile {source}: expected a mapping of keys at the top level")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"profile {source}: {_first_error(exc)}") from None


def builtin_profiles() -> dict[str, DeviceProfile]:
    """Every built-in profile by name, `host` included."""
    profiles = {}
    for path in sorted(data_dir("device_profiles").glob("*.yaml")):
        prof = parse_profile(path.read_text(), path.name)
        profiles[prof.name] = prof
    profiles[HOST] = host_profile()
    return profiles


def load_profile(name_or_path: str) -> DeviceProfile:
    """A built-in profile by name, or a user's profile from a .yaml/.yml path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"profile file '{name_or_path}' does not exist; give a path to a .yaml profile")
        return parse_profile(path.read_text(), str(path))
    if name_or_path == HOST:
        return host_profile()
    profiles = builtin_profiles()
    if name_or_path not in profiles:
        raise ProfileError(f"profile '{name_or_path}' not found; known: {', '.join(sorted(profiles))}")
    return profiles[name_or_path]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def _ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 2)
    except OSError:
        pass
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)


def _max_ghz() -> float:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return round(int(path.read_text()) / 1e6, 3)
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":", 1)[1]) / 1000.0, 3)
    except (OSError, ValueError):
        pass
    return 1.0


def host_profile() -> DeviceProfile:
    """A profile of this machine, read at run time; its budgets are generous defaults for a desktop CPU."""
    cores = os.cpu_count() or 1
    machine = _platform.machine().lower()
    abi = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}.get(machine, machine)
    return DeviceProfile(
        name=HOST,
        display_name=f"This machine ({_cpu_model()})",
        tier="host",
        platform="linux",
        soc=_cpu_model(),
        abi=abi,
        cpu_clusters=(CpuCluster(core=_cpu_model(), count=cores, max_ghz=_max_ghz()),),
        ram_gb=_ram_gb(),
        supported_targets=TARGETS,
        default_threads=min(cores, 4),
        power=PowerModel(active_w=5.0 * min(cores, 4), idle_w=2.0, battery_wh=None),
        budget=Budget(
            latency_ms=50.0,
            latency_percentile="p50",
            model_size_mb=100.0,
            peak_memory_mb=1024.0,
            energy_mj=500.0,
            max_accuracy_drop_pct=2.0,
        ),
        sources={
            "soc": "read at run time from /proc/cpuinfo",
            "cpu_clusters": "os.cpu_count() and cpufreq / /proc/cpuinfo at run time",
            "ram_gb": "MemTotal in /proc/meminfo at run time",
            "power": "assumed 5 W per busy core and 2 W idle: this machine exposes no energy counter",
        },
    )
