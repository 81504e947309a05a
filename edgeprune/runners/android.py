"""What an Android device says about itself, the built-in profile it matches, and a draft profile for it.

The adb runner collects four texts from a device (`getprop`, `/proc/meminfo`, per-core cpufreq `cpuinfo_max_freq`,
`/proc/cpuinfo`); `device_info(...)` turns them into a `DeviceInfo`. Nothing here talks to a device.

Matching a built-in profile: first by model (`ro.product.model` equal to the profile's display name without the
manufacturer, e.g. 'Pixel 8' ↔ 'Google Pixel 8'), then by SoC (`ro.soc.model`, or `ro.board.platform` /
`ro.hardware` through a small table of code names, against the profile's `soc`). `DeviceInfo.match_kind` says which.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import yaml

from edgeprune.profiles import DeviceProfile, builtin_profiles, parse_profile
from edgeprune.runners.parsers import parse_cpufreq, parse_cpuinfo, parse_getprop, parse_meminfo

# Arm "CPU part" numbers (implementer 0x41) -> core name, for drafting cpu_clusters.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
    "0xd85": "Cortex-X925", "0xd87": "Cortex-A725",
}
# SoC code names seen in ro.board.platform / ro.hardware / ro.soc.model -> the marketing name profiles use.
SOC_CODENAMES = {
    "gs101": "Tensor", "gs201": "Tensor G2", "zuma": "Tensor G3", "zumapro": "Tensor G4",
    "s5e8835": "Exynos 1380", "s5e9945": "Exynos 2400", "mt6769": "MT6769", "pineapple": "SM8650",
    "kalama": "SM8550", "taro": "SM8450", "lahaina": "SM8350",
}
MARKETED_RAM_GB = (1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 18, 24, 32)


@dataclass(frozen=True)
class DeviceInfo:
    """One attached device as read over adb. `cpu_max_ghz` has one entry per core (index = cpu number)."""

    serial: str
    state: str
    model: str | None = None
    manufacturer: str | None = None
    brand: str | None = None
    device: str | None = None
    soc: str | None = None
    soc_source: str | None = None
    abi: str | None = None
    abis: tuple[str, ...] = ()
    sdk: int | None = None
    release: str | None = None
    ram_gb: float | None = None
    cpu_max_ghz: tuple[float, ...] = ()
    cpu_cores: tuple[str, ...] = ()
    is_emulator: bool = False
    matched_profile: str | None = None
    match_kind: str | None = None
    """'model' or 'soc' (how matched_profile was chosen), None when nothing matched."""
    props: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    errors: tuple[str, ...] = ()
    """What could not be read (the device may still be usable)."""

    @property
    def display_name(self) -> str:
        parts = [self.manufacturer or "", self.model or self.serial]
        if self.manufacturer and self.model and self.model.lower().startswith(self.manufacturer.lower()):
            parts = [self.model]
        return " ".join(p for p in parts if p).strip()

    def to_dict(self) -> dict:
        return {
            "serial": self.serial,
            "state": self.state,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "soc": self.soc,
            "abi": self.abi,
            "sdk": self.sdk,
            "ram_gb": self.ram_gb,
            "cpu_max_ghz": list(self.cpu_max_ghz),
            "is_emulator": self.is_emulator,
            "matched_profile": self.matched_profile,
            "match_kind": self.match_kind,
            "errors": list(self.errors),
        }


def _soc_from_props(props: dict[str, str]) -> tuple[str | None, str | None]:
    maker, model = props.get("ro.soc.manufacturer", "").strip(), props.get("ro.soc.model", "").strip()
    if model:
        name = SOC_CODENAMES.get(model.lower(), model)
        return (f"{maker} {name}".strip() if maker and not name.lower().startswith(maker.lower()) else name), "ro.soc.model"
    for key in ("ro.board.platform", "ro.hardware.chipname", "ro.hardware"):
        value = props.get(key, "").strip()
        if value:
            return SOC_CODENAMES.get(value.lower(), value), key
    return None, None


def _core_name(fields: dict[str, str]) -> str:
    part = fields.get("CPU part", "").lower()
    if fields.get("CPU implementer", "").lower() == "0x41" and part in ARM_PARTS:
        return ARM_PARTS[part]
    if part:
        return f"part {part}"
    return fields.get("model name", "unknown")


def device_info(
    serial: str,
    state: str,
    *,
    getprop: str = "",
    meminfo: str = "",
    cpufreq: str = "",
    cpuinfo: str = "",
    errors: tuple[str, ...] = (),
    profiles: dict[str, DeviceProfile] | None = None,
) -> DeviceInfo:
    """A `DeviceInfo` from the texts a device printed, matched against `profiles` (default: the built-ins)."""
    errs = list(errors)
    props = parse_getprop(getprop) if getprop else {}
    ram_gb = None
    if meminfo:
        try:
            ram_gb = round(parse_meminfo(meminfo)["MemTotal"] * 1024 / 1e9, 2)
        except ValueError as exc:
            errs.append(str(exc))
    freqs = parse_cpufreq(cpufreq) if cpufreq else {}
    cores = parse_cpuinfo(cpuinfo) if cpuinfo else {}
    n = max([*freqs, *cores], default=-1) + 1
    cpu_ghz = tuple(round(freqs.get(i, 0) / 1e6, 3) for i in range(n)) if freqs else ()
    core_names = tuple(_core_name(cores.get(i, {})) for i in range(n)) if cores else ()
    soc, soc_source = _soc_from_props(props)
    sdk_text = props.get("ro.build.version.sdk", "")
    abilist = tuple(a for a in props.get("ro.product.cpu.abilist", "").split(",") if a)
    emulator = (
        serial.startswith("emulator-")
        or props.get("ro.kernel.qemu") == "1"
        or props.get("ro.boot.qemu") == "1"
        or props.get("ro.hardware", "") in ("ranchu", "goldfish")
    )
    info = DeviceInfo(
        serial=serial,
        state=state,
        model=props.get("ro.product.model") or None,
        manufacturer=props.get("ro.product.manufacturer") or None,
        brand=props.get("ro.product.brand") or None,
        device=props.get("ro.product.device") or None,
        soc=soc,
        soc_source=soc_source,
        abi=props.get("ro.product.cpu.abi") or (abilist[0] if abilist else None),
        abis=abilist,
        sdk=int(sdk_text) if sdk_text.isdigit() else None,
        release=props.get("ro.build.version.release") or None,
        ram_gb=ram_gb,
        cpu_max_ghz=cpu_ghz,
        cpu_cores=core_names,
        is_emulator=emulator,
        props=props,
        errors=tuple(errs),
    )
    name, kind = match_profile(info, profiles)
    return replace(info, matched_profile=name, match_kind=kind)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _soc_keys(soc: str) -> set[str]:
    """Normalised names a profile's `soc` text answers to: the whole, without the maker, and parenthesised ids."""
    keys = {_norm(soc)}
    for maker in ("google", "samsung", "qualcomm", "mediatek", "broadcom", "nvidia", "apple", "unisoc", "hisilicon"):
        n = _norm(soc)
        if n.startswith(maker + " "):
            keys.add(n[len(maker) + 1:])
    outside = _norm(re.sub(r"\([^)]*\)", " ", soc))
    if outside:
        keys.add(outside)
        for maker in ("google", "samsung", "qualcomm", "mediatek", "broadcom"):
            if outside.startswith(maker + " "):
                keys.add(outside[len(maker) + 1:])
    for inner in re.findall(r"\(([^)]*)\)", soc):
        for token in re.split(r"[\s,/-]+", inner):
            if re.fullmatch(r"[A-Za-z]+\d{3,}[A-Za-z0-9]*", token):  # SM8650, MT6769, BCM2712
                keys.add(_norm(token))
    for token in re.findall(r"\b[A-Z]{2,}\d{3,}[A-Z0-9]*\b", soc):
        keys.add(_norm(token))
    return {k for k in keys if k}


