"""The adb server and one device through it: quoted shell commands, push and pull, each with a timeout, adb
errors mapped to `DeviceError`, and a lost device reported as `_Disconnected` (the runner retries on that)."""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path
from typing import Callable, Sequence

from edgeprune.errors import DeviceError, MissingDependencyError


def _adbutils():
    try:
        import adbutils
    except ImportError:
        raise MissingDependencyError("adbutils", "android") from None
    return adbutils


def quote(argv: Sequence[object]) -> str:
    """One device-shell command line from an argument list, every argument quoted."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class _Disconnected(Exception):
    def __init__(self, stage: str, detail: str):
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.detail = detail


def _server_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def _client(host: str, port: int, timeout_s: float):
    adbutils = _adbutils()
    if not _server_up(host, port):
        raise DeviceError(f"no adb server at {host}:{port}; start it with `adb -P {port} start-server` (or plug in a device)")
    return adbutils.AdbClient(host=host, port=port, socket_timeout=timeout_s)


def _first_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _Device:
    """One device through the adb server: quoted shell commands, push/pull, each with a timeout and error mapping."""

    def __init__(self, client, serial: str, timeout_s: float):
        self.client = client
        self.serial = serial
        self.timeout_s = timeout_s
        self.dev = client.device(serial)

    def online(self, settle_s: float = 0.0) -> bool:
        """Whether the server lists the device in state 'device' (re-checked for `settle_s` seconds)."""
        deadline = time.monotonic() + settle_s
        while True:
            host, port = self.client.host, self.client.port
            if not _server_up(host, port):
                return False
            try:
                state = next((d.state for d in self.client.list() if d.serial == self.serial), None)
            except Exception:  # noqa: BLE001 - an unreachable server means no device
                return False
            if state != "device":
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.25)

    def _fail(self, stage: str, exc: BaseException, timeout: float):
        adbutils = _adbutils()
        detail = f"{type(exc).__name__}: {exc}".strip()
        timed_out = isinstance(exc, (adbutils.AdbTimeout, TimeoutError, socket.timeout))
        if not self.online(settle_s=0.0 if timed_out else 1.5):
            raise _Disconnected(stage, detail) from None
        if timed_out:
            raise DeviceError(
                f"{stage} on device {self.serial} timed out after {timeout:g} s; raise timeout_s or check the device"
            ) from None
        raise DeviceError(f"adb {stage} on device {self.serial} failed: {detail}") from None

    def _call(self, stage: str, fn: Callable, timeout: float | None = None):
        adbutils = _adbutils()
        try:
            return fn()
        except (adbutils.AdbError, OSError, EOFError) as exc:
            self._fail(stage, exc, timeout or self.timeout_s)

    def shell(self, stage: str, argv: Sequence[object] | str, timeout: float | None = None):
        """Run a command (an argument list, quoted; or a fixed command string) and return adbutils' ShellReturn."""
        cmd = argv if isinstance(argv, str) else quote(argv)
        t = timeout or self.timeout_s
        return self._call(stage, lambda: self.dev.shell2(cmd, timeout=t, v2=True), t)

    def push(self, stage: str, src: bytes | Path, dst: str, mode: int = 0o644) -> None:
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        self._call(stage, lambda: self.dev.sync.push(data, dst, mode=mode))

    def pull(self, stage: str, src: str) -> bytes:
        return self._call(stage, lambda: self.dev.sync.read_bytes(src))
