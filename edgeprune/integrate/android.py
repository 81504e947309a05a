"""`edgeprune integrate android`: put a build's models into an Android Gradle project, one variant per phone tier.

What it writes (every file atomically, only when its content changes; `--remove` takes all of it out again):

- each Android device's manifest.json and artifacts into `<assets>/edgeprune#group_<group>/`, where `<assets>` is
  the module's `src/main/assets` (`--mode assets`) or the install-time AI pack module `edgeprune_models`
  (`--mode ai-pack`); Play strips the suffix, so the app always reads `assets/edgeprune/manifest.json`. Phones in no
  group get `edgeprune#group_other`: a copy of the first group's (the smallest-RAM profile's) build;
- `<module>/edgeprune_device_targeting.xml`: Play's device-targeting config, one device group per device profile
  (see `device_groups` for the selectors);
- `<module>/edgeprune.gradle` (from targets/android/edgeprune.gradle): noCompress, the runtimes' dependencies, the
  bundle's device-group split, and tasks running `edgeprune build --config edgeprune.yaml` and this command before
  assets are merged; applied from a marked block in the module's build.gradle(.kts) (Kotlin or Groovy DSL);
- a marked block in gradle.properties enabling the device-targeting API; in ai-pack mode the pack module and a
  marked `include` in settings.gradle(.kts);
- the Kotlin loader (targets/android/*.kt) under `<module>/src/main/java/dev/edgeprune/`.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from edgeprune._resources import data_dir
from edgeprune.errors import ConfigError
from edgeprune.integrate.dist import DeviceBuild, platform_builds, read_dist
from edgeprune.integrate.edits import Edits, IntegrationResult, block_text, read_text, with_block, without_block
from edgeprune.profiles import DeviceProfile, builtin_profiles, load_profile
from edgeprune.target_specs import TARGET_SPECS, TargetSpec

MODES = ("assets", "ai-pack")
PACK = "edgeprune_models"
"""The AI pack module's name (letters, digits and underscores, as Play requires)."""
GROUP_PREFIX = "edgeprune#group_"
DEFAULT_GROUP = "other"
"""Play's group for phones that match no device group (not declared in the XML)."""
XML_NAME = "edgeprune_device_targeting.xml"
SCRIPT_NAME = "edgeprune.gradle"
KOTLIN_PACKAGE_DIR = Path("src/main/java/dev/edgeprune")
RUNTIMES_FILE = "EdgepruneRuntimes.kt"
LOADER_FILE = "EdgepruneModel.kt"
NS = "http://schemas.android.com/apk/config"
TARGETING_PROPERTY = "android.experimental.enableDeviceTargetingConfigApi=true"
_GIB = 1 << 30
_TIER_ORDER = {"low": 0, "mid": 1, "flagship": 2}
_PACK_HEADER = "// edgeprune AI pack module: written by `edgeprune integrate android --mode ai-pack`"


@dataclass(frozen=True)
class SocId:
    """A system on chip as Play's <config:system-on-chip> names it (Build.SOC_MANUFACTURER / SOC_MODEL)."""

    manufacturer: str
    model: str


@dataclass(frozen=True)
class Selector:
    """One <config:device-selector>: a RAM range [min, max) in bytes (None: open) AND one of `socs` (None: any)."""

    ram_min_bytes: int | None
    ram_max_bytes: int | None
    socs: tuple[SocId, ...] | None


@dataclass(frozen=True)
class DeviceGroup:
    """The Play device group of one device profile, and the asset folder its build goes to."""

    name: str
    device: str
    ram_gb: float
    soc: str
    selectors: tuple[Selector, ...]

    @property
    def folder(self) -> str:
        return f"{GROUP_PREFIX}{self.name}"


@dataclass(frozen=True)
class GradleProject:
    root: Path
    module: str
    module_dir: Path
    build_file: Path
    settings_file: Path

    @property
    def kotlin_dsl(self) -> bool:
        return self.build_file.suffix == ".kts"


