"""`edgeprune emulator create|start|stop`: an emulated ARM64 device, served as an ssh board and an adb device.

Also `add_runners_build` / `run_runners_build`, the `edgeprune runners build` subcommand that compiles the native
ExecuTorch runner for this machine or aarch64 and adds it to the runner cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ARCH_HELP = "the architecture to emulate (known: arm64)"


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the `emulator` command (create, start, stop) to the CLI's subcommands."""
    from edgeprune.emulator.recipe import DEFAULT_CPU

    emulator = sub.add_parser("emulator", help="an emulated ARM64 device (qemu) behind the ssh and adb runners, for "
                                                "output parity on ARM kernels (not latency)")  # fmt: skip
    actions = emulator.add_subparsers(dest="emulator_command", required=True, parser_class=parser_class)
    create = actions.add_parser("create", help="build the device's root (cached by content; about 3 minutes the "
                                               "first time); needs root and qemu-user-static with binfmt_misc")  # fmt: skip
    start = actions.add_parser("start", help="serve the device on 127.0.0.1 as an ssh board and an adb device "
                                             "(creates it first if needed) and print the --on arguments")  # fmt: skip
    stop = actions.add_parser("stop", help="end the ssh and adb fronts that `emulator start` started")
    for p in (create, start):
        p.add_argument("arch", nargs="?", default="arm64", help=ARCH_HELP)
        p.add_argument("--cpu", default=DEFAULT_CPU, help=f"the CPU model qemu emulates (default {DEFAULT_CPU}; qemu's "
                                                          "'max' is refused: it computed wrong XNNPACK outputs)")
        p.add_argument("--mirror", help="Debian mirror for debootstrap (default: this machine's apt source)")
        p.add_argument("--json", action="store_true", help="print JSON")
    start.add_argument("--ssh-port", type=int, default=0, help="port of the ssh board (default: a free one)")
    start.add_argument("--adb-port", type=int, default=0, help="port of the adb device (default: a free one)")
    start.add_argument("--adb-server-port", type=int, default=5037,
                       help="an adb server already running on this port is told to connect the device (default 5037)")
    start.add_argument("--no-ssh", action="store_true", help="do not start the ssh board")
    start.add_argument("--no-adb", action="store_true", help="do not start the adb device")
    stop.add_argument("--json", action="store_true", help="print JSON")
    return emulator


def run(args: argparse.Namespace, out: Any) -> int:
    from edgeprune.emulator import fronts, root

    def say(text: str) -> None:
        if not getattr(args, "json", False):
            out.print(text, markup=False, highlight=False)

    if args.emulator_command == "stop":
        ended = {}
        home = root.emulator_dir()
        for state in sorted(home.glob("*.run/state.json")) if home.is_dir() else ():
            device = state.parent.with_name(state.parent.name[: -len(".run")])
            ended[device.name] = fronts.stop(device)
        if args.json:
            print(json.dumps(ended, indent=2))
        elif not any(ended.values()):
            say("no emulated device was being served")
        for name, what in ended.items():
            say(f"stopped {name}: {', '.join(what) or 'nothing was still running'}")
        return 0

    device = root.create(args.arch, args.cpu, mirror=args.mirror, log=lambda text: say(f"emulator: {text}"))
    if args.emulator_command == "create":
        info = {"root": str(device.path), "emulated": device.recipe.marker, "cached": device.cached,
                "created_s": round(device.created_s, 1), "recipe_sha256": device.recipe.sha256}
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            how = "found in the cache" if device.cached else f"created in {device.created_s:.0f} s"
            say(f"emulated {device.recipe.arch} device ({device.recipe.marker}) {how}: {device.path}")
        return 0

    state = fronts.start(device, ssh=not args.no_ssh, adb=not args.no_adb, ssh_port=args.ssh_port,
                         adb_port=args.adb_port, adb_server_port=args.adb_server_port)  # fmt: skip
    if args.json:
        print(json.dumps({**state.to_dict(), "ssh_arguments": state.ssh_arguments(),
                          "adb_arguments": state.adb_arguments()}, indent=2))  # fmt: skip
        return 0
    say(f"emulated {device.recipe.arch} device ({device.recipe.marker}) served from {device.path}")
    if state.ssh_target:
        say(f"  ssh board:  edgeprune validate DIST/DEVICE {' '.join(state.ssh_arguments())} --runs 3 --warmup 1 --blocks 1")
    if state.adb_serial:
        if state.adb_server_port is None:
            say(f"  adb device: adb connect {state.adb_serial}   (no adb server was running to connect it)")
        say(f"  adb device: edgeprune validate DIST/DEVICE {' '.join(state.adb_arguments())} --runs 3 --warmup 1 --blocks 1")
    say("  emulated time is no device's latency: latency, memory and energy are recorded 'not measured: emulated device'")
    say("  stop it with: edgeprune emulator stop")
    return 0


# ------------------------------------------------------------------------------------------------ runners build


def add_runners_build(runners_sub: Any, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """`edgeprune runners build`: add it to the `runners` command's subcommands."""
    build = runners_sub.add_parser("build", help="compile edgeprune's native ExecuTorch runner (for .pte on devices "
                                                 "without Python or torch) and add it to the runner cache")  # fmt: skip
    build.add_argument("--arch", default=None, help="x86_64 or aarch64 (default: this machine's)")
    build.add_argument("--out", type=Path, help="also keep the bundle (program + lib/) in this folder")
    return build


def run_runners_build(args: argparse.Namespace, out: Any) -> int:
    import tempfile

    from edgeprune.runners import cache, native_runner

    with tempfile.TemporaryDirectory(prefix="edgeprune-runner-") as tmp:
        dest = args.out or Path(tmp) / "bundle"
        bundle = native_runner.build_bundle(dest, args.arch)
        stored = cache.add(dest)
    out.print(f"built {native_runner.RUNNER_NAME} for {bundle.abi}; cached as {stored.path}"
              + (f"; bundle kept in {args.out}" if args.out else ""), markup=False, highlight=False)  # fmt: skip
    return 0