def match_profile(info: DeviceInfo, profiles: dict[str, DeviceProfile] | None = None) -> tuple[str | None, str | None]:
    """(name of the android profile this device matches, 'model' | 'soc'), or (None, None)."""
    profiles = builtin_profiles() if profiles is None else profiles
    android = [p for p in profiles.values() if p.platform == "android"]
    if info.model:
        model = _norm(info.model)
        for p in android:
            display = _norm(p.display_name)
            maker = _norm(info.manufacturer or info.brand or "")
            stripped = display[len(maker) + 1:] if maker and display.startswith(maker + " ") else display
            if model in (display, stripped):
                return p.name, "model"
    candidates = []
    for key in ("ro.soc.model", "ro.board.platform", "ro.hardware"):
        value = info.props.get(key, "").strip()
        if value:
            candidates.append(_norm(SOC_CODENAMES.get(value.lower(), value)))
    if info.soc:
        candidates.append(_norm(info.soc))
    for cand in candidates:
        hits = [p.name for p in android if cand in _soc_keys(p.soc)]
        if len(hits) == 1:
            return hits[0], "soc"
    return None, None


# --------------------------------------------------------------------------------------------------- drafting


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "android-device"


def _clusters(info: DeviceInfo) -> list[dict]:
    """Cores grouped by (core type, max clock), fastest first."""
    groups: OrderedDict[tuple[str, float], int] = OrderedDict()
    n = max(len(info.cpu_max_ghz), len(info.cpu_cores))
    for i in range(n):
        ghz = info.cpu_max_ghz[i] if i < len(info.cpu_max_ghz) else 0.0
        core = info.cpu_cores[i] if i < len(info.cpu_cores) else "unknown"
        groups[(core, ghz)] = groups.get((core, ghz), 0) + 1
    out = [
        {"core": core, "count": count, "max_ghz": round(ghz, 3) if ghz > 0 else 1.0}
        for (core, ghz), count in sorted(groups.items(), key=lambda kv: -kv[0][1])
    ]
    return out or [{"core": "unknown", "count": 1, "max_ghz": 1.0}]