def find_gradle_project(project: Path, module: str) -> GradleProject:
    """The Gradle project at `project` with app module `module`, or ConfigError saying what was looked for."""
    root = Path(project)
    if not module or Path(module).is_absolute() or ".." in Path(module).parts:
        raise ConfigError(f"--module '{module}' must be a module folder inside the project, e.g. app")
    module_dir = root / module
    settings = [root / n for n in ("settings.gradle.kts", "settings.gradle") if (root / n).is_file()]
    builds = [module_dir / n for n in ("build.gradle.kts", "build.gradle") if (module_dir / n).is_file()]
    if not settings or not builds:
        missing = []
        if not settings:
            missing.append(f"settings.gradle or settings.gradle.kts in '{root}'")
        if not builds:
            missing.append(f"{module}/build.gradle or {module}/build.gradle.kts")
        raise ConfigError(
            f"'{root}' is not a Gradle project with an app module '{module}': looked for {' and '.join(missing)}, "
            "found none; pass the app's root folder with --project and its app module with --module"
        )
    for found, what in ((settings, "settings"), (builds, f"{module}/build")):
        if len(found) > 1:
            raise ConfigError(f"'{root}' has both {what}.gradle and {what}.gradle.kts; Gradle refuses that too: "
                              "keep one")
    return GradleProject(root, module, module_dir, builds[0], settings[0])


def load_soc_ids() -> list[tuple[str, tuple[SocId, ...]]]:
    """(match text, SoC ids) pairs from targets/android/soc_ids.yaml, in file order."""
    path = data_dir("targets") / "android" / "soc_ids.yaml"
    data = yaml.safe_load(path.read_text())
    return [
        (entry["match"].lower(), tuple(SocId(str(i["manufacturer"]), str(i["model"])) for i in entry["ids"]))
        for entry in data["socs"]
    ]


def soc_ids_for(soc: str, table: Sequence[tuple[str, tuple[SocId, ...]]]) -> tuple[SocId, ...]:
    """Play SoC ids for a profile's `soc` text ((): unknown)."""
    text = soc.lower()
    return next((ids for match, ids in table if match in text), ())


