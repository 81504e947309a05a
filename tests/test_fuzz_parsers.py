"""Property tests on the parsers a user's files reach: device profiles, the project config, plan.yaml and the manifest
schema. Whatever the input, the outcome is a parsed object or the parser's typed error, never another exception;
what the project writes reads back the same."""

from __future__ import annotations

import functools
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from edgeprune.errors import ConfigError, ProfileError
from edgeprune.manifest_schema import check_manifest
from edgeprune.planner.recipe import read_plan_yaml
from edgeprune.profiles import builtin_profiles, parse_profile
from edgeprune.project import ProjectConfig, load_config

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)


@functools.lru_cache(maxsize=1)
def _pixel_8_json() -> str:
    return json.dumps(builtin_profiles()["pixel-8"].model_dump(mode="json"))


def _profile_dict() -> dict:
    return json.loads(_pixel_8_json())


def _mutate(data: dict, path: list[str], value: object) -> dict:
    """`data` with the key at `path` (walked as far as it exists) replaced by `value`."""
    node = data
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    if isinstance(node, dict):
        node[path[-1]] = value
    return data


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_profile_or_a_profile_error(text):
    try:
        parse_profile(text, "fuzz.yaml")
    except ProfileError as exc:
        assert "fuzz.yaml" in str(exc) and "\n" not in str(exc).strip()


@FUZZ
@given(path=st.lists(st.sampled_from(["name", "budget", "latency_ms", "power", "active_w", "cpu_clusters",
                                      "ram_gb", "default_threads", "supported_targets", "sources", "tier",
                                      "energy_mj", "latency_percentile", "x"]), min_size=1, max_size=3),
       value=values)
def test_mutated_profiles_parse_or_fail_typed(path, value):
    data = _mutate(_profile_dict(), path, value)
    try:
        text = yaml.safe_dump(data)
    except yaml.representer.RepresenterError:
        return
    try:
        parse_profile(text, "mutated.yaml")
    except ProfileError:
        pass


def test_every_builtin_profile_round_trips_through_yaml():
    for name, prof in builtin_profiles().items():
        again = parse_profile(yaml.safe_dump(prof.model_dump(mode="json")), f"{name}.yaml")
        assert again == prof, name


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "edgeprune.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()


@FUZZ
@given(entry=st.dictionaries(st.sampled_from(["model", "devices", "targets", "budgets", "plan", "search", "seed",
                                              "weights", "data", "input_shape", "colour"]), values, max_size=6),
       out=values)
def test_fuzzed_config_entries_parse_or_fail_typed(tmp_path, entry, out):
    path = tmp_path / "edgeprune.yaml"
    try:
        path.write_text(yaml.safe_dump({"schema_version": 1, "out": out, "models": {"m": entry}}))
    except yaml.representer.RepresenterError:
        return
    try:
        config, _ = load_config(path)
    except ConfigError:
        return
    again = ProjectConfig.model_validate(json.loads(config.model_dump_json()))
    assert again == config


PLAN = {
    "schema_version": 1,
    "device": "pixel-8",
    "model": {"spec": "examples:digits", "input_shape": [1, 1, 8, 8]},
    "plan": {"target": "executorch", "scheme": "int8", "keep_ratio": 0.5, "layer_keep_ratios": {"features.0": 0.5},
             "importance": "l2", "round_to": 8, "seed": 0, "threads": 1},
    "channels": {"features.0": [16, 8]},
    "recovery": {"config": {"epochs": 10}},
}


@FUZZ
@given(path=st.lists(st.sampled_from(["schema_version", "plan", "target", "scheme", "keep_ratio", "layer_keep_ratios",
                                      "threads", "channels", "recovery", "epochs", "device", "model", "seed"]),
                     min_size=1, max_size=2),
       value=values)
def test_mutated_plans_read_or_fail_typed(tmp_path, path, value):
    data = _mutate(json.loads(json.dumps(PLAN)), path, value)
    file = tmp_path / "plan.yaml"
    try:
        file.write_text(yaml.safe_dump(data))
    except yaml.representer.RepresenterError:
        return
    try:
        read_plan_yaml(file)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, digits_model) -> dict:
    """The manifest of a real (small) build."""
    import edgeprune

    out = tmp_path_factory.mktemp("fuzz") / "dist"
    edgeprune.build("examples:digits", targets=["onnx"], plan=edgeprune.FixedPlan(),
                    measure=edgeprune.Measure(runs=3, warmup=1, blocks=1), out=out)
    return json.loads((out / "host" / "manifest.json").read_text())


@FUZZ
@given(path=st.lists(st.sampled_from(["schema_version", "device", "name", "artifacts", "path", "sha256", "target",
                                      "model", "data", "budget", "passed", "x"]), min_size=1, max_size=2),
       value=values)
def test_mutated_manifests_pass_or_fail_typed(manifest, path, value):
    data = _mutate(json.loads(json.dumps(manifest)), path, value)
    try:
        check_manifest(data, "fuzz/manifest.json")
    except ConfigError as exc:
        assert "fuzz/manifest.json" in str(exc) and "\n" not in str(exc).strip()


def test_a_real_manifest_passes_its_schema(manifest):
    check_manifest(manifest, "manifest.json")
