"""`edgeprune calibrate --on adb:SERIAL / ssh:user@host:port`: the calibration suite timed on a device.

End to end through the real runners: the adb runner against the test-owned loopback adb device (real `adb` server
and client, `remote_measure.py` with the real ExecuTorch runtime in the device's sandbox), and the ssh runner
against a real `sshd` on 127.0.0.1. Nothing is mocked. Each measurement on these "devices" starts a Python that
imports the runtime (several seconds here), so the suite is made small the way tests/test_cost_calibrate.py makes
it small (`max_networks`, one target, one scheme) and its timing section shortened (one round of a few runs per
network, no noise rounds between networks). The three calibrations here time the same reference and suite networks
at the same thread count, so each network is exported once (`reuse_calibration_exports`, tests/conftest.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from edgeprune.cli import main
from edgeprune.cost.calibrate import run_calibration
from edgeprune.cost.suite import load_suite
from edgeprune.cost.table import read_table, table_path_for
from edgeprune.errors import DeviceError
from edgeprune.profiles import builtin_profiles, load_profile
from edgeprune.runners import get_runner
from edgeprune.runners.adb import AdbRunner

sys.path.insert(0, str(Path(__file__).parent))
from adb_loopback import device_files  # noqa: E402
from sshd_loopback import loopback_sshd  # noqa: E402
from test_adb_runner import DEVICE_DIR, adb_server, plug  # noqa: E402,F401  (fixtures: the adb server, a device)


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory) -> str:
    """The shipped suite with a short timing section: 1 round of 5 runs per network, the 4 noise rounds only at the
    start and the end (the suite's networks and reference network are unchanged)."""
    suite = dict(load_suite())
    suite["timing"] = {"warmup": 1, "runs": 5, "rounds": 1}
    suite["noise"] = {**suite["noise"], "rounds": 4}
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return str(path)


# A shared 2-core CI machine may be noisier than the default limit: the noise check has its own host test.
SMALL = dict(targets=["executorch"], minutes=2.0, schemes=("fp32",), max_networks=2, max_spread_pct=1000.0)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_profile(out: Path, where: str, device: str) -> list[dict]:
    """The written profile is calibrated, records the runner and where it ran, and its table agrees."""
    text = out.read_text()
    assert text.startswith("# Calibrated by edgeprune on ") and f" on {where} " in text.splitlines()[0]
    loaded = load_profile(str(out))
    assert loaded.name == device
    cm = loaded.cost_model
    assert cm is not None and cm.status == "calibrated"
    assert where in cm.runner and where in cm.method and "no per-operator timings" in cm.runner
    assert cm.runtime_versions.get("executorch") and cm.threads == builtin_profiles()[device].default_threads
    (coeffs,) = cm.latency
    assert (coeffs.target, coeffs.scheme, coeffs.status) == ("executorch", "fp32", "calibrated")
    assert coeffs.fit is not None and coeffs.fit.models == 2 and cm.networks == 2
    table = read_table(table_path_for(out))
    suite = [r for r in table if r["kind"] == "suite"]
    assert len(suite) == 2 and len({r["network"] for r in suite}) == 2
    for r in suite:
        assert r["where"] == where and "executorch.runtime" in r["runner"] and r["runtime_versions"]["executorch"]
        assert r["threads"] == cm.threads and "ops" not in r  # whole-model timings only through a runner
        assert r["latency_ms"] == r["latency_p50_ms"] == min(r["round_p50s_ms"]) > 0
    assert all(r["where"] == where for r in table if r["kind"] == "reference")
    return suite


def _shown_by_the_cli(out: Path, capsys) -> None:
    code, stdout, _ = _run(capsys, "profile", "show", str(out), "--json")
    assert code == 0 and json.loads(stdout)["cost_model"]["status"] == "calibrated"


def _built_for_by_the_cli(out: Path, tmp_path: Path, capsys, user_models: str) -> None:
    """`edgeprune build --device PROFILE.yaml` takes the calibrated profile and predicts with its coefficients."""
    from edgeprune.profiles import load_profile

    dist = tmp_path / "dist"
    threads = load_profile(str(out)).cost_model.threads  # at another thread count the prediction is scaled: 'estimated'
    code, stdout, err = _run(capsys, "build", "--model", f"{user_models}:tiny", "--device", str(out),
                             "--target", "executorch", "--out", str(dist), "--runs", "3", "--warmup", "1",
                             "--threads", str(threads), "--quiet", "--json")
    assert code in (0, 3), err
    (device,) = json.loads(stdout)["devices"]
    manifest = json.loads((dist / device["dir"] / "manifest.json").read_text())
    assert manifest["artifacts"][0]["predicted"]["status"] == "calibrated"


def test_calibrate_on_a_loopback_phone_survives_a_pulled_cable_and_resumes(
    adb_server, plug, small_suite, tmp_path, capsys, reuse_calibration_exports
):
    dev = plug()
    where = f"adb:{dev.serial}"
    out = tmp_path / "my-pixel-8.yaml"
    # The runner `--on adb:SERIAL --adb-port PORT` makes, with shorter waits before its one retry.
    runner = get_runner(where, adb_port=adb_server.port)
    assert isinstance(runner, AdbRunner)
    runner.retry_delay_s, runner.reconnect_wait_s = 0.2, 1.0

    # The cable is pulled once the first network is measured: the next measurement (the closing noise round of a
    # one-network run) fails after its retry.
    def pull(done_s: int, total_s: int) -> None:
        dev.pull_cable()

    with pytest.raises(DeviceError) as err:
        run_calibration(builtin_profiles()["pixel-8"], progress=pull, out_path=out, runner=runner,
                        suite_path=small_suite, **(SMALL | {"max_networks": 1}))
    assert dev.serial in str(err.value) and err.value.exit_code == 4
    assert not out.exists(), "a failed calibration writes no profile"
    first = [r for r in read_table(table_path_for(out)) if r["kind"] == "suite"]
    assert len(first) == 1 and first[0]["where"] == where, "the network measured before the failure is kept"

    dev.plug_in()
    adb_server.adb("disconnect", dev.serial, check=False)
    adb_server.adb("connect", dev.serial)
    adb_server.wait_state(dev.serial)
    runner = get_runner(where, adb_port=adb_server.port)
    profile = run_calibration(builtin_profiles()["pixel-8"], out_path=out, runner=runner, suite_path=small_suite,
                              **SMALL)
    assert profile.cost_model.status == "calibrated"
    suite = _check_profile(out, where, "pixel-8")
    assert first[0] in suite, "the resumed run kept the first network and measured only the second"
    assert "Pixel 8" in profile.cost_model.runner  # what the device reported about itself
    assert device_files(dev, DEVICE_DIR) == []  # every run removed what it pushed
    _shown_by_the_cli(out, capsys)


def test_calibrate_on_a_loopback_ssh_board(small_suite, tmp_path, capsys, user_models, reuse_calibration_exports):
    out = tmp_path / "my-pi.yaml"
    with loopback_sshd(tmp_path / "sshd") as board:
        where = f"ssh:{board.target}"
        runner = get_runner(where, python=sys.executable, identity_file=str(board.identity_file),
                            known_hosts=str(board.known_hosts))
        profile = run_calibration(builtin_profiles()["raspberry-pi-5"], out_path=out, runner=runner,
                                  suite_path=small_suite, **SMALL)
    assert profile.cost_model.status == "calibrated"
    _check_profile(out, where, "raspberry-pi-5")
    assert "Linux" in profile.cost_model.runner  # the board's own report (remote_measure.py's machine)
    _shown_by_the_cli(out, capsys)
    _built_for_by_the_cli(out, tmp_path, capsys, user_models)


# ------------------------------------------------------------------------------------------------ bad input


def _one_error_line(err: str) -> bool:
    """One `edgeprune: error:` line (the progress line that a non-terminal stderr also shows is not an error)."""
    return len([line for line in err.splitlines() if line.startswith("edgeprune:")]) == 1


def _nothing_written(out: Path) -> None:
    assert not out.exists() and not table_path_for(out).exists()


@pytest.mark.parametrize("on", ["phone", "usb:1", "ssh:"])
def test_an_unknown_on_value_is_refused(tmp_path, capsys, on):
    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "pixel-8", "--on", on, "--out", str(out))
    assert code == 2 and f"'{on}'" in err and _one_error_line(err)
    _nothing_written(out)