def group_name(device: str) -> str:
    """A Play group name for a device profile name: letters, digits and underscores, starting with a letter."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", device)
    return name if name[:1].isalpha() else f"d_{name}"


def device_groups(
    devices: Sequence[tuple[str, float, str, str]], soc_table: Sequence[tuple[str, tuple[SocId, ...]]]
) -> tuple[tuple[DeviceGroup, ...], list[str]]:
    """One device group per (device name, ram_gb, soc, tier), ordered smallest RAM (then lowest tier) first.

    RAM classes: the distinct RAM sizes of the profiles, split at the geometric mean of neighbours (in GiB, since
    phones report somewhat less than their nominal RAM); the smallest class has no minimum, the largest no maximum.
    Each group selects (a) phones in its RAM class with its profile's SoC, when the SoC's Play id is known, and
    (b) every phone in its RAM class when no other profile shares that class. Play serves a phone the first group
    it matches, so the smallest-RAM profile wins an overlap: the conservative choice. Returns the groups and a
    warning for each pair whose selectors overlap, and for each SoC without a known Play id.
    """
    warnings: list[str] = []
    order = sorted(devices, key=lambda d: (d[1], _TIER_ORDER.get(d[3], 3), d[0]))
    sizes = sorted({d[1] for d in order})
    bounds = [int(round(math.sqrt(a * b) * _GIB)) for a, b in zip(sizes, sizes[1:])]
    names: dict[str, str] = {}
    groups = []
    for device, ram_gb, soc, _tier in order:
        name = group_name(device)
        if name == DEFAULT_GROUP:
            raise ConfigError(f"device '{device}' would make a device group named '{DEFAULT_GROUP}', which Play "
                              "reserves for phones in no group; rename the profile")
        if name in names:
            raise ConfigError(f"devices '{names[name]}' and '{device}' both make device group '{name}'; rename one")
        names[name] = device
        i = sizes.index(ram_gb)
        low, high = (bounds[i - 1] if i > 0 else None), (bounds[i] if i < len(bounds) else None)
        shared = sum(1 for d in order if d[1] == ram_gb) > 1
        socs = soc_ids_for(soc, soc_table)
        if not socs:
            warnings.append(f"no Play SoC id is known for '{soc}' (device '{device}'): group '{name}' selects by "
                            "RAM only; add the SoC to targets/android/soc_ids.yaml")
        selectors = []
        if socs:
            selectors.append(Selector(low, high, socs))
        if (not shared or not socs) and (low is not None or high is not None):
            selectors.append(Selector(low, high, None))
        groups.append(DeviceGroup(name, device, ram_gb, soc, tuple(selectors)))
    for a_index, a in enumerate(groups):
        for b in groups[a_index + 1 :]:
            both = _overlap(a, b)
            if both:
                warnings.append(f"device groups '{a.name}' and '{b.name}' overlap: {both} matches both; Play serves "
                                f"it group '{a.name}' (first in {XML_NAME}); give the profiles distinct RAM or SoCs")
    return tuple(groups), warnings


def _overlap(a: DeviceGroup, b: DeviceGroup) -> str:
    """A description of the phones that match a selector of both groups ('' when none)."""
    for x in a.selectors:
        for y in b.selectors:
            low = max((v for v in (x.ram_min_bytes, y.ram_min_bytes) if v is not None), default=None)
            high = min((v for v in (x.ram_max_bytes, y.ram_max_bytes) if v is not None), default=None)
            if low is not None and high is not None and low >= high:
                continue
            if x.socs is not None and y.socs is not None:
                common = tuple(s for s in x.socs if s in y.socs)
                if not common:
                    continue
                soc = _socs(common[:1])
            else:
                soc = _socs(x.socs or y.socs) if (x.socs or y.socs) else "any SoC"
            return f"a phone with {soc} and {_ram(low, high)}"
    return ""


def _socs(socs: tuple[SocId, ...] | None) -> str:
    return "SoC " + " / ".join(f"{s.manufacturer} {s.model}" for s in socs or ())


def _ram(low: int | None, high: int | None) -> str:
    if low is None and high is None:
        return "any RAM"
    if high is None:
        return f"RAM >= {low / 1e9:.2f} GB"
    if low is None:
        return f"RAM < {high / 1e9:.2f} GB"
    return f"RAM {low / 1e9:.2f}-{high / 1e9:.2f} GB"


def targeting_xml(groups: Sequence[DeviceGroup], fallback: str) -> str:
    """Play's device-targeting config for `groups` (in priority order), as UTF-8 XML text."""
    ET.register_namespace("config", NS)
    root = ET.Element(f"{{{NS}}}device-targeting-config")
    for group in groups:
        if not group.selectors:
            continue
        element = ET.SubElement(root, f"{{{NS}}}device-group", {"name": group.name})
        for sel in group.selectors:
            attrs = {}
            if sel.ram_min_bytes is not None:
                attrs["ram-min-bytes"] = str(sel.ram_min_bytes)
            if sel.ram_max_bytes is not None:
                attrs["ram-max-bytes"] = str(sel.ram_max_bytes)
            selector = ET.SubElement(element, f"{{{NS}}}device-selector", attrs)
            for soc in sel.socs or ():
                chip = {"manufacturer": soc.manufacturer, "model": soc.model}
                ET.SubElement(selector, f"{{{NS}}}system-on-chip", chip)
    ET.indent(root, "  ")
    lines = [f"  {g.name}: device profile {g.device} ({g.ram_gb:g} GB RAM, {g.soc})" for g in groups]
    comment = (
        "<!-- Written by `edgeprune integrate android`; rewritten on every run.\n"
        "     One device group per device profile; Play serves a phone the first group it matches, and phones in\n"
        f"     no group the default group '{DEFAULT_GROUP}' ({GROUP_PREFIX}{DEFAULT_GROUP}: the {fallback} build).\n"
        + "\n".join(f"    {line}" for line in lines).replace("--", "- -")
        + "\n-->\n"
    )
    return '<?xml version="1.0" encoding="utf-8"?>\n' + comment + ET.tostring(root, encoding="unicode") + "\n"


