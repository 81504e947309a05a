"""The registry of target specs: everything edgeprune knows about one deployment target, in one place.

Each stage reads what it needs from here: the file suffix (types, pipeline), the exporter module and its toolchain
(export), the runtime modules and distributions (runners, cost model, build versions), the on-device benchmark
program (adb runner cache), and what an app build needs (integrate: Gradle coordinates, iOS package, whether the
file must be stored uncompressed). Adding a target means adding one `TargetSpec` below (and its exporter module).

This module imports nothing heavy: it sits in the types layer. (The top-level `targets/` folder is something else:
the app-side kits, data shipped in the wheel.)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

from edgeprune.errors import ConfigError

__all__ = ["IosPackage", "TargetSpec", "TARGET_SPECS", "get_spec", "spec_for_suffix", "recorded_distributions"]


@dataclass(frozen=True)
class IosPackage:
    """How an iOS app gets the runtime: a Swift package (url + branch) or a CocoaPods pod (name + version)."""

    manager: Literal["swiftpm", "cocoapods"]
    name: str
    """The package URL (swiftpm) or the pod name (cocoapods)."""
    version: str | None
    """Branch (swiftpm) or version constraint (cocoapods); None: the newest."""
    products: tuple[str, ...] = ()
    """Swift package products to link."""

    def line(self) -> str:
        """The line to add to Package.swift / the Podfile."""
        if self.manager == "swiftpm":
            return f'.package(url: "{self.name}", branch: "{self.version}")'
        return f"pod '{self.name}'" + (f", '{self.version}'" if self.version else "")


@dataclass(frozen=True)
class TargetSpec:
    """One deployment target: its file, its Python toolchain and runtime, and its app-side runtime."""

    name: str
    """Registry key, as given to --target."""
    display_name: str
    suffix: str
    """Suffix of the artifact edgeprune writes (`model<suffix>`)."""
    extra_suffixes: tuple[str, ...]
    """Other files of this target a runner can measure (ONNX Runtime's `.ort`)."""
    exporter_module: str
    """Module under `edgeprune.export` that defines `EXPORTER`."""
    toolchain_modules: tuple[str, ...]
    """Python modules the exporter needs beyond the core dependencies (checked before it is imported)."""
    pip_extra: str | None
    """The edgeprune extra that installs the toolchain (None: a core dependency)."""
    runtime_modules: tuple[str, ...]
    """Python modules that load and run an artifact (what a device's Python must import)."""
    runtime_distributions: tuple[str, ...]
    """pip distributions whose versions shape the artifact's timing (a calibrated cost model names them)."""
    toolchain_distributions: tuple[str, ...]
    """Every pip distribution of the toolchain and runtime, recorded in build.json's versions."""
    bench_program: str
    """The native on-device benchmark program for this target's files (runner cache kind)."""
    android_dependencies: tuple[str, ...]
    """Gradle `implementation` coordinates of the Android runtime (group:artifact:version)."""
    android_version_of: str
    """The Python runtime distribution whose version the Android runtime's version should follow."""
    android_runner: str
    """The Kotlin class (and file, in targets/android/) that runs this target's files in an app."""
    ios_package: IosPackage
    store_uncompressed: bool
    """True: the app must store the file uncompressed (`noCompress`), as the runtime maps it from the APK."""

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.extra_suffixes)

    @property
    def artifact_file(self) -> str:
        """The artifact's file name in a device folder."""
        return f"model{self.suffix}"


_SPECS = (
    TargetSpec(
        name="executorch",
        display_name="ExecuTorch",
        suffix=".pte",
        extra_suffixes=(),
        exporter_module="executorch",
        toolchain_modules=(),
        pip_extra=None,
        runtime_modules=("torch", "executorch"),
        runtime_distributions=("executorch",),
        toolchain_distributions=("executorch",),
        bench_program="executor_runner",
        # using-executorch-android.md: org.pytorch:executorch-android; the version follows the executorch the
        # program was exported with (pyproject pins executorch 1.5.x; reference doc verified 1.5.1).
        android_dependencies=("org.pytorch:executorch-android:1.5.1",),
        android_version_of="executorch",
        android_runner="ExecuTorchRunner",
        ios_package=IosPackage(
            "swiftpm", "https://github.com/pytorch/executorch.git", "swiftpm-1.5.1",
            ("executorch", "backend_xnnpack", "kernels_optimized", "kernels_quantized"),
        ),
        store_uncompressed=True,
    ),
    TargetSpec(
        name="tflite",
        display_name="LiteRT",
        suffix=".tflite",
        extra_suffixes=(),
        exporter_module="tflite",
        toolchain_modules=("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
        pip_extra="tflite",
        runtime_modules=("ai_edge_litert",),
        runtime_distributions=("ai-edge-litert", "litert-torch"),
        toolchain_distributions=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"),
        bench_program="benchmark_model",
        android_dependencies=("com.google.ai.edge.litert:litert:2.3.0",),
        android_version_of="ai-edge-litert",
        android_runner="LiteRtRunner",
        ios_package=IosPackage("cocoapods", "TensorFlowLiteSwift", None),
        store_uncompressed=True,
    ),
    TargetSpec(
        name="onnx",
        display_name="ONNX Runtime",
        suffix=".onnx",
        extra_suffixes=(".ort",),
        exporter_module="onnx",
        toolchain_modules=("onnx", "onnxscript", "onnxruntime"),
        pip_extra="onnx",
        runtime_modules=("onnxruntime",),
        runtime_distributions=("onnxruntime",),
        toolchain_distributions=("onnxruntime", "onnx", "onnxscript"),
        bench_program="onnxruntime_perf_test",
        android_dependencies=("com.microsoft.onnxruntime:onnxruntime-android:1.32.0",),
        android_version_of="onnxruntime",
        android_runner="OrtRunner",
        ios_package=IosPackage("cocoapods", "onnxruntime-objc", "1.32.0"),
        store_uncompressed=False,  # ONNX Runtime reads the model into memory from bytes; compression is harmless
    ),
)

TARGET_SPECS: Mapping[str, TargetSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Target name -> spec, in the order targets are listed and built."""


def get_spec(target: str) -> TargetSpec:
    """The spec of `target`, or ConfigError listing the known targets."""
    try:
        return TARGET_SPECS[target]
    except KeyError:
        raise ConfigError(f"unknown target '{target}'; known: {', '.join(TARGET_SPECS)}") from None


def spec_for_suffix(suffix: str) -> TargetSpec:
    """The spec whose files end in `suffix` ('.pte', '.ort', ...), or ConfigError listing the known suffixes."""
    for spec in _SPECS:
        if suffix in spec.suffixes:
            return spec
    known = ", ".join(s for spec in _SPECS for s in spec.suffixes)
    raise ConfigError(f"no target writes '{suffix}' files; known suffixes: {known}")


def recorded_distributions() -> tuple[str, ...]:
    """Every target's toolchain distributions, each once, in registry order (for build.json's versions)."""
    seen: dict[str, None] = {}
    for spec in _SPECS:
        seen.update(dict.fromkeys(spec.toolchain_distributions))
    return tuple(seen)
