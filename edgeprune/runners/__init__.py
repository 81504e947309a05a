"""Runners: measure an artifact on the host, a phone over adb, or a board over ssh.

`get_runner("host" | "adb" | "adb:SERIAL" | "ssh:user@host[:port]")` picks one; the adb and ssh modules are
imported only when asked for.
"""

from __future__ import annotations

from edgeprune.errors import ConfigError
from edgeprune.runners.base import Runner

ON_FORMS = "host, adb, adb:SERIAL, adb:all or ssh:user@host[:port]"


def get_runner(
    on: str,
    *,
    python: str | None = None,
    identity_file: str | None = None,
    known_hosts: str | None = None,
    adb_port: int = 5037,
) -> Runner:
    """The runner named by an `--on` value. `python` is the interpreter to use on the device or board."""
    if on == "host":
        from edgeprune.runners.host import HostRunner

        return HostRunner()
    if on == "adb" or (on.startswith("adb:") and on != "adb:all"):
        from edgeprune.runners.adb import AdbRunner

        serial = on.split(":", 1)[1] if ":" in on else None
        return AdbRunner(serial, adb_port=adb_port, python=python)
    if on.startswith("ssh:") and len(on) > 4:
        from edgeprune.runners.ssh import SshRunner

        return SshRunner(on[4:], identity_file=identity_file, known_hosts=known_hosts, python=python or "python3")
    raise ConfigError(f"--on '{on}' is not understood; forms: {ON_FORMS}")
