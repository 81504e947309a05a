"""Exporters, one per target, looked up by name."""

from __future__ import annotations

import importlib
import importlib.util

from edgeprune.errors import ConfigError, MissingDependencyError
from edgeprune.export.base import Exporter, ExportResult
from edgeprune.types import TARGETS

__all__ = ["Exporter", "ExportResult", "get_exporter", "missing_toolchain"]

_MODULES = {"executorch": "executorch", "tflite": "tflite", "onnx": "onnx"}
_TOOLCHAINS = {
    "executorch": ((), None),
    "tflite": (("litert_torch", "ai_edge_litert", "ai_edge_quantizer"), "tflite"),
    "onnx": (("onnx", "onnxscript", "onnxruntime"), "onnx"),
}
"""target -> (python modules its exporter and runtime need, the pip extra that installs them)."""


def _check_target(target: str) -> None:
    if target not in _MODULES:
        raise ConfigError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")


def missing_toolchain(target: str) -> MissingDependencyError | None:
    """The error to raise if `target`'s toolchain is not installed, else None (nothing is imported)."""
    _check_target(target)
    modules, extra = _TOOLCHAINS[target]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return MissingDependencyError(module, extra)
    return None


def get_exporter(target: str) -> Exporter:
    """The exporter registered under `target`; the module (and its toolchain) is imported only now."""
    missing = missing_toolchain(target)
    if missing is not None:
        raise missing
    module = importlib.import_module(f"{__name__}.{_MODULES[target]}")
    return module.EXPORTER
