"""`edgeprune report DIST`: rewrite DIST/report.html from the build's build.json, manifests and plans."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the `report` command to the CLI's subcommands. `sub` already makes `parser_class` parsers (one-line
    errors, exit 2); the argument keeps every command module's hook the same."""
    report = sub.add_parser("report", help="rewrite DIST/report.html (charts of budgets, Pareto front, keep ratios, "
                                           "per-op latency, verdicts) from a build folder")
    report.add_argument("dist", type=Path, help="the output folder of 'edgeprune build' (it holds build.json)")
    return report


def run(args: argparse.Namespace, out: Any) -> int:
    """Write the report; a folder without build.json or manifests is a ConfigError (exit 2)."""
    from edgeprune.report import write_report

    path = write_report(args.dist)
    out.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return 0
