"""Serve an emulated device's root as an ssh board and as an adb device on 127.0.0.1; stop what was started.

- **ssh:** this machine's `sshd` with its own config, host key and a key pair made for it (in the run folder beside
  the root, never in ~/.ssh), `ChrootDirectory ROOT` and `SetEnv QEMU_CPU=<cpu>`: a session's shell, python and
  programs are the root's aarch64 ones, run by qemu through binfmt_misc on the pinned core.
- **adb:** `python -m edgeprune.emulator.adbd`, edgeprune's own adb device (see adbd.py). When an adb server is
  already listening on the given port, it is told to `adb connect` the device (and `disconnect` at stop); no adb
  server is started.

What runs is recorded in `<root>.run/state.json` (process ids, ports, keys); `stop()` ends exactly those processes
(each checked by its command line first) and the sessions sshd forked for them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprune._io import atomic_write_json
from edgeprune.emulator.root import Root
from edgeprune.errors import ConfigError, DeviceError

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 20.0
STATE = "state.json"


@dataclass(frozen=True)
class Running:
    """An emulated device being served: where to reach it and what to stop."""

    root: str
    emulated: str
    run_dir: str
    ssh_port: int | None
    identity_file: str | None
    known_hosts: str | None
    sshd_pid: int | None
    adb_port: int | None
    adbd_pid: int | None
    adb_server_port: int | None
    """The adb server that was told to connect the device (None: not connected by us)."""

    @property
    def ssh_target(self) -> str | None:
        return None if self.ssh_port is None else f"root@127.0.0.1:{self.ssh_port}"

    @property
    def adb_serial(self) -> str | None:
        return None if self.adb_port is None else f"127.0.0.1:{self.adb_port}"

    def ssh_arguments(self) -> list[str]:
        """`--on ... --identity ... --known-hosts ...` for `edgeprune validate` (and build/calibrate) over ssh."""
        if self.ssh_target is None:
            return []
        return ["--on", f"ssh:{self.ssh_target}", "--identity", str(self.identity_file), "--known-hosts",
                str(self.known_hosts)]  # fmt: skip

    def adb_arguments(self) -> list[str]:
        if self.adb_serial is None:
            return []
        return ["--on", f"adb:{self.adb_serial}"] + (
            [] if self.adb_server_port in (None, 5037) else ["--adb-port", str(self.adb_server_port)]
        )

    def to_dict(self) -> dict:
        return asdict(self)


def run_dir(root: Path) -> Path:
    return root.with_name(root.name + ".run")


def running(root: Path) -> Running | None:
    """The recorded fronts of `root` while at least one of them is alive, else None."""
    path = run_dir(root) / STATE
    try:
        state = Running(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    alive = [pid for pid in (state.sshd_pid, state.adbd_pid) if pid is not None and _ours(pid, state)]
    return state if alive else None


# ------------------------------------------------------------------------------------------------ start


def start(root: Root, *, ssh: bool = True, adb: bool = True, ssh_port: int = 0, adb_port: int = 0,
          adb_server_port: int = 5037) -> Running:  # fmt: skip
    """Serve `root` over ssh and/or adb on 127.0.0.1 (port 0: a free one). Refused while it is already served."""
    if not ssh and not adb:
        raise ConfigError("nothing to start: both the ssh and the adb front are turned off")
    current = running(root.path)
    if current is not None:
        raise ConfigError(f"the emulated device {root.path.name} is already served ({_where(current)}); stop it first "
                          "with `edgeprune emulator stop`")  # fmt: skip
    folder = run_dir(root.path)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    sshd_pid = adbd_pid = None
    identity = known_hosts = None
    connected = None
    try:
        if ssh:
            ssh_port, sshd_pid, identity, known_hosts = _start_sshd(root, folder, ssh_port)
        if adb:
            adb_port, adbd_pid = _start_adbd(root, folder, adb_port)
            if _adb_connect(adb_server_port, f"127.0.0.1:{adb_port}"):
                connected = adb_server_port
        state = Running(
            root=str(root.path), emulated=root.recipe.marker, run_dir=str(folder),
            ssh_port=ssh_port if ssh else None, identity_file=identity, known_hosts=known_hosts, sshd_pid=sshd_pid,
            adb_port=adb_port if adb else None, adbd_pid=adbd_pid, adb_server_port=connected,
        )  # fmt: skip
        atomic_write_json(folder / STATE, state.to_dict())
        return state
    except BaseException:
        for pid in (sshd_pid, adbd_pid):
            if pid is not None:
                _end(pid)
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_chroot_path(root: Path) -> None:
    """sshd's ChrootDirectory needs every component of the path owned by root and writable by no one else."""
    for part in [root, *root.parents]:
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise DeviceError(
                f"sshd refuses to chroot into {root}: '{part}' is not owned by root or is writable by others; keep "
                "the emulated device in a root-owned folder (set EDGEPRUNE_EMULATOR_DIR, e.g. to /var/cache/edgeprune)"
            )


