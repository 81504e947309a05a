"""The emulated ARM64 device end to end: `edgeprune emulator create` (a real Debian arm64 root run by qemu through
binfmt_misc, pinned to cortex-a76), served by `emulator start` as a real sshd board and as edgeprune's own adb device
attached to a real adb server, and the digits model at fp32 and int8 for all three targets validated on it against
the host reference. Nothing is mocked: ARM64 code runs the ExecuTorch native runner, LiteRT and ONNX Runtime.

The root is created once per machine (about 3 minutes; content-cached under the user cache dir, so a later session
finds it at once) and served once per module. Emulated inference is slow, so validations use runs=3, warmup=1,
blocks=1 at one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from edgeprune import cli_emulator
from edgeprune._io import sha256_file
from edgeprune.cli import main
from edgeprune.emulator import recipe, root
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.runners import native_runner
from edgeprune.runners.adb import AdbRunner
from edgeprune.runners.ssh import SshRunner
from edgeprune.validation import _artifact, _eval_data

sys.path.insert(0, str(Path(__file__).parent))
from adb_loopback import private_adb_server  # noqa: E402

pytestmark = pytest.mark.slow
VALIDATE = ["--runs", "3", "--warmup", "1", "--blocks", "1", "--threads", "1", "--json"]
DEVICE = "raspberry-pi-5"


def emulator(*argv: str) -> tuple[int, str]:
    """Run `edgeprune emulator ...` through the command module (cli.py wires the same add_parsers/run)."""
    parser = argparse.ArgumentParser(prog="edgeprune")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_emulator.add_parsers(sub, argparse.ArgumentParser)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # --json prints on stdout, the rest goes through the console
        code = cli_emulator.run(parser.parse_args(["emulator", *argv]), Console(file=buf, width=300))
    return code, buf.getvalue()


@pytest.fixture(scope="session")
def emulated_root():
    """`edgeprune emulator create arm64`, in the user's cache (not the session's private one): made once, reused."""
    old = os.environ.get("EDGEPRUNE_EMULATOR_DIR")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ["EDGEPRUNE_EMULATOR_DIR"] = old or str(base / "edgeprune" / "emulator")
    start = time.perf_counter()
    code, out = emulator("create", "arm64")
    elapsed = time.perf_counter() - start
    assert code == 0, out
    print(f"\nemulator create: {elapsed:.1f} s ({out.strip().splitlines()[-1]})")
    yield root.find("arm64")
    if old is None:
        os.environ.pop("EDGEPRUNE_EMULATOR_DIR", None)
    else:
        os.environ["EDGEPRUNE_EMULATOR_DIR"] = old


@pytest.fixture(scope="module")
def served(emulated_root, tmp_path_factory):
    """`edgeprune emulator start`: the ssh board and the adb device, attached to a private adb server."""
    home = tmp_path_factory.mktemp("adb-home")
    with private_adb_server(home) as (port, _env):
        code, out = emulator("start", "--adb-server-port", str(port), "--json")
        assert code == 0, out
        state = json.loads(out)
        try:
            yield state
        finally:
            code, out = emulator("stop")
            assert code == 0 and "stopped" in out
            for pid in (state["sshd_pid"], state["adbd_pid"]):
                assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            assert not Path(state["run_dir"]).exists()


@pytest.fixture(scope="module")
def dists(tmp_path_factory, digits_model):
    """The digits model built for a Raspberry Pi 5 at fp32 and int8, for ExecuTorch, LiteRT and ONNX. Half the
    channels are pruned: every validation runs all 359 evaluation inputs through each artifact under qemu, whose
    time follows the model's MACs."""
    out = {}
    for scheme in ("fp32", "int8"):
        dist = tmp_path_factory.mktemp(f"digits-{scheme}")
        code = main(["build", "--model", "examples:digits", "--device", DEVICE, "--prune", "0.5", "--quant", scheme,
                     "--finetune-epochs", "1", "--out", str(dist), "--quiet", "--runs", "3", "--warmup", "1"])
        assert code in (0, 3)
        out[scheme] = dist / DEVICE
    return out


def _validate(capsys, folder: Path, arguments: list[str]) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = main(["validate", str(folder), *arguments, *VALIDATE])
    out, err = capsys.readouterr()
    assert out.strip(), f"validate printed no JSON (exit {code}): {err.strip()[-600:]}"
    return code, json.loads(out)


