"""Measurement tables: JSON Lines files of timed models, from which cost-model coefficients are fitted.

Two kinds of table, same record format:

- a calibration table, written by `edgeprune calibrate` next to the profile it produces
  (`my-host.yaml` -> `my-host.calibration.jsonl`): one record per (suite network, target, scheme) plus the
  reference-network rounds of the noise check. It is appended to (and fsynced) after every measurement, so an
  interrupted run keeps what it measured and the next run resumes from it;
- a feedback table, one per device profile, in the user cache
  (`$EDGEPRUNE_CACHE_DIR` or `$XDG_CACHE_HOME/edgeprune` or `~/.cache/edgeprune`, then
  `calibration/<profile>.feedback.jsonl`): every measurement edgeprune takes of a real model on that device can be
  appended with `append_measurement`, and the next fit (`edgeprune calibrate`, which also reads the feedback
  table of the profile it calibrates) uses it, so the cost model improves with use.

Every record carries its provenance: `kind` ('suite', 'reference' or 'feedback'), target, scheme, threads,
`where` it ran, the runner, runtime versions and the UTC time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Iterable

from edgeprune.errors import ConfigError

TABLE_VERSION = 1
REQUIRED = ("kind", "target", "scheme", "threads", "latency_p50_ms")


def cache_dir() -> Path:
    """edgeprune's user cache folder (same rule as the bundled example models)."""
    if os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(os.environ["EDGEPRUNE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "edgeprune"


def feedback_path(profile_name: str) -> Path:
    if not profile_name or "/" in profile_name or profile_name.startswith("."):
        raise ConfigError(f"profile name '{profile_name}' cannot name a feedback table; use the profile's short name")
    return cache_dir() / "calibration" / f"{profile_name}.feedback.jsonl"


def table_path_for(profile_path: Path) -> Path:
    """The calibration table written beside a calibrated profile: `x.yaml` -> `x.calibration.jsonl`."""
    profile_path = Path(profile_path)
    return profile_path.with_name(profile_path.stem + ".calibration.jsonl")


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_table(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a table; a torn last line (an interrupted write) is skipped, a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if isinstance(rec, dict):
                records.append(rec)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line and fsync, so that an interruption loses at most the line being written."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ConfigError(f"measurement record lacks {', '.join(missing)}; give {', '.join(REQUIRED)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"table_version": TABLE_VERSION} | record, separators=(",", ":"), sort_keys=False)
    # A torn last line from an earlier interruption would swallow this record: start on a fresh line.
    prefix = ""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(prefix + line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def append_measurement(profile_name: str, record: dict[str, Any]) -> Path:
    """Append a measurement of a real model to the device's feedback table; returns the table's path.

    Build the record with `edgeprune.cost.measurement_record(...)` (it carries the model's kernel features,
    which the fit needs), or give a dict with at least kind, target, scheme, threads, latency_p50_ms and
    `kernels` (compact kernel rows from `edgeprune.cost.fit.compact_kernels`).
    """
    path = feedback_path(profile_name)
    append_record(path, {"kind": "feedback", "profile": profile_name} | dict(record))
    return path


def select(records: Iterable[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]
