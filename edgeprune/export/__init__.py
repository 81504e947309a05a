"""Exporters, one per target, looked up by name."""

from __future__ import annotations

import importlib

from edgeprune.errors import ConfigError
from edgeprune.export.base import Exporter, ExportResult
from edgeprune.types import TARGETS

__all__ = ["Exporter", "ExportResult", "get_exporter"]

_MODULES = {"executorch": "executorch", "tflite": "tflite", "onnx": "onnx"}


def get_exporter(target: str) -> Exporter:
    """The exporter registered under `target`; the module (and its toolchain) is imported only now."""
    if target not in _MODULES:
        raise ConfigError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[target]}")
    return module.EXPORTER
