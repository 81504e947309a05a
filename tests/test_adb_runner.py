"""The adb runner end to end: the real `adb` server and client, a test-owned adb device on 127.0.0.1, and the real
ExecuTorch runtime running edgeprune's `remote_measure.py` "on the device" (the loopback's sandbox).

Nothing adb-related is mocked: each test module starts its own adb server (`adb -P PORT nodaemon server`, killed
at the end), attaches loopback devices with `adb connect 127.0.0.1:DEVPORT`, and drives `AdbRunner` through
adbutils against that server. The one stand-in is a tiny C program playing `executor_runner` (printing that tool's
log format) for the native-binary path, since no Android build of the real tool can run here.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import DeviceError
from edgeprune.export import get_exporter
from edgeprune.profiles import parse_profile
from edgeprune.runners import cache
from edgeprune.runners.adb import AdbPool, AdbRunner, draft_profile, list_connected, match_jobs, read_device
from edgeprune.runners.adb.connection import _client, _Device
from edgeprune.runners.host import HostRunner
from edgeprune.types import Plan

sys.path.insert(0, str(Path(__file__).parent))
from adb_loopback import PIXEL8_PROPS, LoopbackAdbDevice, device_files, private_adb_server  # noqa: E402

ADB = shutil.which("adb")
DEVICE_DIR = "/data/local/tmp/edgeprune"
INPUT_SHAPE = (1, 3, 16, 16)


@dataclass
class AdbServer:
    port: int
    env: dict

    def adb(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        r = subprocess.run([ADB, "-P", str(self.port), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} failed: {r.stdout}{r.stderr}")
        return r.stdout + r.stderr

    def wait_state(self, serial: str, state: str = "device", timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.adb("devices").splitlines()[1:]:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == serial and parts[1] == state:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{serial} never reached state {state}: {self.adb('devices')}")


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    with private_adb_server(tmp_path_factory.mktemp("adb-home")) as (port, env):
        yield AdbServer(port, env)


@pytest.fixture
def plug(adb_server, tmp_path):
    """Start a loopback device in a sandbox under tmp_path and `adb connect` the server to it."""
    devices: list[LoopbackAdbDevice] = []

    def make(name: str = "phone", **kwargs) -> LoopbackAdbDevice:
        dev = LoopbackAdbDevice(tmp_path / name, **kwargs).start()
        devices.append(dev)
        out = adb_server.adb("connect", dev.serial)
        assert "connected to" in out, out
        adb_server.wait_state(dev.serial)
        return dev

    yield make
    for dev in devices:
        dev.pull_cable()
        adb_server.adb("disconnect", dev.serial, check=False)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyNet().eval()
    gen = torch.Generator().manual_seed(1)
    example = torch.randn(*INPUT_SHAPE, generator=gen)
    calib = torch.randn(8, *INPUT_SHAPE[1:], generator=gen)
    out = tmp_path_factory.mktemp("artifact") / "tiny-fp32.pte"
    return get_exporter("executorch").export(model, example, calib, Plan(target="executorch", scheme="fp32"), out).artifact


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(3).standard_normal((6, *INPUT_SHAPE[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def host_outputs(artifact, inputs):
    return HostRunner().measure(artifact, inputs, warmup=0, runs=1, threads=1)


def _runner(adb_server, dev, **kwargs) -> AdbRunner:
    kwargs.setdefault("timeout_s", 180)
    return AdbRunner(dev.serial, adb_host="127.0.0.1", adb_port=adb_server.port, **kwargs)


# ------------------------------------------------------------------------------------------------------ tests


def test_devices_connected_reads_the_device_and_matches_its_profile(adb_server, plug):
    dev = plug()
    infos = list_connected("127.0.0.1", adb_server.port)
    info = next(i for i in infos if i.serial == dev.serial)
    assert info.state == "device" and not info.errors
    assert (info.model, info.manufacturer, info.soc, info.abi, info.sdk) == (
        "Pixel 8", "Google", "Google Tensor G3", "arm64-v8a", 34,
    )
    assert info.ram_gb == pytest.approx(8.01, abs=0.01)
    assert info.cpu_max_ghz == (1.704,) * 4 + (2.367,) * 4 + (2.914,)
    assert (info.matched_profile, info.match_kind) == ("pixel-8", "model")
    prof = parse_profile(draft_profile(info), "draft")
    assert prof.soc == "Google Tensor G3" and prof.ram_gb == 8.0
    assert [(c.core, c.count) for c in prof.cpu_clusters] == [("Cortex-X3", 1), ("Cortex-A715", 4), ("Cortex-A510", 4)]
    assert dev.serial in prof.sources["soc"]
    assert read_device(dev.serial, "127.0.0.1", adb_server.port).matched_profile == "pixel-8"
    # With one device attached, the runner picks it when no serial is given.
    assert AdbRunner(adb_host="127.0.0.1", adb_port=adb_server.port).where == f"adb:{dev.serial}"


def test_measure_end_to_end_through_adb(adb_server, plug, artifact, inputs, host_outputs):
    dev = plug()
    runner = _runner(adb_server, dev, energy=False)  # energy is exercised on the native path below (cheaper runs)
    assert runner.where == f"adb:{dev.serial}"
    m = runner.measure(artifact, inputs, warmup=2, runs=5, threads=1)

    assert m.where == f"adb:{dev.serial}"
    assert (m.runs, m.warmup_runs, m.threads) == (5, 2, 1)
    assert 0 < m.latency_p50_ms <= m.latency_p90_ms and m.latency_mean_ms > 0
    assert m.size_bytes == artifact.size_bytes
    assert m.peak_memory_mb == pytest.approx(host_outputs.peak_memory_mb)
    assert "executorch.runtime" in m.runner and m.runtime_versions["executorch"]
    assert m.outputs.shape == (len(inputs), 10)
    np.testing.assert_allclose(m.outputs, host_outputs.outputs, rtol=1e-5, atol=1e-5)
    assert m.extra["device"]["model"] == "Pixel 8" and m.extra["device"]["matched_profile"] == "pixel-8"
    assert m.extra["device_peak_rss_mb"] > 0

    assert m.extra["energy_method"] is None and "disabled" in m.extra["energy_note"]
    assert m.extra["attempts"] == 1

    # Argument lists reached the device shell quoted, with device paths, and everything pushed was removed.
    measure_cmds = [c for c in dev.commands if "remote_measure.py" in c and "--artifact" in c]
    assert len(measure_cmds) == 1
    assert measure_cmds[0].startswith(f"python3 {DEVICE_DIR}/run-")
    assert "--warmup 2 --runs 5 --threads 1" in measure_cmds[0]
    assert any(c.startswith("rm -f ") for c in dev.commands)
    assert device_files(dev, DEVICE_DIR) == [] and not dev.host_path(DEVICE_DIR).exists()


def test_device_arguments_with_shell_syntax_arrive_verbatim(adb_server, plug, artifact, inputs, host_outputs):
    """A device python path with spaces, quotes, `;`, `$()` and backticks reaches the device shell as one word:
    the program runs with the runner's arguments, and nothing in it is executed."""
    dev = plug()
    odd = "/data/local/tmp/py thon; $(touch PWNED) `touch PWNED` 'q' *"
    script = dev.host_path(odd)
    script.parent.mkdir(parents=True, exist_ok=True)
    log = script.parent / "argv.log"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" --end-- >> {shlex.quote(str(log))}\n'
                      f'exec {shlex.quote(sys.executable)} "$@"\n')
    script.chmod(0o755)
    m = _runner(adb_server, dev, energy=False, python=odd).measure(artifact, inputs, warmup=1, runs=2, threads=1)
    np.testing.assert_allclose(m.outputs, host_outputs.outputs, rtol=1e-5, atol=1e-5)
    calls = [c.strip("\n").split("\n") for c in log.read_text().split("--end--") if c.strip()]
    measured = [c for c in calls if c[0].endswith("/remote_measure.py")]
    assert len(measured) == 1 and measured[0][1] == "--artifact"
    assert measured[0][2].startswith(f"{dev.root}/data/local/tmp/") and measured[0][2].endswith(artifact.path.suffix)
    assert not list(dev.root.rglob("PWNED")) and not Path("PWNED").exists()


