"""Planned file changes to an app project, applied only after every check passed.

An integrate command first reads and checks everything (dist, manifests, hashes, project layout, existing marked
blocks) and records what it would write or delete in an `Edits`; only then `apply()` runs. Each file is written
atomically (temp file in the same folder, fsync, rename) and only when its content differs, so a second run with
the same dist leaves every file byte-identical and untouched (Gradle and Xcode see nothing new).

Marked blocks: edgeprune's lines in a file it does not own (build.gradle, settings.gradle, gradle.properties) sit
between a start and an end marker comment; `with_block` replaces them in place (or appends them once) and
`without_block` takes them out, leaving the file exactly as it was before the first run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune._io import atomic_write_bytes, sha256_file
from edgeprune.errors import ConfigError

START = ">>> edgeprune"
END = "<<< edgeprune <<<"


@dataclass(frozen=True)
class _Copy:
    source: Path
    sha256: str


@dataclass
class Edits:
    """Writes, copies and deletions to make, in that order; nothing happens before `apply()`."""

    writes: dict[Path, bytes | _Copy] = field(default_factory=dict)
    deletions: list[Path] = field(default_factory=list)

    def write(self, path: Path, data: bytes | str) -> None:
        self.writes[Path(path)] = data.encode() if isinstance(data, str) else data

    def copy(self, path: Path, source: Path, sha256: str) -> None:
        """Copy `source` (whose sha256 was checked) to `path`."""
        self.writes[Path(path)] = _Copy(Path(source), sha256)

    def delete(self, path: Path) -> None:
        """Delete a file or a whole folder edgeprune wrote."""
        if Path(path) not in self.deletions:
            self.deletions.append(Path(path))

    def apply(self) -> tuple[tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]]:
        """Make the changes; returns (written, unchanged, removed) paths."""
        written, unchanged, removed = [], [], []
        for path, content in self.writes.items():
            if _same(path, content):
                unchanged.append(path)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, _Copy):
                _atomic_copy(content.source, path)
            else:
                atomic_write_bytes(path, content)
            written.append(path)
        for path in self.deletions:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
        return tuple(written), tuple(unchanged), tuple(removed)


def _same(path: Path, content: bytes | _Copy) -> bool:
    if not path.is_file() or path.is_symlink():
        return False
    if isinstance(content, _Copy):
        return path.stat().st_size == content.source.stat().st_size and sha256_file(path) == content.sha256
    return path.stat().st_size == len(content) and path.read_bytes() == content


def _atomic_copy(source: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path) -> str:
    """A project file's text ('' when it does not exist), or ConfigError when it cannot be read as UTF-8."""
    if not path.exists():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read '{path}': {exc}; edgeprune edits only UTF-8 text files it can read") from None


def _find_block(text: str, comment: str, where: Path) -> tuple[int, int] | None:
    """(start, end) offsets of the marked block (whole lines, end after its newline), or None."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"{comment} {START}")]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"{comment} {END}"]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ConfigError(
            f"'{where}' has {len(starts)} '{comment} {START}' and {len(ends)} '{comment} {END}' marker line(s); "
            "expected one edgeprune block: delete the broken block by hand, then run the command again"
        )
    offset = [0]
    for line in lines:
        offset.append(offset[-1] + len(line))
    return offset[starts[0]], offset[ends[0] + 1]


def block_text(body: str, comment: str, command: str) -> str:
    """The marked block: start marker, `body` lines, end marker, each line ending in a newline."""
    head = f"{comment} {START}: managed by `{command}` (rewritten on every run; `--remove` takes it out) >>>\n"
    return head + body.rstrip("\n") + "\n" + f"{comment} {END}\n"


def with_block(text: str, block: str, comment: str, where: Path) -> str:
    """`text` with its edgeprune block replaced by `block` in place, or `block` appended once."""
    found = _find_block(text, comment, where)
    if found is not None:
        start, end = found
        return text[:start] + block + text[end:]
    if not text:
        return block
    return text + "\n" + block  # the newline ends an unterminated last line, or leaves one blank line


def without_block(text: str, comment: str, where: Path) -> str:
    """`text` without its edgeprune block; the newline `with_block` added before it goes too."""
    found = _find_block(text, comment, where)
    if found is None:
        return text
    start, end = found
    if end == len(text) and start > 0:  # appended at the end: undo exactly what was appended
        return text[: start - 1]
    if start >= 2 and text[start - 2 : start] == "\n\n":  # moved elsewhere: drop the blank line before it
        start -= 1
    return text[:start] + text[end:]


@dataclass(frozen=True)
class IntegrationResult:
    """What an integrate command did to an app project."""

    platform: str
    """android or ios."""
    project: Path
    mode: str
    """android: assets or ai-pack; ios: resources; either with --remove: remove."""
    devices: tuple[str, ...]
    """The device builds copied into the app."""
    written: tuple[Path, ...]
    """Files created or changed."""
    unchanged: tuple[Path, ...]
    """Files already as they should be (not touched)."""
    removed: tuple[Path, ...]
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What to do by hand, and what was skipped."""
    groups: tuple = ()
    """android: the device groups (`android.DeviceGroup`), in the targeting config's order."""

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)
