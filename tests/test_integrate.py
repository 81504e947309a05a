"""`edgeprune integrate android|ios` on fixture app projects made here, from one real build of the digits example.

What can be checked without an Android SDK or Xcode: the files copied (bytes and sha256), the device-targeting
XML (well-formed, Play's element structure, one group per profile), the Gradle edit (one block, idempotent,
reversible, both DSLs), the refusals (sha256, schema, paths, non-projects), the build-phase script's shell, the
loaders' text (every output the manifest lists, in its order) and, on the real LiteRT runtime the app links, the
Android loader's tensor bindings (its signature names give every output, each dequantised with its own scale).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ai_edge_litert.compiled_model import CompiledModel
from torch import nn

from edgeprune import cli_integrate
from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError
from edgeprune.export import get_exporter
from edgeprune.integrate import integrate_android, integrate_ios
from edgeprune.integrate.android import NS, SocId, device_groups, load_soc_ids
from edgeprune.profiles import builtin_profiles
from edgeprune.runners.runtimes.tflite import TFLiteSession
from edgeprune.types import Plan, TensorSpec

pytestmark = pytest.mark.slow  # the shared build exports and measures three targets for three devices

KTS_BUILD = 'plugins {\n    id("com.android.application")\n}\n\nandroid {\n    namespace = "com.example.demo"\n}'
GROOVY_BUILD = "plugins {\n    id 'com.android.application'\n}\n\nandroid {\n    namespace 'com.example.demo'\n}\n"
PLAY_SELECTOR_ATTRS = {"ram-min-bytes", "ram-max-bytes"}
PLAY_SELECTOR_CHILDREN = {
    "included-device-id": {"brand", "device"},
    "excluded-device-id": {"brand", "device"},
    "required-system-feature": {"name"},
    "forbidden-system-feature": {"name"},
    "system-on-chip": {"manufacturer", "model"},
}


@pytest.fixture(scope="session")
def dist(digits_int8_build) -> Path:
    """The shared build of tests/integrate_dist.py, made by the session fixture in tests/conftest.py (the same build
    tests/test_build_e2e.py reads)."""
    code, _, out = digits_int8_build
    assert code in (0, 3)
    return out


def make_gradle_app(root: Path, kotlin: bool = True, properties: str | None = None) -> Path:
    """A minimal Android Gradle project: settings file, app module build file, optional gradle.properties."""
    (root / "app").mkdir(parents=True)
    if kotlin:
        (root / "settings.gradle.kts").write_text('rootProject.name = "demo"\ninclude(":app")\n')
        (root / "app" / "build.gradle.kts").write_text(KTS_BUILD)  # no trailing newline on purpose
    else:
        (root / "settings.gradle").write_text("rootProject.name = 'demo'\ninclude ':app'\n")
        (root / "app" / "build.gradle").write_text(GROOVY_BUILD)
    if properties is not None:
        (root / "gradle.properties").write_text(properties)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: (content, mtime_ns)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def contents(root: Path) -> dict[str, bytes]:
    return {k: v[0] for k, v in snapshot(root).items()}


def check_play_structure(text: str) -> ET.Element:
    """Parse the XML and check it has Play's device-targeting element structure; returns the root."""
    root = ET.fromstring(text)
    assert root.tag == f"{{{NS}}}device-targeting-config"
    assert text.count('xmlns:config="http://schemas.android.com/apk/config"') == 1
    for group in root:
        assert group.tag == f"{{{NS}}}device-group" and set(group.attrib) == {"name"}
        assert group.attrib["name"].replace("_", "a").isalnum() and group.attrib["name"][0].isalpha()
        assert group.attrib["name"] != "other"  # Play makes that group itself
        assert 1 <= len(group) <= 5  # a group has up to 5 selectors
        for selector in group:
            assert selector.tag == f"{{{NS}}}device-selector"
            assert set(selector.attrib) <= PLAY_SELECTOR_ATTRS
            for value in selector.attrib.values():
                assert int(value) > 0
            assert selector.attrib or len(selector), "an empty selector would match every phone"
            for prop in selector:
                name = prop.tag.removeprefix(f"{{{NS}}}")
                assert name in PLAY_SELECTOR_CHILDREN and set(prop.attrib) <= PLAY_SELECTOR_CHILDREN[name]
    return root


def copy_dist(dist: Path, dest: Path) -> Path:
    shutil.copytree(dist, dest)
    return dest


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


# --- Android -----------------------------------------------------------------------------------------------


