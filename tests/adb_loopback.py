"""A test-owned adb *device* on 127.0.0.1: the device side of the adb transport protocol, executing in a sandbox.

The real adb server (Debian's `adb`) attaches to it with `adb connect 127.0.0.1:PORT`, exactly as it attaches to a
phone over Wi-Fi, and then speaks the ordinary transport protocol to it:

- CNXN handshake (no AUTH is requested; an AUTH packet from the host is answered with CNXN, i.e. accepted);
- OPEN / OKAY / WRTE / CLSE streams with adb's flow control (one WRTE in flight per stream until OKAY);
- `shell:CMD` (raw, stdout+stderr merged) and `shell,v2,…:CMD` (shell protocol v2: separate stdout/stderr packets
  and an exit-code packet), plus `exec:CMD`; each runs `/bin/sh -c CMD` with its cwd at the sandbox root;
- `sync:` with STAT, LIST, SEND (DATA…DONE), RECV and QUIT (sync protocol v1).

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
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT = 0, 1, 2, 3

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


def _checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


class _Closed(Exception):
    pass


class _Stream:
    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._can_send = threading.Event()
        self._can_send.set()
        self._send_lock = threading.Lock()
        self.closed = False
        self.on_close: list = []

    # host -> device
    def feed(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def read_exact(self, n: int) -> bytes:
        with self._cond:
            while len(self._buf) < n:
                if self.closed:
                    raise _Closed()
                self._cond.wait(0.5)
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

    # device -> host, one WRTE in flight until the host's OKAY
    def send(self, data: bytes) -> None:
        limit = max(1024, min(self.conn.host_max_payload, MAX_PAYLOAD))
        with self._send_lock:
            for i in range(0, len(data), limit):
                while not self._can_send.wait(0.5):
                    if self.closed:
                        raise _Closed()
                if self.closed:
                    raise _Closed()
                self._can_send.clear()
                self.conn.write(A_WRTE, self.local_id, self.remote_id, data[i : i + limit])

    def okay(self) -> None:
        self._can_send.set()

    def mark_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._can_send.set()
        for fn in self.on_close:
            fn()

    def close_from_device(self) -> None:
        if not self.closed:
            with self._send_lock:  # after any WRTE still queued
                try:
                    self.conn.write(A_CLSE, self.local_id, self.remote_id, b"")
                except OSError:
                    pass
            self.conn.forget(self.local_id)
            self.mark_closed()


class _Connection:
    def __init__(self, device: LoopbackAdbDevice, sock: socket.socket):
        self.device = device
        self.sock = sock
        self.host_max_payload = 4096
        self._wlock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._slock = threading.Lock()
        self._next_id = 1
        self.alive = True

    def write(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        header = struct.pack("<6I", cmd, arg0, arg1, len(data), _checksum(data), cmd ^ 0xFFFFFFFF)
        with self._wlock:
            self.sock.sendall(header + data)

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return buf

    def forget(self, local_id: int) -> None:
        with self._slock:
            self._streams.pop(local_id, None)

    def shutdown(self) -> None:
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._slock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.mark_closed()

    def serve(self) -> None:
        try:
            while self.alive:
                cmd, arg0, arg1, length, _check, magic = struct.unpack("<6I", self._recv_exact(24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise _Closed()
                data = self._recv_exact(length) if length else b""
                self._dispatch(cmd, arg0, arg1, data)
        except (_Closed, OSError):
            pass
        finally:
            self.device._drop(self)
            self.shutdown()

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self.host_max_payload = arg1
            version = min(arg0, A_VERSION)
            self.write(A_CNXN, version, MAX_PAYLOAD, self.device.banner().encode())
        elif cmd == A_AUTH:  # we never ask for AUTH; accept whatever the host offers
            self.write(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode())
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            handler = self.device._service(service)
            if handler is None:
                self.write(A_CLSE, 0, arg0, b"")
                return
            with self._slock:
                local_id = self._next_id
                self._next_id += 1
                stream = _Stream(self, local_id, arg0)
                self._streams[local_id] = stream
            self.write(A_OKAY, local_id, arg0, b"")
            threading.Thread(target=self._run_service, args=(handler, stream), daemon=True).start()
        elif cmd == A_OKAY:
            with self._slock:
                stream = self._streams.get(arg1)
            if stream is not None:
                stream.okay()
        elif cmd == A_WRTE:
            with self._slock:
                stream = self._streams.get(arg1)
            if stream is None:
                self.write(A_CLSE, arg1, arg0, b"")
                return
            stream.feed(data)
            self.write(A_OKAY, stream.local_id, stream.remote_id, b"")
        elif cmd == A_CLSE:
            with self._slock:
                stream = self._streams.pop(arg1, None)
            if stream is not None:
                stream.mark_closed()

    def _run_service(self, handler, stream: _Stream) -> None:
        try:
            handler(stream)
        except (_Closed, OSError):
            pass
        finally:
            stream.close_from_device()


class LoopbackAdbDevice:
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
        self.port: int | None = None
        self.commands: list[str] = []
        self.max_concurrent_shells = 0
        self._shells = 0
        self._busy = 0
        self._lock = threading.Lock()
        self._cmd_event = threading.Condition(self._lock)
        self._conns: list[_Connection] = []
        self._procs: set[subprocess.Popen] = set()
        self._listener: socket.socket | None = None
        self._accepting = False
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

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def banner(self) -> str:
        p = self.props
        return (
            f"device::ro.product.name={p.get('ro.product.name', 'loopback')};"
            f"ro.product.model={p.get('ro.product.model', 'loopback')};"
            f"ro.product.device={p.get('ro.product.device', 'loopback')};features=shell_v2,cmd"
        )

    def start(self) -> LoopbackAdbDevice:
        self._listen(0)
        return self

    def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accepting = True
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                if not self._accepting:
                    sock.close()
                    return
                self._conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def _drop(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def pull_cable(self) -> None:
        """Close every connection, kill what runs on the device, and stop accepting (the device is gone)."""
        with self._lock:
            self._accepting = False
            conns, self._conns = self._conns, []
            procs = list(self._procs)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for c in conns:
            c.shutdown()
        for p in procs:
            _kill(p)

    def plug_in(self) -> None:
        """Accept connections again on the same port."""
        if self._listener is None:
            self._listen(self.port or 0)

    def stop(self) -> None:
        self.pull_cable()

    def wait_for_command(self, pattern: str, timeout: float = 120.0) -> str:
        """Block until a shell command matching `pattern` has started; return it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cmd_event:
            while True:
                for cmd in self.commands:
                    if rx.search(cmd):
                        return cmd
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no shell command matching {pattern!r} within {timeout} s")
                self._cmd_event.wait(left)

    # ------------------------------------------------------------------------------------------------ services

    def _service(self, service: str):
        if service.startswith(("shell", "exec:")):
            head, sep, command = service.partition(":")
            if not sep:
                return None
            args = head.split(",")[1:]
            v2 = "v2" in args and head.startswith("shell")
            if not command.strip():
                return None  # no interactive shells
            return lambda stream: self._shell(stream, command, v2)
        if service == "sync:":
            return self._sync
        return None

    def _shell(self, stream: _Stream, command: str, v2: bool) -> None:
        busy = bool(self.busy_re.search(command))
        with self._lock:
            self.commands.append(command)
            self._shells += 1
            self.max_concurrent_shells = max(self.max_concurrent_shells, self._shells)
            if busy:
                self._busy += 1
                self._write_energy()
            self._cmd_event.notify_all()
        env = {
            "PATH": f"{self.root}/system/bin:/usr/bin:/bin",
            "HOME": str(self.root / "data"),
            "TMPDIR": str(self.root / "data/local/tmp"),
            "LANG": "C.UTF-8",
            "ANDROID_ROOT": "/system",
        }
        proc = subprocess.Popen(
            ["/bin/sh", "-c", self.rewrite(command)],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._procs.add(proc)
        stream.on_close.append(lambda: _kill(proc))
        try:
            if v2:
                pumps = [
                    threading.Thread(target=self._pump, args=(stream, proc.stdout, SHELL_STDOUT), daemon=True),
                    threading.Thread(target=self._pump, args=(stream, proc.stderr, SHELL_STDERR), daemon=True),
                ]
                for t in pumps:
                    t.start()
                for t in pumps:
                    t.join()
                code = proc.wait()
                if not stream.closed:
                    stream.send(bytes([SHELL_EXIT]) + struct.pack("<I", 1) + bytes([code & 0xFF]))
            else:
                self._pump(stream, proc.stdout, None)
                proc.wait()
        finally:
            _kill(proc)
            with self._lock:
                self._procs.discard(proc)
                self._shells -= 1
                if busy:
                    self._busy -= 1
                    self._write_energy()

    @staticmethod
    def _pump(stream: _Stream, pipe, packet_id: int | None) -> None:
        try:
            while True:
                chunk = os.read(pipe.fileno(), 16384)
                if not chunk:
                    return
                if packet_id is None:
                    stream.send(chunk)
                else:
                    stream.send(bytes([packet_id]) + struct.pack("<I", len(chunk)) + chunk)
        except (_Closed, OSError):
            return

    def _sync(self, stream: _Stream) -> None:
        while True:
            head = stream.read_exact(8)
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"QUIT":
                return
            arg = stream.read_exact(n).decode("utf-8", "replace")
            if cmd == b"STAT":
                self._sync_stat(stream, arg)
            elif cmd == b"LIST":
                self._sync_list(stream, arg)
            elif cmd == b"SEND":
                self._sync_send(stream, arg)
            elif cmd == b"RECV":
                self._sync_recv(stream, arg)
            else:
                _sync_fail(stream, f"unsupported sync request {cmd!r}")
                return

    def _sync_stat(self, stream: _Stream, path: str) -> None:
        host = self.host_path(path)
        try:
            st = os.lstat(host) if host is not None else None
        except OSError:
            st = None
        if st is None:
            stream.send(b"STAT" + struct.pack("<III", 0, 0, 0))
        else:
            stream.send(b"STAT" + struct.pack("<III", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))

    def _sync_list(self, stream: _Stream, path: str) -> None:
        host = self.host_path(path)
        out = b""
        if host is not None and host.is_dir():
            for name in [".", "..", *sorted(os.listdir(host))]:
                st = os.lstat(host / name)
                raw = name.encode()
                out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
        stream.send(out + b"DONE" + b"\0" * 16)

    def _sync_send(self, stream: _Stream, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        host = self.host_path(path)
        error = None if host is not None else f"remote couldn't create file: {path}: Permission denied"
        data = bytearray()
        while True:  # the host streams DATA…DONE regardless; drain it before answering
            head = stream.read_exact(8)
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"DATA":
                data += stream.read_exact(n)
            elif cmd == b"DONE":
                mtime = n
                break
            else:
                _sync_fail(stream, f"unexpected sync packet {cmd!r} during SEND")
                raise _Closed()
        if error is None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                tmp = host.with_name(f".{host.name}.sync-tmp")
                tmp.write_bytes(bytes(data))
                os.chmod(tmp, int(mode_text) & 0o777 if mode_text.isdigit() else 0o644)
                os.utime(tmp, (mtime, mtime))
                os.replace(tmp, host)
            except OSError as exc:
                error = f"remote couldn't create file: {path}: {exc.strerror}"
        if error is None:
            stream.send(b"OKAY" + b"\0" * 4)
        else:
            _sync_fail(stream, error)

    def _sync_recv(self, stream: _Stream, path: str) -> None:
        host = self.host_path(path)
        if host is None or not host.is_file():
            _sync_fail(stream, f"remote object '{path}' does not exist")
            return
        with open(host, "rb") as fh:
            while chunk := fh.read(SYNC_DATA_MAX):
                stream.send(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.send(b"DONE" + b"\0" * 4)


def _sync_fail(stream: _Stream, message: str) -> None:
    raw = message.encode()
    stream.send(b"FAIL" + struct.pack("<I", len(raw)) + raw)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def device_files(device: LoopbackAdbDevice, device_dir: str) -> list[str]:
    """Files left under a device directory (relative paths), for checking clean-up."""
    host = device.host_path(device_dir)
    if host is None or not host.exists():
        return []
    return sorted(str(p.relative_to(host)) for p in host.rglob("*"))

