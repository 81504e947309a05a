"""What devices the adb server knows and what each reports about itself (getprop, memory, CPU frequencies),
matched to a device profile (`DeviceInfo`)."""

from __future__ import annotations

from edgeprune.errors import DeviceError
from edgeprune.runners.adb.connection import _client, _Device, _Disconnected, _first_line
from edgeprune.runners.android import DeviceInfo, device_info


def read_device_info(device: _Device, state: str = "device") -> DeviceInfo:
    """getprop, /proc/meminfo, per-core cpufreq and /proc/cpuinfo of one device, as a matched `DeviceInfo`."""
    texts: dict[str, str] = {}
    errors = []
    queries = {
        "getprop": "getprop",
        "meminfo": "cat /proc/meminfo",
        "cpufreq": "grep -H . /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq",
        "cpuinfo": "cat /proc/cpuinfo",
    }
    for key, cmd in queries.items():
        try:
            r = device.shell(f"read {key}", cmd, timeout=min(device.timeout_s, 30.0))
        except DeviceError as exc:
            errors.append(str(exc))
            continue
        if r.returncode == 0:
            texts[key] = r.stdout
        else:
            errors.append(f"{cmd}: exit {r.returncode}: {_first_line(r.stderr or r.output)}")
    return device_info(device.serial, state, errors=tuple(errors), **texts)


def read_device(serial: str, adb_host: str = "127.0.0.1", adb_port: int = 5037, *, timeout_s: float = 30.0) -> DeviceInfo:
    """What one device reports about itself (for `edgeprune profile draft --on adb:SERIAL`)."""
    client = _client(adb_host, adb_port, timeout_s)
    device = _Device(client, serial, timeout_s)
    if not device.online():
        known = ", ".join(f"{d.serial} ({d.state})" for d in client.list()) or "none"
        raise DeviceError(f"device {serial} is not attached and ready; attached: {known}")
    try:
        return read_device_info(device)
    except _Disconnected as exc:
        raise DeviceError(f"device {serial} disconnected while reading its properties ({exc})") from None


def list_connected(adb_host: str = "127.0.0.1", adb_port: int = 5037, *, timeout_s: float = 30.0) -> list[DeviceInfo]:
    """Every device the adb server knows (phones and emulators; offline/unauthorized ones without details)."""
    client = _client(adb_host, adb_port, timeout_s)
    out = []
    for entry in client.list(extended=True):
        if entry.state != "device":
            out.append(DeviceInfo(serial=entry.serial, state=entry.state, is_emulator=entry.serial.startswith("emulator-")))
            continue
        try:
            out.append(read_device_info(_Device(client, entry.serial, timeout_s), entry.state))
        except _Disconnected as exc:
            out.append(DeviceInfo(serial=entry.serial, state="offline", errors=(f"disconnected while reading {exc}",)))
    return out
