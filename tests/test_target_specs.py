"""The registry of target specs: one table every stage reads, consistent with the stages that read it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from edgeprune import target_specs, types
from edgeprune._deps import package_version
from edgeprune._resources import data_dir
from edgeprune.cost import model as cost_model
from edgeprune.errors import ConfigError
from edgeprune.export import get_exporter, missing_toolchain
from edgeprune.runners import adb, cache
from edgeprune.target_specs import TARGET_SPECS, get_spec, recorded_distributions, spec_for_suffix

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SPECS = list(TARGET_SPECS.values())


def test_types_tables_come_from_the_registry():
    assert types.TARGETS == ("executorch", "tflite", "onnx") == tuple(TARGET_SPECS)
    assert types.ARTIFACT_SUFFIX == {"executorch": ".pte", "tflite": ".tflite", "onnx": ".onnx"}


def test_stage_tables_are_derived_from_the_registry():
    assert cost_model._RUNTIME_OF == {
        "executorch": ("executorch",), "tflite": ("ai-edge-litert", "litert-torch"), "onnx": ("onnxruntime",)
    }
    assert adb.RUNTIME_MODULES == {
        ".pte": ("numpy", "torch", "executorch"), ".tflite": ("numpy", "ai_edge_litert"),
        ".onnx": ("numpy", "onnxruntime"), ".ort": ("numpy", "onnxruntime"),
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_exporter_agrees_with_its_spec(spec):
    assert missing_toolchain(spec.name) is None  # CI installs every extra
    exporter = get_exporter(spec.name)
    assert (exporter.name, exporter.suffix, exporter.extra) == (spec.name, spec.suffix, spec.pip_extra)
    for module in (*spec.toolchain_modules, *spec.runtime_modules):
        assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_pip_extras_and_distributions_exist_in_pyproject(spec):
    core = PYPROJECT["project"]["dependencies"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = core + (extras[spec.pip_extra] if spec.pip_extra else [])
    names = {re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower() for req in declared}
    assert spec.toolchain_modules == () or spec.pip_extra is not None
    assert set(spec.toolchain_distributions) <= names, (spec.name, names)
    assert set(spec.runtime_distributions) <= set(spec.toolchain_distributions)
    for dist in spec.toolchain_distributions:
        assert package_version(dist) is not None, dist


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_bench_program_is_the_runner_cache_kind_for_every_suffix(spec):
    assert spec.bench_program in cache.KINDS
    for suffix in spec.suffixes:
        assert cache.KIND_FOR_SUFFIX[suffix] == spec.bench_program
        assert spec_for_suffix(suffix) is spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_android_runtime_follows_the_installed_python_runtime(spec):
    (coordinate,) = spec.android_dependencies
    group, artifact, version = coordinate.split(":")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    installed = package_version(spec.android_version_of)
    assert installed is not None and installed.split(".")[:2] == version.split(".")[:2], (coordinate, installed)
    assert (data_dir("targets") / "android" / f"{spec.android_runner}.kt").is_file()
    text = (data_dir("targets") / "android" / f"{spec.android_runner}.kt").read_text()
    assert f"internal class {spec.android_runner}(context: Context, private val file: ModelFile) : Runner" in text


def test_android_and_ios_packages_are_the_documented_ones():
    coords = {s.name: s.android_dependencies[0].rsplit(":", 1)[0] for s in SPECS}
    assert coords == {
        "executorch": "org.pytorch:executorch-android",
        "tflite": "com.google.ai.edge.litert:litert",
        "onnx": "com.microsoft.onnxruntime:onnxruntime-android",
    }
    assert get_spec("tflite").android_dependencies == ("com.google.ai.edge.litert:litert:2.3.0",)
    assert [s.name for s in SPECS if s.store_uncompressed] == ["executorch", "tflite"]
    assert get_spec("executorch").ios_package.line() == (
        '.package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.5.1")'
    )
    assert get_spec("tflite").ios_package.line() == "pod 'TensorFlowLiteSwift'"


def test_recorded_distributions_list_each_toolchain_once():
    recorded = recorded_distributions()
    assert len(recorded) == len(set(recorded))
    assert set(recorded) == {d for s in SPECS for d in s.toolchain_distributions}


def test_unknown_target_and_suffix_are_config_errors_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown target 'coreml'; known: executorch, tflite, onnx"):
        get_spec("coreml")
    with pytest.raises(ConfigError, match="unknown target 'coreml'"):
        missing_toolchain("coreml")
    with pytest.raises(ConfigError, match=r"no target writes '\.mlmodel' files; known suffixes: \.pte, \.tflite"):
        spec_for_suffix(".mlmodel")


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        get_spec("onnx").suffix = ".x"  # type: ignore[misc]
    assert target_specs.TARGET_SPECS is TARGET_SPECS
    with pytest.raises(TypeError):
        TARGET_SPECS["x"] = get_spec("onnx")  # type: ignore[index]