def test_android_assets_adds_models_targeting_config_and_gradle_block(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app")
    result = integrate_android(dist, app)

    assert result.devices == ("galaxy-a14", "pixel-8")
    assert any("skipped host (linux)" in n for n in result.notes)
    assets = app / "app/src/main/assets"
    assert sorted(p.name for p in assets.iterdir()) == [
        "edgeprune#group_galaxy_a14", "edgeprune#group_other", "edgeprune#group_pixel_8"
    ]
    for group, device in (("galaxy_a14", "galaxy-a14"), ("pixel_8", "pixel-8"), ("other", "galaxy-a14")):
        folder = assets / f"edgeprune#group_{group}"
        assert (folder / "manifest.json").read_bytes() == (dist / device / "manifest.json").read_bytes()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json", "model.pte", "model.tflite", "model.onnx"])
        for entry in manifest["artifacts"]:
            assert hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]

    root = check_play_structure((app / "app/edgeprune_device_targeting.xml").read_text())
    groups = {g.attrib["name"]: g for g in root}
    assert list(groups) == ["galaxy_a14", "pixel_8"]  # smallest RAM first: Play serves the first match
    low, high = groups["galaxy_a14"], groups["pixel_8"]
    boundary = low[0].attrib["ram-max-bytes"]
    assert all(s.attrib == {"ram-max-bytes": boundary} for s in low)
    assert all(s.attrib == {"ram-min-bytes": boundary} for s in high)
    assert 4 * 2**30 < int(boundary) < 8 * 2**30 * 0.9  # between a 4 GB and an 8 GB phone's reported RAM
    socs = {name: {(c.attrib["manufacturer"], c.attrib["model"]) for s in g for c in s} for name, g in groups.items()}
    assert socs == {"galaxy_a14": {("Mediatek", "MT6769")}, "pixel_8": {("Google", "Tensor G3")}}
    assert [r.name for r in result.groups] == ["galaxy_a14", "pixel_8"]
    assert result.warnings == ()

    build_file = (app / "app/build.gradle.kts").read_text()
    assert build_file.startswith(KTS_BUILD + "\n// >>> edgeprune")
    assert build_file.count(">>> edgeprune") == 1 and build_file.count('apply(from = "edgeprune.gradle")') == 1
    script = (app / "app/edgeprune.gradle").read_text()
    assert "noCompress.addAll(['pte', 'tflite'])" in script
    for dep in ("org.pytorch:executorch-android:1.5.1", "com.google.ai.edge.litert:litert:2.3.0",
                "com.microsoft.onnxruntime:onnxruntime-android:1.32.0"):
        assert f"    implementation '{dep}'\n" in script
    assert "deviceTargetingConfig = file('edgeprune_device_targeting.xml')" in script
    assert f"'--dist', '{dist.resolve()}'" in script and "'--mode', 'assets'" in script
    assert "commandLine edgepruneExe, 'build', '--config', edgepruneConfig.path" in script
    assert "@@" not in script and "assetPacks" not in script
    assert "android.experimental.enableDeviceTargetingConfigApi=true" in (app / "gradle.properties").read_text()
    kotlin = app / "app/src/main/java/dev/edgeprune"
    assert sorted(p.name for p in kotlin.iterdir()) == [
        "EdgepruneModel.kt", "EdgepruneRuntimes.kt", "ExecuTorchRunner.kt", "LiteRtRunner.kt", "OrtRunner.kt"
    ]
    runtimes = (kotlin / "EdgepruneRuntimes.kt").read_text()
    assert runtimes.index('"executorch" to ::ExecuTorchRunner') < runtimes.index('"onnx" to ::OrtRunner')