def integrate_android(
    dist: Path | None,
    project: Path,
    module: str = "app",
    mode: str = "assets",
    *,
    remove: bool = False,
    targets: Sequence[str] = (),
    profiles: Sequence[str] = (),
) -> IntegrationResult:
    """Copy `dist`'s Android builds into the Gradle project `project` (module `module`); see the module docstring.

    `targets` keeps only those targets' files; `profiles` names profile YAMLs (or built-in names) for devices whose
    RAM the manifest does not record and that are not built in. `remove=True` takes everything out again.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode '{mode}' is not one of: {', '.join(MODES)}")
    gradle = find_gradle_project(Path(project), module)
    command = "edgeprune integrate android"
    edits = Edits()
    if remove:
        _plan_removal(gradle, edits, command)
        written, unchanged, removed = edits.apply()
        _remove_empty(gradle)
        return IntegrationResult("android", gradle.root, "remove", (), written, unchanged, removed)
    if dist is None:
        raise ConfigError("--dist is required (the folder `edgeprune build --out` wrote), except with --remove")
    android, others = platform_builds(read_dist(Path(dist), tuple(targets)), "android", Path(dist), "pixel-8")
    ram = _ram_lookup(android, profiles)
    devices = [(b.name, ram[b.name], b.manifest["device"]["soc"], b.manifest["device"]["tier"]) for b in android]
    groups, warnings = device_groups(devices, load_soc_ids())
    by_name = {b.name: b for b in android}
    used = _used_targets(android)
    warnings += _version_warnings(android)
    notes = [f"skipped {', '.join(others)}: not Android device builds"] if others else []

    assets = (gradle.root / PACK if mode == "ai-pack" else gradle.module_dir) / "src" / "main" / "assets"
    planned: dict[Path, set[str]] = {}
    for group in groups:
        planned[assets / group.folder] = _copy_build(edits, by_name[group.device], assets / group.folder)
    fallback = groups[0]
    planned[assets / f"{GROUP_PREFIX}{DEFAULT_GROUP}"] = _copy_build(
        edits, by_name[fallback.device], assets / f"{GROUP_PREFIX}{DEFAULT_GROUP}"
    )
    for group in groups:
        if not group.selectors:
            notes.append(f"device '{group.device}' gets no device group (one RAM class, SoC unknown): every phone "
                         f"gets the '{DEFAULT_GROUP}' folder, which holds its build")
    notes.append(f"phones in no device group get the {fallback.device} build ({GROUP_PREFIX}{DEFAULT_GROUP})")
    _plan_stale_assets(gradle, edits, planned)

    edits.write(gradle.module_dir / XML_NAME, targeting_xml(groups, fallback.device))
    edits.write(gradle.module_dir / SCRIPT_NAME, _render_script(gradle, Path(dist), mode, used, tuple(targets)))
    apply_line = f'apply(from = "{SCRIPT_NAME}")' if gradle.kotlin_dsl else f"apply from: '{SCRIPT_NAME}'"
    _set_block(edits, gradle.build_file, apply_line, "//", command)
    _set_block(edits, gradle.root / "gradle.properties", TARGETING_PROPERTY, "#", command)
    pack_dir = gradle.root / PACK
    if mode == "ai-pack":
        _check_pack_dir(pack_dir)
        edits.write(pack_dir / ("build.gradle.kts" if gradle.kotlin_dsl else "build.gradle"), _pack_build_file(gradle))
        include = f'include(":{PACK}")' if gradle.settings_file.suffix == ".kts" else f"include ':{PACK}'"
        _set_block(edits, gradle.settings_file, include, "//", command)
    else:
        _plan_pack_removal(gradle, edits, command)
    _plan_kotlin(gradle, edits, used)
    if not re.search(r"com\.android\.application|android[.-]application", read_text(gradle.build_file)):
        warnings.append(f"'{gradle.build_file}' does not apply com.android.application: device groups and the "
                        "bundle split work only in the app module")
    written, unchanged, removed = edits.apply()
    return IntegrationResult(
        "android", gradle.root, mode, tuple(b.name for b in android), written, unchanged, removed,
        tuple(warnings), tuple(notes), groups,
    )


def _ram_lookup(builds: Sequence[DeviceBuild], profiles: Sequence[str]) -> dict[str, float]:
    """RAM of each device: the manifest's ram_gb, else a --profile, else the built-in profile."""
    given: dict[str, DeviceProfile] = {}
    for item in profiles:
        prof = load_profile(item)
        given[prof.name] = prof
    builtin = builtin_profiles()
    out = {}
    for build in builds:
        recorded = build.manifest["device"].get("ram_gb")
        prof = given.get(build.name) or builtin.get(build.name)
        if recorded is not None:
            out[build.name] = float(recorded)
        elif prof is not None:
            out[build.name] = float(prof.ram_gb)
        else:
            raise ConfigError(f"device '{build.name}' ({build.manifest_path}) is not a built-in profile and its "
                              "manifest records no ram_gb; pass its profile YAML with --profile PATH")
    return out


