"""`edgeprune validate`: re-measure built artifacts on a runner and append the result to the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeprune.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits_fp32_build):
    """This module's copy (validate appends to the manifests) of the session's digits build for host and pixel-8."""
    code, _, dist = digits_fp32_build
    assert code in (0, 3)
    return Path(shutil.copytree(dist, tmp_path_factory.mktemp("validate") / "dist"))


def test_validate_on_host_appends_a_judged_measurement(built, capsys):
    code = main(["validate", str(built / "host"), "--on", "host", "--runs", "10", "--warmup", "2", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 1 and results[0]["device"] == "host"
    manifest = json.loads((built / "host" / "manifest.json").read_text())
    (validation,) = manifest["artifacts"][0]["validations"]
    assert validation["measured"]["where"] == "host" and validation["measured"]["runs"] == 3 * 10
    assert validation["measured"]["runner"] == "executorch.runtime" and validation["measured"]["runtime_versions"]
    assert validation["accuracy"] == pytest.approx(manifest["artifacts"][0]["quality"]["artifact_accuracy"])
    checks = {c["name"]: c["status"] for c in validation["verdict"]["checks"]}
    assert checks["latency"] in ("pass", "fail") and checks["accuracy_drop"] == "pass"
    assert code == (0 if validation["verdict"]["passed"] else 3)


def test_validating_a_phone_build_on_the_host_leaves_its_budgets_unverified(built, capsys):
    main(["validate", str(built), "--on", "host", "--runs", "5", "--warmup", "1", "--json"])
    results = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(results) == {"host", "pixel-8"}
    phone = {c["name"]: c["status"] for c in results["pixel-8"]["verdict"]["checks"]}
    assert phone["latency"] == "unverified" and phone["peak_memory"] == "unverified"


def test_a_tampered_artifact_is_refused(built, tmp_path, capsys):
    import shutil

    copy = tmp_path / "host"
    shutil.copytree(built / "host", copy)
    with open(copy / "model.pte", "ab") as fh:
        fh.write(b"\0")
    code = main(["validate", str(copy), "--on", "host"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "changed since it was built" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("on", ["phone", "ssh:", "usb:1"])
def test_unknown_runner_spec(built, capsys, on):
    code = main(["validate", str(built), "--on", on])
    err = capsys.readouterr().err.strip()
    assert code == 2 and on in err and "ssh:user@host" in err


def test_a_folder_without_manifests(tmp_path, capsys):
    code = main(["validate", str(tmp_path), "--on", "host"])
    assert code == 2 and "no manifest.json" in capsys.readouterr().err


def test_validate_on_a_loopback_ssh_board_gives_the_host_format(built, tmp_path_factory, capsys):
    """`edgeprune validate dist/host --on ssh:user@127.0.0.1:PORT` through a real sshd and the real ssh client."""
    import sys

    from sshd_loopback import loopback_sshd

    # one measurement block each: every block on the board is one more ssh session starting remote_measure.py
    main(["validate", str(built / "host"), "--on", "host", "--runs", "5", "--warmup", "1", "--blocks", "1", "--json"])
    (on_host,) = json.loads(capsys.readouterr().out)
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as board:
        code = main(["validate", str(built / "host"), "--on", f"ssh:{board.target}", "--identity", str(board.identity_file),
                     "--known-hosts", str(board.known_hosts), "--remote-python", sys.executable,
                     "--runs", "5", "--warmup", "1", "--blocks", "1", "--json"])
    (on_board,) = json.loads(capsys.readouterr().out)
    assert code in (0, 3)
    assert on_board["measured"]["where"] == f"ssh:{board.target}"
    assert set(on_board["measured"]) >= set(on_host["measured"])
    assert on_board["measured"]["runtime_versions"].keys() == on_host["measured"]["runtime_versions"].keys()
    assert on_board["accuracy"] == pytest.approx(on_host["accuracy"])
    # A host build measured on a board is not a measurement of the host: its latency stays unverified.
    checks = {c["name"]: c["status"] for c in on_board["verdict"]["checks"]}
    assert checks["latency"] == "unverified"
    manifest = json.loads((built / "host" / "manifest.json").read_text())
    assert [v["measured"]["where"] for v in manifest["artifacts"][0]["validations"]][-1] == f"ssh:{board.target}"
