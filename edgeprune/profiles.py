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

from edgeprune._cores import usable_cores
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
    max_class_drop_pts: float | None = Field(strict=True, default=None, ge=0, description=(
        "Largest top-1 loss allowed on any one class vs the unpruned model (the worst class on the test split), "
        "in points."))
    max_shift_drop_pts: float | None = Field(strict=True, default=None, ge=0, description=(
        "Largest top-1 loss allowed on shifted inputs (the test split under a fixed, seeded set of corruptions: "
        "noise, blur, contrast, shift) vs the unpruned model on the same, in points."))
    max_metric_drop: float | None = Field(strict=True, default=None, ge=0, description=(
        "Largest loss of the build's metric (--metric: miou, map50, rmse, a user metric) allowed vs the unpruned "
        "model, in the metric's own units; a loss is a fall for higher-is-better metrics, a rise for errors."))

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


CostStatus = Literal["estimated", "calibrated"]


class KernelCoefficients(_Strict):
    """Latency of one kernel type: us_per_call + us_per_mmac * MMACs (tile-padded) + us_per_mb * activation MB
    + us_per_weight_mb * weight MB."""

    us_per_call: float = Field(strict=True, ge=0, description="Fixed cost of one kernel call, in microseconds.")
    us_per_mmac: float = Field(strict=True, ge=0, description=(
        "Microseconds per million multiply-accumulates, counted on the tile-padded GEMM/depthwise shape; for "
        "pooling the window reads, for other kernels the output elements."))
    us_per_mb: float = Field(strict=True, ge=0, description="Microseconds per MB (1e6 bytes) of activations read and written.")
    us_per_weight_mb: float = Field(strict=True, default=0.0, ge=0, description="Microseconds per MB of weights read (packed weights streamed from memory).")
    tile_m: int = Field(strict=True, default=1, gt=0, description="Row tile (GEMM M = pixels) the MACs are padded to.")
    tile_n: int = Field(strict=True, default=1, gt=0, description="Column tile (GEMM N = output channels; depthwise: channels) the MACs are padded to.")
    tile_k: int = Field(strict=True, default=1, gt=0, description="Reduction tile (GEMM K) the MACs are padded to.")


class FitQuality(_Strict):
    """How well the latency coefficients predict whole models they were not fitted on."""

    method: str = Field(description="How the figures were obtained, e.g. '5-fold cross-validation over suite networks'.")
    models: int = Field(strict=True, ge=0, description="Whole-model measurements the figures are computed over.")
    within_10_pct: float | None = Field(strict=True, default=None, ge=0, le=1, description="Share of predictions within +/-10% of measured.")
    within_20_pct: float | None = Field(strict=True, default=None, ge=0, le=1, description="Share of predictions within +/-20% of measured.")
    median_abs_error_pct: float | None = Field(strict=True, default=None, ge=0, description="Median absolute error in percent.")


class LatencyCoefficients(_Strict):
    """Coefficients of one (target, scheme) at one thread count."""

    target: Literal["executorch", "tflite", "onnx"]
    scheme: Literal["fp32", "fp16", "int8", "int8-dynamic"]
    threads: int = Field(strict=True, gt=0, description="Thread count the coefficients were fitted (or derived) at.")
    status: CostStatus = Field(description="'calibrated' (fitted on measurements of this device) or 'estimated'.")
    overhead_us: float = Field(strict=True, ge=0, description="Per-inference fixed cost (runtime call, I/O handling), in microseconds.")
    us_per_io_mb: float = Field(strict=True, default=0.0, ge=0, description="Per-inference cost per MB of model input + output (layout/quantisation of the I/O).")
    us_per_partition: float = Field(strict=True, default=0.0, ge=0, description="Cost of each extra delegate partition (a graph split by a non-delegated op).")
    kernels: dict[str, KernelCoefficients] = Field(description="Per kernel type (edgeprune.cost.features.KERNEL_TYPES, '_nd' = not delegated).")
    fit: FitQuality | None = Field(default=None, description="Accuracy on models not used for the fit (None for estimated coefficients).")


