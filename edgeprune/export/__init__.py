"""Exporters, one per target, looked up by name."""

from __future__ import annotations

import importlib
import importlib.util

from edgeprune.errors import MissingDependencyError
from edgeprune.export.base import Exporter, ExportResult
from edgeprune.target_specs import get_spec

__all__ = ["Exporter", "ExportResult", "get_exporter", "missing_toolchain"]


def missing_toolchain(target: str) -> MissingDependencyError | None:
    """The error to raise if `target`'s toolchain is not installed, else None (nothing is imported)."""
    spec = get_spec(target)  # ConfigError for an unknown target
    for module in spec.toolchain_modules:
        if importlib.util.find_spec(module) is None:
            return MissingDependencyError(module, spec.pip_extra or "all")
    return None


def get_exporter(target: str) -> Exporter:
    """The exporter registered under `target`; the module (and its toolchain) is imported only now."""
    missing = missing_toolchain(target)
    if missing is not None:
        raise missing
    module = importlib.import_module(f"{__name__}.{get_spec(target).exporter_module}")
    return module.EXPORTER
