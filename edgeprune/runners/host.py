"""Runs artifacts in this process on the host CPU through each target's real runtime, bringing back every output
(`Measurement.named_outputs`, in the artifact's output order; `outputs` is the first)."""

from __future__ import annotations

import time

import numpy as np

from edgeprune.outputs import artifact_keys
from edgeprune.runners.base import Runner, check_request, latency_stats_ms
from edgeprune.runners.runtimes import open_session
from edgeprune.types import Artifact, Measurement


class HostRunner(Runner):
    where = "host"

    def measure(
        self,
        artifact: Artifact,
        inputs: np.ndarray,
        *,
        warmup: int = 10,
        runs: int = 50,
        threads: int = 1,
        energy: bool = True,  # no energy measurement here
    ) -> Measurement:
        check_request(artifact, inputs, warmup, runs, threads)
        session = open_session(artifact, threads)
        try:
            rows = [session.run_all(inputs[i : i + 1]) for i in range(len(inputs))]
            columns = [np.stack([row[j][0] for row in rows]).astype(np.float32, copy=False) for j in range(len(rows[0]))]
            keys = artifact_keys(artifact.outputs)
            named = dict(zip(keys, columns)) if len(keys) == len(columns) else {}
            first = inputs[:1]
            for _ in range(warmup):
                session.run_all(first)
            samples_ms = []
            for _ in range(runs):  # the whole inference, every output read back, as an app does
                start = time.perf_counter()
                session.run_all(first)
                samples_ms.append((time.perf_counter() - start) * 1e3)
            peak_mb, method = session.memory()
            p50, p90, mean = latency_stats_ms(samples_ms)
            return Measurement(
                latency_p50_ms=p50,
                latency_p90_ms=p90,
                latency_mean_ms=mean,
                samples_ms=tuple(samples_ms),
                runs=runs,
                warmup_runs=warmup,
                threads=threads,
                size_bytes=artifact.path.stat().st_size,
                peak_memory_mb=peak_mb,
                memory_method=method,
                where=self.where,
                runner=session.runner,
                runtime_versions=session.versions(),
                outputs=columns[0],
                named_outputs=named,
            )
        finally:
            session.close()