def test_cable_pulled_mid_run_raises_device_error_after_one_retry(adb_server, plug, artifact, inputs):
    dev = plug()
    runner = _runner(adb_server, dev, energy=False, retry_delay_s=0.2, reconnect_wait_s=3.0)

    def pull() -> None:
        dev.wait_for_command(r"remote_measure\.py --artifact")
        dev.pull_cable()

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    with pytest.raises(DeviceError) as err:
        runner.measure(artifact, inputs, warmup=1, runs=3, threads=1)
    t.join(timeout=5)
    msg = str(err.value)
    assert dev.serial in msg
    assert "disconnected during run remote_measure.py" in msg and "retried once" in msg
    assert "no longer lists" in msg  # the retry found the device gone
    assert err.value.exit_code == 4


def test_cable_replugged_the_retry_succeeds_and_cleans_up(adb_server, plug, artifact, inputs, host_outputs):
    dev = plug()
    runner = _runner(adb_server, dev, energy=False, retry_delay_s=0.3, reconnect_wait_s=20.0)

    def pull_and_replug() -> None:
        dev.wait_for_command(r"remote_measure\.py --artifact")
        dev.pull_cable()
        time.sleep(1.5)  # past the adb server's own first reconnect attempt: the runner has to reconnect it
        dev.plug_in()

    t = threading.Thread(target=pull_and_replug, daemon=True)
    t.start()
    m = runner.measure(artifact, inputs, warmup=1, runs=3, threads=1)
    t.join(timeout=5)
    assert m.extra["attempts"] == 2 and "run remote_measure.py" in m.extra["first_attempt_error"]
    np.testing.assert_allclose(m.outputs, host_outputs.outputs, rtol=1e-5, atol=1e-5)
    assert device_files(dev, DEVICE_DIR) == []  # the first attempt's files were removed at the retry


