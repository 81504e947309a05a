"""The run's log: third-party output (converter banners, absl/oneDNN warnings, library logging) goes to a log file,
not the terminal; `verbose` shows it on the terminal as well.

While `run_log` is active, file descriptors 1 and 2 (native libraries write there directly), `sys.stdout`,
`sys.stderr`, Python warnings and logging all feed one pipe, and a reader thread writes the pipe to the log. What
edgeprune itself shows the user (progress, the summary, JSON, errors) goes to `Terminal.out` / `Terminal.err`,
the streams that were stdout and stderr when the block began.
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from edgeprune._io import atomic_copy

LOG_NAME = "edgeprune.log"
_THIRD_PARTY_LOGGERS = ("torch", "torch.utils._pytree", "torchao", "executorch", "torch_pruning", "absl", "tensorflow",
                        "litert_torch", "onnxscript", "jax")


@dataclass
class Terminal:
    """Where edgeprune's own output goes while third-party output is captured."""

    out: IO[str]
    err: IO[str]
    log_path: Path
    """The log file being written (a temporary file until the run ends; then `keep_in`'s copy)."""


def _terminal_stream(stream: IO[str], saved_fd: int) -> tuple[IO[str], bool]:
    """The stream edgeprune writes to: `stream` itself unless it writes to fd 1/2, which are about to be redirected
    (then a new stream on `saved_fd`, the descriptor's saved copy). The flag says whether the stream is ours to close."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream, False  # an in-memory stream (pytest's capsys): leave it as it is
    if fd not in (1, 2):
        return stream, False
    return os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                     errors="replace"), True


def _pump(read_fd: int, log: IO[bytes], echo: IO[str] | None, stop: threading.Event) -> None:
    """Copy the pipe to the log (and to `echo`) until `stop` is set and the pipe is drained."""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.1)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return
            log.write(chunk)
            log.flush()
            if echo is not None:
                echo.write(chunk.decode("utf-8", errors="replace"))
                echo.flush()
        elif stop.is_set():
            return


@contextmanager
def run_log(verbose: bool = False) -> Iterator[Terminal]:
    """Capture third-party output into a temporary log file for the block; see the module docstring."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    term_out, close_out = _terminal_stream(sys.stdout, saved_out)
    term_err, close_err = _terminal_stream(sys.stderr, saved_err)
    fd, log_name = tempfile.mkstemp(prefix="edgeprune-", suffix=".log")
    log = os.fdopen(fd, "wb")
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    pump = threading.Thread(target=_pump, args=(read_fd, log, term_err if verbose else None, stop), daemon=True)
    pump.start()
    old_streams = sys.stdout, sys.stderr
    pipe_stream = os.fdopen(os.dup(write_fd), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(pipe_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    levels = {name: logging.getLogger(name).level for name in _THIRD_PARTY_LOGGERS}
    try:
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        sys.stdout = sys.stderr = pipe_stream
        root.addHandler(handler)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        for name in _THIRD_PARTY_LOGGERS:  # torch's loggers reset themselves to quiet levels; warnings still count
            logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            logging.captureWarnings(True)
            try:
                yield Terminal(out=term_out, err=term_err, log_path=Path(log_name))
            finally:
                logging.captureWarnings(False)
    finally:
        pipe_stream.flush()
        sys.stdout, sys.stderr = old_streams
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        pipe_stream.close()
        os.close(write_fd)
        stop.set()
        pump.join(timeout=5)
        os.close(read_fd)
        log.close()
        for stream, ours in ((term_out, close_out), (term_err, close_err)):
            stream.flush()
            if ours:
                stream.close()
        os.close(saved_out)
        os.close(saved_err)


def keep_log(terminal: Terminal, folder: Path | None, create: bool = False) -> Path | None:
    """Put the run's log at `folder/edgeprune.log` atomically (replacing an older one) when the folder exists (or,
    with `create`, once made); else drop it. A log that cannot be written (a full disk, a read-only folder) is
    dropped: it must not hide the run's own outcome or error."""
    try:
        if folder is None:
            return None
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            return None
        final = folder / LOG_NAME
        atomic_copy(terminal.log_path, final)
        return final
    except OSError:
        return None
    finally:
        terminal.log_path.unlink(missing_ok=True)