def test_adb_all_is_refused(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "pixel-8", "--on", "adb:all", "--out", str(out))
    assert code == 2 and "adb:all" in err and "adb:SERIAL" in err and _one_error_line(err)
    _nothing_written(out)


def test_the_host_profile_is_not_calibrated_on_a_device(adb_server, tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "host", "--on", "adb:127.0.0.1:9",
                        "--adb-port", str(adb_server.port), "--out", str(out))
    assert code == 2 and "--device host" in err and _one_error_line(err)
    _nothing_written(out)


def test_a_phone_that_is_not_attached(adb_server, tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "pixel-8", "--on", "adb:127.0.0.1:9",
                        "--adb-port", str(adb_server.port), "--target", "executorch", "--out", str(out))
    assert code == 4 and "127.0.0.1:9" in err and "not attached" in err and _one_error_line(err)
    _nothing_written(out)


def test_another_phone_than_the_profile_describes(adb_server, plug, tmp_path, capsys):
    dev = plug()  # reports itself as a Pixel 8
    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "galaxy-a54", "--on", f"adb:{dev.serial}",
                        "--adb-port", str(adb_server.port), "--target", "executorch", "--out", str(out))
    assert code == 2 and "Pixel 8" in err and "--device pixel-8" in err and _one_error_line(err)
    _nothing_written(out)


def test_no_adb_server(tmp_path, capsys):
    from sshd_loopback import _free_port

    out = tmp_path / "p.yaml"
    code, _, err = _run(capsys, "calibrate", "--device", "pixel-8", "--on", "adb:emulator-5554",
                        "--adb-port", str(_free_port()), "--out", str(out))
    assert code == 4 and "emulator-5554" in err and "adb server" in err and _one_error_line(err)
    _nothing_written(out)


def test_an_unreachable_board(tmp_path, capsys):
    from sshd_loopback import _free_port

    out = tmp_path / "p.yaml"
    port = _free_port()  # nothing listens there
    code, _, err = _run(capsys, "calibrate", "--device", "raspberry-pi-5", "--on", f"ssh:edgeprune@127.0.0.1:{port}",
                        "--known-hosts", str(tmp_path / "known_hosts"), "--target", "executorch", "--out", str(out))
    assert code == 4 and f"edgeprune@127.0.0.1:{port}" in err and _one_error_line(err)
    _nothing_written(out)
