"""The device side of adb's transport protocol on 127.0.0.1, and the emulated ARM64 device behind it.

A real adb server attaches with `adb connect 127.0.0.1:PORT`, as to a phone over Wi-Fi, and speaks the ordinary
transport protocol:

- CNXN handshake (no AUTH is requested; an AUTH packet from the host is answered with CNXN, i.e. accepted);
- OPEN / OKAY / WRTE / CLSE streams with adb's flow control (one WRTE in flight per stream until OKAY);
- `shell:CMD` (raw, stdout+stderr merged) and `shell,v2,...:CMD` (shell protocol v2: separate stdout/stderr packets
  and an exit-code packet), plus `exec:CMD`;
- `sync:` with STAT, LIST, SEND (DATA...DONE), RECV and QUIT (sync protocol v1).

`AdbDevice` is the protocol; a subclass says how a shell command runs (`shell_command`) and which host file stands
for a device path (`host_path`). `EmulatedAdbDevice` runs every shell command inside an emulated device's root
(`chroot ROOT /bin/sh -c CMD`, qemu through binfmt_misc, `QEMU_CPU` pinned) and maps device paths into the root:
ARM64 Debian behind the adb protocol, not Android's userland (`getprop` answers from the root's properties file).
The test suite's loopback phone (tests/adb_loopback.py) is another subclass.

Run as a program (`python -m edgeprune.emulator.adbd --root ROOT --cpu cortex-a76 --port PORT`), it serves one
emulated device until it is sent SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import re
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
    def __init__(self, device: AdbDevice, sock: socket.socket):
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

class AdbDevice:
    """An adb device on 127.0.0.1. Subclasses define `banner`, `shell_command` and `host_path`."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.commands: list[str] = []
        self.max_concurrent_shells = 0
        self._shells = 0
        self._lock = threading.Lock()
        self._cmd_event = threading.Condition(self._lock)
        self._conns: list[_Connection] = []
        self._procs: set[subprocess.Popen] = set()
        self._listener: socket.socket | None = None
        self._accepting = False

    # ------------------------------------------------------------------------------------------------ hooks

    def banner(self) -> str:
        """The CNXN banner: `device::ro.product.name=...;...;features=shell_v2,cmd`."""
        raise NotImplementedError

    def shell_command(self, command: str) -> tuple[list[str], str, dict[str, str]]:
        """(argv, cwd, env) of the host process that runs the device shell command `command`."""
        raise NotImplementedError

    def host_path(self, device_path: str) -> Path | None:
        """The host path standing for `device_path`, or None when the device refuses it."""
        raise NotImplementedError

    def shell_started(self, command: str) -> None:
        """Called (under the device lock) when a shell command starts."""

    def shell_finished(self, command: str) -> None:
        """Called (under the device lock) when a shell command has ended."""

    # ------------------------------------------------------------------------------------------------ network

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> AdbDevice:
        self._listen(port)
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
        with self._lock:
            self.commands.append(command)
            self._shells += 1
            self.max_concurrent_shells = max(self.max_concurrent_shells, self._shells)
            self.shell_started(command)
            self._cmd_event.notify_all()
        argv, cwd, env = self.shell_command(command)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
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
                self.shell_finished(command)

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


class EmulatedAdbDevice(AdbDevice):
    """An emulated device's root behind the adb protocol: shell commands run chrooted into it, with `QEMU_CPU`
    pinned; device paths are paths inside the root (a relative path is under /data/local/tmp)."""

    def __init__(self, root: Path, cpu: str, *, model: str = "edgeprune emulated arm64"):
        super().__init__()
        self.root = Path(root).resolve()
        self.cpu = cpu
        self.model = model

    def banner(self) -> str:
        name = "emulated-arm64"
        model = self.model.replace(";", ",").replace(" ", "_")
        return f"device::ro.product.name={name};ro.product.model={model};ro.product.device={name};features=shell_v2,cmd"

    def shell_command(self, command: str) -> tuple[list[str], str, dict[str, str]]:
        env = {"QEMU_CPU": self.cpu, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
               "TMPDIR": "/data/local/tmp", "LANG": "C.UTF-8"}  # fmt: skip
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [chroot, str(self.root), "/bin/sh", "-c", f"cd / && {command}"], "/", env

    def host_path(self, device_path: str) -> Path | None:
        path = device_path if device_path.startswith("/") else "/data/local/tmp/" + device_path
        norm = posixpath.normpath(path)
        host = self.root / norm.lstrip("/")
        parent = os.path.realpath(host.parent)  # a symlink must not lead out of the root
        if parent != str(self.root) and not parent.startswith(str(self.root) + os.sep):
            return None
        return host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve an emulated device's root as an adb device on 127.0.0.1.")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--cpu", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="edgeprune emulated arm64")
    parser.add_argument("--ready-file", type=Path, help="write the port here once listening")
    args = parser.parse_args(argv)
    device = EmulatedAdbDevice(args.root, args.cpu, model=args.model).start(args.port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(f"{device.port}\n")
        os.replace(tmp, args.ready_file)
    while not done.wait(1.0):
        pass
    device.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