def test_device_commands_time_out(adb_server, plug):
    dev = plug(power_stats=False)
    client = _client("127.0.0.1", adb_server.port, 30.0)
    device = _Device(client, dev.serial, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(DeviceError, match=r"timed out after 1 s"):
        device.shell("wait", ["sleep", "20"])
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 10
    while dev._procs and time.monotonic() < deadline:  # the stream's close kills the command on the device
        time.sleep(0.1)
    assert not dev._procs
    assert device.shell("echo", ["echo", "a b;c"]).stdout.strip() == "a b;c"  # one argument, quoted


def test_pool_runs_devices_in_parallel_one_job_each_and_names_what_to_install(adb_server, plug, artifact, inputs, tmp_path):
    a = plug("a", python=None, power_stats=False)
    b = plug("b", python=None, power_stats=False)
    infos = [i for i in list_connected("127.0.0.1", adb_server.port) if i.serial in (a.serial, b.serial)]
    jobs, unmatched = match_jobs({"pixel-8": [artifact, artifact]}, infos)
    assert len(jobs) == 4 and unmatched == []
    pool = AdbPool([a.serial, b.serial], adb_host="127.0.0.1", adb_port=adb_server.port, timeout_s=60,
                   energy=False, cache_root=tmp_path / "empty-cache")
    results = pool.run(jobs, inputs, warmup=1, runs=2)
    assert [(r.serial, r.artifact) for r in results] == [(j.serial, j.artifact) for j in jobs]
    for r in results:
        assert r.measurement is None
        assert r.serial in r.error and "edgeprune runners add" in r.error and "executor_runner" in r.error
    assert a.max_concurrent_shells == 1 and b.max_concurrent_shells == 1
    assert device_files(a, DEVICE_DIR) == [] and device_files(b, DEVICE_DIR) == []


STAND_IN_EXECUTOR_RUNNER = textwrap.dedent(
    r"""
    /* Stand-in for ExecuTorch's executor_runner: same flags, same ET_LOG line format, fixed timings. */
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/stat.h>
    int main(int argc, char **argv) {
      const char *model = 0, *inputs = 0, *etdump = 0; int n = 1, threads = -1; struct stat st;
      for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--model_path=", 13)) model = argv[i] + 13;
        else if (!strncmp(argv[i], "--inputs=", 9)) inputs = argv[i] + 9;
        else if (!strncmp(argv[i], "--num_executions=", 17)) n = atoi(argv[i] + 17);
        else if (!strncmp(argv[i], "--cpu_threads=", 14)) threads = atoi(argv[i] + 14);
        else if (!strncmp(argv[i], "--etdump_path=", 14)) etdump = argv[i] + 14;
        else { fprintf(stderr, "ERROR: unknown command line flag '%s'\n", argv[i]); return 1; }
      }
      if (!model || stat(model, &st) != 0) {
        fprintf(stderr, "E 00:00:00.000101 executorch:executor_runner.cpp:190] Could not load model %s\n", model ? model : "");
        return 1;
      }
      long in_bytes = (inputs && stat(inputs, &st) == 0) ? (long)st.st_size : -1;
      fprintf(stderr, "I 00:00:00.000512 executorch:executor_runner.cpp:159] Resetting threadpool with num threads = %d\n", threads);
      fprintf(stderr, "I 00:00:00.001904 executorch:executor_runner.cpp:204] Model file %s is loaded.\n", model);
      fprintf(stderr, "I 00:00:00.001922 executorch:executor_runner.cpp:213] Using method forward\n");
      fprintf(stderr, "I 00:00:00.001930 executorch:executor_runner.cpp:264] Setting up CPU planned buffer 0, size 45120.\n");
      fprintf(stderr, "I 00:00:00.004588 executorch:executor_runner.cpp:301] Model loaded in 2.650000 ms.\n");
      double total = 0;
      for (int i = 0; i < n; i++) {
        double ms = 0.25 + 0.01 * i; total += ms;
        fprintf(stderr, "I 00:00:00.%06d executorch:executor_runner.cpp:392] Iteration %d of %d: %f ms\n", 5000 + i, i + 1, n, ms);
      }
      fprintf(stderr, "I 00:00:00.009000 executorch:executor_runner.cpp:402] Model executed successfully %d time(s) in %f ms.\n", n, total);
      fprintf(stderr, "I 00:00:00.009010 executorch:executor_runner.cpp:407] 1 outputs: \n");
      printf("OutputX 0: tensor(sizes=[1, 10], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])\n");
      if (etdump) {
        FILE *f = fopen(etdump, "wb"); if (!f) return 2;
        fprintf(f, "ETDUMP-STAND-IN input_bytes=%ld threads=%d\n", in_bytes, threads); fclose(f);
        fprintf(stderr, "I 00:00:00.009500 executorch:executor_runner.cpp:126] ETDump written to file '%s'.\n", etdump);
      }
      return 0;
    }
    """
)


@pytest.fixture(scope="module")
def stand_in_runner(tmp_path_factory):
    """The executor_runner stand-in, compiled for this machine (x86_64 here) and added to a runner cache."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (cc) is needed to build the executor_runner stand-in"
    folder = tmp_path_factory.mktemp("stand-in")
    src = folder / "executor_runner.c"
    src.write_text(STAND_IN_EXECUTOR_RUNNER)
    binary = folder / "build" / "executor_runner"
    binary.parent.mkdir()
    subprocess.run([cc, "-O1", "-o", str(binary), str(src)], check=True, capture_output=True, timeout=60)
    root = folder / "runner-cache"
    return cache.add(binary, root=root), root


EMULATOR_PROPS = dict(
    PIXEL8_PROPS,
    **{
        "ro.product.cpu.abi": "x86_64",
        "ro.product.cpu.abilist": "x86_64",
        "ro.product.model": "sdk_gphone64_x86_64",
        "ro.hardware": "ranchu",
        "ro.kernel.qemu": "1",
    },
)


def test_native_executor_runner_from_the_runner_cache(adb_server, plug, artifact, inputs, tmp_path, stand_in_runner):
    added, root = stand_in_runner
    assert (added.kind, added.abi) == ("executor_runner", "x86_64")
    # An x86_64 "emulator" with no Python runtime but with the power-stats HAL.
    dev = plug("emu", python=None, props=EMULATOR_PROPS)
    runner = _runner(adb_server, dev, cache_root=root, etdump_dir=tmp_path / "etdumps", energy_runs=10)
    m = runner.measure(artifact, inputs, warmup=2, runs=5, threads=2)

    assert m.runner.startswith("executor_runner") and m.where == f"adb:{dev.serial}"
    assert (m.runs, m.warmup_runs, m.threads) == (5, 2, 2)
    assert m.latency_p50_ms == pytest.approx(0.29) and m.latency_mean_ms == pytest.approx(0.29)
    assert m.latency_p90_ms == pytest.approx(0.306)
    assert m.peak_memory_mb == pytest.approx(0.04512 + artifact.size_bytes / 1e6)
    assert m.outputs.shape == (0, 10) and m.extra["accuracy"] == "not measured: native benchmark binary"
    assert m.runtime_versions == {"executor_runner": f"sha256:{added.sha256[:16]}"}
    assert m.extra["device"]["is_emulator"] and m.extra["device"]["abi"] == "x86_64"
    etdump = Path(m.extra["etdump_path"])
    assert etdump.parent == tmp_path / "etdumps"
    assert etdump.read_text() == f"ETDUMP-STAND-IN input_bytes={3 * 16 * 16 * 4} threads=2\n"
    # Energy through the HAL (dumpsys on the device): a measured run, a run with 10 more inferences, an idle window
    # whose baseline is the loopback rails' idle draw of 40 mW.
    assert m.extra["energy_method"] == "power_stats_hal"
    detail = m.extra["energy_detail"]
    assert detail["hal"] == "2.0" and detail["runs"] == [5, 15]
    assert detail["idle_power_w"] == pytest.approx(0.040, rel=0.05)
    assert m.extra["energy_mj"] is None or m.extra["energy_mj"] > 0
    assert any("--num_executions=7" in c and "--cpu_threads=2" in c for c in dev.commands)
    assert any("--num_executions=17" in c for c in dev.commands)
    assert device_files(dev, DEVICE_DIR) == []


def test_a_timing_only_block_skips_the_energy_runs(adb_server, plug, artifact, inputs, stand_in_runner):
    _, root = stand_in_runner
    dev = plug("emu", python=None, props=EMULATOR_PROPS)  # has the power-stats HAL
    m = _runner(adb_server, dev, cache_root=root, energy_runs=10).measure(artifact, inputs, warmup=1, runs=3, threads=1,
                                                                       energy=False)
    assert m.extra["energy_method"] is None and "timing only" in m.extra["energy_note"]
    assert not any("--num_executions=14" in c for c in dev.commands)  # no second, longer run for energy
    assert not any("dumpsys" in c for c in dev.commands)


def test_battery_sampling_when_there_is_no_power_stats_hal(adb_server, plug, artifact, inputs, stand_in_runner):
    _, root = stand_in_runner
    # No HAL, but battery sensors: 450 mA discharging at 4.0 V = 1.8 W.
    dev = plug("emu", python=None, props=EMULATOR_PROPS, power_stats=False, battery_ua_uv=(-450_000, 4_000_000))
    m = _runner(adb_server, dev, cache_root=root, energy_runs=10).measure(artifact, inputs, warmup=1, runs=3, threads=1)
    assert m.extra["energy_method"] == "battery_sampling (low confidence)"
    detail = m.extra["energy_detail"]
    assert detail["runs"] == [3, 13] and detail["idle_power_w"] == pytest.approx(1.8, rel=1e-3)
    # A constant draw is all idle baseline, so nothing (within noise) is left per inference.
    assert m.extra["energy_mj"] is None or m.extra["energy_mj"] < 0.05
    assert device_files(dev, DEVICE_DIR) == []


# ------------------------------------------------------------------------------------------ the CLI over adb


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory, digits_fp32_build):
    """This module's copy (validate appends to the manifests) of the session's digits build for host and pixel-8."""
    code, _, dist = digits_fp32_build
    assert code in (0, 3)
    return Path(shutil.copytree(dist, tmp_path_factory.mktemp("adb-cli") / "dist"))


def test_cli_lists_validates_and_pools_over_adb(adb_server, plug, digits_build, capsys):
    import json

    from edgeprune.cli import main

    dev = plug()
    port = str(adb_server.port)
    assert main(["devices", "--connected", "--json", "--adb-port", port]) == 0
    listed = {d["serial"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed[dev.serial]["matched_profile"] == "pixel-8" and listed[dev.serial]["soc"] == "Google Tensor G3"

    # one measurement block each (every block on the phone is one more remote_measure.py process)
    main(["validate", str(digits_build / "host"), "--on", "host", "--runs", "3", "--warmup", "1", "--blocks", "1",
          "--json"])
    (on_host,) = json.loads(capsys.readouterr().out)
    main(["validate", str(digits_build / "host"), "--on", f"adb:{dev.serial}", "--adb-port", port,
          "--runs", "3", "--warmup", "1", "--blocks", "1", "--threads", "1", "--json"])
    (on_phone,) = json.loads(capsys.readouterr().out)
    assert on_phone["measured"]["where"] == f"adb:{dev.serial}"
    assert set(on_phone["measured"]) >= set(on_host["measured"])
    assert on_phone["accuracy"] == pytest.approx(on_host["accuracy"])

    # adb:all matches the attached Pixel 8 to dist/pixel-8 by profile; the host build has no device to run on.
    main(["validate", str(digits_build), "--on", "adb:all", "--adb-port", port, "--runs", "3", "--warmup", "1",
          "--blocks", "1", "--threads", "1", "--json"])
    (pooled,) = json.loads(capsys.readouterr().out)
    assert pooled["device"] == "pixel-8" and pooled["measured"]["where"] == f"adb:{dev.serial}"
    # Measured on the phone the budget belongs to: latency is judged, not left unverified.
    checks = {c["name"]: c["status"] for c in pooled["verdict"]["checks"]}
    assert checks["latency"] in ("pass", "fail") and checks["peak_memory"] in ("pass", "fail")
    manifest = json.loads((digits_build / "pixel-8" / "manifest.json").read_text())
    assert manifest["artifacts"][0]["validations"][-1]["measured"]["where"] == f"adb:{dev.serial}"


def test_cli_profile_draft_writes_a_loadable_profile(adb_server, plug, tmp_path):
    from edgeprune.cli import main
    from edgeprune.profiles import load_profile

    dev = plug()
    out = tmp_path / "my-phone.yaml"
    assert main(["profile", "draft", "--on", f"adb:{dev.serial}", "--adb-port", str(adb_server.port), "--out", str(out)]) == 0
    assert load_profile(str(out)).soc == "Google Tensor G3"


def test_cli_build_on_the_phone_judges_the_phone_budget(adb_server, plug, digits_model, tmp_path, capsys):
    import json

    from edgeprune.cli import main

    dev = plug()
    code = main(["build", "--model", "examples:digits", "--device", "pixel-8", "--target", "executorch", "--out",
                 str(tmp_path / "dist"), "--on", f"adb:{dev.serial}", "--adb-port", str(adb_server.port),
                 "--runs", "3", "--warmup", "1", "--blocks", "1", "--json"])  # 1 block: one remote process a measurement
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "dist" / "pixel-8" / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    assert art["measured"]["where"] == f"adb:{dev.serial}"
    # planned for the phone's budgets: the unpruned model meets them on 1 thread, the fewest of the 1/2/4 searched,
    # and the phone measures at the plan's thread count
    assert art["plan"]["threads"] == 1 and art["measured"]["threads"] == 1
    checks = {c["name"]: c["status"] for c in art["verdict"]["checks"]}
    assert checks["latency"] in ("pass", "fail") and checks["peak_memory"] in ("pass", "fail")
    assert code == (0 if summary["passed"] else 3)
