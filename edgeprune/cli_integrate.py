"""`edgeprune integrate android|ios`: the command-line face of `edgeprune.integrate`.

`add_parsers(sub, parser_class)` adds the `integrate` command to the CLI's subparsers; `run(args, out)` runs it
and prints what changed, the warnings and what is left to do by hand. Errors are raised as EdgepruneError for
the CLI to print as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from edgeprune.errors import ConfigError
from edgeprune.target_specs import TARGET_SPECS


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `integrate android` and `integrate ios` to `sub` (the CLI's subparsers); returns the `integrate` parser."""
    integrate = sub.add_parser("integrate", help="put a build's models into an Android or iOS app project")
    platforms = integrate.add_subparsers(dest="integrate_platform", required=True, parser_class=parser_class)
    android = platforms.add_parser(
        "android", help="copy the models into a Gradle project: assets or an AI pack, one device group per profile"
    )
    ios = platforms.add_parser(
        "ios", help="copy the models, a Swift loader and a build-phase script into an Xcode project"
    )
    for p in (android, ios):
        p.add_argument("--dist", type=Path, help="the folder `edgeprune build --out` wrote (not needed with --remove)")
        p.add_argument("--project", type=Path, required=True, help="the app's root folder")
        p.add_argument("--target", action="append", dest="targets", choices=list(TARGET_SPECS), default=None,
                       help="copy only this target's files (repeatable; default: every target in the dist)")
        p.add_argument("--remove", action="store_true", help="take out everything an earlier run put in")
    android.add_argument("--module", default="app", help="the app module's folder (default: app)")
    android.add_argument("--mode", choices=("assets", "ai-pack"), default="assets",
                         help="assets: the module's src/main/assets (default); ai-pack: an install-time Play AI pack")
    android.add_argument("--profile", action="append", dest="profiles", default=None,
                         help="profile YAML of a device that is not built in (repeatable; for its RAM)")
    return integrate


def run(args: argparse.Namespace, out: Console) -> int:
    """Run `edgeprune integrate ...` from parsed `args`; prints a short report to `out`; returns the exit code."""
    from edgeprune.integrate import integrate_android, integrate_ios

    if args.dist is None and not args.remove:
        raise ConfigError(f"integrate {args.integrate_platform}: --dist is required (the folder `edgeprune build "
                          "--out` wrote), except with --remove")
    targets = tuple(args.targets or ())
    if args.integrate_platform == "android":
        result = integrate_android(args.dist, args.project, args.module, args.mode, remove=args.remove,
                                   targets=targets, profiles=tuple(args.profiles or ()))
    else:
        result = integrate_ios(args.dist, args.project, remove=args.remove, targets=targets)
    root = result.project
    if result.mode == "remove":
        out.print(f"removed edgeprune from {escape(str(root))}: {len(result.removed)} path(s) removed, "
                  f"{len(result.written)} file(s) restored" if result.changed else
                  f"nothing of edgeprune's in {escape(str(root))}")
    elif result.changed:
        out.print(f"{result.platform} app {escape(str(root))} ({result.mode}): {', '.join(result.devices)}; "
                  f"{len(result.written)} file(s) written, {len(result.removed)} removed, "
                  f"{len(result.unchanged)} unchanged")
    else:
        out.print(f"{result.platform} app {escape(str(root))}: up to date ({len(result.unchanged)} files unchanged)")
    for group in result.groups:
        out.print(f"  device group {group.name}: {group.device} ({group.ram_gb:g} GB, {escape(group.soc)})")
    for path in result.written:
        out.print(f"  wrote {escape(_rel(path, root))}")
    for path in result.removed:
        out.print(f"  removed {escape(_rel(path, root))}")
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    for note in result.notes:
        out.print(f"note: {escape(note)}")
    return 0


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
