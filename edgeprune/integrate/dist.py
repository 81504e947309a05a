"""Read a build's dist/ folder for the integrate commands, trusting nothing in it.

Each device folder's manifest.json is validated against the published schema, every artifact path must stay
inside its folder (no absolute path, no `..`, no link leading out), and every artifact's sha256 is recomputed and
compared with the manifest's. Any problem is a ConfigError naming the file, before anything in an app is touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeprune._io import sha256_file
from edgeprune.errors import ConfigError
from edgeprune.manifest_schema import check_manifest
from edgeprune.target_specs import TARGET_SPECS, TargetSpec


@dataclass(frozen=True)
class DistArtifact:
    """One artifact file of a device build, its hash checked."""

    path: Path
    name: str
    """File name inside the device folder."""
    spec: TargetSpec
    sha256: str
    entry: dict[str, Any]
    """The manifest's entry for it."""


@dataclass(frozen=True)
class DeviceBuild:
    """One device folder of a dist: its manifest and artifacts."""

    folder: Path
    manifest_path: Path
    manifest: dict[str, Any]
    artifacts: tuple[DistArtifact, ...]

    @property
    def name(self) -> str:
        return self.manifest["device"]["name"]

    @property
    def platform(self) -> str:
        return self.manifest["device"]["platform"]


def read_dist(dist: Path, targets: tuple[str, ...] = ()) -> tuple[DeviceBuild, ...]:
    """Every device build under `dist` (or `dist` itself when it is one device folder), sorted by device name.

    `targets`, when given, keeps only those targets' artifacts (each must be in the registry).
    """
    dist = Path(dist)
    for target in targets:
        if target not in TARGET_SPECS:
            raise ConfigError(f"unknown target '{target}'; known: {', '.join(TARGET_SPECS)}")
    if not dist.is_dir():
        raise ConfigError(f"dist folder '{dist}' does not exist; build one with `edgeprune build --out {dist}`")
    if (dist / "manifest.json").is_file():
        folders = [dist]
    else:
        folders = sorted(p for p in dist.iterdir() if p.is_dir() and (p / "manifest.json").is_file())
    nested = sorted({m.parent.parent.name for m in dist.glob("*/*/manifest.json")})
    if not folders and nested:
        raise ConfigError(f"'{dist}' holds the builds of model(s) {', '.join(nested)} (an edgeprune.yaml build); "
                          f"pass one model's folder, e.g. --dist {dist / nested[0]}")
    if not folders:
        raise ConfigError(
            f"'{dist}' holds no <device>/manifest.json; give the folder `edgeprune build --out` wrote "
            "(it has one folder per device, each with a manifest.json)"
        )
    builds = [_read_device(folder, targets) for folder in folders]
    names = [b.name for b in builds]
    for build in builds:
        if names.count(build.name) > 1:
            raise ConfigError(f"'{dist}' holds device '{build.name}' twice; keep one folder per device")
    return tuple(sorted(builds, key=lambda b: b.name))


def platform_builds(builds: tuple[DeviceBuild, ...], platform: str, dist: Path,
                    example: str) -> tuple[list[DeviceBuild], list[str]]:
    """The builds for `platform` and 'name (platform)' of the others, or ConfigError when there are none."""
    mine = [b for b in builds if b.platform == platform]
    others = [f"{b.name} ({b.platform})" for b in builds if b.platform != platform]
    if not mine:
        raise ConfigError(f"'{dist}' has no {platform} device build (only {', '.join(others)}); build for a "
                          f"{platform} profile too, e.g. `edgeprune build ... --device {example}`")
    return mine, others


def _read_device(folder: Path, targets: tuple[str, ...]) -> DeviceBuild:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}); rebuild it with `edgeprune build`") from None
    check_manifest(manifest, str(path))
    artifacts = []
    for i, entry in enumerate(manifest["artifacts"]):
        if targets and entry["target"] not in targets:
            continue
        file = _inside(folder, entry["path"], f"{path}: artifacts[{i}].path")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise ConfigError(
                f"{file}: sha256 {digest} differs from the manifest's {entry['sha256']} ({path}); the file changed "
                "after the build: rebuild with `edgeprune build`, never edit artifacts by hand"
            )
        artifacts.append(DistArtifact(file, file.name, TARGET_SPECS[entry["target"]], digest, entry))
    if not artifacts:
        raise ConfigError(f"{path} lists no {' / '.join(targets)} artifact; build those targets or drop --target")
    return DeviceBuild(folder, path, manifest, tuple(artifacts))


def _inside(folder: Path, relative: str, what: str) -> Path:
    """`folder/relative` as a plain file in `folder`, or ConfigError when the path escapes it or is missing."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or "\\" in relative or ".." in pure.parts or Path(relative).is_absolute():
        raise ConfigError(f"{what} '{relative}' leaves the device folder; an artifact path is a file name inside it")
    file = folder / relative
    if file.is_symlink() or not file.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(f"{what} '{relative}' is a link or leads out of '{folder}'; artifacts must be plain files")
    if not file.is_file():
        raise ConfigError(f"{what}: '{file}' is missing; the dist is incomplete: rebuild it with `edgeprune build`")
    return file
