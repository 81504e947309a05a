"""SshRunner against a real sshd on 127.0.0.1 (tests/sshd_loopback.py) with the real ssh client: no mocks.

The "board" is this machine; its python is this venv's (which has executorch and onnxruntime), or a small shell
script standing in for a board's python when a test needs one that sleeps, logs or lacks a package.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runner_conformance import RunnerConformance, conformance_artifacts, conformance_inputs, host_reference
from sshd_loopback import loopback_sshd

from edgeprune.errors import ConfigError, DeviceError
from edgeprune.runners.ssh import SshRunner, parse_ssh_target


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as b:
        yield b


@pytest.fixture
def remote_dir(tmp_path):
    """A directory on the "board" for the runner's temp dirs, with a name the remote shell must not interpret."""
    path = tmp_path / "board dir; $(touch PWNED) `touch PWNED` 'q' \"dq\" *"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    return conformance_artifacts(tmp_path_factory, ("onnx",))["onnx"]


@pytest.fixture(scope="module")
def pte_artifact(tmp_path_factory):
    return conformance_artifacts(tmp_path_factory, ("executorch",))["executorch"]


def runner_for(board, **kwargs) -> SshRunner:
    kwargs.setdefault("python", sys.executable)
    return SshRunner(board.target, **board.runner_kwargs(), **kwargs)


def fake_python(path: Path, body: str) -> str:
    """A shell script that stands in for the board's python: runs `body`, where $REAL is the real python."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nREAL='{sys.executable}'\n{body}\n")
    path.chmod(0o755)
    return str(path)


def wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def no_command_left(board, timeout_s: float = 10.0) -> bool:
    """True once no command started over ssh (a shell, sleep, python) is still running under sshd."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = []
        for pid in board.session_pids():
            try:
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                pass
        if not [n for n in names if not n.startswith("sshd")]:
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------------------ conformance


class TestSshRunnerConformance(RunnerConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls, board):
        return runner_for(board)


# ------------------------------------------------------------------------------------------------ target parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pi@raspberrypi.local:2222", ("pi", "raspberrypi.local", 2222)),
        ("pi@192.168.1.20", ("pi", "192.168.1.20", None)),
        ("jetson", (None, "jetson", None)),
        ("jetson-orin_1:22", (None, "jetson-orin_1", 22)),
        ("ubuntu@[fe80::1%eth0]:22", ("ubuntu", "[fe80::1%eth0]", 22)),
    ],
)
def test_parse_ssh_target(text, expected):
    assert parse_ssh_target(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "pi@", "@host", "pi@host:", "pi@host:0", "pi@host:70000", "pi@host:22:1", "-oProxyCommand=x", "pi@-host",
     "pi@host;rm -rf /", "pi@ho st", "a@b@c", "pi@host:port"],
)  # fmt: skip
def test_parse_ssh_target_rejects_malformed(text):
    with pytest.raises(ConfigError, match="ssh target|empty"):
        parse_ssh_target(text)


def test_where_names_the_board(board):
    runner = runner_for(board)
    assert runner.where == f"ssh:{board.user}@127.0.0.1:{board.port}"
    assert SshRunner("jetson").where == "ssh:jetson"


# ------------------------------------------------------------------------------------------------ behaviour


