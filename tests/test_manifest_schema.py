"""The manifest's published JSON Schema: real manifests pass, broken ones fail naming the field."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from integrate_dist import DEVICES, built_dist  # noqa: E402

from edgeprune.errors import ConfigError  # noqa: E402
from edgeprune.manifest_schema import SCHEMA_PATH, check_manifest, load_schema  # noqa: E402

pytestmark = pytest.mark.slow  # reads the shared real build (see tests/integrate_dist.py)


@pytest.fixture(scope="session")
def manifests(tmp_path_factory) -> dict[str, dict]:
    dist = built_dist(tmp_path_factory)
    return {d: json.loads((dist / d / "manifest.json").read_text()) for d in DEVICES}


def test_schema_is_draft_2020_12_and_ships_inside_the_package():
    from jsonschema import Draft202012Validator

    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert SCHEMA_PATH.parent.parent.name == "edgeprune" and SCHEMA_PATH.is_file()


def test_every_real_manifest_passes(manifests):
    for device, manifest in manifests.items():
        check_manifest(manifest, device)
        assert {a["target"] for a in manifest["artifacts"]} == {"executorch", "tflite", "onnx"}


def test_fields_other_writers_add_are_accepted(manifests):
    m = copy.deepcopy(manifests["pixel-8"])
    m["report"] = {"html": "report.html"}
    m["device"]["ram_gb"] = 8
    m["artifacts"][0]["etdump"] = "model.etdp"
    m["artifacts"][0]["measured"]["timing"] = {"p50_ci95_ms": [0.1, 0.2]}
    m["artifacts"][0]["validations"] = [{"validated_utc": "2026-12-06T00:00:00+00:00",
                                         "measured": m["artifacts"][0]["measured"], "accuracy": None,
                                         "verdict": m["artifacts"][0]["verdict"]}]
    check_manifest(m, "pixel-8")


BREAKS = [
    (lambda m: m.pop("artifacts"), r"artifacts is missing"),
    (lambda m: m.update(schema_version=2), r"schema_version is 2, expected one of: 1"),
    (lambda m: m["device"].update(platform="windows"), r'device\.platform is "windows", expected one of: "android"'),
    (lambda m: m.update(artifacts=[]), r"artifacts is \[\], expected at least 1 item"),
    (lambda m: m["artifacts"][2].update(sha256="ABC"), r'artifacts\[2\]\.sha256 "ABC" does not match \^\[0-9a-f\]\{64\}\$'),
    (lambda m: m["artifacts"][0]["inputs"][0].update(shape=[1, 0, 8, 8]), r"artifacts\[0\]\.inputs\[0\]\.shape\[1\] is 0, expected >= 1"),
    (lambda m: m["artifacts"][1]["inputs"][0].pop("zero_point"), r"artifacts\[1\]\.inputs\[0\]\.zero_point is missing \(required with scale\)"),
    (lambda m: m["artifacts"][0]["measured"].update(threads="4"), r'artifacts\[0\]\.measured\.threads is "4", expected integer'),
    (lambda m: m["artifacts"][0].update(target="coreml"), r"artifacts\[0\]\.target 'coreml' is not a known target \(executorch, tflite, onnx\)"),
    (lambda m: m["artifacts"][0].update(path="model.onnx"), r"artifacts\[0\]\.path 'model\.onnx' is not a file of target 'executorch' \(expected \.pte\)"),
    (lambda m: m["artifacts"][1]["plan"].update(target="onnx"), r"artifacts\[1\]\.plan\.target 'onnx' differs from the entry's target 'tflite'"),
]


@pytest.mark.parametrize("change, message", BREAKS, ids=[m.split(" ")[0] for _, m in BREAKS])
def test_a_broken_manifest_fails_naming_the_field(manifests, change, message):
    m = copy.deepcopy(manifests["pixel-8"])
    change(m)
    with pytest.raises(ConfigError, match=r"^dist/pixel-8/manifest\.json: " + message) as info:
        check_manifest(m, "dist/pixel-8/manifest.json")
    assert "\n" not in str(info.value) and str(info.value).endswith("rebuild it with `edgeprune build`")


def test_a_manifest_that_is_not_an_object_fails():
    with pytest.raises(ConfigError, match=r"^m\.json: the manifest is \[\], expected object"):
        check_manifest([], "m.json")
