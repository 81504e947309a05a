"""`AdbRunner`: measures artifacts on one Android phone or emulator through the adb server (adbutils).

How one measurement goes (`AdbRunner.measure`):

1. A fresh run folder `<device_dir>/run-<id>` is made on the device.
2. A `.pte` runs with edgeprune's native ExecuTorch runner (`edgeprune_executorch_runner`: no Python or torch on
   the device) wherever one exists: given as `native_runner`, on the device's PATH, or as a bundle in the runner
   cache for the device's ABI (pushed with the run). Its arguments and result are remote_measure.py's.
   Otherwise, if the device has a Python with the artifact's runtime (`python=` given, or `python3` on the device's PATH with
   the runtime importable), edgeprune's standalone `remote_measure.py`, the artifact and `inputs.npy` are pushed and
   run; it prints result JSON and writes `outputs.npy`, which is pulled: outputs are then available for accuracy.
3. Otherwise the native benchmark program for the artifact's format is pushed from the runner cache
   (`edgeprune runners add PATH`): `benchmark_model` for .tflite, `executor_runner` for .pte,
   `onnxruntime_perf_test` for .onnx. Its real output is parsed (`parsers.py`); outputs are not available. An
   ETDump written by a profiling `executor_runner` is pulled next to the artifact.
   The device's machine, its native runner (checked by ELF header: one built for another architecture is named,
   not run) and the emulation marker `/etc/edgeprune/emulated` are read once; an edgeprune emulated device's
   measurements carry `extra["emulated"]`, and no energy or memory is measured on it.
4. Energy (`energy.py`): with the power-stats HAL, or failing that battery current x voltage sampling, a second run
   with more timed inferences and an idle window give energy per inference minus the idle baseline.
5. Everything pushed or produced is removed from the device (try/finally).

Every adb call carries a timeout (`timeout_s`, as the socket timeout of every adb connection). When the device
vanishes mid-run (cable pulled, emulator killed), the whole measurement is retried once (after reconnecting a
`host:port` device); a second loss raises `DeviceError` naming the serial. Paths travel as argument lists, each
argument quoted for the device shell with `shlex.quote`, never interpolated into a shell string.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.errors import ConfigError, DeviceError
from edgeprune.outputs import read_remote
from edgeprune.runners import cache as runner_cache
from edgeprune.runners import energy as energy_mod
from edgeprune.runners import native_runner as native
from edgeprune.runners.adb.connection import _client, _Device, _Disconnected, _first_line, _server_up, quote
from edgeprune.runners.adb.discovery import read_device_info
from edgeprune.runners.android import DeviceInfo
from edgeprune.runners.base import Runner, check_request
from edgeprune.runners.parsers import (
    BenchStats,
    ParseError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_perf_test,
    parse_power_stats,
)
from edgeprune.target_specs import TARGET_SPECS
from edgeprune.types import Artifact, Measurement

REMOTE_SCRIPT = Path(__file__).parent.parent / "remote_measure.py"
RUNTIME_MODULES = {suffix: ("numpy", *t.runtime_modules) for t in TARGET_SPECS.values() for suffix in t.suffixes}
"""Artifact suffix -> the modules a device's Python must import to measure it (from the target specs)."""
HAL2_COMMAND = ("dumpsys", "android.hardware.power.stats.IPowerStats/default")
HAL1_COMMAND = ("lshal", "debug", "android.hardware.power.stats@1.0::IPowerStats/default")
BATTERY_DIR = "/sys/class/power_supply/battery"
EXECUTORCH_MEMORY_METHOD = "planned activation arena + program bytes (ExecuTorch memory plan)"


@dataclass
class _Run:
    """What one attempt pushed or produced on the device (removed in `finally`, or at the retry)."""

    folder: str
    files: list[str]
    made_device_dir: bool