def test_configurable_python_and_paths_with_spaces_are_quoted_and_cleaned_up(board, onnx_artifact, remote_dir, tmp_path):
    # A local artifact path and a remote python path with spaces and quotes too.
    local = tmp_path / "my models" / "tiny 'v1'.onnx"
    local.parent.mkdir()
    shutil.copy(onnx_artifact.path, local)
    artifact = dataclasses.replace(onnx_artifact, path=local)
    log = tmp_path / "python.log"
    python = fake_python(
        tmp_path / "board's python" / "py thon",
        f'for a in "$@"; do printf "%s\\n" "$a"; done > \'{log}\'\n'
        f'ls "$(dirname "$1")" >> \'{log}\'\n'
        'exec "$REAL" "$@"',
    )
    m = runner_for(board, python=python, remote_dir=str(remote_dir)).measure(
        artifact, conformance_inputs(), warmup=1, runs=3, threads=1
    )
    assert np.abs(m.outputs - host_reference(onnx_artifact).outputs).max() <= 1e-5
    assert m.extra["remote_python"] == python and m.extra["board"] == board.target
    assert m.extra["machine"]["system"] == "Linux" and "on the board" in m.memory_method

    args = log.read_text().splitlines()
    script = args[0]
    remote = Path(script).parent
    # Every argument arrived as one word, exactly: the remote dir's spaces, quotes, $() and * untouched.
    assert remote.parent == remote_dir and script == f"{remote}/remote_measure.py"
    assert args[1:9] == ["--artifact", f"{remote}/model.onnx", "--inputs", f"{remote}/inputs.npy",
                         "--outputs", f"{remote}/outputs.npz", "--warmup", "1"]  # fmt: skip
    assert sorted(args[13:]) == ["inputs.npy", "model.onnx", "remote_measure.py"]  # what was copied over
    home = Path(pwd.getpwnam(board.user).pw_dir)
    assert not (home / "PWNED").exists() and not (remote_dir / "PWNED").exists()
    assert list(remote_dir.iterdir()) == []  # the private remote directory is gone


def test_remote_files_are_cleaned_up_after_a_failure(board, onnx_artifact, remote_dir, tmp_path):
    python = fake_python(tmp_path / "py", 'echo "RuntimeError: the board ran out of memory" >&2\nexit 3')
    with pytest.raises(DeviceError, match=rf"board {board.user}@127\.0\.0\.1:{board.port}: .*out of memory"):
        runner_for(board, python=python, remote_dir=str(remote_dir)).measure(
            onnx_artifact, conformance_inputs(), warmup=0, runs=1
        )
    assert list(remote_dir.iterdir()) == []


def test_default_remote_dir_is_a_private_mktemp_dir(board, onnx_artifact, tmp_path):
    log = tmp_path / "dir.log"
    python = fake_python(tmp_path / "py", f'd="$(dirname "$1")"; stat -c %a "$d" > \'{log}\'; echo "$d" >> \'{log}\'\n'
                                          'exec "$REAL" "$@"')  # fmt: skip
    runner_for(board, python=python).measure(onnx_artifact, conformance_inputs(), warmup=0, runs=1)
    mode, remote = log.read_text().split()
    assert mode == "700" and Path(remote).name.startswith("tmp.")
    assert not Path(remote).exists()


def test_a_command_timeout_is_a_device_error_naming_the_board(board, onnx_artifact, remote_dir, tmp_path):
    started = tmp_path / "started"
    python = fake_python(tmp_path / "slow python", f"touch '{started}'\nsleep 60")
    runner = runner_for(board, python=python, remote_dir=str(remote_dir), timeout_s=4)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=rf"board {board.user}@127\.0\.0\.1:{board.port}: .*timed out after 4 s") as info:
        runner.measure(onnx_artifact, conformance_inputs(), warmup=0, runs=1)
    assert time.monotonic() - t0 < 30
    assert started.exists()
    assert "tried" not in str(info.value)  # a timeout is not retried
    assert list(remote_dir.iterdir()) == []
    assert no_command_left(board)  # the board's `timeout` ended the run; nothing keeps running there


def test_a_dropped_connection_is_retried_once(board, onnx_artifact, remote_dir, tmp_path, caplog):
    first = tmp_path / "first-attempt"
    python = fake_python(tmp_path / "py", f"if [ ! -e '{first}' ]; then touch '{first}'; exec sleep 60; fi\n"
                                          'exec "$REAL" "$@"')  # fmt: skip
    runner = runner_for(board, python=python, remote_dir=str(remote_dir))
    killer = threading.Thread(target=lambda: (wait_for(first), board.kill_sessions()), daemon=True)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="edgeprune.runners.ssh"):
        m = runner.measure(onnx_artifact, conformance_inputs(), warmup=1, runs=2)
    killer.join(5)
    assert board.alive()
    assert m.extra["attempts"] == 2
    assert f"board {board.user}@127.0.0.1:{board.port}: connection lost" in m.extra["retried_after"][0]
    assert "retrying once" in caplog.text
    assert np.abs(m.outputs - host_reference(onnx_artifact).outputs).max() <= 1e-5
    assert list(remote_dir.iterdir()) == []  # the dropped attempt's directory was removed too


