"""A test-owned adb *device* on 127.0.0.1: the device side of the adb transport protocol, executing in a sandbox.

The real adb server (Debian's `adb`) attaches to it with `adb connect 127.0.0.1:PORT`, exactly as it attaches to a
phone over Wi-Fi, and then speaks the ordinary transport protocol to it. The protocol (handshake, streams, `shell:`
v1 and v2, `exec:`, `sync:`) is edgeprune's own adb device, `edgeprune.emulator.adbd.AdbDevice`, which also serves
the emulated ARM64 device; this module only says how the loopback phone runs commands (`/bin/sh -c CMD` with its
cwd at the sandbox root) and where its files are.

Device paths: the sandbox is a directory on the host standing for the device's file system. Paths under the mapped
prefixes (`/data`, `/sdcard`, `/sys`, `/proc/meminfo`, `/proc/cpuinfo` by default) are rewritten to
`<sandbox>/<path>`: in every sync request, and in shell command text wherever such a path starts a word (after a
space, quote, `=`, `:` or `(`), so `/data/local/tmp/edgeprune/m.pte` is `<sandbox>/data/local/tmp/edgeprune/m.pte`
on the host. Sync requests for any other absolute path fail, as they would for an app without root. Shell commands
run with `PATH=<sandbox>/system/bin:/usr/bin:/bin`, where the sandbox provides `getprop` (answering from the
properties the test gives), `dumpsys` (a power-stats HAL 2.0 energy meter and `battery`, when enabled) and,
optionally, `python3` (the test's Python, which has the runtimes).

The power-stats HAL: two ODPM-style rails whose cumulative energy grows at an idle power, and at a higher power
while a command matching `busy_pattern` (a measurement) runs; the device integrates this itself. Optionally the
battery's sysfs sensors (`current_now`, `voltage_now`) with fixed readings, for the battery-sampling fallback.

`pull_cable()` closes every connection and stops accepting (the adb server then sees the device vanish);
`plug_in()` accepts again on the same port.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgeprune.emulator.adbd import AdbDevice

DEFAULT_MAPPED = ("/data", "/sdcard", "/sys", "/proc/meminfo", "/proc/cpuinfo")
DEFAULT_BUSY = r"remote_measure|benchmark_model|executor_runner|onnxruntime_perf_test"

PIXEL8_PROPS = {
    "ro.product.model": "Pixel 8",
    "ro.product.manufacturer": "Google",
    "ro.product.brand": "google",
    "ro.product.device": "shiba",
    "ro.product.name": "shiba",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G3",
    "ro.board.platform": "zuma",
    "ro.hardware": "shiba",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a",
    "ro.build.version.sdk": "34",
    "ro.build.version.release": "14",
}
# /proc/meminfo of an 8 GB phone (first lines; the kernel prints more).
PIXEL8_MEMINFO = """MemTotal:        7824536 kB
MemFree:          214316 kB
MemAvailable:    3161244 kB
Buffers:            2476 kB
Cached:          2936344 kB
SwapCached:        25112 kB
Active:          2195252 kB
Inactive:        2788016 kB
SwapTotal:       4194300 kB
SwapFree:        2581504 kB
"""
PIXEL8_CPU_KHZ = (1704000,) * 4 + (2367000,) * 4 + (2914000,)
PIXEL8_CPU_PARTS = ("0xd46",) * 4 + ("0xd4d",) * 4 + ("0xd4e",)


def _cpuinfo(parts: tuple[str, ...]) -> str:
    blocks = []
    for i, part in enumerate(parts):
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 49.15\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 1\n"
        )
    return "\n".join(blocks) + "\n"


class LoopbackAdbDevice(AdbDevice):
    """An adb device on 127.0.0.1 whose file system is the sandbox directory `root`. See the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        props: dict[str, str] | None = None,
        meminfo: str = PIXEL8_MEMINFO,
        cpu_max_khz: tuple[int, ...] = PIXEL8_CPU_KHZ,
        cpu_parts: tuple[str, ...] = PIXEL8_CPU_PARTS,
        python: str | None = sys.executable,
        power_stats: bool = True,
        battery_ua_uv: tuple[int, int] | None = None,
        idle_mw: float = 40.0,
        busy_mw: float = 1200.0,
        busy_pattern: str = DEFAULT_BUSY,
        mapped_prefixes: tuple[str, ...] = DEFAULT_MAPPED,
    ):
        self.root = Path(root).resolve()
        if not re.fullmatch(r"[\w./-]+", str(self.root)):
            raise ValueError(f"sandbox path {self.root} must be shell-safe (letters, digits, . _ / -)")
        self.props = dict(PIXEL8_PROPS if props is None else props)
        self.power_stats = power_stats
        self.idle_mw, self.busy_mw = idle_mw, busy_mw
        self.busy_re = re.compile(busy_pattern)
        self.mapped = tuple(p.rstrip("/") for p in mapped_prefixes)
        alternation = "|".join(re.escape(p) for p in sorted(self.mapped, key=len, reverse=True))
        self._rewrite_re = re.compile(rf"(?<![^\s'\"=:(])(?:{alternation})(?=/|$|[\s'\";:)|&<>])")
        super().__init__()
        self._busy = 0
        self._energy_uws = [0.0, 0.0]
        self._energy_t = time.time()
        self._build_sandbox(meminfo, cpu_max_khz, cpu_parts, python)
        if battery_ua_uv is not None:  # sysfs battery sensors: current_now (µA, negative = discharging), voltage_now (µV)
            bat = self.root / "sys/class/power_supply/battery"
            bat.mkdir(parents=True, exist_ok=True)
            (bat / "current_now").write_text(f"{battery_ua_uv[0]}\n")
            (bat / "voltage_now").write_text(f"{battery_ua_uv[1]}\n")

    # ------------------------------------------------------------------------------------------------ sandbox

    def _build_sandbox(self, meminfo, cpu_max_khz, cpu_parts, python) -> None:
        r = self.root
        for d in ("system/bin", "data/local/tmp", "sdcard", "proc", ".loopback"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "system/getprop.txt").write_text("".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items())))
        (r / "proc/meminfo").write_text(meminfo)
        (r / "proc/cpuinfo").write_text(_cpuinfo(cpu_parts))
        for i, khz in enumerate(cpu_max_khz):
            d = r / f"sys/devices/system/cpu/cpu{i}/cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            (d / "cpuinfo_max_freq").write_text(f"{khz}\n")
        self._script(
            "getprop",
            f"""#!/bin/sh
f={r}/system/getprop.txt
if [ $# -eq 0 ]; then cat "$f"; exit 0; fi
v=$(grep -F "[$1]: [" "$f" | head -n 1 | sed 's/^\\[[^]]*\\]: \\[\\(.*\\)\\]$/\\1/')
if [ -z "$v" ] && [ $# -ge 2 ]; then v=$2; fi
printf '%s\\n' "$v"
""",
        )
        hal = r / ".loopback/hal2.awk"
        hal.write_text(
            r"""BEGIN {
  print "";
  print "============= PowerStats HAL 2.0 energy consumers ==============";
  printf "%-12s : %14.2f mWs\n", "CPU_CLUSTER", 0;
  print "========== End of PowerStats HAL 2.0 energy consumers ==========";
  print "";
  print "============= PowerStats HAL 2.0 energy meter ==============";
  printf "  %32s   %18s\n", "Channel", "Cumulative Energy";
}
{ e = $3 + $4 * 1000.0 * (now - $2); printf "  %32s   %14.2f mWs\n", $1, e / 1000.0 }
END { print "========== End of PowerStats HAL 2.0 energy meter =========="; }
"""
        )
        self._script(
            "dumpsys",
            f"""#!/bin/sh
case "$1" in
  android.hardware.power.stats.IPowerStats/default)
    if [ -f {r}/.loopback/energy ]; then
      awk -v now="$(date +%s.%N)" -f {hal} {r}/.loopback/energy
    else
      echo "Can't find service: $1" >&2
    fi ;;
  *) echo "Can't find service: $1" >&2 ;;
esac
""",
        )
        if python:
            self._script("python3", f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
        self._write_energy()

    def _script(self, name: str, text: str) -> None:
        path = self.root / "system/bin" / name
        path.write_text(text)
        path.chmod(0o755)

    def _write_energy(self) -> None:
        """Advance the rails' integrals to now and record the power they draw from now on (HAL state file)."""
        path = self.root / ".loopback/energy"
        if not self.power_stats:
            path.unlink(missing_ok=True)
            return
        now = time.time()
        busy = self._busy > 0
        powers = (self.idle_mw * 0.25 + (self.busy_mw if busy else 0.0), self.idle_mw * 0.75)
        prev = getattr(self, "_powers", powers)
        self._energy_uws = [e + p * 1000.0 * (now - self._energy_t) for e, p in zip(self._energy_uws, prev)]
        self._energy_t, self._powers = now, powers
        names = ("[S2M_VDD_CPUCL2]:CPU(BIG)", "[S4M_VDD_CPUCL0]:CPU(LITTLE)")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{n} {now:.6f} {e:.3f} {p:.3f}\n" for n, e, p in zip(names, self._energy_uws, powers)))
        os.replace(tmp, path)

    def host_path(self, device_path: str) -> Path | None:
        """The host path standing for `device_path`, or None when it is outside the mapped prefixes."""
        if not device_path.startswith("/"):
            return self.root / "data/local/tmp" / device_path
        for p in self.mapped:
            if device_path == p or device_path.startswith(p + "/"):
                return Path(str(self.root) + device_path)
        return None

    def rewrite(self, command: str) -> str:
        return self._rewrite_re.sub(lambda m: str(self.root) + m.group(0), command)

    # ------------------------------------------------------------------------------------------------ network

    def banner(self) -> str:
        p = self.props
        return (
            f"device::ro.product.name={p.get('ro.product.name', 'loopback')};"
            f"ro.product.model={p.get('ro.product.model', 'loopback')};"
            f"ro.product.device={p.get('ro.product.device', 'loopback')};features=shell_v2,cmd"
        )

    # ------------------------------------------------------------------------------------------------ the hooks

    def shell_command(self, command: str) -> tuple[list[str], str, dict[str, str]]:
        env = {
            "PATH": f"{self.root}/system/bin:/usr/bin:/bin",
            "HOME": str(self.root / "data"),
            "TMPDIR": str(self.root / "data/local/tmp"),
            "LANG": "C.UTF-8",
            "ANDROID_ROOT": "/system",
        }
        return ["/bin/sh", "-c", self.rewrite(command)], str(self.root), env

    def shell_started(self, command: str) -> None:
        if self.busy_re.search(command):
            self._busy += 1
            self._write_energy()

    def shell_finished(self, command: str) -> None:
        if self.busy_re.search(command):
            self._busy -= 1
            self._write_energy()


def device_files(device: LoopbackAdbDevice, device_dir: str) -> list[str]:
    """Files left under a device directory (relative paths), for checking clean-up."""
    host = device.host_path(device_dir)
    if host is None or not host.exists():
        return []
    return sorted(str(p.relative_to(host)) for p in host.rglob("*"))



@contextmanager
def private_adb_server(home: Path) -> Iterator[tuple[int, dict]]:
    """A real adb server (`adb -P PORT nodaemon server`) on a free port, its key under `home`; killed at the end.
    Yields (port, env for `adb` commands)."""
    import shutil
    import socket
    import subprocess

    adb = shutil.which("adb")
    assert adb, "the adb client (Debian package 'adb') must be installed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("ANDROID_SERIAL", "ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_PORT")}
    env["HOME"] = str(home)
    log = open(home / "adb-server.log", "w")
    proc = subprocess.Popen([adb, "-P", str(port), "nodaemon", "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"adb server did not start: {(home / 'adb-server.log').read_text()}") from None
                time.sleep(0.1)
        yield port, env
    finally:
        subprocess.run([adb, "-P", str(port), "kill-server"], env=env, capture_output=True, timeout=15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
