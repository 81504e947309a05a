"""The device pool: measures on several adb devices at once, one worker per device, each running that device's
jobs one at a time (a device measures one artifact at a time, or its timings mean nothing).

The workers run through the executor interface with the "thread" kind: a worker spends its time waiting on its
device over an adb socket, which releases the GIL, and each keeps a live `AdbRunner` (adb connection, probed device
facts) that a process or a Ray task would have to rebuild or could not reach (the adb server is local to this
machine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.executor import get_executor
from edgeprune.runners.adb.connection import _client
from edgeprune.runners.adb.runner import AdbRunner
from edgeprune.runners.android import DeviceInfo
from edgeprune.runners.base import Runner, measure_in_blocks
from edgeprune.types import Artifact, Measurement


@dataclass(frozen=True)
class PoolJob:
    serial: str
    artifact: Artifact


@dataclass(frozen=True)
class PoolResult:
    serial: str
    artifact: Artifact
    measurement: Measurement | None
    error: str | None


def match_jobs(
    artifacts_by_profile: Mapping[str, Sequence[Artifact]], devices: Sequence[DeviceInfo]
) -> tuple[list[PoolJob], list[DeviceInfo]]:
    """Jobs pairing each ready device with the artifacts built for the profile it matches; and the devices that
    matched no profile with artifacts (reported, not measured)."""
    jobs, unmatched = [], []
    for info in devices:
        arts = artifacts_by_profile.get(info.matched_profile or "", ())
        if info.state != "device" or not arts:
            unmatched.append(info)
            continue
        jobs.extend(PoolJob(info.serial, a) for a in arts)
    return jobs, unmatched


@dataclass(frozen=True)
class _PoolRun:
    """What every device worker of one `AdbPool.run` shares."""

    jobs: Sequence[PoolJob]
    by_serial: dict[str, list[int]]
    factory: Callable[[str], Runner]
    inputs: np.ndarray
    warmup: int
    runs: int
    threads: int | None
    blocks: int


def _measure_device(ctx: _PoolRun, serial: str) -> list[tuple[int, PoolResult]]:
    """One device's jobs in order, on one runner; a failure becomes that job's `error` (never raised), so one
    device's trouble does not stop the others."""
    runner = None
    out = []
    for i in ctx.by_serial[serial]:
        job = ctx.jobs[i]
        try:
            runner = runner or ctx.factory(serial)
            t = ctx.threads if ctx.threads is not None else job.artifact.plan.threads
            m = measure_in_blocks(runner, job.artifact, ctx.inputs, warmup=ctx.warmup, runs=ctx.runs, threads=t,
                                  blocks=ctx.blocks)
            out.append((i, PoolResult(serial, job.artifact, m, None)))
        except Exception as exc:  # noqa: BLE001 - one device's failure must not stop the others
            out.append((i, PoolResult(serial, job.artifact, None, f"{type(exc).__name__}: {exc}")))
    return out


class AdbPool:
    """Measures on several devices in parallel: one worker per device, each running its jobs one at a time."""

    def __init__(
        self,
        serials: Sequence[str] | None = None,
        *,
        adb_host: str = "127.0.0.1",
        adb_port: int = 5037,
        runner_factory: Callable[[str], Runner] | None = None,
        **runner_kwargs,
    ):
        self.adb_host, self.adb_port = adb_host, adb_port
        if serials is None:
            client = _client(adb_host, adb_port, float(runner_kwargs.get("timeout_s", 600)))
            serials = [d.serial for d in client.list() if d.state == "device"]
        self.serials = list(serials)
        self._factory = runner_factory or (
            lambda serial: AdbRunner(serial, adb_host=adb_host, adb_port=adb_port, **runner_kwargs)
        )

    def run(
        self,
        jobs: Sequence[PoolJob],
        inputs: np.ndarray,
        *,
        warmup: int = 10,
        runs: int = 50,
        threads: int | None = None,
        blocks: int = 1,
    ) -> list[PoolResult]:
        """Run every job; results come back in the jobs' order, failures as `error` (never raised)."""
        unknown = sorted({j.serial for j in jobs} - set(self.serials))
        if unknown:
            raise ConfigError(f"jobs name devices outside this pool: {', '.join(unknown)}; pool: {', '.join(self.serials)}")
        by_serial: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_serial.setdefault(job.serial, []).append(i)
        if not by_serial:
            return []
        ctx = _PoolRun(jobs, by_serial, self._factory, inputs, warmup, runs, threads, blocks)
        results: list[PoolResult | None] = [None] * len(jobs)
        with get_executor("thread", workers=len(by_serial)) as executor:
            for done in executor.map(_measure_device, list(by_serial), ctx):
                for i, result in done:
                    results[i] = result
        return [r for r in results if r is not None]
