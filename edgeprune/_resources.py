"""Locate the data folders (device_profiles/, targets/, calibration/) from a wheel or a checkout.

In a wheel they are packaged as `edgeprune/_data/<name>`; in a source checkout they sit at the
repository's top level, beside the package.
"""

from __future__ import annotations

from pathlib import Path

DATA_FOLDERS = ("device_profiles", "targets", "calibration")
_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Path of data folder `name`, preferring the copy installed inside the package."""
    if name not in DATA_FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; known: {', '.join(DATA_FOLDERS)}")
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"data folder {name!r} is missing from this installation of edgeprune")
