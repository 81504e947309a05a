"""The output folder is swapped in whole: a failed, killed or disk-full build leaves the previous dist/ as it was
(every file hashed), a successful one replaces it whole, and a folder of someone else's files is refused.

The previous dist is a copy of the session's digits build for pixel-8 and host (tests/conftest.py); the builds here
are the fast fixed plan (one target, no fine-tune, 2 timed runs) or a plan that fails while planning."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.cli import main

FAST = ["--model", "examples:digits", "--device", "host", "--target", "onnx", "--prune", "0", "--quant", "fp32",
        "--finetune-epochs", "0", "--runs", "2", "--warmup", "0", "--blocks", "1", "--quiet"]
LOG = "edgeprune.log"


def _snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file and folder under `root`: its sha256, or 'dir'."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if str(p.relative_to(root)) not in skip}


def _staging_left(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.staging-*"))


@pytest.fixture
def previous(tmp_path, digits_fp32_build) -> Path:
    """A finished earlier build in tmp_path/dist: device folders pixel-8 and host, build.json, report.html, the log."""
    _, _, built = digits_fp32_build
    out = tmp_path / "dist"
    shutil.copytree(built, out)
    assert {p.name for p in out.iterdir()} >= {"pixel-8", "host", "build.json", "report.html", LOG}
    return out


def _run_cli(out: Path, *argv: str, **popen) -> subprocess.Popen:
    """`edgeprune build ... --out OUT` in a real process (the session's model cache comes with the environment)."""
    return subprocess.Popen([sys.executable, "-m", "edgeprune.cli", "build", *argv, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.slow
def test_a_build_that_fails_while_planning_leaves_the_previous_dist_byte_identical(previous, capsys, user_models):
    before = _snapshot(previous, skip=(LOG,))
    # planned for a latency no plan of the space can meet: exit 3 after the search (a small model keeps it short)
    code = main(["build", "--model", f"{user_models}:tiny", "--device", "pixel-8", "--target", "executorch",
                 "--latency-ms", "0.0001", "--schemes", "fp32", "--importance", "l2", "--out", str(previous),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "0.0001 ms budget" in err and err.count("\n") == 1
    assert _snapshot(previous, skip=(LOG,)) == before
    assert (previous / LOG).is_file(), "the failed run's log is kept at <out>/edgeprune.log"
    assert not _staging_left(previous)


@pytest.mark.slow
def test_a_killed_build_leaves_the_previous_dist_and_the_next_build_replaces_it_whole(previous, capsys):
    before = _snapshot(previous)
    proc = _run_cli(previous, *FAST)
    deadline = time.monotonic() + 300
    try:  # kill it once it is exporting into its staging folder
        while not any(s.joinpath("scratch").is_dir() and any(s.joinpath("scratch").iterdir())
                      for s in _staging_left(previous)):
            assert proc.poll() is None, f"the build ended before it was killed: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the build never started exporting"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(previous) == before, "a killed build changed the previous dist (the log included)"
    leftovers = _staging_left(previous)
    assert leftovers, "the kill came too late to leave a staging folder: the test proves nothing"

    # the next build (host only) removes the dead build's staging and replaces the dist whole: the pixel-8 folder
    # of the earlier build is gone, and so is a file put into the dist by hand
    (previous / "notes.txt").write_text("mine")
    code = main(["build", *FAST, "--out", str(previous)])
    assert code in (0, 3), capsys.readouterr().err
    assert not any(p.exists() for p in leftovers) and not _staging_left(previous)
    assert sorted(p.name for p in previous.iterdir()) == ["build.json", LOG, "host", "report.html"]
    host = {p.name for p in (previous / "host").iterdir()}
    assert {"manifest.json", "model.onnx"} <= host and "model.pte" not in host, host
    assert all(before.get(rel) != digest for rel, digest in _snapshot(previous).items() if digest != "dir"
               and rel != LOG), "a file of the new dist is the old one"


def test_an_out_folder_of_someone_elses_files_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "photos"
    (out / "2024").mkdir(parents=True)
    (out / "2024" / "beach.jpg").write_bytes(b"\xff\xd8 not really")
    (out / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    code = main(["build", *FAST, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "holds files edgeprune did not write (2024, notes.txt)" in err and "choose an empty or new --out" in err
    assert _snapshot(tmp_path) == before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MB tmpfs mounted for the test (the tests run as root, here and in CI)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _fill(mnt: Path, leave_bytes: int) -> None:
    """Fill the filesystem of `mnt` until only about `leave_bytes` are free."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while fh.write(b"\0" * 65536):
                pass
        except OSError:
            pass
    with open(filler, "r+b") as fh:
        fh.truncate(max(0, filler.stat().st_size - leave_bytes))
    assert shutil.disk_usage(mnt).free <= leave_bytes + 65536


@pytest.mark.slow
def test_disk_full_during_export_is_one_typed_line_and_the_previous_dist_stays(previous, small_tmpfs):
    dist = small_tmpfs / "dist"
    shutil.copytree(previous, dist)
    before = _snapshot(dist, skip=(LOG,))
    _fill(small_tmpfs, leave_bytes=256 * 1024)  # room for a manifest or a log, not for a 1.2 MB model
    proc = _run_cli(dist, *FAST)
    _, err = proc.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"edgeprune: error: cannot write the build for '{dist}': No space left on device"), err
    assert f"free space on the filesystem of '{small_tmpfs}' or choose --out elsewhere" in lines[0]
    assert _snapshot(dist, skip=(LOG,)) == before
    assert not _staging_left(dist)
