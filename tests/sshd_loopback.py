"""A real loopback "board": Debian's `sshd` started on 127.0.0.1 with throwaway keys, for the ssh runner's tests.

    with loopback_sshd(tmp_dir) as board:
        SshRunner(board.target, **board.runner_kwargs(), python=sys.executable).measure(...)

Everything it writes (host key, user key, authorized_keys, known_hosts, sshd_config, pid file, log) lives in
`tmp_dir`; the sshd it starts, and the per-connection processes that sshd forks, are ended on exit by their ids.
Nothing in the user's ~/.ssh is read or written: the client side runs with `-F /dev/null` and the test's own
identity and known_hosts files.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgeprune.emulator.fronts import descendants, keygen, wait_listening

SSHD = "/usr/sbin/sshd"


class LoopbackUnavailable(RuntimeError):
    """sshd or ssh-keygen is missing, or sshd would not start (the message carries its log)."""


@dataclass(frozen=True)
class LoopbackBoard:
    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    workdir: Path
    log: Path
    pid: int

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def runner_kwargs(self) -> dict:
        """Keyword arguments for `SshRunner` that reach this board with the test's keys and no user ssh config."""
        return {
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "ssh_options": ("-F", "/dev/null"),
        }

    def ssh_argv(self, command: str) -> list[str]:
        """An ssh command line (for test assertions) that runs `command` on the board."""
        return [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.identity_file),
            "-p", str(self.port), f"{self.user}@{self.host}", command,
        ]  # fmt: skip

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def session_pids(self) -> list[int]:
        """Processes sshd forked for connections (and the remote commands under them), deepest first."""
        return descendants(self.pid)

    def kill_sessions(self) -> list[int]:
        """SIGKILL every open connection (the remote commands included) but keep sshd listening: a board whose
        network dropped mid-run and came back."""
        pids = self.session_pids()
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        return pids

    def kill(self) -> None:
        """SIGKILL sshd itself first (no new connections), then every connection it had: a board that went away."""
        pids = self.session_pids()
        _kill(self.pid, signal.SIGKILL)
        for pid in pids + self.session_pids():
            _kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------------------------- setup


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(workdir: Path, port: int, user: str, extra: list[str]) -> str:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {workdir / 'host_ed25519'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AllowUsers {user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "LogLevel VERBOSE",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def _supports(option_line: str, workdir: Path, base: str) -> bool:
    """Whether this sshd accepts `option_line` (e.g. PerSourcePenalties, new in OpenSSH 9.8), checked with -t."""
    probe = workdir / "sshd_config.probe"
    probe.write_text(base + option_line + "\n")
    result = subprocess.run([SSHD, "-t", "-f", str(probe)], capture_output=True, text=True, timeout=30)
    probe.unlink()
    return result.returncode == 0


@contextmanager
def loopback_sshd(workdir: Path, user: str | None = None) -> Iterator[LoopbackBoard]:
    """Start a throwaway sshd on 127.0.0.1 that lets `user` (default: whoever runs the tests) in with a fresh key."""
    for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("ssh")):
        if tool is None or not os.path.exists(tool):
            raise LoopbackUnavailable("the loopback board needs openssh-server and openssh-client (apt-get install -y "
                                      "openssh-server openssh-client)")  # fmt: skip
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    user = user or getpass.getuser()
    if os.geteuid() == 0:  # privilege separation directory; sshd refuses to start without it when run as root
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    host_pub = keygen(workdir / "host_ed25519", "edgeprune-loopback-host")
    user_pub = keygen(workdir / "id_ed25519", "edgeprune-loopback-user")
    (workdir / "authorized_keys").write_text(user_pub + "\n")
    os.chmod(workdir / "authorized_keys", 0o600)

    # Connections the tests kill on purpose must not get 127.0.0.1 penalised by newer sshds (OpenSSH >= 9.8).
    extra = ["PerSourcePenalties no"] if _supports("PerSourcePenalties no", workdir, _config(workdir, 22, user, [])) else []

    log = workdir / "sshd.log"
    proc = None
    for _attempt in range(3):  # the free port can be taken between choosing it and sshd binding it
        port = _free_port()
        config = workdir / "sshd_config"
        config.write_text(_config(workdir, port, user, extra))
        with open(log, "ab") as log_fh:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh, start_new_session=True,
            )  # fmt: skip
        if wait_listening(proc, port):
            break
        _stop(proc)
        proc = None
    if proc is None:
        raise LoopbackUnavailable(f"sshd did not start on 127.0.0.1; its log:\n{log.read_text(errors='replace')[-2000:]}")

    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    board = LoopbackBoard(
        host="127.0.0.1", port=port, user=user, identity_file=workdir / "id_ed25519", known_hosts=known_hosts,
        workdir=workdir, log=log, pid=proc.pid,
    )  # fmt: skip
    try:
        yield board
    finally:
        sessions = board.session_pids()
        _stop(proc)
        for pid in sessions + board.session_pids():
            _kill(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