class AdbRunner(Runner):
    """Measures artifacts on one adb device. See the module docstring for the steps."""

    def __init__(
        self,
        serial: str | None = None,
        *,
        adb_host: str = "127.0.0.1",
        adb_port: int = 5037,
        device_dir: str = "/data/local/tmp/edgeprune",
        python: str | None = None,
        timeout_s: float = 600,
        energy: bool | None = None,
        energy_runs: int | None = None,
        retry_delay_s: float = 2.0,
        reconnect_wait_s: float = 15.0,
        etdump_dir: Path | None = None,
        cache_root: Path | None = None,
        native_runner: str | Path | None = None,
    ):
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s={timeout_s}: must be > 0 seconds")
        if not device_dir.startswith("/") or any(part in ("", "..") for part in device_dir.strip("/").split("/")):
            raise ConfigError(f"device_dir '{device_dir}' must be an absolute device path without '..'")
        self.adb_host, self.adb_port = adb_host, adb_port
        self.device_dir = device_dir.rstrip("/")
        self.python = python
        self.timeout_s = float(timeout_s)
        self.energy = energy
        self.energy_runs = energy_runs
        self.retry_delay_s = retry_delay_s
        self.reconnect_wait_s = reconnect_wait_s
        self.etdump_dir = etdump_dir
        self.cache_root = cache_root
        self.native_runner = None if native_runner is None else native.bundle_program(Path(native_runner))
        self._facts: native.DeviceFacts | None = None
        self._client = _client(adb_host, adb_port, self.timeout_s)
        self.serial = serial or self._only_serial()
        self.where = f"adb:{self.serial}"
        self._python_for: dict[str, str | None] = {}
        self._info: DeviceInfo | None = None
        self._energy_source: str | None | bool = False  # False: not probed yet
        self._energy_wanted = True  # this measure() call's `energy`
        self._leftovers: list[_Run] = []

    def _only_serial(self) -> str:
        ready = [d.serial for d in self._client.list() if d.state == "device"]
        if len(ready) == 1:
            return ready[0]
        if not ready:
            raise DeviceError(
                f"no adb device is attached to the server at {self.adb_host}:{self.adb_port}; "
                "connect one (`adb devices` should list it as 'device')"
            )
        raise DeviceError(f"{len(ready)} adb devices are attached ({', '.join(ready)}); name one: adb:SERIAL")

    # -------------------------------------------------------------------------------------------- public API

    def device_info(self) -> DeviceInfo:
        if self._info is None:
            dev = _Device(self._client, self.serial, self.timeout_s)
            try:
                self._info = read_device_info(dev)
            except _Disconnected as exc:
                raise DeviceError(f"device {self.serial} disconnected while reading its properties ({exc})") from None
        return self._info

    def measure(
        self,
        artifact: Artifact,
        inputs: np.ndarray,
        *,
        warmup: int = 10,
        runs: int = 50,
        threads: int = 1,
        energy: bool = True,
    ) -> Measurement:
        check_request(artifact, inputs, warmup, runs, threads)
        self._energy_wanted = energy
        first: _Disconnected | None = None
        for attempt in (1, 2):
            try:
                m = self._measure_once(artifact, np.ascontiguousarray(inputs, dtype=np.float32), warmup, runs, threads)
                extra = {**m.extra, "attempts": attempt}
                if first is not None:
                    extra["first_attempt_error"] = f"disconnected during {first}"
                return replace(m, extra=extra)
            except _Disconnected as exc:
                if attempt == 2:
                    again = exc.detail if exc.stage == "start" else f"it was lost again during {exc.stage}"
                    raise DeviceError(
                        f"device {self.serial} disconnected during {first.stage} ({first.detail}); retried once, but "
                        f"{again}: reconnect it (check the cable and `adb devices`; `adb connect HOST:PORT` for a "
                        "network device) and run again"
                    ) from None
                first = exc
                self._reconnect()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------ one attempt

    def _reconnect(self) -> None:
        """Wait for the device to come back; a network device (`host:port`) is reconnected every second.

        The adb server keeps a lost network device as 'offline' and retries on its own only at long intervals,
        and `adb connect` answers 'already connected' to an offline transport: hence disconnect, then connect.
        """
        time.sleep(self.retry_delay_s)
        dev = _Device(self._client, self.serial, self.timeout_s)
        network = re.fullmatch(r"[\w.-]+:\d+", self.serial) is not None
        deadline = time.monotonic() + self.reconnect_wait_s
        last_try = 0.0
        while time.monotonic() < deadline:
            if dev.online():
                return
            if network and time.monotonic() - last_try >= 1.0 and _server_up(self.adb_host, self.adb_port):
                last_try = time.monotonic()
                try:
                    self._client.disconnect(self.serial)
                    self._client.connect(self.serial, timeout=5.0)
                except Exception:  # noqa: BLE001 - the retry itself reports a device that stays lost
                    pass
                continue
            time.sleep(0.25)

    def _measure_once(self, artifact: Artifact, inputs: np.ndarray, warmup: int, runs: int, threads: int) -> Measurement:
        dev = _Device(self._client, self.serial, self.timeout_s)
        if not dev.online():
            raise _Disconnected("start", f"the adb server no longer lists {self.serial} as 'device'")
        self._clean_leftovers(dev)
        if self._info is None:
            self._info = read_device_info(dev)
        info = self._info
        run = _Run(folder=f"{self.device_dir}/run-{uuid.uuid4().hex[:12]}", files=[], made_device_dir=False)
        self._leftovers.append(run)
        try:
            exists = dev.shell("check the device folder", ["test", "-d", self.device_dir]).returncode == 0
            run.made_device_dir = not exists
            r = dev.shell("make the run folder", ["mkdir", "-p", run.folder])
            if r.returncode != 0:
                raise DeviceError(f"cannot create {run.folder} on device {self.serial}: {_first_line(r.output)}")
            facts = self._device_facts(dev)
            choice = None
            if artifact.path.suffix == ".pte":
                choice = native.choose_native(facts, info.abi or facts.abi, self.where, explicit=self.native_runner,
                                              cache_root=self.cache_root)  # fmt: skip
            python = None if choice is not None else self._find_python(dev, artifact.path.suffix)
            if choice is not None or python is not None:
                m = self._measure_python(dev, run, python, artifact, inputs, warmup, runs, threads, choice)
            else:
                m = self._measure_native(dev, run, info, artifact, inputs, warmup, runs, threads)
            extra = {**m.extra, "device": info.to_dict()}
            if facts.emulated:
                extra["emulated"] = facts.emulated
                m = replace(m, peak_memory_mb=None, memory_method=f"not measured: emulated device ({facts.emulated})")
            return replace(m, extra=extra)
        finally:
            self._cleanup(dev, run)

    def _cleanup(self, dev: _Device, run: _Run) -> None:
        try:
            if not dev.online():
                return  # kept in _leftovers: removed when the device is back
            parts = [quote(["rm", "-f", *run.files])] if run.files else []
            parts.append(quote(["rmdir", f"{run.folder}/lib", run.folder]) + " 2>/dev/null")  # lib/: a pushed runner's
            if run.made_device_dir:
                parts.append(quote(["rmdir", self.device_dir]) + " 2>/dev/null")
            dev.shell("remove pushed files", "; ".join(parts) + "; true", timeout=min(self.timeout_s, 60.0))
            self._leftovers.remove(run)
        except (DeviceError, _Disconnected):
            pass

    def _clean_leftovers(self, dev: _Device) -> None:
        for run in list(self._leftovers):
            self._cleanup(dev, run)

    def _device_facts(self, dev: _Device) -> native.DeviceFacts:
        if self._facts is None:
            r = dev.shell("read the device", native.PROBE_SCRIPT, timeout=min(self.timeout_s, 60.0))
            self._facts = native.parse_probe(r.stdout)
            if self._facts.emulated:
                self._energy_source = None  # an emulated device has no power rails to read
        return self._facts

    def _find_python(self, dev: _Device, suffix: str) -> str | None:
        if suffix in self._python_for:
            return self._python_for[suffix]
        modules = RUNTIME_MODULES.get(suffix)
        if modules is None:
            raise ConfigError(f"cannot measure '{suffix}' artifacts; known: {', '.join(RUNTIME_MODULES)}")
        candidates = [self.python] if self.python else ["python3"]
        found = None
        check = (
            "import importlib.util, sys; "
            f"sys.exit(0 if all(importlib.util.find_spec(m) for m in {list(modules)!r}) else 3)"
        )
        for py in candidates:
            r = dev.shell("look for a Python with the runtime", [py, "-c", check], timeout=min(self.timeout_s, 60.0))
            if r.returncode == 0:
                found = py
                break
            if self.python:
                raise DeviceError(
                    f"python '{self.python}' on device {self.serial} cannot import {', '.join(modules)}: "
                    f"{_first_line(r.output) or f'exit {r.returncode}'}"
                )
        self._python_for[suffix] = found
        return found

    # --------------------------------------------------------------------------------------- python path

    def _measure_python(self, dev, run, python, artifact, inputs, warmup, runs, threads, choice=None) -> Measurement:
        """remote_measure.py with the device's `python`, or (with `choice`) the native ExecuTorch runner, which takes
        the same arguments and prints the same result."""
        folder = run.folder
        model = f"{folder}/{artifact.path.name}"
        # remote_measure.py writes every output to an .npz; the native runner the first output (.npy)
        in_npy, out_npy = f"{folder}/inputs.npy", f"{folder}/outputs.{'npz' if choice is None else 'npy'}"
        buf = io.BytesIO()
        np.save(buf, inputs, allow_pickle=False)
        run.files += [model, in_npy, out_npy]
        dev.push("push the artifact", artifact.path, model)
        if choice is None:
            name, script = "remote_measure.py", f"{folder}/remote_measure.py"
            run.files.append(script)
            dev.push("push remote_measure.py", REMOTE_SCRIPT, script)
            program = [python, script]
        elif choice.device_path:
            name, program = native.RUNNER_NAME, [choice.device_path]
        else:
            name, program = native.RUNNER_NAME, [f"{folder}/{native.RUNNER_NAME}"]
            libs = sorted((choice.bundle.parent / "lib").glob("*.so*"))
            run.files += [program[0], *(f"{folder}/lib/{lib.name}" for lib in libs)]
            dev.push(f"push {name}", choice.bundle, program[0], mode=0o755)
            for lib in libs:
                dev.push(f"push {lib.name}", lib.resolve(), f"{folder}/lib/{lib.name}")
        dev.push("push the inputs", buf.getvalue(), in_npy)

        def run_program(timed_runs: int) -> dict:
            argv = [*program, "--artifact", model, "--inputs", in_npy, "--outputs", out_npy,
                    "--warmup", warmup, "--runs", timed_runs, "--threads", threads]
            r = dev.shell(f"run {name}", argv)
            if r.returncode != 0:
                raise DeviceError(
                    f"{name} failed on device {self.serial} (exit {r.returncode}): "
                    f"{_first_line(r.stderr or r.output) or 'no output'}"
                )
            line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.strip().startswith("{")), None)
            if line is None:
                raise DeviceError(f"{name} on device {self.serial} printed no result JSON")
            try:
                return json.loads(line)
            except json.JSONDecodeError as exc:
                raise DeviceError(f"{name} on device {self.serial} printed malformed JSON: {exc}") from None

        result, energy = self._run_with_energy(dev, run_program, runs, lambda res: float(res["latency_mean_ms"]))
        raw = dev.pull("pull the outputs", out_npy)
        outputs, named = read_remote(raw, artifact.outputs, len(inputs), f"device {self.serial}")
        peak, method = self._python_memory(artifact, result)
        extra = {
            "measured_with": name,
            **({"device_python": python} if choice is None else {
                "native_runner": {"path": choice.device_path or str(choice.bundle), "on_device": bool(choice.device_path),
                                  "abi": choice.abi}}),
            "device_peak_rss_mb": result.get("peak_rss_mb"),
            "rss_growth_mb": result.get("rss_growth_mb"),
            "machine": result.get("machine"),
            **energy.to_extra(),
        }
        return Measurement(
            latency_p50_ms=float(result["latency_p50_ms"]),
            latency_p90_ms=float(result["latency_p90_ms"]),
            latency_mean_ms=float(result["latency_mean_ms"]),
            runs=int(result["runs"]),
            warmup_runs=int(result["warmup_runs"]),
            threads=int(result["threads"]),
            size_bytes=artifact.path.stat().st_size,
            peak_memory_mb=peak,
            memory_method=method,
            where=self.where,
            runner=f"{result.get('runner', name)} on the device ({name} via adb)",
            runtime_versions={str(k): str(v) for k, v in (result.get("runtime_versions") or {}).items()},
            outputs=outputs,
            named_outputs=named,
            extra=extra,
        )

    @staticmethod
    def _python_memory(artifact: Artifact, result: dict) -> tuple[float | None, str]:
        size_mb = artifact.path.stat().st_size / 1e6
        arena = artifact.lowering.get("planned_arena_bytes") if artifact.path.suffix == ".pte" else None
        if arena is not None:
            return (int(arena) / 1e6 + size_mb), EXECUTORCH_MEMORY_METHOD + " (device process RSS in extra)"
        growth = result.get("rss_growth_mb")
        if growth is None:
            return None, "not measured: the device has no /proc/self/status"
        return (
            round(max(float(growth), size_mb), 3),
            "max(model file size, VmRSS growth of the device's measuring process across runtime import, load and "
            "runs (remote_measure.py); includes the runtime library)",
        )

    # --------------------------------------------------------------------------------------- native path

    def _measure_native(self, dev, run, info, artifact, inputs, warmup, runs, threads) -> Measurement:
        kind = runner_cache.kind_for_artifact(artifact.path)
        abi = info.abi or "arm64-v8a"
        binary = runner_cache.find(kind, abi, root=self.cache_root)
        if binary is None:
            modules = ", ".join(RUNTIME_MODULES[artifact.path.suffix])
            raise DeviceError(
                f"device {self.serial} ({abi}) has no Python that imports {modules} and the runner cache has no "
                f"{kind} for {abi}: add one with `edgeprune runners add PATH/TO/{kind}` (an {abi} build), or give "
                "the adb runner a device python with the runtime"
            )
        folder = run.folder
        model = f"{folder}/{artifact.path.name}"
        exe = f"{folder}/{kind}"
        run.files += [model, exe]
        dev.push(f"push {kind}", binary.path, exe, mode=0o755)
        dev.push("push the artifact", artifact.path, model)
        etdump = f"{folder}/{artifact.path.stem}.etdp"
        input_bin = f"{folder}/input0.bin"
        if kind == "executor_runner":
            dtype = np.float16 if artifact.inputs[0].dtype == "float16" else np.float32
            dev.push("push the input", np.ascontiguousarray(inputs[:1], dtype=dtype).tobytes(), input_bin)
            run.files += [input_bin, etdump]
        use_etdump = [kind == "executor_runner"]

        def argv_for(timed_runs: int) -> list[object]:
            if kind == "benchmark_model":
                return [exe, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                        f"--num_runs={timed_runs}", "--min_secs=0", "--warmup_min_secs=0",
                        "--report_peak_memory_footprint=true"]
            if kind == "executor_runner":
                argv = [exe, f"--model_path={model}", f"--inputs={input_bin}", f"--num_executions={warmup + timed_runs}",
                        f"--cpu_threads={threads}"]
                return argv + ([f"--etdump_path={etdump}"] if use_etdump[0] else [])
            return [exe, "-e", "cpu", "-m", "times", "-r", timed_runs, "-x", threads, "-s", "-I", model]

        def run_program(timed_runs: int) -> BenchStats:
            r = dev.shell(f"run {kind}", argv_for(timed_runs))
            if kind == "executor_runner" and use_etdump[0] and "etdump_path" in r.output and r.returncode != 0:
                use_etdump[0] = False  # built without the event tracer: gflags refuses the flag
                r = dev.shell(f"run {kind}", argv_for(timed_runs))
            if r.returncode != 0:
                raise DeviceError(
                    f"{kind} failed on device {self.serial} (exit {r.returncode}): {_first_line(r.output) or 'no output'}"
                )
            try:
                if kind == "benchmark_model":
                    return parse_benchmark_model(r.output)
                if kind == "executor_runner":
                    return parse_executor_runner(r.output, warmup=warmup)
                return parse_perf_test(r.output)
            except ParseError as exc:
                raise DeviceError(f"{kind} on device {self.serial}: {exc}") from None

        stats, energy = self._run_with_energy(dev, run_program, runs, lambda s: s.mean_ms)
        peak, method = stats.peak_memory_mb, stats.memory_method
        if kind == "executor_runner" and peak is not None:
            peak += artifact.path.stat().st_size / 1e6
            method = "planned buffers executor_runner set up + program bytes (MB); excludes XNNPACK's workspace"
        extra: dict = {
            "measured_with": kind,
            "accuracy": "not measured: native benchmark binary",
            "runner_binary": {"path": str(binary.path), "sha256": binary.sha256, "abi": binary.abi},
            "init_ms": stats.init_ms,
            "first_inference_ms": stats.first_ms,
            **energy.to_extra(),
        }
        if stats.percentile_note:
            extra["percentile_note"] = stats.percentile_note
        if kind == "executor_runner" and use_etdump[0]:
            extra["etdump_path"] = self._pull_etdump(dev, artifact, etdump)
        out_shape = tuple(artifact.outputs[0].shape[1:]) if artifact.outputs else ()
        return Measurement(
            latency_p50_ms=stats.p50_ms,
            latency_p90_ms=stats.p90_ms,
            latency_mean_ms=stats.mean_ms,
            runs=stats.runs or runs,
            warmup_runs=stats.warmup_runs if stats.warmup_runs is not None else warmup,
            threads=threads,
            size_bytes=artifact.path.stat().st_size,
            peak_memory_mb=peak,
            memory_method=method,
            where=self.where,
            runner=f"{stats.tool} on the device (adb)",
            runtime_versions={kind: f"sha256:{binary.sha256[:16]}"},
            outputs=np.empty((0, *out_shape), dtype=np.float32),
            extra=extra,
        )

    def _pull_etdump(self, dev: _Device, artifact: Artifact, remote: str) -> str | None:
        exists = dev.shell("look for the ETDump", ["test", "-s", remote]).returncode == 0
        if not exists:
            return None
        data = dev.pull("pull the ETDump", remote)
        folder = Path(self.etdump_dir) if self.etdump_dir else artifact.path.parent
        safe = re.sub(r"[^\w.-]+", "_", self.serial)
        dest = folder / f"{artifact.path.stem}.{safe}.etdp"
        tmp = dest.with_name(f".{dest.name}.tmp")
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(dest)
        return str(dest)

    # ------------------------------------------------------------------------------------------------ energy

    def _probe_energy(self, dev: _Device) -> str | None:
        if self._energy_source is not False:
            return self._energy_source  # type: ignore[return-value]
        source = None
        r = dev.shell("probe the power-stats HAL", quote(HAL2_COMMAND) + " 2>/dev/null", timeout=min(self.timeout_s, 30.0))
        if parse_power_stats(r.stdout) is not None:
            source = "hal2"
        else:
            r = dev.shell("probe the power-stats HAL 1.0", quote(HAL1_COMMAND) + " 2>/dev/null", timeout=min(self.timeout_s, 30.0))
            if parse_power_stats(r.stdout) is not None:
                source = "hal1"
            else:
                cmd = quote(["cat", f"{BATTERY_DIR}/current_now", f"{BATTERY_DIR}/voltage_now"]) + " 2>/dev/null"
                r = dev.shell("probe battery sensors", cmd, timeout=min(self.timeout_s, 30.0))
                values = r.stdout.split()
                if len(values) == 2 and all(re.fullmatch(r"-?\d+", v) for v in values) and all(int(v) for v in values):
                    source = "battery"
        self._energy_source = source
        return source

    def _snapshot(self, dev: _Device, source: str) -> energy_mod.Snapshot:
        command = HAL2_COMMAND if source == "hal2" else HAL1_COMMAND
        r = dev.shell("read the power-stats HAL", "cat /proc/uptime; " + quote(command), timeout=min(self.timeout_s, 30.0))
        lines = r.stdout.splitlines()
        reading = parse_power_stats(r.stdout)
        if not lines or reading is None:
            raise DeviceError(f"the power-stats HAL of device {self.serial} stopped answering")
        return energy_mod.hal_snapshot(float(lines[0].split()[0]), reading)

    def _uptime(self, dev: _Device) -> float:
        return float(dev.shell("read the device clock", "cat /proc/uptime", timeout=30.0).stdout.split()[0])

    def _run_with_energy(self, dev: _Device, run_program: Callable, runs: int, mean_ms: Callable):
        """Run the program for the measurement; with an energy source, also an energy run and an idle window."""
        if not self._energy_wanted:
            return run_program(runs), energy_mod.EnergyResult(None, None, "not measured in this block: timing only")
        source = None if self.energy is False else self._probe_energy(dev)
        if source is None:
            note = "disabled" if self.energy is False else "no power-stats HAL or battery sensor answered"
            return run_program(runs), energy_mod.EnergyResult(None, None, f"not measured on the device: {note}")
        extra_runs = self.energy_runs or max(2 * runs, 50)
        sampler = _BatterySampler(dev) if source == "battery" else None
        take = (lambda: energy_mod.Snapshot(self._uptime(dev), 0.0)) if sampler else (lambda: self._snapshot(dev, source))
        if sampler:
            sampler.start()
        try:
            b1 = take()
            result = run_program(runs)
            a1 = take()
            b2 = take()
            run_program(runs + extra_runs)
            a2 = take()
            idle_s = min(10.0, max(1.0, extra_runs * mean_ms(result) / 1e3))
            bi = take()
            dev.shell("idle window", ["sleep", f"{idle_s:.3f}"], timeout=idle_s + 30.0)
            ai = take()
        finally:
            if sampler:
                sampler.stop()
        if sampler:
            windows = [
                energy_mod.battery_window(sampler.samples, b.uptime_s, a.uptime_s, n)
                for b, a, n in ((b1, a1, runs), (b2, a2, runs + extra_runs), (bi, ai, 0))
            ]
            method = energy_mod.METHOD_BATTERY
        else:
            windows = [energy_mod.Window(b1, a1, runs), energy_mod.Window(b2, a2, runs + extra_runs), energy_mod.Window(bi, ai, 0)]
            method = energy_mod.METHOD_HAL
        res = energy_mod.per_inference(windows[0], windows[1], windows[2], method)
        if source in ("hal1", "hal2"):
            res.detail["hal"] = "2.0" if source == "hal2" else "1.0"
        return result, res


class _BatterySampler:
    """Polls |current_now| x voltage_now with the device's uptime every ~0.2 s in a background thread."""

    def __init__(self, dev: _Device, period_s: float = 0.2):
        self.dev = dev
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        cmd = quote(["cat", "/proc/uptime", f"{BATTERY_DIR}/current_now", f"{BATTERY_DIR}/voltage_now"])
        while not self._stop.is_set():
            try:
                parts = self.dev.shell("sample the battery", cmd, timeout=10.0).stdout.split()
                t, cur, volt = float(parts[0]), int(parts[2]), int(parts[3])
                self.samples.append((t, energy_mod.battery_power_w(cur, volt)))
            except Exception:  # noqa: BLE001 - a missed sample only widens the integration step
                pass
            self._stop.wait(self.period_s)
