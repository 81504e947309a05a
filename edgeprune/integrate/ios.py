"""`edgeprune integrate ios`: put a build's iOS models into an Xcode (or Swift package) project.

Writes, under `<project>/Edgeprune/` (each file atomically, only when its content changes; `--remove` takes it out):

- `Models/<device>/`: each iOS device build's manifest.json and artifacts (add `Edgeprune/Models` to the app
  target as a folder reference, so the bundle keeps the folders);
- `EdgepruneModel.swift`: the loader (targets/ios/), which reads a manifest and opens the model with its input
  spec on the runtimes the app links (`#if canImport`);
- `edgeprune-build-phase.sh`: the Run Script build phase that runs `edgeprune build --config edgeprune.yaml` and
  this command before resources are copied.

The Xcode project file itself is not edited: the result's notes list the three steps to take once in Xcode, and
the Swift package / pod lines of the runtimes the models need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError
from edgeprune.integrate.dist import platform_builds, read_dist
from edgeprune.integrate.edits import Edits, IntegrationResult
from edgeprune.target_specs import TARGET_SPECS

FOLDER = "Edgeprune"
MODELS = "Models"
LOADER = "EdgepruneModel.swift"
SCRIPT = "edgeprune-build-phase.sh"
_SHELL_UNSAFE = set('"$`\\\n')


def find_xcode_project(project: Path) -> Path:
    """`project` if it holds an .xcodeproj, an .xcworkspace or a Package.swift, else ConfigError saying so."""
    root = Path(project)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.is_dir() and entry.suffix in (".xcodeproj", ".xcworkspace"):
                return root
        if (root / "Package.swift").is_file():
            return root
    raise ConfigError(
        f"'{root}' is not an Xcode project: looked for a *.xcodeproj or *.xcworkspace folder or a Package.swift "
        "in it, found none; pass the folder that holds the app's .xcodeproj with --project"
    )


def integrate_ios(
    dist: Path | None, project: Path, *, remove: bool = False, targets: Sequence[str] = ()
) -> IntegrationResult:
    """Copy `dist`'s iOS device builds, the Swift loader and the build-phase script into `project`."""
    root = find_xcode_project(Path(project))
    folder = root / FOLDER
    edits = Edits()
    if remove:
        _plan_stale(folder, edits, {})
        for name in (LOADER, SCRIPT):
            if (folder / name).exists():
                edits.delete(folder / name)
        written, unchanged, removed = edits.apply()
        for path in (folder / MODELS, folder):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return IntegrationResult("ios", root, "remove", (), written, unchanged, removed)
    if dist is None:
        raise ConfigError("--dist is required (the folder `edgeprune build --out` wrote), except with --remove")
    ios, others = platform_builds(read_dist(Path(dist), tuple(targets)), "ios", Path(dist), "iphone-15")
    for build in ios:
        device_dir = folder / MODELS / build.name
        edits.write(device_dir / "manifest.json", build.manifest_path.read_bytes())
        for art in build.artifacts:
            edits.copy(device_dir / art.name, art.path, art.sha256)
    _plan_stale(folder, edits, {b.name: {"manifest.json", *(a.name for a in b.artifacts)} for b in ios})
    kit = data_dir("targets") / "ios"
    edits.write(folder / LOADER, (kit / LOADER).read_bytes())
    edits.write(folder / SCRIPT, _render_script(kit / SCRIPT, root, Path(dist), targets))
    used = [spec for name, spec in TARGET_SPECS.items() if any(a.spec.name == name for b in ios for a in b.artifacts)]
    notes = [
        f"in Xcode, add {FOLDER}/{MODELS} to the app target as a folder reference (Create folder references)",
        f"add {FOLDER}/{LOADER} to the app target",
        f'add a Run Script phase before Copy Bundle Resources: /bin/sh "$SRCROOT/{FOLDER}/{SCRIPT}"',
        *(f"{spec.display_name} runtime: {spec.ios_package.line()}"
          + (f" (products: {', '.join(spec.ios_package.products)}; link with -all_load)"
             if spec.ios_package.products else "")
          for spec in used),
    ]
    if others:
        notes.append(f"skipped {', '.join(others)}: not iOS device builds")
    written, unchanged, removed = edits.apply()
    return IntegrationResult("ios", root, "resources", tuple(b.name for b in ios), written, unchanged, removed,
                             (), tuple(notes))


def _plan_stale(folder: Path, edits: Edits, planned: dict[str, set[str]]) -> None:
    """Delete device folders under Models/ (and files in them) that this run does not write."""
    models = folder / MODELS
    if not models.is_dir():
        return
    for device_dir in sorted(models.iterdir()):
        keep = planned.get(device_dir.name)
        if keep is None:
            edits.delete(device_dir)
        elif device_dir.is_dir():
            for file in sorted(device_dir.iterdir()):
                if file.name not in keep:
                    edits.delete(file)


def _render_script(template: Path, root: Path, dist: Path, targets: Sequence[str]) -> str:
    dist_abs, root_abs = dist.resolve(), root.resolve()
    text = Path(os.path.relpath(dist_abs, root_abs) if dist_abs.is_relative_to(root_abs) else dist_abs).as_posix()
    if _SHELL_UNSAFE & set(text):
        raise ConfigError(f"--dist '{text}' holds a character the build-phase script cannot quote "
                          '(" $ ` \\ or a newline); use a plainer path')
    args = "".join(f" --target {t}" for t in targets)
    return template.read_text().replace("@@DIST@@", text).replace("@@TARGET_ARGS@@", args)
