"""The `edgeprune` command. Maps each EdgepruneError to a one-line message and its exit code.

Exit codes: 0 ok · 1 internal error · 2 bad input/config · 3 a budget was not met · 4 device/runtime unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from edgeprune.errors import ConfigError, EdgepruneError
from edgeprune.types import SCHEMES, TARGETS

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_DEVICE = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _add_model_options(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required,
                   help="examples:digits, torchvision:NAME, timm:NAME or pkg.module:factory")
    p.add_argument("--weights", help="state_dict file (loaded with weights_only=True)")
    p.add_argument("--input-shape", help="batch-1 input shape, e.g. 1,3,224,224")
    p.add_argument("--data", help="examples:digits|shapes-detect|shapes-segment, a .npz (x and y, or x with "
                                   "boxes/box_labels/box_image), an image folder (class subfolders, images/+masks/, "
                                   "or images/+annotations.json), or pkg.module:callable")
    p.add_argument("--device", action="append", dest="devices",
                   help="profile name or .yaml path (repeatable; default host; apply: the plan's device)")
    p.add_argument("--out", required=model_required, type=Path, help="output folder (dist/<device>/ per device)")
    p.add_argument("--seed", type=int, default=0)


def _add_budget_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency-ms", type=_positive_float, help="override the latency budget")
    p.add_argument("--size-mb", type=_positive_float, help="override the model size budget")
    p.add_argument("--memory-mb", type=_positive_float, help="override the peak memory budget")
    p.add_argument("--energy-mj", type=_positive_float, help="override the energy-per-inference budget")
    p.add_argument("--max-accuracy-drop", type=_non_negative_float, help="override the allowed accuracy drop, in points")
    p.add_argument("--metric", help="what the build is judged by on the test split: top1, miou, map50, map50_95, mae, "
                                     "rmse or pkg.module:callable, '@OUTPUT' to name the output scored (default: the "
                                     "model's task's metric)")
    p.add_argument("--max-metric-drop", type=_non_negative_float,
                   help="the largest loss of --metric allowed vs the unpruned model, in the metric's units")
    p.add_argument("--max-class-drop", type=_non_negative_float,
                   help="the class guard: the largest top-1 loss allowed on any one class, in points")
    p.add_argument("--max-shift-drop", type=_non_negative_float,
                   help="the robustness guard: the largest top-1 loss allowed on shifted inputs (noise, blur, "
                        "contrast, shift), in points")
    p.add_argument("--round-to", type=int, default=8, help="round pruned channel counts to this multiple (default 8)")
    p.add_argument("--importance",
                   help="channel importance: l2, l1, bn-scale, fpgm, random, or the data-aware taylor (first-order "
                        "Taylor on a label-free loss) and wanda (|W| x input activation norm), which score channels on "
                        "up to 64 calibration inputs (default: l2 for a fixed plan; the planner searches l2 and fpgm, "
                        "or only this one when given)")
    p.add_argument("--finetune-epochs", type=int, default=10,
                   help="distillation epochs after pruning, on labelled train data (default 10; 0 = none)")


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default="greedy", choices=("greedy", "optuna"), help="search strategy (default greedy)")
    p.add_argument("--minimize", choices=("latency",),
                   help="latency: the fastest plan within --max-accuracy-drop (default: the most accurate within budget)")
    p.add_argument("--schemes", default="fp32,int8",
                   help="quantisation schemes the search may choose, comma-separated (default fp32,int8)")
    p.add_argument("--time-budget", type=_positive_float, help="seconds the search may take (default: no limit)")
    p.add_argument("--threads", type=int,
                   help="thread count of the plan (default: search 1, 2, 4, ... up to the profile's default_threads)")
    p.add_argument("--executor", choices=("serial", "process", "ray"),
                   help="where the sensitivity analysis runs: serial (this process), process (a local pool, the "
                        "default), ray (a Ray cluster)")
    p.add_argument("--workers", type=int, help="executor workers (default: one per core, or the Ray cluster's CPUs)")
    p.add_argument("--ray-address", help="address of a running Ray cluster (with --executor ray; default: a local one)")
    p.add_argument("--storage", help="Optuna storage URL shared by search workers, e.g. sqlite:///study.db "
                                     "(with --strategy optuna; default: in memory)")
    p.add_argument("--resume", action="store_true",
                   help="continue a planned build that crashed or was killed, from its journal (OUT.journal)")
    p.add_argument("--rank-epochs", type=int, default=3,
                   help="brief fine-tune epochs of each top candidate while ranking them (default 3); the chosen "
                        "plan then gets --finetune-epochs")
    p.add_argument("--iterative-steps", type=int, default=3,
                   help="when the chosen plan removes over half the MACs, also fine-tune it pruned in this many "
                        "steps and keep whichever schedule scores higher on validation (default 3; 1: one-shot only)")


BLOCKS_HELP = ("measurement blocks of --runs each, a short pause apart; latency p50/p90 are the blocks' medians "
               "(default 3)")


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--blocks", type=int, default=3, help=BLOCKS_HELP)
    _add_runner_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeprune", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party output (converters, runtimes) on the terminal too; it is always kept "
                             "in the run's edgeprune.log")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    devices = sub.add_parser("devices", help="list the built-in device profiles and their budgets")
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.add_argument("--connected", action="store_true", help="list attached phones and emulators (adb) instead")
    devices.add_argument("--adb-port", type=int, default=5037, help="port of the adb server (default 5037)")

    profile = sub.add_parser("profile", help="inspect device profiles")
    profile_sub = profile.add_subparsers(dest="profile_command", required=True, parser_class=_Parser)
    show = profile_sub.add_parser("show", help="show one profile")
    show.add_argument("name", help="built-in profile name or path to a profile .yaml")
    show.add_argument("--json", action="store_true", help="print JSON")
    draft = profile_sub.add_parser("draft", help="write a profile YAML from what an attached device reports")
    draft.add_argument("--on", required=True, help="adb or adb:SERIAL")
    draft.add_argument("--out", type=Path, help="write the YAML here (default: print it)")
    draft.add_argument("--adb-port", type=int, default=5037, help="port of the adb server (default 5037)")

    runners = sub.add_parser("runners", help="the cache of on-device benchmark programs (benchmark_model, ...)")
    runners_sub = runners.add_subparsers(dest="runners_command", required=True, parser_class=_Parser)
    add = runners_sub.add_parser("add", help="add a benchmark_model / executor_runner / onnxruntime_perf_test binary")
    add.add_argument("path", help="the binary, built for the device's ABI")
    runners_sub.add_parser("list", help="list cached benchmark programs")
    from edgeprune import cli_emulator

    cli_emulator.add_runners_build(runners_sub, _Parser).set_defaults(module_run=cli_emulator.run_runners_build)

    build = sub.add_parser("build", help="plan for the budgets (or apply --prune/--quant), export and measure")
    build.add_argument("--config", type=Path,
                       help="build every model of a project config (edgeprune.yaml); unchanged ones are not rebuilt")
    build.add_argument("--force", action="store_true", help="with --config: rebuild even when the inputs are unchanged")
    _add_model_options(build, model_required=False)
    build.add_argument("--target", action="append", dest="targets", choices=TARGETS,
                       help="export target (repeatable); when planning, the targets the search may choose among")
    build.add_argument("--prune", type=float, default=None,
                       help="fixed plan: fraction of prunable channels to remove, in [0, 1) (omit both --prune and "
                            "--quant to plan for the budgets)")
    build.add_argument("--quant", default=None, choices=SCHEMES, help="fixed plan: fp32 | fp16 | int8 (static) | int8-dynamic")
    build.add_argument("--keep-heads", type=float, default=None,
                       help="fixed plan, transformer encoders: share of attention heads kept per layer (whole heads)")
    build.add_argument("--keep-mlp", type=float, default=None,
                       help="fixed plan, transformer encoders: share of MLP hidden neurons kept")
    build.add_argument("--keep-blocks", type=int, default=None,
                       help="fixed plan, transformer encoders: encoder blocks kept per stack")
    build.add_argument("--prune-steps", type=int, default=1,
                       help="fixed plan: remove the channels in this many steps with a brief fine-tune between them "
                            "(iterative pruning; default 1, one-shot)")
    _add_budget_options(build)
    _add_plan_options(build)
    _add_measure_options(build)

    plan = sub.add_parser("plan", help="search the plan that meets each device's budgets; write plan.yaml, no artifacts")
    _add_model_options(plan)
    plan.add_argument("--target", action="append", dest="targets", choices=TARGETS, help="targets the search may choose among")
    _add_budget_options(plan)
    _add_plan_options(plan)
    _add_measure_options(plan)

    apply = sub.add_parser("apply", help="replay a plan.yaml on the model: the same architecture and artifact")
    apply.add_argument("plan", type=Path, help="a plan.yaml written by 'edgeprune build' or 'edgeprune plan'")
    _add_model_options(apply)
    _add_measure_options(apply)

    calibrate = sub.add_parser("calibrate", help="time the calibration suite on this machine, a phone (adb) or a board "
                                                 "(ssh) and write a calibrated profile")
    calibrate.add_argument("--device", default="host",
                           help="the profile to calibrate (default host; with --on adb:/ssh:, that device's profile)")
    calibrate.add_argument("--target", action="append", dest="targets", choices=TARGETS, help="target (repeatable)")
    calibrate.add_argument("--minutes", type=float, default=None, help="time budget (default: the suite's, <= 10)")
    calibrate.add_argument("--out", required=True, type=Path, help="the calibrated profile YAML to write")
    calibrate.add_argument("--no-resume", action="store_true", help="start over instead of resuming an interrupted run")
    _add_runner_options(calibrate)

    validate = sub.add_parser("validate", help="measure built artifacts on the host, a phone (adb) or a board (ssh)")
    validate.add_argument("path", type=Path, help="a build folder (dist/) or one device's folder (dist/pixel-8)")
    validate.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    validate.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    validate.add_argument("--blocks", type=int, default=3, help=BLOCKS_HELP)
    validate.add_argument("--threads", type=int, help="threads (default: the device profile's)")
    _add_runner_options(validate, allow_all=True)
    validate.add_argument("--json", action="store_true", help="print the results as JSON")
    for name in COMMAND_MODULES:  # commands that live in their own module: add_parsers(sub, parser_class) + run()
        module = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parsers(sub, _Parser)
        for command in set(sub.choices) - before:
            sub.choices[command].set_defaults(module_run=module.run)
    return parser


COMMAND_MODULES = ("edgeprune.cli_integrate", "edgeprune.cli_report", "edgeprune.cli_emulator")
"""Modules that add a command each (integrate, report, emulator); they import no heavy library at import time."""


def _add_runner_options(parser: argparse.ArgumentParser, allow_all: bool = False) -> None:
    forms = "host (default), adb, adb:SERIAL" + (", adb:all" if allow_all else "") + " or ssh:user@host[:port]"
    parser.add_argument("--on", default="host", help=f"where to measure: {forms}")
    parser.add_argument("--remote-python", help="python interpreter on the device or board that has the runtime")
    parser.add_argument("--identity", help="ssh private key for --on ssh:...")
    parser.add_argument("--known-hosts", help="ssh known_hosts file for --on ssh:... (default: ssh's own)")
    parser.add_argument("--adb-port", type=int, default=5037, help="port of the adb server (default 5037)")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _budget_text(profile: Any) -> dict[str, str]:
    b = profile.budget
    return {
        "latency": f"{_fmt(b.latency_ms, 1)} ms {b.latency_percentile}" if b.latency_ms else "-",
        "size": f"{_fmt(b.model_size_mb, 1)} MB" if b.model_size_mb else "-",
        "memory": f"{_fmt(b.peak_memory_mb, 0)} MB" if b.peak_memory_mb else "-",
        "energy": f"{_fmt(profile.energy_limit_mj, 1)} mJ" if profile.energy_limit_mj else "-",
        "accuracy drop": f"{_fmt(b.max_accuracy_drop_pct, 1)} pt" if b.max_accuracy_drop_pct is not None else "-",
    }


def _cmd_devices(args: argparse.Namespace, out: Console) -> int:
    if args.connected:
        return _cmd_devices_connected(args, out)
    from edgeprune.profiles import builtin_profiles

    profiles = builtin_profiles()
    if args.json:
        rows = [p.model_dump(mode="json") | {"energy_limit_mj": p.energy_limit_mj} for p in profiles.values()]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title="Device profiles")
    for col in ("name", "tier", "platform", "SoC", "cores", "RAM GB", "threads", "latency", "size", "memory", "energy", "accuracy drop"):
        table.add_column(col)
    for p in profiles.values():
        bt = _budget_text(p)
        table.add_row(p.name, p.tier, p.platform, p.soc, str(p.total_cores), _fmt(p.ram_gb, 1), str(p.default_threads),
                      bt["latency"], bt["size"], bt["memory"], bt["energy"], bt["accuracy drop"])
    out.print(table)
    return EXIT_OK


def _cmd_devices_connected(args: argparse.Namespace, out: Console) -> int:
    from edgeprune.runners.adb import list_connected

    infos = list_connected("127.0.0.1", args.adb_port)
    if args.json:
        print(json.dumps([_device_info_dict(i) for i in infos], indent=2))
        return EXIT_OK
    table = Table(title=f"Attached devices (adb server on port {args.adb_port})")
    for col in ("serial", "state", "model", "SoC", "ABI", "SDK", "RAM GB", "CPU max GHz", "profile"):
        table.add_column(col, overflow="fold")
    for i in infos:
        ghz = ", ".join(f"{g:.2f}" for g in sorted(set(i.cpu_max_ghz), reverse=True))
        profile = f"{i.matched_profile} (by {i.match_kind})" if i.matched_profile else "none: edgeprune profile draft --on adb:" + i.serial
        table.add_row(i.serial, i.state, i.model or "-", i.soc or "-", i.abi or "-", str(i.sdk or "-"),
                      _fmt(i.ram_gb, 1), ghz or "-", profile)
    out.print(table)
    return EXIT_OK


def _device_info_dict(info: Any) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(info)
    data.pop("props", None)
    return data


def _cmd_profile_draft(args: argparse.Namespace, out: Console) -> int:
    from edgeprune._io import atomic_write_bytes
    from edgeprune.runners.adb import AdbRunner, draft_profile

    if args.on != "adb" and not args.on.startswith("adb:"):
        raise ConfigError(f"--on '{args.on}': profile draft reads a device over adb; use adb or adb:SERIAL")
    serial = args.on.split(":", 1)[1] if ":" in args.on else None
    text = draft_profile(AdbRunner(serial, adb_port=args.adb_port).device_info())
    if args.out:
        atomic_write_bytes(args.out, text.encode())
        out.print(f"wrote {args.out}; fill in the power model and budgets, then use --device {args.out}")
    else:
        print(text, end="")
    return EXIT_OK


def _cmd_runners(args: argparse.Namespace, out: Console) -> int:
    from edgeprune.runners import cache

    if args.runners_command == "add":
        binary = cache.add(args.path)
        out.print(f"cached {binary.kind} for {binary.abi}: {binary.path}")
        return EXIT_OK
    table = Table(title=f"Benchmark programs in {cache.cache_root()}")
    for col in ("kind", "ABI", "path"):
        table.add_column(col)
    for binary in cache.list_cached():
        table.add_row(binary.kind, binary.abi, str(binary.path))
    out.print(table)
    return EXIT_OK


def _cmd_profile_show(args: argparse.Namespace, out: Console) -> int:
    from edgeprune.profiles import load_profile

    prof = load_profile(args.name)
    data = prof.model_dump(mode="json") | {"energy_limit_mj": prof.energy_limit_mj}
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    table = Table(title=f"{prof.display_name} ({prof.name})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_column("source")
    table.add_row("platform / tier", f"{prof.platform} / {prof.tier}", "")
    table.add_row("SoC", prof.soc, prof.sources.get("soc", ""))
    clusters = ", ".join(f"{c.count}x {c.core} @ {c.max_ghz} GHz" for c in prof.cpu_clusters)
    table.add_row("CPU", clusters, prof.sources.get("cpu_clusters", ""))
    table.add_row("RAM", f"{prof.ram_gb} GB", prof.sources.get("ram_gb", ""))
    table.add_row("ABI / targets", f"{prof.abi} / {', '.join(prof.supported_targets)}", "")
    table.add_row("threads", str(prof.default_threads), "")
    power = f"active {prof.power.active_w} W, idle {prof.power.idle_w} W, battery {prof.power.battery_wh or '-'} Wh"
    table.add_row("power", power, prof.sources.get("power", ""))
    for name, text in _budget_text(prof).items():
        table.add_row(f"budget: {name}", text, "")
    out.print(table)
    return EXIT_OK


def _plan_settings(args: argparse.Namespace):
    from edgeprune.api import PlanSettings

    return PlanSettings(
        schemes=tuple(x.strip() for x in args.schemes.split(",") if x.strip()),
        importances=(args.importance,) if args.importance else PlanSettings.importances,
        threads=args.threads,
        strategy=args.strategy,
        objective="latency" if args.minimize == "latency" else "accuracy",
        time_budget_s=args.time_budget,
        finetune_epochs=args.finetune_epochs,
        rank_epochs=args.rank_epochs,
        iterative_steps=args.iterative_steps,
        seed=args.seed,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        storage=args.storage,
    )


SECRET_OPTIONS = ("--identity", "--known-hosts")
"""Options whose values (paths to keys) build.json does not record."""


def command_line(argv: Sequence[str]) -> tuple[str, ...]:
    """The command as build.json records it: the arguments, with secrets' paths replaced by '<given>'."""
    out, hide = ["edgeprune"], False
    for arg in argv:
        if hide:
            out.append("<given>")
            hide = False
        elif arg in SECRET_OPTIONS:
            out.append(arg)
            hide = True
        elif arg.startswith(tuple(f"{o}=" for o in SECRET_OPTIONS)):
            out.append(arg.split("=", 1)[0] + "=<given>")
        else:
            out.append(arg)
    return tuple(out)


