"""File helpers: atomic writes (temp file in the same folder, fsync, rename), whole folders assembled aside and
swapped in (`open_staging`), hashing, quiet native stderr."""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from edgeprune.errors import OutputError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write failures that mean the filesystem (or the process's file size limit) cannot take more bytes."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy the file `source` to `path` atomically (temp file beside `path`, fsync, rename)."""
    def copy(fh: IO[bytes]) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)
    _atomic_write(path, copy)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 for a block: native runtimes (ExecuTorch's cpuinfo, XNNPACK) log there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ------------------------------------------------------------------------------------- whole folders, swapped in

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
STAGING_MARK = ".staging-"


@dataclass(frozen=True)
class Staging:
    """A new output folder assembled aside (`open_staging`): `folder` becomes the output whole (`swap_in`);
    `scratch` holds working files (exports before they are copied in) on the same filesystem and is never published.

    Both lie in `root`, a folder beside the output named `.<output name>.staging-<pid>-<random>`, so the swap is a
    rename on one filesystem and a later build removes what a killed one left (`remove_stale_staging`)."""

    final: Path
    root: Path

    @property
    def folder(self) -> Path:
        return self.root / self.final.name

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def swap_in(self) -> None:
        """Publish `folder` at `final` in one step, replacing the old output whole; then remove the staging folder
        with the old output in it. After this `final` holds exactly what was written into `folder`: files of the old
        output that this build did not write (an earlier build's device folder, validation records, files put there
        by hand) are gone."""
        try:
            shutil.rmtree(self.scratch, ignore_errors=True)
            _fsync_tree(self.folder)
            swap_in(self.folder, self.final, self.root / "old")
        except OSError as exc:
            raise_if_no_space(exc, self.final)
            raise
        self.discard()

    def discard(self) -> None:
        """Remove the staging folder (and the old output, after a swap); the output itself is not touched."""
        shutil.rmtree(self.root, ignore_errors=True)


def open_staging(final: Path) -> Staging:
    """Make an empty staging folder for a new `final` (its symlinks resolved) beside it, after removing the staging
    folders that killed builds left there. Nothing at `final` changes until `Staging.swap_in`."""
    final = Path(os.path.realpath(final))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        root = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}{STAGING_MARK}{os.getpid()}-"))
        staging = Staging(final, root)
        staging.folder.mkdir()
        staging.scratch.mkdir()
    except OSError as exc:
        raise_if_no_space(exc, final)
        raise
    return staging


def exchange_folders(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one step (Linux renameat2 with RENAME_EXCHANGE, through libc): a reader sees
    one folder or the other at each path, never neither. False where the platform, libc or filesystem lacks the
    call (nothing was changed then); other failures raise OSError."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without the symbol (glibc before 2.28, some others)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_in(new: Path, final: Path, old: Path) -> None:
    """Put the folder `new` at `final`. An existing `final` is exchanged with `new` atomically where the platform can
    (`exchange_folders`), and its old content then lies at `new`; elsewhere it is renamed to `old` first and `new`
    renamed after it: two renames, so for a moment `final` does not exist (a reader may see it missing, never a
    mix), and on failure of the second the old folder is put back."""
    if not final.exists():
        os.rename(new, final)
    elif not exchange_folders(new, final):
        os.rename(final, old)
        try:
            os.rename(new, final)
        except BaseException:
            os.rename(old, final)
            raise
    _fsync_dir(final.parent)


def remove_stale_staging(final: Path) -> list[Path]:
    """Remove the staging folders beside `final` that a killed build left (their process is gone); return them.
    A staging folder of a build still running (its pid alive) is left alone."""
    removed = []
    for path in final.parent.glob(f".{glob.escape(final.name)}{STAGING_MARK}*"):
        pid_text = path.name[len(final.name) + 1 + len(STAGING_MARK):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def no_space_cause(exc: BaseException) -> OSError | None:
    """The OSError that says no space was left, when `exc` is one or was raised from one (a converter's error about a
    failed write wraps it), else None."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and not any(cur is e for e in seen) and len(seen) < 20:
        if isinstance(cur, OSError) and cur.errno in NO_SPACE_ERRNOS:
            return cur
        seen.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return None


def raise_if_no_space(exc: BaseException, final: Path) -> None:
    """Raise an OutputError naming the folder and the fix when `exc` means no space was left; else return."""
    full = no_space_cause(exc)
    if full is None or isinstance(exc, OutputError):
        return
    where = final.parent
    if full.filename and not Path(os.fsdecode(full.filename)).is_relative_to(final.parent):
        where = Path(os.fsdecode(full.filename)).parent  # a full temp folder elsewhere, not the output's
    limit = " (the file size limit, ulimit -f)" if full.errno == errno.EFBIG else ""
    raise OutputError(f"cannot write the build for '{final}': {full.strerror}{limit}; the previous output is "
                      f"untouched; free space on the filesystem of '{where}' or choose --out elsewhere") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, so the swap never publishes data still only in the page cache."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
