"""The search's journal: what a search has computed (sensitivity scores, fine-tuned candidates, measurements),
written to the run's journal folder as it is produced, so that `--resume` after a crash or `kill -9` continues where
it stopped and loses at most the evaluations in flight.

Each entry is its own file, written whole (temp file, fsync, rename), so a crash mid-write leaves no torn entry;
weights go in a `.pt` file written before the `.json` entry that names them (the entry is the commit mark). The
folder records a fingerprint of the build's inputs; resuming with other inputs is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from edgeprune._io import atomic_write_bytes, atomic_write_json
from edgeprune.errors import ConfigError

INPUTS_FILE = "inputs.json"


def _name(kind: str, key: Any) -> str:
    digest = hashlib.sha256(json.dumps([kind, key], sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (in measurements' extras) as plain numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot go into the journal")


class Journal:
    """Entries by (kind, key); `key` is anything JSON can write (tuples become lists)."""

    def __init__(self, folder: Path, fingerprint: str, resume: bool):
        self.folder = Path(folder)
        self.reused = 0
        """Entries read back (evaluations a resumed search did not redo)."""
        self.written = 0
        marker = self.folder / INPUTS_FILE
        if resume and marker.exists():
            try:
                recorded = json.loads(marker.read_text()).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                recorded = None
            if recorded != fingerprint:
                raise ConfigError(f"--resume: the journal {self.folder} was written for other inputs (model, data, "
                                  "budgets or plan settings changed); drop --resume to start afresh")
            self.resumed = True
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            atomic_write_json(marker, {"fingerprint": fingerprint})
            self.resumed = False

    def summary(self) -> dict[str, Any]:
        """What build.json records of the journal: whether the search resumed, entries read back and written."""
        return {"folder": str(self.folder), "resumed": self.resumed, "reused": self.reused, "written": self.written}

    def entries(self) -> int:
        return sum(1 for p in self.folder.glob("*.json") if p.name != INPUTS_FILE)

    def get(self, kind: str, key: Any) -> Any | None:
        path = self.folder / f"{_name(kind, key)}.json"
        if not path.exists():
            return None
        self.reused += 1
        return json.loads(path.read_text())["value"]

    def put(self, kind: str, key: Any, value: Any) -> None:
        entry = json.dumps({"kind": kind, "key": key, "value": value}, default=_plain)
        atomic_write_bytes(self.folder / f"{_name(kind, key)}.json", entry.encode())
        self.written += 1

    def get_weights(self, kind: str, key: Any) -> tuple[dict[str, torch.Tensor], Any] | None:
        facts = self.get(kind, key)
        if facts is None:
            return None
        state = torch.load(self.folder / f"{_name(kind, key)}.pt", map_location="cpu", weights_only=True)
        return state, facts

    def put_weights(self, kind: str, key: Any, state: dict[str, torch.Tensor], facts: Any) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.folder / f"{_name(kind, key)}.pt", buffer.getvalue())
        self.put(kind, key, facts)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
