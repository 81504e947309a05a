"""Packaging: the wheel carries the data folders, an installed copy finds them, and README matches CI."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("edgeprune-*.whl")
    return whl


def test_wheel_holds_the_data_folders_and_the_console_script(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("device_profiles", "targets", "calibration"):
        assert any(n.startswith(f"edgeprune/_data/{folder}/") for n in names), folder
    profiles = {n.rsplit("/", 1)[1] for n in names if n.startswith("edgeprune/_data/device_profiles/")}
    assert {"pixel-8.yaml", "raspberry-pi-5.yaml"} <= profiles
    for shipped in ("edgeprune/schemas/manifest.schema.json", "edgeprune/_data/targets/android/EdgepruneModel.kt",
                    "edgeprune/_data/targets/ios/EdgepruneModel.swift",
                    "edgeprune/_data/targets/executorch_runner/edgeprune_executorch_runner.cpp"):
        assert shipped in names, shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgeprune = edgeprune.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_finds_its_profiles_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import edgeprune._resources as r, edgeprune.profiles as p;"
        "print(r.data_dir('device_profiles'));print(len(p.builtin_profiles()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    folder, count = result.stdout.split()
    assert pathlib.Path(folder).is_relative_to(target), folder
    assert int(count) >= 9


def test_console_script_lists_profiles_as_json():
    exe = pathlib.Path(sys.executable).with_name("edgeprune")
    result = subprocess.run([str(exe), "devices", "--json"], capture_output=True, text=True, check=True)
    import json

    names = [p["name"] for p in json.loads(result.stdout)]
    assert len(names) >= 9 and "host" in names


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```(?:bash|sh)\n(.*?)\n```", text, flags=re.S | re.M)


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in [block.strip() for block in _readme_commands()], "README's test command and .ci/run differ"
