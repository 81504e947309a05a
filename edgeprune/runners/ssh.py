"""Measures artifacts on a Linux board (Raspberry Pi, Jetson, ...) over ssh.

One measurement is four ssh commands, each with a timeout, each built from an argument list whose every element is
`shlex.quote`d for the remote shell (nothing the user gave is ever interpolated into a shell string unquoted):

1. `mktemp -d` a private directory on the board and unpack, from a tar stream on stdin, the standalone
   `remote_measure.py` (stdlib + numpy + the runtime, never edgeprune), the artifact and `inputs.npy` (and, for a
   `.pte` on a board without its own native runner, the runner bundle from the runner cache);
2. run `PYTHON remote_measure.py --artifact ... --runs ...` under the board's `timeout`, which prints result JSON;
   a `.pte` runs instead with edgeprune's native ExecuTorch runner (`edgeprune_executorch_runner`, same arguments
   and result fields, no Python or torch needed) wherever one exists: given as `native_runner`, on the board's
   PATH, or in the runner cache for the board's ABI;
3. `cat` the outputs back;
4. `rm -rf` the directory, always (in `finally`), also after a failure.

Before the first measurement one more command reads the board's machine (`uname -m`), the native runner on its
PATH (with its ELF header, so a runner built for another architecture is named, not run) and the emulation marker
`/etc/edgeprune/emulated` of an edgeprune emulated device: its measurements carry `extra["emulated"]`.

The system `ssh` client is used (`BatchMode=yes`, `ConnectTimeout`, `ServerAliveInterval`), so keys, agents and
~/.ssh/config work as they do for the user. A connection that is refused, reset or dropped mid-run (ssh's exit 255)
is retried once, from the start, in a fresh remote directory; a second failure is a `DeviceError` naming the board.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import shlex
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError, DeviceError
from edgeprune.outputs import read_remote
from edgeprune.runners import native_runner as native
from edgeprune.runners.base import Runner, check_request
from edgeprune.types import Artifact, Measurement

log = logging.getLogger(__name__)

REMOTE_SCRIPT = Path(__file__).with_name("remote_measure.py")
CONNECT_TIMEOUT_S = 10
CLEANUP_TIMEOUT_S = 30.0
ATTEMPTS = 2
"""A run that loses its connection is tried once more."""

_USER = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_HOST = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_IPV6 = r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._-]+)?\]"
_TARGET = re.compile(rf"^(?:(?P<user>{_USER})@)?(?P<host>{_HOST}|{_IPV6})(?::(?P<port>[0-9]+))?$")

_RUNTIME_PACKAGE = {".pte": "executorch", ".tflite": "ai-edge-litert", ".onnx": "onnxruntime", ".ort": "onnxruntime"}
"""The pip package that brings each artifact type's runtime onto the board."""
_MODULE_PACKAGE = {"numpy": "numpy", "executorch": "executorch", "torch": "executorch",
                   "ai_edge_litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}  # fmt: skip
"""A module remote_measure.py imports -> the pip package that provides it on the board."""

_NOT_RETRIED = (
    ("Permission denied", "the board refused the login; check the user name and the identity file (-i)"),
    ("Host key verification failed", "the board's host key is not in known_hosts or changed; connect once with "
                                     "`ssh` by hand to check and accept it, or pass known_hosts"),  # fmt: skip
    ("Could not resolve hostname", "check the host name"),
    ("Bad configuration option", "check ssh_options"),
    ("Too many authentication failures", "pass the right identity file"),
)
"""ssh failures (exit 255) that a second try cannot fix, with the fix to suggest."""


def parse_ssh_target(text: str) -> tuple[str | None, str, int | None]:
    """`user@host:port`, `user@host`, `host:port` or `host` (an IPv6 address in brackets) -> (user, host, port).

    A missing user or port is None: ssh then takes it from ~/.ssh/config or its defaults.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty ssh target; expected user@host:port, user@host or host")
    match = _TARGET.match(text.strip())
    if match is None:
        raise ConfigError(
            f"ssh target '{text}' is malformed; expected user@host:port, user@host or host "
            "(letters, digits, '.', '_', '-'; an IPv6 address in brackets)"
        )
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ConfigError(f"ssh target '{text}': port {port} is out of range; expected 1-65535")
    return match.group("user"), match.group("host"), None if port is None else int(port)


class _ConnectionLost(DeviceError):
    """ssh itself failed (exit 255: refused, reset, closed by the remote host): worth one more try."""


class SshRunner(Runner):
    """Runs artifacts on a board reachable over ssh, with the board's own Python and runtime package."""

    def __init__(
        self,
        target: str,
        *,
        identity_file: str | None = None,
        known_hosts: str | None = None,
        python: str = "python3",
        remote_dir: str | None = None,
        timeout_s: float = 600,
        ssh_options: tuple[str, ...] = (),
        native_runner: str | Path | None = None,
        cache_root: Path | None = None,
    ):
        self.user, self.host, self.port = parse_ssh_target(target)
        if not python or not isinstance(python, str):
            raise ConfigError(f"remote python {python!r} is empty; pass the board's python, e.g. 'python3'")
        if not timeout_s or timeout_s <= 0:
            raise ConfigError(f"timeout_s={timeout_s}: need a positive number of seconds")
        if remote_dir is not None and not str(remote_dir).startswith("/"):
            raise ConfigError(f"remote_dir '{remote_dir}' must be an absolute path on the board")
        if identity_file is not None and not Path(identity_file).is_file():
            raise ConfigError(f"ssh identity file '{identity_file}' does not exist")
        self.identity_file = identity_file
        self.known_hosts = known_hosts
        self.python = python
        self.remote_dir = None if remote_dir is None else str(remote_dir)
        self.timeout_s = float(timeout_s)
        self.ssh_options = tuple(str(o) for o in ssh_options)
        self.native_runner = None if native_runner is None else native.bundle_program(Path(native_runner))
        self.cache_root = cache_root
        self._facts: native.DeviceFacts | None = None
        self.board = ("" if self.user is None else f"{self.user}@") + self.host + (
            "" if self.port is None else f":{self.port}"
        )
        self.where = f"ssh:{self.board}"

    # ------------------------------------------------------------------ public

    def measure(
        self,
        artifact: Artifact,
        inputs: np.ndarray,
        *,
        warmup: int = 10,
        runs: int = 50,
        threads: int = 1,
        energy: bool = True,  # no energy measurement here
    ) -> Measurement:
        inputs = np.asarray(inputs)
        check_request(artifact, inputs, warmup, runs, threads)
        path = Path(artifact.path)
        suffix = path.suffix
        if suffix not in _RUNTIME_PACKAGE:
            raise ConfigError(f"artifact '{path.name}' has an unknown type '{suffix}'; known: {', '.join(_RUNTIME_PACKAGE)}")

        with tempfile.TemporaryDirectory(prefix="edgeprune-ssh-") as local:
            bundle = Path(local) / "bundle.tar"
            failures: list[str] = []
            lost: _ConnectionLost | None = None
            choice: native.NativeChoice | None = None
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    if attempt == 1 or self._facts is None:
                        choice = self._native_choice(suffix)
                        _write_bundle(bundle, path, suffix, np.ascontiguousarray(inputs, dtype=np.float32),
                                      choice.bundle if choice else None)  # fmt: skip
                    result, raw, timings = self._measure_once(bundle, suffix, warmup, runs, threads, choice)
                    break
                except _ConnectionLost as exc:
                    lost = exc
                    failures.append(str(exc))
                    if attempt < ATTEMPTS:
                        log.warning("%s; retrying once", exc)
            else:
                first = failures[0].split(": ", 1)[-1]
                earlier = "" if failures[0] == failures[-1] else f"; the first try: {first}"
                raise DeviceError(
                    f"{failures[-1]} (tried {ATTEMPTS} times{earlier}); check that the board is up and reachable over ssh"
                ) from lost
        outputs, named = read_remote(raw, artifact.outputs, len(inputs), f"board {self.board}")
        return self._measurement(result, outputs, len(inputs), warmup, runs, threads, path, attempt, failures, timings,
                                 choice, named)  # fmt: skip

    def facts(self) -> native.DeviceFacts:
        """The board's machine, native runner and emulation marker (read once)."""
        if self._facts is None:
            proc = self._ssh(native.PROBE_SCRIPT, "reading the board", timeout_s=min(self.timeout_s, 120.0))
            self._facts = native.parse_probe(proc.stdout)
        return self._facts

    def _native_choice(self, suffix: str) -> native.NativeChoice | None:
        if suffix != ".pte":
            self.facts()
            return None
        facts = self.facts()
        return native.choose_native(facts, facts.abi, self.where, explicit=self.native_runner, cache_root=self.cache_root)

    # ------------------------------------------------------------------ one attempt

    def _measure_once(
        self, bundle: Path, suffix: str, warmup: int, runs: int, threads: int, choice: native.NativeChoice | None
    ) -> tuple[dict, np.ndarray, dict[str, float]]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        remote = self._setup(bundle)
        timings["upload_s"] = time.perf_counter() - start
        try:
            if choice is None:  # remote_measure.py writes every output to an .npz; the native runner the first (.npy)
                program, out_file = [self.python, f"{remote}/remote_measure.py"], f"{remote}/outputs.npz"
            else:
                program, out_file = [choice.device_path or f"{remote}/{native.RUNNER_NAME}"], f"{remote}/outputs.npy"
            argv = [
                *program,
                "--artifact", f"{remote}/model{suffix}",
                "--inputs", f"{remote}/inputs.npy",
                "--outputs", out_file,
                "--warmup", str(warmup), "--runs", str(runs), "--threads", str(threads),
            ]  # fmt: skip
            start = time.perf_counter()
            proc = self._ssh(_under_timeout(argv, self.timeout_s), "measuring", timeout_s=self.timeout_s + 10)
            timings["remote_run_s"] = time.perf_counter() - start
            if proc.returncode != 0:
                raise self._remote_failure(proc, suffix, choice)
            result = _parse_result(proc.stdout, self.where)
            start = time.perf_counter()
            fetched = self._ssh(shlex.join(["cat", "--", out_file]), "copying the outputs back",
                                text=False)  # fmt: skip
            timings["download_s"] = time.perf_counter() - start
            if fetched.returncode != 0:
                raise DeviceError(f"board {self.board}: cannot read the outputs back: {_last_line(fetched.stderr)}")
            return result, fetched.stdout, timings
        finally:
            self._cleanup(remote)

    def _setup(self, bundle: Path) -> str:
        """Make a private directory on the board, unpack the bundle into it, return its path."""
        template = f"{self.remote_dir.rstrip('/') or ''}/edgeprune.XXXXXXXX" if self.remote_dir else None
        mktemp = shlex.join(["mktemp", "-d", template] if template else ["mktemp", "-d"])
        # The only shell code here is fixed text; the one user value (the template) is quoted by shlex.
        script = f'd=$({mktemp}) || exit 3; printf "%s\\n" "$d"; tar -x -f - -C "$d" || exit 4'
        with open(bundle, "rb") as stdin:
            proc = self._ssh(script, "copying the artifact", stdin=stdin)
        remote = proc.stdout.splitlines()[0].strip() if proc.stdout.strip() else ""
        if proc.returncode != 0:
            if remote.startswith("/"):
                self._cleanup(remote)
            where = f" in '{self.remote_dir}'" if self.remote_dir else ""
            what = {3: f"cannot make a temporary directory{where}", 4: "cannot unpack the files (is `tar` installed?)"}
            reason = what.get(proc.returncode, f"exit {proc.returncode}")
            raise DeviceError(f"board {self.board}: {reason}: {_last_line(proc.stderr)}")
        if not remote.startswith("/"):
            raise DeviceError(f"board {self.board}: mktemp printed {remote!r}, not a directory")
        return remote

    def _cleanup(self, remote: str) -> None:
        try:
            proc = self._ssh(shlex.join(["rm", "-rf", "--", remote]), "cleaning up",
                             timeout_s=min(self.timeout_s, CLEANUP_TIMEOUT_S))  # fmt: skip
        except DeviceError as exc:
            log.warning("could not remove %s on %s: %s", remote, self.board, exc)
            return
        if proc.returncode != 0:
            log.warning("could not remove %s on %s: %s", remote, self.board, _last_line(proc.stderr))

    # ------------------------------------------------------------------ ssh

    def _ssh_argv(self, command: str) -> list[str]:
        argv = ["ssh", *self.ssh_options, "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]  # fmt: skip
        if self.identity_file:
            argv += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        argv += ["--", host if self.user is None else f"{self.user}@{host}", command]
        return argv

    def _ssh(
        self, command: str, step: str, *, stdin=None, timeout_s: float | None = None, text: bool = True
    ) -> subprocess.CompletedProcess:
        """Run `command` (already quoted for the remote shell) on the board; classify ssh's own failures."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            proc = subprocess.run(
                self._ssh_argv(command),
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                capture_output=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"board {self.board}: {step} timed out after {timeout_s:g} s; raise the timeout (timeout_s) or check the board"
            ) from exc
        except FileNotFoundError as exc:
            raise DeviceError("the `ssh` client is not installed on this machine (apt-get install openssh-client)") from exc
        stderr = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        if text and isinstance(proc.stdout, bytes):
            proc = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"), stderr)
        else:
            proc = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr)
        if proc.returncode == 255:
            reason = _last_line(stderr).rstrip(".") or "ssh exited with status 255"
            for needle, fix in _NOT_RETRIED:
                if needle in stderr:
                    raise DeviceError(f"board {self.board}: ssh failed while {step}: {reason}; {fix}")
            what = "cannot connect" if "connect to host" in stderr else "connection lost"
            raise _ConnectionLost(f"board {self.board}: {what} while {step}: {reason}")
        return proc

    def _remote_failure(
        self, proc: subprocess.CompletedProcess, suffix: str, choice: native.NativeChoice | None = None
    ) -> DeviceError:
        stderr = proc.stderr
        if choice is not None:
            if proc.returncode == 124:
                return DeviceError(f"board {self.board}: the measurement timed out after {self.timeout_s:g} s; raise the "
                                   "timeout (timeout_s) or measure fewer runs")  # fmt: skip
            return DeviceError(f"board {self.board}: {native.RUNNER_NAME} failed (exit {proc.returncode}): "
                               f"{_last_line(stderr) or 'no message'}")  # fmt: skip
        missing = re.search(r"^(?:ModuleNotFoundError|ImportError): No module named '([A-Za-z0-9_.]+)'", _last_line(stderr))
        if missing:
            module = missing.group(1).split(".")[0]
            package = _MODULE_PACKAGE.get(module, module)
            needs = f"the {_RUNTIME_PACKAGE[suffix]} runtime" if package == _RUNTIME_PACKAGE[suffix] else "remote_measure.py"
            return DeviceError(
                f"board {self.board}: python '{self.python}' there cannot import '{module}', which {needs} needs; "
                f"install it on the board: {self.python} -m pip install {package}"
            )
        if proc.returncode == 124:
            return DeviceError(
                f"board {self.board}: the measurement timed out after {self.timeout_s:g} s; raise the timeout (timeout_s) "
                "or measure fewer runs"
            )
        if proc.returncode == 127:
            return DeviceError(
                f"board {self.board}: python '{self.python}' not found there ({_last_line(stderr)}); {suffix} artifacts "
                f"are measured with remote_measure.py, which needs python3 with numpy and {_RUNTIME_PACKAGE[suffix]} "
                "on the board: install them or pass the path of its python"
                + ("" if suffix != ".pte" else f" (or give it {native.RUNNER_NAME}, which needs no Python)")
            )
        return DeviceError(
            f"board {self.board}: remote_measure.py failed (exit {proc.returncode}): {_last_line(stderr) or 'no message'}"
        )

    # ------------------------------------------------------------------ result

    def _measurement(
        self, result: dict, outputs: np.ndarray, n_inputs: int, warmup: int, runs: int, threads: int, path: Path,
        attempts: int, failures: list[str], timings: dict[str, float], choice: native.NativeChoice | None = None,
        named_outputs: dict[str, np.ndarray] | None = None,
    ) -> Measurement:  # fmt: skip
        if outputs.ndim < 1 or len(outputs) != n_inputs:
            raise DeviceError(
                f"board {self.board}: remote_measure.py returned outputs of shape {outputs.shape} for {n_inputs} inputs"
            )
        try:
            p50, p90, mean = (float(result[k]) for k in ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms"))
            runner = str(result["runner"])
            versions = {str(k): str(v) for k, v in dict(result["runtime_versions"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(f"board {self.board}: remote_measure.py's result lacks {exc}") from exc
        growth, peak = result.get("rss_growth_mb"), result.get("peak_rss_mb")
        emulated = self._facts.emulated if self._facts else None
        program = "remote_measure.py" if choice is None else native.RUNNER_NAME
        if emulated:
            memory_mb, method = None, f"not measured: emulated device ({emulated})"
        elif growth is not None and growth > 0:
            memory_mb = float(growth)
            method = (f"RSS growth of the {program} process on the board, from before the runtime was imported to after "
                      "the timed runs (runtime library + program + arena + I/O)")  # fmt: skip
        elif peak is not None:
            memory_mb = float(peak)
            method = f"peak RSS (VmHWM) of the whole {program} process on the board (runtime + model, and Python if used)"
        else:
            memory_mb, method = None, "not measured: the board has no /proc/self/status"
        extra = {
            "board": self.board,
            "measured_with": program,
            **({"emulated": emulated} if emulated else {}),
            **({"native_runner": {"path": choice.device_path or str(choice.bundle), "on_device": bool(choice.device_path),
                                  "abi": choice.abi}} if choice else {"remote_python": self.python}),
            "machine": result.get("machine", {}),
            "rss_growth_mb": growth,
            "peak_rss_mb": peak,
            "remote_size_bytes": result.get("size_bytes"),
            "schema_version": result.get("schema_version"),
            "attempts": attempts,
            **({"retried_after": failures} if failures else {}),
            **{k: round(v, 4) for k, v in timings.items()},
        }
        return Measurement(
            latency_p50_ms=p50,
            latency_p90_ms=p90,
            latency_mean_ms=mean,
            runs=int(result.get("runs", runs)),
            warmup_runs=int(result.get("warmup_runs", warmup)),
            threads=int(result.get("threads", threads)),
            size_bytes=path.stat().st_size,
            peak_memory_mb=memory_mb,
            memory_method=method,
            where=self.where,
            runner=runner,
            runtime_versions=versions,
            outputs=np.asarray(outputs, dtype=np.float32),
            named_outputs=named_outputs or {},
            extra=extra,
        )


# ---------------------------------------------------------------------------------------------- helpers


def _write_bundle(bundle: Path, artifact: Path, suffix: str, inputs: np.ndarray, runner: Path | None = None) -> None:
    """A ustar archive (which GNU and busybox tar both read) of the script, the artifact and the inputs; with
    `runner`, also that native runner program and its `lib/` folder."""
    buf = io.BytesIO()
    np.save(buf, inputs)
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(REMOTE_SCRIPT, arcname="remote_measure.py", filter=_plain)
        if runner is not None:
            tar.add(runner, arcname=native.RUNNER_NAME, filter=_executable)
            for lib in sorted((runner.parent / "lib").glob("*.so*")):
                tar.add(lib.resolve(), arcname=f"lib/{lib.name}", filter=_plain)
        tar.add(artifact, arcname=f"model{suffix}", filter=_plain)
        info = _plain(tarfile.TarInfo("inputs.npy"))
        info.size = buf.tell()
        buf.seek(0)
        tar.addfile(info, buf)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    info.mtime = int(time.time())
    return info


def _executable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info = _plain(info)
    info.mode = 0o755
    return info


def _under_timeout(argv: list[str], timeout_s: float) -> str:
    """`argv` quoted for the remote shell, run under the board's `timeout` when it has one, so that a run we give up
    on does not keep running on the board."""
    command = shlex.join(argv)
    limit = str(max(1, math.ceil(timeout_s)))
    return (
        f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {limit} {command}; else exec {command}; fi"
    )


def _parse_result(stdout: str, where: str) -> dict:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise DeviceError(f"{where}: remote_measure.py printed no result JSON; its output ended with: {_last_line(stdout)!r}")


def _last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