def test_android_second_run_changes_nothing(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app", properties="org.gradle.jvmargs=-Xmx2g\n")
    first = integrate_android(dist, app)
    before = snapshot(app)
    second = integrate_android(dist, app)
    assert first.changed and not second.changed
    assert second.written == () and second.removed == ()
    assert snapshot(app) == before  # byte-identical, and not even rewritten (same mtimes)


@pytest.mark.parametrize("kotlin", [True, False], ids=["kts", "groovy"])
@pytest.mark.parametrize("properties", [None, "org.gradle.jvmargs=-Xmx2g\n", "android.useAndroidX=true"])
def test_android_remove_restores_the_project_exactly(dist, tmp_path, kotlin, properties):
    app = make_gradle_app(tmp_path / "app", kotlin=kotlin, properties=properties)
    (app / "app/src/main/java/com/example").mkdir(parents=True)
    (app / "app/src/main/java/com/example/Main.kt").write_text("package com.example\n")
    original = contents(app)
    integrate_android(dist, app, mode="ai-pack")
    integrate_android(dist, app)  # switch mode on the way
    removed = integrate_android(None, app, remove=True)
    assert removed.changed
    assert contents(app) == original
    assert not (app / "app/src/main/java/dev").exists()
    assert not integrate_android(None, app, remove=True).changed


def test_android_groovy_dsl_applies_the_script_with_groovy_syntax(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app", kotlin=False)
    integrate_android(dist, app, targets=("tflite",))
    text = (app / "app/build.gradle").read_text()
    assert text.startswith(GROOVY_BUILD + "\n// >>> edgeprune") and "apply from: 'edgeprune.gradle'\n" in text
    script = (app / "app/edgeprune.gradle").read_text()
    assert "noCompress.addAll(['tflite'])" in script and "executorch-android" not in script
    assert "'--target', 'tflite'" in script
    folder = app / "app/src/main/assets/edgeprune#group_pixel_8"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.tflite"]
    kotlin = sorted(p.name for p in (app / "app/src/main/java/dev/edgeprune").iterdir())
    assert kotlin == ["EdgepruneModel.kt", "EdgepruneRuntimes.kt", "LiteRtRunner.kt"]
    # all targets again: the missing files come, and with --target again the extra ones go
    integrate_android(dist, app)
    assert len(list(folder.iterdir())) == 4
    again = integrate_android(dist, app, targets=("tflite",))
    assert {p.name for p in again.removed} == {"model.pte", "model.onnx", "ExecuTorchRunner.kt", "OrtRunner.kt"}


def test_android_ai_pack_mode_writes_a_pack_module_and_switches_back(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app")
    result = integrate_android(dist, app, mode="ai-pack")
    pack = app / "edgeprune_models"
    build = (pack / "build.gradle.kts").read_text()
    assert 'id("com.android.ai-pack")' in build and 'packName = "edgeprune_models"' in build
    assert 'deliveryType = "install-time"' in build
    assert sorted(p.name for p in (pack / "src/main/assets").iterdir()) == [
        "edgeprune#group_galaxy_a14", "edgeprune#group_other", "edgeprune#group_pixel_8"
    ]
    assert not (app / "app/src/main/assets").exists()
    settings = (app / "settings.gradle.kts").read_text()
    assert settings.count('include(":edgeprune_models")') == 1
    assert "assetPacks.add(':edgeprune_models')" in (app / "app/edgeprune.gradle").read_text()
    assert result.mode == "ai-pack" and not integrate_android(dist, app, mode="ai-pack").changed

    back = integrate_android(dist, app, mode="assets")
    assert pack in back.removed and not pack.exists()
    assert (app / "settings.gradle.kts").read_text() == 'rootProject.name = "demo"\ninclude(":app")\n'
    assert (app / "app/src/main/assets/edgeprune#group_pixel_8/model.pte").is_file()


def test_android_block_edited_by_hand_is_replaced_in_place_not_duplicated(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app")
    integrate_android(dist, app)
    path = app / "app/build.gradle.kts"
    text = path.read_text().replace('apply(from = "edgeprune.gradle")', 'apply(from = "edgeprune.gradle")\nfoo()')
    path.write_text(text)
    integrate_android(dist, app)
    fixed = path.read_text()
    assert fixed.count(">>> edgeprune") == 1 and "foo()" not in fixed


def test_android_broken_marker_is_refused_and_nothing_changes(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app")
    (app / "app/build.gradle.kts").write_text(KTS_BUILD + "\n// >>> edgeprune: left over\n")
    before = snapshot(app)
    with pytest.raises(ConfigError, match=r"build\.gradle\.kts' has 1 '// >>> edgeprune' and 0 '// <<< edgeprune <<<'"):
        integrate_android(dist, app)
    assert snapshot(app) == before


def test_android_refuses_a_dist_whose_sha256_does_not_match(dist, tmp_path):
    bad = copy_dist(dist, tmp_path / "dist")
    data = bytearray((bad / "pixel-8/model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "pixel-8/model.tflite").write_bytes(bytes(data))
    app = make_gradle_app(tmp_path / "app")
    before = snapshot(app)
    with pytest.raises(ConfigError, match=r"model\.tflite: sha256 [0-9a-f]{64} differs from the manifest's"):
        integrate_android(bad, app)
    assert snapshot(app) == before


def test_android_refuses_a_manifest_failing_its_schema(dist, tmp_path):
    bad = copy_dist(dist, tmp_path / "dist")
    edit_manifest(bad / "galaxy-a14", lambda m: m["artifacts"][1].pop("sha256"))
    app = make_gradle_app(tmp_path / "app")
    integrate_android(dist, app)
    before = snapshot(app)
    with pytest.raises(ConfigError, match=r"galaxy-a14/manifest\.json: artifacts\[1\]\.sha256 is missing"):
        integrate_android(bad, app)
    assert snapshot(app) == before  # an earlier integration stays as it was


@pytest.mark.parametrize("path", ["../pixel-8/model.pte", "/etc/model.pte", "sub/../../x.pte"])
def test_android_refuses_artifact_paths_leaving_the_device_folder(dist, tmp_path, path):
    bad = copy_dist(dist, tmp_path / "dist")
    edit_manifest(bad / "galaxy-a14", lambda m: m["artifacts"][0].update(path=path))
    with pytest.raises(ConfigError, match="leaves the device folder"):
        integrate_android(bad, make_gradle_app(tmp_path / "app"))


def test_android_refuses_a_symlink_artifact(dist, tmp_path):
    bad = copy_dist(dist, tmp_path / "dist")
    target = bad / "galaxy-a14/model.pte"
    shutil.move(target, tmp_path / "elsewhere.pte")
    os.symlink(tmp_path / "elsewhere.pte", target)
    with pytest.raises(ConfigError, match="is a link or leads out of"):
        integrate_android(bad, make_gradle_app(tmp_path / "app"))


def test_android_refuses_a_folder_that_is_not_a_gradle_project(dist, tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match=r"looked for settings\.gradle or settings\.gradle\.kts in .* and "
                                          r"app/build\.gradle or app/build\.gradle\.kts"):
        integrate_android(dist, tmp_path / "notes")
    app = make_gradle_app(tmp_path / "app")
    with pytest.raises(ConfigError, match=r"looked for mobile/build\.gradle or mobile/build\.gradle\.kts"):
        integrate_android(dist, app, module="mobile")
    with pytest.raises(ConfigError, match="--mode 'apk' is not one of: assets, ai-pack"):
        integrate_android(dist, app, mode="apk")


def test_android_refuses_a_dist_without_manifests(tmp_path):
    app = make_gradle_app(tmp_path / "app")
    (tmp_path / "empty/pixel-8").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds no <device>/manifest\.json"):
        integrate_android(tmp_path / "empty", app)
    with pytest.raises(ConfigError, match="dist folder .*missing' does not exist"):
        integrate_android(tmp_path / "missing", app)


def test_android_asks_for_one_model_of_a_project_config_build(dist, tmp_path):
    """`edgeprune build --config` writes dist/<model>/<device>/: one model's folder is the dist to integrate."""
    (tmp_path / "out").mkdir()
    shutil.copytree(dist, tmp_path / "out/digits")
    app = make_gradle_app(tmp_path / "app")
    with pytest.raises(ConfigError, match=r"holds the builds of model\(s\) digits .*pass one model's folder, e.g. "
                                          r"--dist .*out/digits"):
        integrate_android(tmp_path / "out", app)
    assert integrate_android(tmp_path / "out/digits", app).devices == ("galaxy-a14", "pixel-8")


def test_android_refuses_a_dist_with_no_android_device(dist, tmp_path):
    only_host = tmp_path / "dist"
    only_host.mkdir()
    shutil.copytree(dist / "host", only_host / "host")
    with pytest.raises(ConfigError, match=r"has no android device build \(only host \(linux\)\)"):
        integrate_android(only_host, make_gradle_app(tmp_path / "app"))


def test_android_overlapping_groups_warn_naming_both(dist, tmp_path):
    """A second profile with the Pixel 8's SoC and RAM: both groups would select the same phones."""
    fleet = copy_dist(dist, tmp_path / "dist")
    shutil.copytree(fleet / "pixel-8", fleet / "pixel-8-pro")
    edit_manifest(fleet / "pixel-8-pro", lambda m: m["device"].update(name="pixel-8-pro"))
    profile = builtin_profiles()["pixel-8"].model_dump(mode="json", exclude_none=True)
    profile["name"] = "pixel-8-pro"
    (tmp_path / "pixel-8-pro.yaml").write_text(yaml.safe_dump(profile))
    result = integrate_android(fleet, make_gradle_app(tmp_path / "app"), profiles=[str(tmp_path / "pixel-8-pro.yaml")])
    overlaps = [w for w in result.warnings if "overlap" in w]
    assert overlaps == [
        "device groups 'pixel_8' and 'pixel_8_pro' overlap: a phone with SoC Google Tensor G3 and RAM >= 6.07 GB "
        "matches both; Play serves it group 'pixel_8' (first in edgeprune_device_targeting.xml); give the "
        "profiles distinct RAM or SoCs"
    ]
    # the manifest records the profile's RAM and SoC, so the profile YAML is not needed to group the device
    again = integrate_android(fleet, make_gradle_app(tmp_path / "app2"))
    assert [w for w in again.warnings if "overlap" in w] == overlaps
    # a manifest without them (an older build) needs the profile
    edit_manifest(fleet / "pixel-8-pro", lambda m: m["device"].pop("ram_gb"))
    with pytest.raises(ConfigError, match="device 'pixel-8-pro' .* is not a built-in profile and its manifest "
                                          "records no ram_gb; pass its profile YAML with --profile PATH"):
        integrate_android(fleet, make_gradle_app(tmp_path / "app3"))


def test_device_groups_split_ram_classes_and_use_soc_where_ram_is_shared():
    table = load_soc_ids()
    groups, warnings = device_groups(
        [("pixel-8", 8, "Google Tensor G3", "flagship"), ("pixel-7a", 8, "Google Tensor G2", "mid"),
         ("galaxy-a54", 6, "Samsung Exynos 1380", "mid"), ("galaxy-a14", 4, "MediaTek Helio G80 (MT6769)", "low")],
        table,
    )
    assert warnings == []
    assert [g.name for g in groups] == ["galaxy_a14", "galaxy_a54", "pixel_7a", "pixel_8"]
    a14, a54, p7a, p8 = groups
    b1, b2 = round((4 * 6) ** 0.5 * 2**30), round((6 * 8) ** 0.5 * 2**30)
    assert [(s.ram_min_bytes, s.ram_max_bytes, s.socs) for s in a14.selectors] == [
        (None, b1, (SocId("Mediatek", "MT6769"),)), (None, b1, None)]
    assert [(s.ram_min_bytes, s.ram_max_bytes, s.socs is None) for s in a54.selectors] == [(b1, b2, False), (b1, b2, True)]
    # two profiles share the 8 GB class: each selects its own SoC only, so neither takes the other's phones
    assert [(s.ram_min_bytes, s.ram_max_bytes, s.socs) for s in p7a.selectors] == [(b2, None, (SocId("Google", "Tensor G2"),))]
    assert [s.socs for s in p8.selectors] == [(SocId("Google", "Tensor G3"),)]


def test_device_groups_unknown_soc_selects_by_ram_and_warns():
    groups, warnings = device_groups(
        [("pixel-8", 8, "Google Tensor G3", "flagship"), ("my-phone", 8, "Acme X1", "mid"),
         ("galaxy-a14", 4, "MediaTek Helio G80 (MT6769)", "low")], load_soc_ids()
    )
    assert [g.name for g in groups] == ["galaxy_a14", "my_phone", "pixel_8"]
    assert [(s.ram_min_bytes is not None, s.ram_max_bytes, s.socs) for s in groups[1].selectors] == [(True, None, None)]
    assert len(warnings) == 2
    assert warnings[0].startswith("no Play SoC id is known for 'Acme X1' (device 'my-phone')")
    assert warnings[1].startswith("device groups 'my_phone' and 'pixel_8' overlap: a phone with SoC Google Tensor G3")
    with pytest.raises(ConfigError, match="group named 'other'"):
        device_groups([("other", 8, "x", "mid")], load_soc_ids())
    with pytest.raises(ConfigError, match="devices 'a_b' and 'a-b' both make device group 'a_b'"):
        device_groups([("a-b", 8, "x", "mid"), ("a_b", 6, "y", "mid")], load_soc_ids())


# --- CLI (a parser built from cli_integrate.add_parsers) -----------------------------------------------------


def _cli(argv: list[str]):
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="edgeprune")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_integrate.add_parsers(sub, argparse.ArgumentParser)
    args = parser.parse_args(argv)
    console = Console(record=True, width=200)
    code = cli_integrate.run(args, console)
    return code, console.export_text()


def test_cli_integrate_android_reports_and_is_up_to_date_the_second_time(dist, tmp_path):
    app = make_gradle_app(tmp_path / "app")
    argv = ["integrate", "android", "--dist", str(dist), "--project", str(app), "--module", "app", "--mode", "assets"]
    code, text = _cli(argv)
    assert code == 0 and "galaxy-a14, pixel-8" in text and "device group pixel_8: pixel-8 (8 GB" in text
    assert "wrote app/edgeprune_device_targeting.xml" in text and "note: skipped host (linux)" in text
    code, text = _cli(argv)
    assert code == 0 and "up to date" in text
    code, text = _cli(["integrate", "android", "--project", str(app), "--remove"])
    assert code == 0 and "removed edgeprune from" in text
    with pytest.raises(ConfigError, match="--dist is required"):
        _cli(["integrate", "android", "--project", str(app)])
    with pytest.raises(SystemExit):
        _cli(["integrate", "android", "--dist", str(dist), "--project", str(app), "--mode", "apk"])


def _body(text: str, start: str) -> str:
    """The block of `text` from the line holding `start` to its closing brace (by brace depth)."""
    begin = text.index(start)
    depth, i = 0, text.index("{", begin)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin : i + 1]
        i += 1


def test_android_loader_gives_every_output_in_the_manifests_order(dist, tmp_path):
    """The Kotlin written into the app reads every output the manifest lists (not the first), each runner returns
    them all in the manifest's order, binding each by what its runtime knows it by, and dequantises each int8 output
    with its own spec; `run` stays the first output. (Text checks: no Kotlin compiler here.)"""
    app = make_gradle_app(tmp_path / "app")
    integrate_android(dist, app)
    kotlin = app / "app/src/main/java/dev/edgeprune"
    model = (kotlin / "EdgepruneModel.kt").read_text()
    assert 'getJSONArray("outputs").getJSONObject(0)' not in model
    assert 'TensorSpec.parseAll(entry.getJSONArray("outputs"))' in model
    assert "(0 until list.length()).map { parse(list.getJSONObject(it)) }" in _body(model, "fun parseAll(")
    assert "fun runAll(input: FloatArray): List<FloatArray>" in _body(model, "interface Runner")
    assert "val outputs: List<TensorSpec>," in _body(model, "class ModelFile(")
    assert "fun run(input: FloatArray): FloatArray = runAll(input)[0]" in model
    assert "runner.runAll(input)" in _body(model, "fun runAll(input: FloatArray): List<FloatArray> {")

    runners = {p.stem: p.read_text() for p in kotlin.glob("*Runner.kt")}
    assert sorted(runners) == ["ExecuTorchRunner", "LiteRtRunner", "OrtRunner"]
    for name, text in runners.items():
        body = _body(text, "override fun runAll(input: FloatArray): List<FloatArray>")
        assert "override fun run(" not in text, name
        assert "file.output." not in text and "file.output)" not in text, name  # the first output's spec alone
        assert "file.outputs.map" in body, name  # one result per manifest output, in its order
        assert "spec.dequantize(" in body and "file.output.dequantize" not in body, name  # each output's own spec
    # ExecuTorch: forward's values by position (the model's flattening order is the manifest's), count checked
    et = _body(runners["ExecuTorchRunner"], "override fun runAll")
    assert "values[i].toTensor()" in et and "outputs[0]" not in et and "values.size == file.outputs.size" in et
    # ONNX Runtime: each output by its graph name, not result[0]
    ort = _body(runners["OrtRunner"], "override fun runAll")
    assert "byName[spec.name]" in ort and "result[0]" not in ort
    # LiteRT: one buffer per manifest output, bound by signature name and run by name (the flatbuffer's own output
    # order need not be the model's), each read back at its manifest index
    lrt = runners["LiteRtRunner"]
    assert "file.outputs.map { signatureName(it.name, OUTPUT_SUFFIX) }" in lrt
    assert "outputNames.map { model.createOutputBuffer(it) }" in lrt and "createOutputBuffers()" not in lrt
    assert "model.run(mapOf(inputName to inputBuffer), outputNames.zip(outputBuffers).toMap())" in lrt
    assert "spec.dequantize(outputBuffers[i].readInt8()) else outputBuffers[i].readFloat()" in lrt
    assert "outputs[0]" not in lrt
    runtimes = (kotlin / "EdgepruneRuntimes.kt").read_text()
    assert "Map<String, (Context, ModelFile) -> Runner>" in runtimes  # the constructors keep the runner signature


# --- iOS ------------------------------------------------------------------------------------------------------


@pytest.fixture
def ios_dist(dist, tmp_path) -> Path:
    """The pixel-8 build relabelled as an iPhone 15 build (the files, hashes and schema are a real build's)."""
    out = tmp_path / "ios-dist"
    out.mkdir()
    shutil.copytree(dist / "pixel-8", out / "iphone-15")
    shutil.copytree(dist / "host", out / "host")
    edit_manifest(out / "iphone-15", lambda m: m["device"].update(
        name="iphone-15", display_name="Apple iPhone 15", platform="ios", soc="Apple A16 Bionic", abi="arm64"))
    return out


def make_xcode_app(root: Path) -> Path:
    (root / "Demo.xcodeproj").mkdir(parents=True)
    (root / "Demo.xcodeproj/project.pbxproj").write_text("// !$*UTF8*$!\n{}\n")
    (root / "Demo").mkdir()
    (root / "Demo/App.swift").write_text("import SwiftUI\n")
    return root


def test_ios_copies_models_loader_and_build_phase_script(ios_dist, tmp_path):
    app = make_xcode_app(tmp_path / "ios")
    original = contents(app)
    result = integrate_ios(ios_dist, app)
    models = app / "Edgeprune/Models/iphone-15"
    assert sorted(p.name for p in models.iterdir()) == ["manifest.json", "model.onnx", "model.pte", "model.tflite"]
    assert (models / "manifest.json").read_bytes() == (ios_dist / "iphone-15/manifest.json").read_bytes()
    swift = (app / "Edgeprune/EdgepruneModel.swift").read_text()
    assert "#if canImport(ExecuTorch)" in swift and "Module(filePath: file.path)" in swift
    script = (app / "Edgeprune/edgeprune-build-phase.sh").read_text()
    assert f'DIST="${{EDGEPRUNE_DIST:-{ios_dist.resolve()}}}"' in script and "@@" not in script
    assert result.devices == ("iphone-15",)
    assert any('.package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.5.1")' in n
               for n in result.notes)
    assert any("skipped host (linux)" in n for n in result.notes)
    before = snapshot(app)
    assert not integrate_ios(ios_dist, app).changed and snapshot(app) == before
    integrate_ios(None, app, remove=True)
    assert contents(app) == original and not (app / "Edgeprune").exists()


def test_ios_build_phase_script_runs_under_sh(ios_dist, tmp_path):
    app = make_xcode_app(tmp_path / "ios")
    integrate_ios(ios_dist, app)
    script = app / "Edgeprune/edgeprune-build-phase.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    env = {**os.environ, "SRCROOT": str(app), "EDGEPRUNE": str(tmp_path / "no-such-edgeprune")}
    r = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("note: edgeprune: no ") and "edgeprune.yaml" in r.stdout
    (app / "edgeprune.yaml").write_text("models: []\n")
    r = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("warning: edgeprune: ")
    r = subprocess.run(["sh", str(script)], env={**env, "EDGEPRUNE_REQUIRED": "1"}, capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout.startswith("error: edgeprune: ")


def test_ios_refuses_non_xcode_folders_and_dists_without_ios(dist, ios_dist, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match=r"is not an Xcode project: looked for a \*\.xcodeproj or \*\.xcworkspace "
                                          r"folder or a Package\.swift"):
        integrate_ios(ios_dist, tmp_path / "plain")
    app = make_xcode_app(tmp_path / "ios")
    with pytest.raises(ConfigError, match=r"has no ios device build \(only galaxy-a14 \(android\), host \(linux\), "
                                          r"pixel-8 \(android\)\)"):
        integrate_ios(dist, app)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/Package.swift").write_text("// swift-tools-version:5.9\n")
    assert integrate_ios(ios_dist, tmp_path / "pkg").devices == ("iphone-15",)


def test_ios_loader_gives_every_output_in_the_manifests_order(ios_dist, tmp_path):
    """The Swift written into the app returns every output the manifest lists, in its order, from each runtime,
    binding each by what its runtime knows it by and dequantising each with its own spec; `run` stays the first
    output. (Text checks: no Swift compiler here.)"""
    app = make_xcode_app(tmp_path / "ios")
    integrate_ios(ios_dist, app)
    swift = (app / "Edgeprune/EdgepruneModel.swift").read_text()
    assert "public func runAll(_ x: [Float]) throws -> [[Float]]" in swift
    assert "try runAll(x)[0]" in _body(swift, "public func run(_ x: [Float]) throws -> [Float]")
    assert "private let runFn: ([Float]) throws -> [[Float]]" in swift
    runner = _body(swift, "private static func runner(")
    assert "let input = entry.inputs[0], outputs = entry.outputs" in runner
    assert "entry.outputs[0]" not in runner and "output." not in runner.replace("outputs.", "")
    # ExecuTorch: every value forward returns, by position, count checked
    assert "values.count == outputs.count" in runner and "values[i].tensor()" in runner and "[0].tensor()" not in runner
    # LiteRT: each output found by its tensor name once, read at that index, dequantised with its own spec
    assert "names.firstIndex(of: spec.name)" in runner and "output(at: 0)" not in runner
    assert "EdgepruneModel.floats(try interpreter.output(at: indices[i]).data, outputs[i])" in runner
    # ONNX Runtime: every output name requested, each read back by name in the manifest's order
    assert "outputNames: Set(outputs.map { $0.name })" in runner and "values[spec.name]" in runner
    assert "EdgepruneModel.floats(try value.tensorData() as Data, spec)" in runner
    assert "if spec.scale != nil { return spec.dequantize(bytes) }" in _body(swift, "private static func floats(")
    assert "public let key: String?" in _body(swift, "public struct EdgepruneTensorSpec")


# --- the LiteRT loader's bindings, on the real runtime ------------------------------------------------------------


class TwoHeads(nn.Module):
    """A detector's raw heads as a dict, keys out of alphabetical order, both of one shape (a swapped order cannot
    pass by shape) and ten times apart in range (each needs its own int8 scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scores = nn.Conv2d(8, 4, 1)
        self.boxes = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.boxes.weight.mul_(10.0)
            self.boxes.bias.mul_(10.0)

    def forward(self, x: torch.Tensor) -> dict:
        f = torch.relu(self.conv(x))
        return {"scores": self.scores(f), "boxes": self.boxes(f)}


def _litert_loader_constants() -> tuple[str, str]:
    """(SIGNATURE_PREFIX, OUTPUT_SUFFIX) as LiteRtRunner.kt spells them."""
    text = (data_dir("targets") / "android" / "LiteRtRunner.kt").read_text()
    prefix = re.search(r'const val SIGNATURE_PREFIX = "([^"]*)"', text)
    suffix = re.search(r'const val OUTPUT_SUFFIX = "([^"]*)"', text)
    assert prefix and suffix, "LiteRtRunner.kt no longer names its signature-name rule's constants"
    return prefix.group(1), suffix.group(1)


def _run_as_the_android_loader_binds(path: Path, inp: dict, outputs: list[dict], x: np.ndarray) -> list[np.ndarray]:
    """One inference through LiteRT's CompiledModel (the runtime the Android app links, same version), binding the
    tensors the way LiteRtRunner.kt does: each by the signature name its rule makes from the manifest's tensor name,
    run by name; the outputs read back in the manifest's order, each dequantised with its own scale and zero point."""
    prefix, suffix = _litert_loader_constants()

    def signature_name(tensor: str, end: str) -> str:
        if tensor.startswith(prefix) and tensor.endswith(end) and len(tensor) > len(prefix) + len(end):
            return tensor[len(prefix) : len(tensor) - len(end)]
        return tensor

    model = CompiledModel.from_file(str(path))
    key = next(iter(model.get_signature_list()))  # the app passes "", which CompiledModel takes as signature 0
    input_name = signature_name(inp["name"], "")
    names = [signature_name(o["name"], suffix) for o in outputs]
    in_buffer = model.create_input_buffer_by_name(key, input_name)
    out_buffers = [model.create_output_buffer_by_name(key, n) for n in names]
    if "scale" in inp:
        in_buffer.write(np.clip(np.round(x / inp["scale"]) + inp["zero_point"], -128, 127).astype(np.int8))
    else:
        in_buffer.write(x.astype(np.float32))
    model.run_by_name(key, {input_name: in_buffer}, dict(zip(names, out_buffers)))
    got = []
    for spec, buffer in zip(outputs, out_buffers):
        n = int(np.prod(spec["shape"]))
        if "scale" in spec:
            got.append(spec["scale"] * (buffer.read(n, np.int8).astype(np.float32) - spec["zero_point"]))
        else:
            got.append(buffer.read(n, np.float32))
    return got


def _check_against_host_session(path: Path, inp: dict, outputs: list[dict], x: np.ndarray) -> None:
    """The loader's bindings give, output by output, what edgeprune's host session (which finds each output by its
    tensor name in the manifest) gives, to within one step of that output's int8 scale."""
    specs = tuple(TensorSpec(**{**o, "shape": tuple(o["shape"])}) for o in outputs)
    session = TFLiteSession(path, threads=1, outputs=specs)
    want = session.run_all(x)
    got = _run_as_the_android_loader_binds(path, inp, outputs, x)
    assert len(got) == len(outputs) == len(want)
    for spec, g, w in zip(outputs, got, want):
        np.testing.assert_allclose(g, w.reshape(-1), rtol=0, atol=spec.get("scale", 1e-5) * 1.01,
                                   err_msg=f"{path.name} output {spec['name']}")


def test_litert_loader_bindings_give_every_output_of_a_real_int8_build(dist):
    """The digits build's manifest.json (static int8 I/O): the Android loader's signature names are the ones
    LiteRT knows, and reading the output back through them gives the host session's values."""
    manifest = json.loads((dist / "pixel-8" / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["target"] == "tflite")
    assert entry["outputs"] and all("scale" in o for o in entry["outputs"] + entry["inputs"])
    x = np.random.default_rng(0).normal(size=entry["inputs"][0]["shape"]).astype(np.float32)
    _check_against_host_session(dist / "pixel-8" / entry["path"], entry["inputs"][0], entry["outputs"], x)


def test_litert_loader_bindings_give_both_heads_of_an_int8_detector_in_the_models_order(tmp_path):
    """A two-head detector exported to static int8 LiteRT: the manifest lists its outputs as the artifact records
    them (scores then boxes, each with its own scale); bound by the Android loader's names, each head comes back in
    that order with its own dequantisation (a swap, or one scale for both, is ten times off)."""
    torch.manual_seed(0)
    model = TwoHeads().eval()
    calib = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    art = get_exporter("tflite").export(model, calib[:1], calib, Plan(target="tflite", scheme="int8"),
                                        tmp_path / "heads.tflite").artifact
    outputs = [t.to_dict() for t in art.outputs]  # what the pipeline writes as the manifest's "outputs"
    assert [o["key"] for o in outputs] == ["scores", "boxes"]
    assert all(o["dtype"] == "int8" for o in outputs) and outputs[1]["scale"] > 3 * outputs[0]["scale"]
    x = calib[:1].numpy()
    _check_against_host_session(art.path, art.inputs[0].to_dict(), outputs, x)
    with torch.no_grad():
        heads = model(calib[:1])
    got = _run_as_the_android_loader_binds(art.path, art.inputs[0].to_dict(), outputs, x)
    for key, g in zip(("scores", "boxes"), got):  # int8 against float: within a few steps of each head's range
        want = heads[key].numpy().reshape(-1)
        assert np.abs(g - want).max() < 0.1 * np.abs(want).max(), key