class SizeCoefficients(_Strict):
    """Artifact size = weight_factor * weight bytes + bytes_per_kernel * kernels + bytes_fixed."""

    target: Literal["executorch", "tflite", "onnx"]
    scheme: Literal["fp32", "fp16", "int8", "int8-dynamic"]
    weight_factor: float = Field(strict=True, gt=0, description="Multiplier on the stored weight bytes (1.0 = exact).")
    bytes_per_kernel: float = Field(strict=True, ge=0, description="Serialisation bytes per kernel (op, tensors, quantisation parameters).")
    bytes_fixed: float = Field(strict=True, ge=0, description="Fixed bytes per file (headers, program, I/O tensors).")


class CostModel(_Strict):
    """A device's cost-model coefficients with their provenance."""

    status: CostStatus = Field(description="'estimated' from public figures, or 'calibrated' from measurements on the device.")
    method: str = Field(description="How the coefficients were obtained (see calibration/README.md).")
    date: str | None = Field(default=None, description="When they were calibrated or derived (ISO 8601).")
    runner: str | None = Field(default=None, description="What measured them (calibrated only).")
    runtime_versions: dict[str, str] = Field(default_factory=dict, description="Runtime / converter versions the coefficients describe.")
    threads: int = Field(strict=True, gt=0, description="Thread count of the measurements (or of the published figures).")
    expected_error_pct: float | None = Field(strict=True, default=None, ge=0, description=(
        "Typical latency error to expect, in percent (estimated: from the derivation's anchors; calibrated: the "
        "cross-validated median absolute error)."))
    noise_spread_pct: float | None = Field(strict=True, default=None, ge=0, description="Spread of the reference network's p50 over the calibration run.")
    table: str | None = Field(default=None, description="The measurement table the coefficients were fitted on.")
    table_sha256: str | None = Field(default=None, description="sha256 of that table.")
    calibration_s: float | None = Field(strict=True, default=None, ge=0, description="Wall time of the calibration run, in seconds.")
    networks: int | None = Field(strict=True, default=None, ge=0, description="Suite networks measured.")
    feedback_records: int | None = Field(strict=True, default=None, ge=0, description="Feedback measurements of real models included in the fit.")
    sources: dict[str, str] = Field(default_factory=dict, description="Public figures an estimate was derived from.")
    latency: tuple[LatencyCoefficients, ...] = Field(default=(), description="Latency coefficients per (target, scheme).")
    size: tuple[SizeCoefficients, ...] = Field(default=(), description="Artifact-size coefficients per (target, scheme) (default: built in).")

    @model_validator(mode="after")
    def _check_cost(self) -> CostModel:
        if self.status == "calibrated" and (not self.date or not self.runner or not self.runtime_versions):
            raise ValueError("a calibrated cost model must name its date, runner and runtime_versions")
        seen = set()
        for c in self.latency:
            if (c.target, c.scheme) in seen:
                raise ValueError(f"latency coefficients for ({c.target}, {c.scheme}) are given twice")
            seen.add((c.target, c.scheme))
        return self


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
    cost_model: CostModel | None = Field(
        default=None, description="Latency/size coefficients for edgeprune.cost, with provenance (None: uncalibrated)."
    )

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

    def active_power_w(self, threads: int | None = None) -> float:
        """Package power while inference runs on `threads` threads (default: the app's). `power.active_w` is the
        figure at `default_threads`; the part above idle (the busy cores' dynamic power) scales with the share of
        those threads in use, the idle part does not."""
        busy = min(max(1, threads or self.default_threads), self.total_cores)
        dynamic_w = max(0.0, self.power.active_w - self.power.idle_w)
        return self.power.idle_w + dynamic_w * busy / self.default_threads

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
    cores = usable_cores()
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
            "cpu_clusters": "the cores this process may use (its CPU affinity) and cpufreq / /proc/cpuinfo at run time",
            "ram_gb": "MemTotal in /proc/meminfo at run time",
            "power": "assumed 5 W per busy core and 2 W idle: this machine exposes no energy counter",
        },
    )
