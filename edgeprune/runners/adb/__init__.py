"""Measure artifacts on Android phones and emulators through the adb server (adbutils), and describe devices.

- `connection`: the adb server and one device through it (quoted shell commands, push/pull, timeouts, a lost device
  told apart from a failed command);
- `discovery`: which devices are attached and what each reports about itself (`list_connected`, `read_device`);
- `runner`: `AdbRunner`, one device's measurements (see its module docstring for the steps);
- `pool`: `AdbPool`, several devices at once through the executor interface.
"""

from __future__ import annotations

from edgeprune.runners.adb.connection import quote
from edgeprune.runners.adb.discovery import list_connected, read_device, read_device_info
from edgeprune.runners.adb.pool import AdbPool, PoolJob, PoolResult, match_jobs
from edgeprune.runners.adb.runner import REMOTE_SCRIPT, RUNTIME_MODULES, AdbRunner
from edgeprune.runners.android import DeviceInfo, draft_profile

__all__ = [
    "AdbPool",
    "AdbRunner",
    "DeviceInfo",
    "PoolJob",
    "PoolResult",
    "REMOTE_SCRIPT",
    "RUNTIME_MODULES",
    "draft_profile",
    "list_connected",
    "match_jobs",
    "quote",
    "read_device",
    "read_device_info",
]
