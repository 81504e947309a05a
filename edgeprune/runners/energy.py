"""Energy per inference on an Android device, from power-stats HAL snapshots or battery sampling.

Both methods use two runs of the same program that differ only in the number of timed inferences (R1 < R2) and an
idle window on the device:

    energy per inference = [(E_run2 - E_run1) - P_idle * (T_run2 - T_run1)] / (R2 - R1)

Loading the model, the warm-ups and the outputs pass are identical in both runs and cancel in the difference; the
idle power measured over the idle window removes what the device draws anyway (screen, radios, the OS) during the
extra time the second run takes. E and T come from snapshots taken on the device right before and after each run
(`/proc/uptime` with the HAL dump in one shell command), so adb latency does not enter the figures.

Methods, best first:
- 'power_stats_hal': ODPM rails summed over all channels (HAL 2.0 `dumpsys android.hardware.power.stats.IPowerStats
  /default`, or HAL 1.0 through `lshal debug …`); cumulative energy in mWs = mJ.
- 'battery_sampling (low confidence)': |current_now| x voltage_now sampled while the runs execute, integrated with
  the trapezoid rule. Sign and scale conventions vary by vendor and USB power skews it, hence the flag.
- None: nothing measurable; the pipeline falls back to the cost model's estimate (flagged 'modelled').
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprune.runners.parsers import PowerStatsReading

METHOD_HAL = "power_stats_hal"
METHOD_BATTERY = "battery_sampling (low confidence)"


@dataclass(frozen=True)
class Snapshot:
    """Cumulative energy (mJ) at a device time (s, from /proc/uptime)."""

    uptime_s: float
    energy_mj: float


@dataclass(frozen=True)
class Window:
    """A run (or idle wait) bracketed by two snapshots; `inferences` timed inferences happened in it (0: idle)."""

    before: Snapshot
    after: Snapshot
    inferences: int = 0

    @property
    def seconds(self) -> float:
        return self.after.uptime_s - self.before.uptime_s

    @property
    def energy_mj(self) -> float:
        return self.after.energy_mj - self.before.energy_mj


@dataclass(frozen=True)
class EnergyResult:
    energy_mj: float | None
    method: str | None
    note: str = ""
    detail: dict = field(default_factory=dict)

    def to_extra(self) -> dict:
        out = {"energy_mj": self.energy_mj, "energy_method": self.method}
        if self.note:
            out["energy_note"] = self.note
        if self.detail:
            out["energy_detail"] = self.detail
        return out


def hal_snapshot(uptime_s: float, reading: PowerStatsReading) -> Snapshot:
    """A snapshot summing every energy-meter rail of one HAL dump."""
    return Snapshot(uptime_s=uptime_s, energy_mj=reading.total_mws)


def per_inference(short: Window, long: Window, idle: Window, method: str) -> EnergyResult:
    """Energy per inference from two runs that differ only in timed inferences, minus the idle baseline."""
    extra = long.inferences - short.inferences
    detail = {
        "runs": [short.inferences, long.inferences],
        "run_energy_mj": [round(short.energy_mj, 6), round(long.energy_mj, 6)],
        "run_seconds": [round(short.seconds, 6), round(long.seconds, 6)],
        "idle_energy_mj": round(idle.energy_mj, 6),
        "idle_seconds": round(idle.seconds, 6),
    }
    if extra <= 0:
        return EnergyResult(None, None, "the two energy runs did not differ in inferences", detail)
    if idle.seconds <= 0:
        return EnergyResult(None, None, "the idle window has no duration on the device clock", detail)
    idle_w = idle.energy_mj / idle.seconds / 1e3
    extra_mj = (long.energy_mj - short.energy_mj) - idle_w * 1e3 * (long.seconds - short.seconds)
    value = extra_mj / extra
    detail.update(idle_power_w=round(idle_w, 6), extra_inferences=extra)
    if value <= 0:
        return EnergyResult(
            None,
            method,
            f"below the noise floor: {value:.6g} mJ per inference after subtracting the idle baseline "
            f"({extra} extra inferences); use more energy runs",
            detail,
        )
    return EnergyResult(value, method, "", detail)


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Energy (mJ) from (device uptime s, power W) samples by the trapezoid rule."""
    pts = sorted(samples)
    total_j = 0.0
    for (t0, p0), (t1, p1) in zip(pts, pts[1:]):
        total_j += (t1 - t0) * (p0 + p1) / 2.0
    return total_j * 1e3


def battery_power_w(current_now: int, voltage_now: int) -> float:
    """Power in W from sysfs `current_now` (µA) and `voltage_now` (µV); the current's sign is vendor-specific."""
    return abs(current_now) * 1e-6 * abs(voltage_now) * 1e-6


def battery_window(samples: list[tuple[float, float]], start_s: float, end_s: float, inferences: int = 0) -> Window:
    """A window whose energy is the integral of the power samples between two device times (interpolated ends)."""
    pts = sorted(samples)

    def at(t: float) -> float:
        if not pts:
            return 0.0
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, p0), (t1, p1) in zip(pts, pts[1:]):
            if t0 <= t <= t1:
                return p0 if t1 == t0 else p0 + (p1 - p0) * (t - t0) / (t1 - t0)
        return pts[-1][1]

    inside = [(start_s, at(start_s))] + [(t, p) for t, p in pts if start_s < t < end_s] + [(end_s, at(end_s))]
    return Window(Snapshot(start_s, 0.0), Snapshot(end_s, integrate_power(inside)), inferences)