def keygen(path: Path, comment: str) -> str:
    """A fresh passphrase-less ed25519 key pair at `path` (and `path`.pub); returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)  # fmt: skip
    return path.with_name(path.name + ".pub").read_text().strip()


def _sshd_config(root: Root, folder: Path, port: int) -> str:
    lines = [
        f"Port {port}", "ListenAddress 127.0.0.1",
        f"HostKey {folder / 'host_ed25519'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}", "AllowUsers root", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "UseDNS no", "PrintMotd no", "X11Forwarding no", "AllowTcpForwarding no", "PermitTTY no",
        f"ChrootDirectory {root.path}", f"SetEnv QEMU_CPU={root.recipe.cpu}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _start_sshd(root: Root, folder: Path, port: int) -> tuple[int, int, str, str]:
    for tool in (SSHD, shutil.which("ssh-keygen")):
        if tool is None or not os.path.exists(tool):
            raise DeviceError("the ssh front needs openssh-server; run: apt-get install -y openssh-server")
    _check_chroot_path(root.path)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_pub = keygen(folder / "host_ed25519", "edgeprune-emulator-host")
    user_pub = keygen(folder / "id_ed25519", "edgeprune-emulator-user")
    (folder / "authorized_keys").write_text(user_pub + "\n")
    os.chmod(folder / "authorized_keys", 0o600)
    log = folder / "sshd.log"
    for _attempt in range(3):  # a free port can be taken between choosing it and sshd binding it
        chosen = port or _free_port()
        config = folder / "sshd_config"
        config.write_text(_sshd_config(root, folder, chosen))
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise DeviceError(f"sshd rejects the emulator's config: {check.stderr.strip()[-300:]}")
        with open(log, "ab") as fh:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=fh, start_new_session=True)  # fmt: skip
        if wait_listening(proc, chosen):
            (folder / "known_hosts").write_text(f"[127.0.0.1]:{chosen} {host_pub}\n")
            return chosen, proc.pid, str(folder / "id_ed25519"), str(folder / "known_hosts")
        _end(proc.pid)
        if port:
            break
    raise DeviceError(f"sshd did not start on 127.0.0.1; its log: {log.read_text(errors='replace')[-400:]}")


def _start_adbd(root: Root, folder: Path, port: int) -> tuple[int, int]:
    ready = folder / "adbd.port"
    log = folder / "adbd.log"
    argv = [sys.executable, "-m", "edgeprune.emulator.adbd", "--root", str(root.path), "--cpu", root.recipe.cpu,
            "--port", str(port), "--model", f"edgeprune emulated {root.recipe.arch} ({root.recipe.marker})",
            "--ready-file", str(ready)]  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready.is_file():
            return int(ready.read_text()), proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    _end(proc.pid)
    raise DeviceError(f"the adb front did not start (port {port or 'any'}); its log: "
                      f"{log.read_text(errors='replace')[-400:]}")  # fmt: skip


def _adb_connect(server_port: int, serial: str) -> bool:
    """Tell an adb server that is already running to attach the device; False when none runs (none is started)."""
    adb = shutil.which("adb")
    if adb is None:
        return False
    try:
        socket.create_connection(("127.0.0.1", server_port), timeout=1.0).close()
    except OSError:
        return False
    proc = subprocess.run([adb, "-P", str(server_port), "connect", serial], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and "connected to" in proc.stdout


def wait_listening(proc: subprocess.Popen, port: int) -> bool:
    """Whether `proc` accepts connections on 127.0.0.1:`port` within the start timeout (False once it exits)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------------ stop


def stop(root: Path) -> list[str]:
    """End the fronts recorded for `root` (only those processes, and the sessions they forked); return what ended."""
    path = run_dir(root) / STATE
    try:
        state = Running(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return []
    ended = []
    if state.adb_server_port is not None and state.adb_serial and shutil.which("adb"):
        subprocess.run(["adb", "-P", str(state.adb_server_port), "disconnect", state.adb_serial], capture_output=True,
                       timeout=30)  # fmt: skip
    for name, pid in (("ssh board", state.sshd_pid), ("adb device", state.adbd_pid)):
        if pid is not None and _ours(pid, state):
            for child in descendants(pid):
                _signal(child, signal.SIGKILL)
            _end(pid)
            ended.append(f"{name} (pid {pid})")
    shutil.rmtree(run_dir(root), ignore_errors=True)
    return ended


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ours(pid: int, state: Running) -> bool:
    """Whether `pid` is still the sshd or adb front that `state` started (not a recycled process id)."""
    text = " ".join(_cmdline(pid))  # sshd rewrites its title: "sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ..."
    if pid == state.sshd_pid:
        return SSHD in text and str(Path(state.run_dir) / "sshd_config") in text
    return "edgeprune.emulator.adbd" in text and f"--root {state.root} " in text


def descendants(root_pid: int) -> list[int]:
    """Every process below `root_pid` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out[::-1]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _end(pid: int, wait_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `wait_s`; reaps it when it is our child."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _where(state: Running) -> str:
    parts = []
    if state.ssh_target:
        parts.append(f"ssh:{state.ssh_target}")
    if state.adb_serial:
        parts.append(f"adb:{state.adb_serial}")
    return ", ".join(parts)