def _check_emulated(results: list[dict], where: str, code: int, scheme: str) -> None:
    assert sorted(r["artifact"] for r in results) == ["model.onnx", "model.pte", "model.tflite"]
    for r in results:
        assert r["measured"]["where"] == where and r["emulated"] == "qemu cortex-a76"
        assert r["measured"]["extra"]["emulated"] == "qemu cortex-a76"
        parity = r["device_parity"]
        checks = {c["name"]: c for c in r["verdict"]["checks"]}
        within = parity["max_abs_diff"] <= parity["max_abs_diff_limit"] and parity["top1_agreement"] >= 0.98
        assert parity["samples"] > 100 and parity["passed"] is within
        assert checks["output_parity"]["status"] == ("pass" if within else "fail")
        assert f"max abs diff {parity['max_abs_diff']:.3g}" in checks["output_parity"]["note"]
        if not within:
            assert code == 3 and r["verdict"]["passed"] is False
        # every artifact matches the host on ARM (ONNX int8 since its weights are 7-bit: export/onnx.REDUCE_RANGE_WHY)
        assert within, (r["artifact"], scheme, parity)
        for name in ("latency", "peak_memory", "energy"):
            assert checks[name]["status"] == "unverified" and checks[name]["value"] is None
            assert checks[name]["note"] == "not measured: emulated device (qemu cortex-a76)"
        if r["artifact"] == "model.pte":  # no torch on the device: the native runner, built for aarch64
            assert r["measured"]["runner"].startswith("edgeprune_executorch_runner")
            assert r["measured"]["extra"]["native_runner"]["abi"] == "arm64-v8a"
        else:
            assert r["measured"]["extra"]["measured_with"] == "remote_measure.py"


@pytest.mark.parametrize("scheme", ["fp32", "int8"])
def test_validate_on_the_emulated_board_over_ssh(served, dists, capsys, scheme):
    code, results = _validate(capsys, dists[scheme], served["ssh_arguments"])
    assert code in (0, 3)  # 3: a budget the device judges (accuracy drop, output parity), never an emulated time
    _check_emulated(results, f"ssh:root@127.0.0.1:{served['ssh_port']}", code, scheme)
    for r in results:
        assert r["measured"]["extra"]["machine"]["machine"] == "aarch64"
    manifest = json.loads((dists[scheme] / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        ref = entry["host_reference"]
        assert ref["machine"] == "x86_64" and ref["artifact_sha256"] == entry["sha256"]
        assert sha256_file(dists[scheme] / ref["path"]) == ref["sha256"]


@pytest.mark.parametrize("scheme", ["fp32", "int8"])
def test_validate_on_the_emulated_phone_over_adb(served, dists, capsys, scheme):
    code, results = _validate(capsys, dists[scheme], served["adb_arguments"])
    assert code in (0, 3)
    _check_emulated(results, f"adb:127.0.0.1:{served['adb_port']}", code, scheme)
    for r in results:
        assert r["measured"]["extra"]["device"]["abi"] == "arm64-v8a"


def test_an_altered_artifact_fails_validation_with_the_figure(served, dists, capsys, tmp_path):
    """Weights changed in model.onnx after its host reference was recorded, the copied manifest re-signed: the
    device's outputs no longer match, and the verdict fails with the figure."""
    import onnx
    from onnx import numpy_helper

    copy = tmp_path / DEVICE
    shutil.copytree(dists["fp32"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["artifacts"] = [e for e in manifest["artifacts"] if e["path"] == "model.onnx"]
    (entry,) = manifest["artifacts"]
    assert "host_reference" in entry  # recorded by the validations above
    model = onnx.load(copy / "model.onnx")
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    biggest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(biggest) * 1.5, biggest.name))
    onnx.save(model, copy / "model.onnx")
    entry["sha256"], entry["size_bytes"] = sha256_file(copy / "model.onnx"), (copy / "model.onnx").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))

    code, (result,) = _validate(capsys, copy, served["ssh_arguments"])
    assert code == 3 and result["verdict"]["passed"] is False
    check = next(c for c in result["verdict"]["checks"] if c["name"] == "output_parity")
    assert check["status"] == "fail" and check["value"] > check["limit"]
    assert f"max abs diff {check['value']:.3g}" in check["note"] and "recorded for artifact sha256" in check["note"]


def test_starting_twice_is_refused(served):
    with pytest.raises(ConfigError, match="already served"):
        emulator("start")


# ------------------------------------------------------------------------------------------------ runners


def _artifacts(folder: Path) -> dict[str, object]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {Path(e["path"]).suffix: _artifact(folder, e) for e in manifest["artifacts"]}, manifest


def _ssh(served, **kwargs) -> SshRunner:
    return SshRunner(f"root@127.0.0.1:{served['ssh_port']}", identity_file=served["identity_file"],
                     known_hosts=served["known_hosts"], ssh_options=("-F", "/dev/null"), **kwargs)


def _adb(served, **kwargs) -> AdbRunner:
    return AdbRunner(f"127.0.0.1:{served['adb_port']}", adb_port=served["adb_server_port"], **kwargs)


@pytest.mark.parametrize("front", ["ssh", "adb"])
def test_a_device_without_python_runs_pte_natively_and_names_the_need_for_the_rest(served, dists, front):
    arts, manifest = _artifacts(dists["fp32"])
    x = _eval_data(manifest).eval_x[:4]
    runner = (_ssh if front == "ssh" else _adb)(served, python="/usr/bin/python3-not-installed")
    m = runner.measure(arts[".pte"], x, warmup=0, runs=1)
    assert m.outputs.shape[0] == 4 and m.extra["measured_with"] == "edgeprune_executorch_runner"
    with pytest.raises(DeviceError, match="python3-not-installed") as err:
        runner.measure(arts[".tflite"], x, warmup=0, runs=1)
    assert len(str(err.value).splitlines()) == 1
    if front == "ssh":
        assert "ai-edge-litert" in str(err.value)
    else:
        assert "ai_edge_litert" in str(err.value)