def _measure(args: argparse.Namespace):
    from edgeprune.api import Measure

    return Measure(on=args.on, runs=args.runs, warmup=args.warmup, blocks=args.blocks, remote_python=args.remote_python,
                   identity_file=args.identity, known_hosts=args.known_hosts, adb_port=args.adb_port)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords every API verb takes the same way from the command line."""
    from edgeprune.modelspec import parse_input_shape

    return dict(
        out=args.out,
        measure=_measure(args),
        input_shape=parse_input_shape(args.input_shape) if args.input_shape else None,
        weights=args.weights,
        progress=not (args.quiet or args.json),
        verbose=args.verbose,
        _command=command_line(args.argv),
    )


def _budget_keywords(args: argparse.Namespace) -> dict[str, Any]:
    return dict(latency_ms=args.latency_ms, size_mb=args.size_mb, memory_mb=args.memory_mb, energy_mj=args.energy_mj,
                max_accuracy_drop_pts=args.max_accuracy_drop, metric=args.metric, max_metric_drop=args.max_metric_drop,
                max_class_drop_pts=args.max_class_drop, max_shift_drop_pts=args.max_shift_drop, seed=args.seed)


def _show(args: argparse.Namespace, out: Console, result: Any, plan_only: bool = False) -> int:
    if args.json:
        print(json.dumps(result.summary, indent=2))
    elif plan_only:
        _print_plan(result.summary, args.out, out)
    else:
        _print_build(result.summary, args.out, out)
    return EXIT_OK if result.passed else EXIT_BUDGET


def _cmd_build(args: argparse.Namespace, out: Console) -> int:
    import edgeprune

    if args.config is not None:
        return _cmd_build_config(args, out)
    if args.model is None or args.out is None:
        raise ConfigError("build needs --model and --out (or --config edgeprune.yaml)")
    structure = (args.keep_heads, args.keep_mlp, args.keep_blocks)
    if args.prune is None and args.quant is None and structure == (None, None, None):
        plan: Any = _plan_settings(args)
    else:
        plan = edgeprune.FixedPlan(prune=args.prune or 0.0, quant=args.quant or "fp32", importance=args.importance or "l2",
                                   round_to=args.round_to, finetune_epochs=args.finetune_epochs, threads=args.threads,
                                   keep_heads=1.0 if args.keep_heads is None else args.keep_heads,
                                   keep_mlp=1.0 if args.keep_mlp is None else args.keep_mlp, keep_blocks=args.keep_blocks,
                                   prune_steps=args.prune_steps)
    result = edgeprune.build(args.model, args.data, devices=args.devices or ["host"], targets=args.targets or (),
                             plan=plan, resume=args.resume, **_budget_keywords(args), **_common(args))
    return _show(args, out, result)


def _cmd_build_config(args: argparse.Namespace, out: Console) -> int:
    from edgeprune.project import ModelOutcome, build_project

    given = [f"--{k.replace('_', '-')}" for k in ("model", "out", "prune", "quant", "data", "weights") if getattr(args, k)]
    if given:
        raise ConfigError(f"--config takes the models, devices and output folder from the config file; drop {', '.join(given)}")

    def said(o: ModelOutcome) -> None:
        state = "built" if o.rebuilt else "up to date"
        verdict = "all budgets met" if o.passed else "a budget was not met"
        out.print(f"{o.name}: {state} ({verdict}): {o.folder}", soft_wrap=True)

    outcomes = build_project(args.config, force=args.force, progress=not (args.quiet or args.json),
                             verbose=args.verbose, on_model=None if args.json else said)
    if args.json:
        print(json.dumps([{"model": o.name, "folder": str(o.folder), "rebuilt": o.rebuilt, "passed": o.passed,
                           "inputs_sha256": o.inputs_sha256} for o in outcomes], indent=2))
    return EXIT_OK if all(o.passed for o in outcomes) else EXIT_BUDGET


def _cmd_plan(args: argparse.Namespace, out: Console) -> int:
    import edgeprune

    result = edgeprune.plan(args.model, args.data, devices=args.devices or ["host"], targets=args.targets or (),
                            plan=_plan_settings(args), resume=args.resume, **_budget_keywords(args),
                            **_common(args))
    return _show(args, out, result, plan_only=True)


def _cmd_apply(args: argparse.Namespace, out: Console) -> int:
    import edgeprune

    result = edgeprune.apply(args.plan, args.model, args.data, devices=args.devices, **_common(args))
    return _show(args, out, result)


def _print_plan(summary: dict[str, Any], out_dir: Path, out: Console) -> None:
    for dev in summary["devices"]:
        chosen = dev["planning"]["chosen"]
        keep = ", ".join(f"{k} {v:g}" for k, v in chosen["keep"].items())
        p = chosen["predicted"]
        out.print(f"{dev['device']}: {chosen['target']} {chosen['scheme']}, {chosen['importance']} importance, "
                  f"{chosen['threads']} thread(s), keep {keep}; accuracy "
                  f"{chosen['accuracy']:.2%}; predicted {p['latency_ms']:.4g} ms, {p['model_size_mb']:.3g} MB")
        for r in dev["planning"]["rounds"]:
            out.print(f"  round {r['round']}: {r['candidate']}: {r['action']}")
        out.print(f"  plan: {out_dir / dev['dir'] / 'plan.yaml'}")
    out.print(f"planning report: {out_dir / 'plan.json'}")


def _cmd_calibrate(args: argparse.Namespace, out: Console) -> int:
    from edgeprune._progress import Steps
    from edgeprune._runlog import keep_log, run_log
    from edgeprune.cost.calibrate import DEFAULT_MINUTES, run_calibration
    from edgeprune.errors import DeviceError
    from edgeprune.profiles import load_profile
    from edgeprune.runners import get_runner

    if args.on == "adb:all":
        raise ConfigError("--on adb:all: calibration measures on one device; name it with --on adb:SERIAL "
                          "(`edgeprune devices --connected` lists the serials)")
    profile = load_profile(args.device)
    if args.on == "host" and not profile.is_host:
        raise ConfigError(
            f"--device {args.device}: without --on, calibration times the suite on this machine, so it calibrates "
            "'host' only; measure on the device itself: --on adb:SERIAL (a phone) or --on ssh:user@host[:port] (a board)"
        )
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES
    if minutes <= 0:
        raise ConfigError(f"--minutes {minutes} must be > 0")
    runner = None
    if args.on != "host":
        try:
            runner = get_runner(args.on, python=args.remote_python, identity_file=args.identity,
                                known_hosts=args.known_hosts, adb_port=args.adb_port)
        except DeviceError as exc:
            raise DeviceError(f"cannot calibrate on {args.on}: {exc}") from exc
    where = "" if runner is None else f" on {runner.where}"
    with run_log(args.verbose) as term:
        try:
            with Steps(file=term.err).step(f"Calibrating {profile.name}{where} ({minutes:g} min budget)",
                                           total=1) as update:
                calibrated = run_calibration(profile, args.targets, minutes, args.out,
                                             progress=lambda done, total: update(int(done), int(total)),
                                             resume=not args.no_resume, runner=runner)
        finally:
            keep_log(term, args.out.parent)
    out.print(f"wrote {args.out}: cost model {calibrated.cost_model.status if calibrated.cost_model else 'none'}{where}; "
              f"use it with --device {args.out}")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace, out: Console) -> int:
    import edgeprune

    measure = edgeprune.Measure(on=args.on, runs=args.runs, warmup=args.warmup, blocks=args.blocks,
                                remote_python=args.remote_python, identity_file=args.identity,
                                known_hosts=args.known_hosts, adb_port=args.adb_port)
    report = edgeprune.validate(args.path, measure=measure, threads=args.threads, verbose=args.verbose)
    for note in report.notes:
        print(f"edgeprune: not measured: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(list(report.records), indent=2))
    else:
        table = Table(title=f"Validated on {report.where}")
        for col in ("device", "artifact", "p50 ms", "p90 ms", "memory MB", "accuracy", "checks"):
            table.add_column(col, overflow="fold")
        for r in report.records:
            m = r["measured"]
            checks = ", ".join(f"{c['name']}: {c['status']}" for c in r["verdict"]["checks"])
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
            table.add_row(r["device"], r["artifact"], _fmt(m["latency_p50_ms"], 3), _fmt(m["latency_p90_ms"], 3),
                          _fmt(m["peak_memory_mb"], 2), acc, checks)
        out.print(table)
    return EXIT_OK if report.passed else EXIT_BUDGET


SUMMARY_WIDTH = 100
"""The build summary fits this many columns."""


def _accuracy_text(q: dict[str, Any]) -> str:
    m = q.get("metric")
    if q.get("artifact_accuracy") is None or (m and m["metric"] != "top1"):
        if not m:
            return "-"
        low, high = m["artifact_ci95"]
        return f"{m['metric']} {m['artifact_value']:.3g} ({low:.3g}-{high:.3g})"
    text = f"{q['artifact_accuracy']:.1%}"
    ci = q.get("artifact_accuracy_ci95")
    if ci:
        text += f" ({ci[0]:.1%}-{ci[1]:.1%})"
    return text


def _capped(out: Console) -> Console:
    """`out`, at most SUMMARY_WIDTH columns wide."""
    return Console(file=out.file, width=min(out.width, SUMMARY_WIDTH), force_terminal=out.is_terminal,
                   no_color=out.no_color)


def _print_build(summary: dict[str, Any], out_dir: Path, out: Console) -> None:
    """A compact summary: one row per artifact, then the budgets that failed or could not be judged here."""
    out = _capped(out)
    pr = summary["pruning"]
    out.print(f"[bold]{summary['model']['spec']}[/]: params {pr['params_before']:,} -> {pr['params_after']:,}, "
              f"MACs {pr['macs_before']:,} -> {pr['macs_after']:,}")
    style = {"pass": "green", "fail": "bold red", "unverified": "yellow"}
    table = Table(box=None, pad_edge=False, header_style="bold")
    kinds = set()
    for col, justify in (("device", "left"), ("artifact", "left"), ("scheme", "left"), ("KB", "right"),
                         ("p50 ms", "right"), ("accuracy (95% CI)", "right"), ("budgets", "left")):
        table.add_column(col, justify=justify, no_wrap=True)
    notes = []
    for dev in summary["devices"]:
        manifest = json.loads((out_dir / dev["dir"] / "manifest.json").read_text())
        unverified: dict[str, None] = {}
        for art in manifest["artifacts"]:
            checks = art["verdict"]["checks"]
            q = art["quality"]
            m = q.get("metric")
            kinds.add(f"{m['metric']} on the {m['split']} split ({m['n']} {m['items']})" if m and m["metric"] != "top1"
                      else f"top-1 on the {q.get('split', 'test')} split ({q.get('samples')} samples)"
                      if q.get("kind") == "eval_accuracy" else
                      "top-1 agreement with the unpruned model (no labels)" if q.get("artifact_accuracy") is not None
                      else "not measured (no class-logits output; each output's parity is in the manifest)")
            counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "fail", "unverified")}
            budgets = " ".join(f"[{style[s]}]{n} {s[:5]}[/]" for s, n in counts.items() if n)
            table.add_row(dev["device"], art["path"], art["scheme"], f"{art['size_bytes'] / 1024:,.0f}",
                          f"{art['measured']['latency_p50_ms']:.3f}", _accuracy_text(art["quality"]), budgets)
            for c in checks:
                if c["status"] == "fail":
                    notes.append(f"{dev['device']} {art['path']}: [bold red]{c['name']} failed[/]: "
                                 f"{_fmt(c['value'], 4)} {c['unit']} > {_fmt(c['limit'], 4)}")
                elif c["status"] == "unverified":
                    unverified[c["name"]] = None
        if unverified:
            notes.append(f"{dev['device']}: [yellow]unverified[/] (not measured on the device): {', '.join(unverified)}")
    out.print(table)
    out.print(f"accuracy: {', '.join(sorted(kinds))}")
    for line in notes:
        out.print(line)
    failed = [d["device"] for d in summary["devices"] if not d["passed"]]
    out.print(f"[bold red]a budget was not met on: {', '.join(failed)}[/]" if failed else "[green]no budget failed[/]")
    out.print(f"details: {out_dir / 'build.json'}, {out_dir}/<device>/manifest.json; log: {out_dir / 'edgeprune.log'}",
              soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    out = Console()
    handlers = {"devices": _cmd_devices, "build": _cmd_build, "plan": _cmd_plan, "apply": _cmd_apply,
                "validate": _cmd_validate, "runners": _cmd_runners, "calibrate": _cmd_calibrate}
    if getattr(args, "module_run", None) is not None:
        handler = args.module_run
    elif args.command == "profile":
        handler = _cmd_profile_show if args.profile_command == "show" else _cmd_profile_draft
    else:
        handler = handlers[args.command]
    try:
        return handler(args, out)
    except EdgepruneError as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split("\n"))
        print(f"edgeprune: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeprune: interrupted; nothing half-written was left in the output folder", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line, traceback with --debug
        if args.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"edgeprune: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