def _used_targets(builds: Iterable[DeviceBuild]) -> tuple[TargetSpec, ...]:
    present = {a.spec.name for b in builds for a in b.artifacts}
    return tuple(spec for name, spec in TARGET_SPECS.items() if name in present)


def _version_warnings(builds: Iterable[DeviceBuild]) -> list[str]:
    """A warning where an artifact was measured on a runtime whose major.minor differs from the app's."""
    out = []
    for build in builds:
        for art in build.artifacts:
            spec = art.spec
            versions = art.entry["measured"]["runtime_versions"]
            recorded = versions.get(spec.android_version_of) or versions.get(spec.android_version_of.replace("-", "_"))
            app = spec.android_dependencies[0].rsplit(":", 1)[1]
            if recorded and recorded.split(".")[:2] != app.split(".")[:2]:
                out.append(f"{build.name}/{art.name} was built and measured with {spec.android_version_of} {recorded}, "
                           f"but the app gets {spec.android_dependencies[0]}; rebuild with a matching "
                           f"{spec.android_version_of} or check that runtime reads the file")
    return out


def _copy_build(edits: Edits, build: DeviceBuild, folder: Path) -> set[str]:
    """Plan the copy of a device build's manifest and artifacts into `folder`; returns the file names."""
    edits.write(folder / "manifest.json", build.manifest_path.read_bytes())
    for art in build.artifacts:
        edits.copy(folder / art.name, art.path, art.sha256)
    return {"manifest.json", *(a.name for a in build.artifacts)}


def _plan_stale_assets(gradle: GradleProject, edits: Edits, planned: dict[Path, set[str]]) -> None:
    """Delete edgeprune asset folders (and files in them) that this run does not write, in either mode's place."""
    for assets in (gradle.module_dir / "src/main/assets", gradle.root / PACK / "src/main/assets"):
        if not assets.is_dir():
            continue
        for folder in sorted(assets.glob(f"{GROUP_PREFIX}*")):
            if folder not in planned:
                edits.delete(folder)
            elif folder.is_dir():
                for file in sorted(folder.iterdir()):
                    if file.name not in planned[folder]:
                        edits.delete(file)


def _render_script(gradle: GradleProject, dist: Path, mode: str, used: Sequence[TargetSpec],
                   targets: Sequence[str]) -> str:
    template = (data_dir("targets") / "android" / SCRIPT_NAME).read_text()
    dist_abs, root_abs = dist.resolve(), gradle.root.resolve()
    dist_text = Path(os.path.relpath(dist_abs, root_abs) if dist_abs.is_relative_to(root_abs) else dist_abs).as_posix()
    for what, value in (("--dist", dist_text), ("--module", gradle.module)):
        if "'" in value or "\\" in value:
            raise ConfigError(f"{what} '{value}' contains a quote or backslash, which the Gradle script cannot hold; "
                              "use a path without them")
    no_compress = sorted({spec.suffix.lstrip(".") for spec in used if spec.store_uncompressed})
    values = {
        "NO_COMPRESS": "[" + ", ".join(f"'{ext}'" for ext in no_compress) + "]",
        "ASSET_PACKS": f"    assetPacks.add(':{PACK}')\n" if mode == "ai-pack" else "",
        "DEPENDENCIES": "".join(f"    implementation '{dep}'\n" for spec in used for dep in spec.android_dependencies),
        "DIST": dist_text,
        "MODULE": gradle.module,
        "MODE": mode,
        "TARGET_ARGS": "".join(f", '--target', '{t}'" for t in targets),
    }
    for key, value in values.items():
        template = template.replace(f"@@{key}@@", value)
    return template


def _set_block(edits: Edits, path: Path, body: str, comment: str, command: str) -> None:
    text = edits_text(edits, path)
    edits.write(path, with_block(text, block_text(body, comment, command), comment, path))


def edits_text(edits: Edits, path: Path) -> str:
    """The text a file will have: what this run already plans for it, else what is on disk."""
    planned = edits.writes.get(path)
    return planned.decode() if isinstance(planned, bytes) else read_text(path)