@pytest.fixture(scope="module")
def bundles(emulated_root, tmp_path_factory):
    """Runner bundles built here: one for this machine (x86_64), one for aarch64 against the emulated root's wheel."""
    folder = tmp_path_factory.mktemp("bundles")
    host = native_runner.build_bundle(folder / "host")
    arm = folder / "aarch64"
    et_dir = emulated_root.path / recipe.SITE_DIR.lstrip("/") / "executorch"
    native_runner.compile_runner(arm / native_runner.RUNNER_NAME, "aarch64", et_dir)
    shutil.copytree(et_dir / "lib", arm / "lib", ignore=shutil.ignore_patterns("cmake"))
    return {"host": host.path, "aarch64": arm / native_runner.RUNNER_NAME}


def test_the_native_runner_on_the_host_matches_the_python_runtime(bundles, dists, tmp_path):
    import subprocess

    from edgeprune.runners.host import HostRunner

    arts, manifest = _artifacts(dists["int8"])
    x = np.ascontiguousarray(_eval_data(manifest).eval_x[:8], dtype=np.float32)
    np.save(tmp_path / "in.npy", x)
    proc = subprocess.run([str(bundles["host"]), "--artifact", str(arts[".pte"].path), "--inputs", str(tmp_path / "in.npy"),
                           "--outputs", str(tmp_path / "out.npy"), "--runs", "3", "--warmup", "1"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["runs"] == 3 and result["latency_p50_ms"] > 0 and result["machine"]["machine"] == "x86_64"
    assert result["peak_rss_mb"] > 0 and result["runtime_versions"]["executorch"]
    reference = HostRunner().measure(arts[".pte"], x, warmup=0, runs=1).outputs
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference, atol=1e-5)


@pytest.mark.parametrize("front", ["ssh", "adb"])
def test_a_pushed_runner_bundle_runs_and_one_for_the_wrong_architecture_is_named(served, dists, bundles, front):
    arts, manifest = _artifacts(dists["int8"])
    x = _eval_data(manifest).eval_x[:4]
    make = _ssh if front == "ssh" else _adb
    m = make(served, native_runner=bundles["aarch64"]).measure(arts[".pte"], x, warmup=0, runs=1)
    assert m.extra["native_runner"]["on_device"] is False and m.extra["native_runner"]["abi"] == "arm64-v8a"
    with pytest.raises(DeviceError) as err:
        make(served, native_runner=bundles["host"]).measure(arts[".pte"], x, warmup=0, runs=1)
    message = str(err.value)
    assert "built for x86_64" in message and "aarch64 (arm64-v8a)" in message and str(bundles["host"]) in message


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_architecture_and_cpu_model_are_refused():
    with pytest.raises(ConfigError, match=r"unknown emulator architecture 'riscv64'; known: arm64"):
        emulator("create", "riscv64")
    with pytest.raises(ConfigError, match=r"CPU model 'max' is not offered for arm64; known: cortex-a76"):
        emulator("create", "arm64", "--cpu", "max")


def test_not_root_or_no_binfmt_says_what_to_run(tmp_path):
    a = recipe.arch("arm64")
    with pytest.raises(DeviceError, match="needs root"):
        root.check_host(a, euid=1000)
    with pytest.raises(DeviceError, match=r"binfmt_misc is not mounted.*run: mount -t binfmt_misc binfmt_misc "
                                          r".* && update-binfmts --enable qemu-aarch64"):
        root.check_host(a, euid=0, binfmt_dir=tmp_path)
    (tmp_path / "register").write_text("")
    with pytest.raises(DeviceError, match="qemu-aarch64 is not registered.*apt-get install -y qemu-user-static"):
        root.check_host(a, euid=0, binfmt_dir=tmp_path)
    entry = tmp_path / "qemu-aarch64"
    entry.write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    with pytest.raises(DeviceError, match="disabled; run: update-binfmts --enable qemu-aarch64"):
        root.check_host(a, euid=0, binfmt_dir=tmp_path)
    entry.write_text("enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: \n")
    with pytest.raises(DeviceError, match="without binfmt's F flag"):
        root.check_host(a, euid=0, binfmt_dir=tmp_path)
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    root.check_host(a, euid=0, binfmt_dir=tmp_path)  # what this machine has


def test_the_recipe_names_the_root_by_content():
    default = recipe.make_recipe("arm64", "cortex-a76")
    assert default.sha256 == recipe.make_recipe("arm64", "cortex-a76").sha256
    other = recipe.make_recipe("arm64", "neoverse-n1")
    assert other.sha256 != default.sha256 and other.base_sha256 == default.base_sha256
    assert default.wheels["executorch"] and default.runner_source_sha256 == recipe.runner_source_sha256()