def test_a_board_that_dies_mid_run_is_a_device_error_after_one_retry(onnx_artifact, remote_dir, tmp_path, caplog):
    with loopback_sshd(tmp_path / "sshd") as doomed:
        started = tmp_path / "started"
        runs = tmp_path / "runs"
        python = fake_python(tmp_path / "py", f"echo run >> '{runs}'\ntouch '{started}'\nexec sleep 60")
        runner = runner_for(doomed, python=python, remote_dir=str(remote_dir))
        killer = threading.Thread(target=lambda: (wait_for(started), doomed.kill()), daemon=True)
        killer.start()
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="edgeprune.runners.ssh"):
            with pytest.raises(DeviceError) as info:
                runner.measure(onnx_artifact, conformance_inputs(), warmup=0, runs=1)
        killer.join(5)
        assert not doomed.alive()
    message = str(info.value)
    assert message.startswith(f"board {doomed.user}@127.0.0.1:{doomed.port}: cannot connect")
    assert "Connection refused" in message and "tried 2 times" in message and "connection lost" in message
    assert "retrying once" in caplog.text
    assert runs.read_text().split() == ["run"]  # the retry could not even reach the board
    # A dead board keeps the files of the run it died in; the runner says so rather than failing silently.
    (left,) = remote_dir.iterdir()
    assert f"could not remove {left}" in caplog.text
    assert time.monotonic() - t0 < 30


def test_a_python_without_the_runtime_names_the_module_and_the_pip_package(board, pte_artifact, tmp_path):
    # A board python that has numpy but neither torch nor executorch: the venv's python without site-packages,
    # given numpy alone on PYTHONPATH.
    site = Path(np.__file__).resolve().parent.parent
    only_numpy = tmp_path / "only numpy"
    only_numpy.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            os.symlink(site / name, only_numpy / name)
    python = fake_python(tmp_path / "py", f"PYTHONPATH='{only_numpy}' exec \"$REAL\" -S \"$@\"")
    with pytest.raises(DeviceError) as info:
        runner_for(board, python=python).measure(pte_artifact, conformance_inputs(), warmup=0, runs=1)
    message = str(info.value)
    assert message.startswith(f"board {board.user}@127.0.0.1:{board.port}:")
    assert "cannot import 'torch'" in message and "pip install executorch" in message and python in message


def test_a_missing_python_is_a_device_error(board, onnx_artifact):
    with pytest.raises(DeviceError, match=r"python '/no/such/python3' not found"):
        runner_for(board, python="/no/such/python3").measure(onnx_artifact, conformance_inputs(), warmup=0, runs=1)


def test_an_unknown_host_key_is_not_retried(board, onnx_artifact, tmp_path, caplog):
    # known_hosts lists a different key for the board: ssh must refuse, and a retry would not help.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{board.port} {(tmp_path / 'impostor.pub').read_text().strip()}\n")
    runner = SshRunner(board.target, identity_file=str(board.identity_file), known_hosts=str(other),
                       ssh_options=("-F", "/dev/null"), python=sys.executable)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="edgeprune.runners.ssh"):
        with pytest.raises(DeviceError, match=rf"board {board.user}@127\.0\.0\.1:{board.port}: .*[Hh]ost key"):
            runner.measure(onnx_artifact, conformance_inputs(), warmup=0, runs=1)
    assert "retrying" not in caplog.text


def test_bad_constructor_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="remote_dir"):
        SshRunner("pi@host", remote_dir="relative/dir")
    with pytest.raises(ConfigError, match="identity file"):
        SshRunner("pi@host", identity_file=str(tmp_path / "missing_key"))
    with pytest.raises(ConfigError, match="timeout_s"):
        SshRunner("pi@host", timeout_s=0)