def _check_pack_dir(pack_dir: Path) -> None:
    for name in ("build.gradle.kts", "build.gradle"):
        file = pack_dir / name
        if file.is_file() and not read_text(file).startswith(_PACK_HEADER):
            raise ConfigError(f"'{file}' exists and was not written by edgeprune; the AI pack module "
                              f"'{PACK}' needs that folder: move the module, then run the command again")


def _pack_build_file(gradle: GradleProject) -> str:
    plugin = 'id("com.android.ai-pack")' if gradle.kotlin_dsl else "id 'com.android.ai-pack'"
    quote = '"'
    hook_target = ":" + gradle.module.replace("/", ":") + ":edgepruneIntegrate"
    hook = (
        f'tasks.configureEach {{ if (name.contains("Asset")) dependsOn("{hook_target}") }}'
        if gradle.kotlin_dsl
        else f"tasks.configureEach {{ task -> if (task.name.contains('Asset')) task.dependsOn('{hook_target}') }}"
    )
    return (
        f"{_PACK_HEADER}; rewritten on every run, `--remove` deletes this module.\n"
        "// Install-time AI pack holding one model variant per device group (src/main/assets/edgeprune#group_*).\n"
        f"plugins {{\n    {plugin}\n}}\n\n"
        f"aiPack {{\n    packName = {quote}{PACK}{quote}\n"
        f"    dynamicDelivery {{\n        deliveryType = {quote}install-time{quote}\n    }}\n}}\n\n"
        f"{hook}\n"
    )


def _plan_pack_removal(gradle: GradleProject, edits: Edits, command: str) -> None:
    pack_dir = gradle.root / PACK
    files = [pack_dir / n for n in ("build.gradle.kts", "build.gradle")]
    if any(f.is_file() and read_text(f).startswith(_PACK_HEADER) for f in files):
        edits.delete(pack_dir)
    text = edits_text(edits, gradle.settings_file)
    stripped = without_block(text, "//", gradle.settings_file)
    if stripped != text:
        edits.write(gradle.settings_file, stripped)


def _plan_kotlin(gradle: GradleProject, edits: Edits, used: Sequence[TargetSpec]) -> None:
    kit = data_dir("targets") / "android"
    folder = gradle.module_dir / KOTLIN_PACKAGE_DIR
    edits.write(folder / LOADER_FILE, (kit / LOADER_FILE).read_bytes())
    for spec in TARGET_SPECS.values():
        file = folder / f"{spec.android_runner}.kt"
        if spec in used:
            edits.write(file, (kit / file.name).read_bytes())
        elif file.exists():
            edits.delete(file)
    entries = "\n".join(f'    "{spec.name}" to ::{spec.android_runner},' for spec in used)
    edits.write(
        folder / RUNTIMES_FILE,
        "// EdgepruneRuntimes.kt: written by `edgeprune integrate android` (rewritten on every run): the runtimes\n"
        "// of the targets whose files this app holds, in edgeprune's registry order (EdgepruneModel.open tries\n"
        "// them in this order).\n"
        "package dev.edgeprune\n\nimport android.content.Context\n\n"
        f"internal val RUNTIMES: Map<String, (Context, ModelFile) -> Runner> = linkedMapOf(\n{entries}\n)\n",
    )


def _plan_removal(gradle: GradleProject, edits: Edits, command: str) -> None:
    _plan_stale_assets(gradle, edits, {})
    for name in (XML_NAME, SCRIPT_NAME):
        if (gradle.module_dir / name).exists():
            edits.delete(gradle.module_dir / name)
    folder = gradle.module_dir / KOTLIN_PACKAGE_DIR
    for name in (LOADER_FILE, RUNTIMES_FILE, *(f"{s.android_runner}.kt" for s in TARGET_SPECS.values())):
        if (folder / name).exists():
            edits.delete(folder / name)
    for path, comment in ((gradle.build_file, "//"), (gradle.root / "gradle.properties", "#")):
        text = read_text(path)
        stripped = without_block(text, comment, path)
        if stripped != text:
            if stripped or path == gradle.build_file:
                edits.write(path, stripped)
            else:
                edits.delete(path)  # gradle.properties held only edgeprune's block: it did not exist before
    _plan_pack_removal(gradle, edits, command)


def _remove_empty(gradle: GradleProject) -> None:
    """Remove the Kotlin package folders edgeprune made, once empty."""
    folder = gradle.module_dir / KOTLIN_PACKAGE_DIR
    for path in (folder, folder.parent):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