def marketed_ram_gb(measured_gb: float) -> float:
    """The marketed RAM size a MemTotal figure belongs to (MemTotal excludes kernel-reserved memory)."""
    for size in MARKETED_RAM_GB:
        if measured_gb <= size * 1.0737:  # GiB-marketed parts: 8 GiB = 8.59 GB
            return float(size)
    return float(math.ceil(measured_gb))


def draft_profile(info: DeviceInfo, *, name: str | None = None, battery_wh: float | None = None) -> str:
    """YAML text of a new device profile built from what the device reported; validated with `parse_profile`.

    Hardware fields come from the device; power and budget figures are placeholders (marked as such in `sources`)
    to be replaced by measurements.
    """
    today = _dt.date.today().isoformat()
    ram_measured = info.ram_gb or 0.0
    ram = marketed_ram_gb(ram_measured) if ram_measured else 4.0
    tier = "flagship" if ram >= 8 else "mid" if ram >= 4 else "low"
    clusters = _clusters(info)
    total = sum(c["count"] for c in clusters)
    fast = sum(c["count"] for c in clusters[:-1]) if len(clusters) > 1 else total
    threads = max(1, min(4, fast, total))
    cores_active = min(4, total)
    active_w = round(0.9 * cores_active, 2)
    via = f"read over adb from {info.serial} on {today}"
    props = info.props
    soc_detail = ", ".join(
        f"{k}={props[k]}" for k in ("ro.soc.manufacturer", "ro.soc.model", "ro.board.platform", "ro.hardware") if props.get(k)
    )
    data = {
        "schema_version": 1,
        "name": name or _slug(info.display_name),
        "display_name": info.display_name or info.serial,
        "tier": tier,
        "platform": "android",
        "soc": info.soc or "unknown",
        "abi": info.abi or "arm64-v8a",
        "cpu_clusters": clusters,
        "ram_gb": ram,
        "supported_targets": ["executorch", "tflite", "onnx"],
        "default_threads": threads,
        "power": {"active_w": active_w, "idle_w": 0.35, "battery_wh": battery_wh or 15.0},
        "budget": {
            "latency_ms": 20.0 if tier == "flagship" else 40.0 if tier == "mid" else 80.0,
            "latency_percentile": "p90",
            "model_size_mb": 25.0,
            "peak_memory_mb": 200.0 if tier != "low" else 100.0,
            "battery_pct_per_hour": 2.0,
            "inferences_per_hour": 36000.0,
            "max_accuracy_drop_pct": 1.0,
        },
        "sources": {
            "soc": f"{soc_detail or 'no SoC property'} ({via})",
            "abi": f"ro.product.cpu.abi ({via})",
            "cpu_clusters": f"cpufreq cpuinfo_max_freq per core and CPU part in /proc/cpuinfo ({via})",
            "ram_gb": f"MemTotal {ram_measured} GB in /proc/meminfo rounded up to the marketed size ({via})",
            "power": (
                f"placeholder: active_w assumed 0.9 W per busy core x {cores_active}, idle_w 0.35 W, battery_wh "
                + ("as given" if battery_wh else "assumed 15 Wh")
                + "; replace by measuring (power-stats HAL or battery sampling)"
            ),
            "budget": "placeholder defaults by tier; set the app's real budgets",
        },
    }
    header = (
        f"# Draft profile for {info.display_name or info.serial} ({info.serial}), written by edgeprune on {today}.\n"
        "# Hardware figures were read from the device; power and budget figures are placeholders to replace.\n"
    )
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    parse_profile(text, f"draft for {info.serial}")  # refuse to hand out a profile that does not validate
    return text
