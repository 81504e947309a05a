"""Optional imports deferred to the moment they are needed, with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeprune.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming `pip install 'edgeprune[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the module itself, or one of its own dependencies, is missing
        raise MissingDependencyError(module, extra) from exc


def package_version(dist: str) -> str | None:
    """Installed version of distribution `dist`, or None."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
