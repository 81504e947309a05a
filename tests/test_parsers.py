"""Parsers for what devices and native benchmark programs print, against verbatim samples of each format.

Each sample below is laid out exactly as the tool's own format strings print it (cited per sample); the numbers are
from runs of tiny models. Plus: energy arithmetic over parsed HAL dumps, device description and profile matching,
profile drafting, and the runner cache's ELF identification.
"""

from __future__ import annotations

import struct

import pytest

from edgeprune.errors import ConfigError
from edgeprune.profiles import parse_profile
from edgeprune.runners import cache
from edgeprune.runners.android import device_info, draft_profile, marketed_ram_gb
from edgeprune.runners.energy import (
    METHOD_HAL,
    Snapshot,
    Window,
    battery_power_w,
    battery_window,
    hal_snapshot,
    integrate_power,
    per_inference,
)
from edgeprune.runners.parsers import (
    ParseError,
    parse_benchmark_model,
    parse_cpufreq,
    parse_cpuinfo,
    parse_dumpsys_battery,
    parse_executor_runner,
    parse_getprop,
    parse_meminfo,
    parse_perf_test,
    parse_power_stats,
)

# ------------------------------------------------------------------------------------------------ benchmark_model

# Classic TFLite benchmark_model (tflite/tools/benchmark/benchmark_model.cc, TFLITE_LOG "INFO: " prefix), run with
# --warmup_runs=10 --num_runs=50 --min_secs=0 --report_peak_memory_footprint=true; stats lines with percentiles.
BENCHMARK_MODEL_CLASSIC = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Min runs duration (seconds): [0]
INFO: Min warmup runs: [10]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/edgeprune/run-3f2a/tiny-int8.tflite]
INFO: Report the peak memory footprint: [1]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/edgeprune/run-3f2a/tiny-int8.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: XNNPACK delegate created.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 0.010248
INFO: Initialized session in 3.154ms.
INFO: Running benchmark for at least 10 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=10 first=1270 curr=391 min=376 max=1270 avg=487.9 std=262 p5=376 median=398 p95=1270

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=402 curr=388 min=371 max=612 avg=401.36 std=38 p5=374 median=392 p95=471

INFO: Inference timings in us: Init: 3154, First inference: 1270, Warmup (avg): 487.9, Inference (avg): 401.36
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.91406 overall=3.51562
INFO: Overall peak memory footprint (MB) via periodic monitoring: 8.62891
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 11 MB
"""

# An older classic build (no log prefix, stats without percentiles, C++ stream e-notation, "Peak memory
# footprint" wording); the warm-up phase ran once, printing the "all same" form of the stats line.
BENCHMARK_MODEL_OLD = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/mobilenet_v1_1.0_224.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.21094 overall=46.0859
"""

# LiteRT CompiledModel benchmark_model (litert/tools/benchmark_litert_model.h BenchmarkLoggingListener; LITERT_LOG
# prints "INFO: [file:line] " and the "\n" that starts two format strings breaks those lines). The base class's
# stats lines come first.
BENCHMARK_MODEL_LITERT = """\
INFO: [benchmark_litert_model.cc:120] Loading model from: /data/local/tmp/edgeprune/run-77aa/tiny-fp32.tflite
INFO: [environment.cc:48] Creating LiteRT environment with options
INFO: [benchmark_litert_model.cc:174] Using CPU accelerator
INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=1930 curr=488 min=471 max=1930 avg=610.4 std=580 p5=471 median=492 p95=1930

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=431 curr=409 min=380 max=770 avg=420.2 std=61 p5=384 median=407 p95=562

INFO: [benchmark_litert_model.h:63] 
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:64] Model initialization: 4.82 ms
INFO: [benchmark_litert_model.h:65] Warmup (first):       1.93 ms
INFO: [benchmark_litert_model.h:67] Warmup (avg):         0.61 ms (5 runs)
INFO: [benchmark_litert_model.h:69] Inference (avg):      0.42 ms (50 runs)
INFO: [benchmark_litert_model.h:73] Inference (min):      0.38 ms
INFO: [benchmark_litert_model.h:75] Inference (max):      0.77 ms
INFO: [benchmark_litert_model.h:77] Inference (std):      0.06
INFO: [benchmark_litert_model.h:83] Throughput:           2.94 MB/s
INFO: [benchmark_litert_model.h:92] 
Memory Usage:
INFO: [benchmark_litert_model.h:93] Init footprint:       3.15 MB
INFO: [benchmark_litert_model.h:95] Overall footprint:    4.02 MB
INFO: [benchmark_litert_model.h:100] Peak memory:          9.77 MB
INFO: [benchmark_litert_model.h:106] ======================================

"""


def test_benchmark_model_classic_with_percentiles():
    s = parse_benchmark_model(BENCHMARK_MODEL_CLASSIC)
    assert s.tool == "benchmark_model"
    assert s.runs == 50 and s.warmup_runs == 10
    assert s.mean_ms == pytest.approx(0.40136)
    assert s.p50_ms == pytest.approx(0.392)
    assert s.p90_ms == pytest.approx(0.471)  # the tool's p95 stands in for p90
    assert "p95" in s.percentile_note
    assert (s.min_ms, s.max_ms) == (pytest.approx(0.371), pytest.approx(0.612))
    assert s.init_ms == pytest.approx(3.154) and s.first_ms == pytest.approx(1.27)
    assert s.peak_memory_mb == pytest.approx(8.62891)
    assert "periodic monitoring" in s.memory_method


def test_benchmark_model_old_build_without_percentiles():
    s = parse_benchmark_model(BENCHMARK_MODEL_OLD)
    assert s.runs == 50 and s.warmup_runs == 1
    assert s.mean_ms == pytest.approx(2950.34)
    assert s.p50_ms == pytest.approx(2950.34) and s.p90_ms == pytest.approx(3189.954)
    assert "no percentiles" in s.percentile_note
    assert s.peak_memory_mb == pytest.approx(46.0859)
    assert "footprint" in s.memory_method


def test_benchmark_model_litert_compiled_model():
    s = parse_benchmark_model(BENCHMARK_MODEL_LITERT)
    assert s.tool.startswith("benchmark_model (LiteRT")
    assert s.runs == 50 and s.warmup_runs == 5
    assert s.mean_ms == pytest.approx(0.42)
    assert (s.min_ms, s.max_ms, s.std_ms) == (pytest.approx(0.38), pytest.approx(0.77), pytest.approx(0.06))
    assert s.p50_ms == pytest.approx(0.407) and s.p90_ms == pytest.approx(0.562)
    assert s.init_ms == pytest.approx(4.82) and s.first_ms == pytest.approx(1.93)
    assert s.peak_memory_mb == pytest.approx(9.77)


def test_benchmark_model_litert_block_alone():
    block = BENCHMARK_MODEL_LITERT[BENCHMARK_MODEL_LITERT.index("INFO: [benchmark_litert_model.h:63]"):]
    s = parse_benchmark_model(block)
    assert s.mean_ms == pytest.approx(0.42) and s.p50_ms == pytest.approx(0.42) and s.p90_ms == pytest.approx(0.77)


def test_benchmark_model_truncated_output_is_a_parse_error():
    head = BENCHMARK_MODEL_CLASSIC[: BENCHMARK_MODEL_CLASSIC.index("INFO: Running benchmark")]
    with pytest.raises(ParseError, match="benchmark_model"):
        parse_benchmark_model(head)


# ------------------------------------------------------------------------------------------------ executor_runner

# ExecuTorch executor_runner (examples/portable/executor_runner/executor_runner.cpp; ET_LOG through the POSIX PAL,
# "%c %02u:%02u:%02u.%06lu executorch:%s:%zu] %s" on stderr; outputs summary on stdout), run with
# --num_executions=5 (2 warm-up + 3 timed) and --etdump_path on a profiling build.
EXECUTOR_RUNNER = """\
I 00:00:00.000512 executorch:executor_runner.cpp:159] Resetting threadpool with num threads = 4
I 00:00:00.001904 executorch:executor_runner.cpp:204] Model file /data/local/tmp/edgeprune/run-9c1d/tiny-fp32.pte is loaded.
I 00:00:00.001922 executorch:executor_runner.cpp:213] Using method forward
I 00:00:00.001930 executorch:executor_runner.cpp:264] Setting up CPU planned buffer 0, size 45120.
I 00:00:00.004588 executorch:executor_runner.cpp:301] Model loaded in 2.650000 ms.
I 00:00:00.005120 executorch:executor_runner.cpp:392] Iteration 1 of 5: 0.512000 ms
I 00:00:00.005530 executorch:executor_runner.cpp:392] Iteration 2 of 5: 0.402000 ms
I 00:00:00.005912 executorch:executor_runner.cpp:392] Iteration 3 of 5: 0.371000 ms
I 00:00:00.006301 executorch:executor_runner.cpp:392] Iteration 4 of 5: 0.380000 ms
I 00:00:00.006690 executorch:executor_runner.cpp:392] Iteration 5 of 5: 0.377000 ms
I 00:00:00.006744 executorch:executor_runner.cpp:402] Model executed successfully 5 time(s) in 2.042000 ms.
I 00:00:00.006752 executorch:executor_runner.cpp:407] 1 outputs: 
OutputX 0: tensor(sizes=[1, 10], [
  0.0361, -0.412, 1.27, 0.0882, -0.731, 0.293, 0.644, -0.152, 0.0129, -1.08,
])
I 00:00:00.007010 executorch:executor_runner.cpp:126] ETDump written to file '/data/local/tmp/edgeprune/run-9c1d/tiny-fp32.etdp'.
"""

# A build that prints no per-iteration line (older executor_runner): only the total.
EXECUTOR_RUNNER_TOTAL_ONLY = """\
I 00:00:00.001251 executorch:executor_runner.cpp:82] Model file model.pte is loaded.
I 00:00:00.001270 executorch:executor_runner.cpp:91] Using method forward
I 00:00:00.001275 executorch:executor_runner.cpp:138] Setting up planned buffer 0, size 45120.
I 00:00:00.003180 executorch:executor_runner.cpp:161] Method loaded.
I 00:00:00.003190 executorch:executor_runner.cpp:171] Inputs prepared.
I 00:00:00.024702 executorch:executor_runner.cpp:180] Model executed successfully 50 time(s) in 21.500000 ms.
I 00:00:00.024711 executorch:executor_runner.cpp:184] 1 outputs: 
"""

EXECUTOR_RUNNER_FAILED = """\
I 00:00:00.001251 executorch:executor_runner.cpp:204] Model file m.pte is loaded.
E 00:00:00.002013 executorch:method.cpp:763] Missing operator: [0] aten::linalg_inv_ex.inverse
E 00:00:00.002044 executorch:executor_runner.cpp:296] Loading of method forward failed with status 0x14
"""


def test_executor_runner_drops_warmups_and_takes_percentiles():
    s = parse_executor_runner(EXECUTOR_RUNNER, warmup=2)
    assert s.runs == 3 and s.warmup_runs == 2
    assert s.samples_ms == (0.371, 0.380, 0.377)
    assert s.mean_ms == pytest.approx((0.371 + 0.380 + 0.377) / 3)
    assert s.p50_ms == pytest.approx(0.377)
    assert s.p90_ms == pytest.approx(0.3794)  # numpy's linear percentile of the 3 timed samples
    assert s.init_ms == pytest.approx(2.65) and s.first_ms == pytest.approx(0.512)
    assert s.extra["planned_buffer_bytes"] == 45120
    assert s.peak_memory_mb == pytest.approx(0.04512)
    assert s.extra["etdump_path"] == "/data/local/tmp/edgeprune/run-9c1d/tiny-fp32.etdp"


def test_executor_runner_total_only():
    s = parse_executor_runner(EXECUTOR_RUNNER_TOTAL_ONLY)
    assert s.runs == 50 and s.mean_ms == pytest.approx(0.43)
    assert s.p50_ms == s.p90_ms == s.mean_ms
    assert "no per-iteration" in s.percentile_note
    assert s.extra["etdump_path"] is None


def test_executor_runner_failure_names_the_logged_error():
    with pytest.raises(ParseError, match="Loading of method forward failed with status 0x14"):
        parse_executor_runner(EXECUTOR_RUNNER_FAILED)


# ------------------------------------------------------------------------------------------ onnxruntime_perf_test

# onnxruntime_perf_test -e cpu -m times -r 100 -x 1 -s -I tiny.onnx (onnxruntime/test/perftest; -s prints the
# latency percentiles in seconds).
PERF_TEST = """\
Setting intra_op_num_threads to 1
Disabling intra-op thread spinning between runs
Session creation time cost: 0.0412311 s
First inference time cost: 2 ms
Total inference time cost: 0.0391402 s
Total inference requests: 100
Average inference time cost total: 0.391402 ms
Total inference run time: 0.0392019 s
Number of inferences per second: 2550.9
Avg CPU usage: 96 %
Peak working set size: 31813632 bytes
Avg CPU usage:96
Peak working set size:31813632
Runs:100
Min Latency: 0.000362 s
Max Latency: 0.000861 s
P50 Latency: 0.000381 s
P90 Latency: 0.000422 s
P95 Latency: 0.000447 s
P99 Latency: 0.000811 s
P999 Latency: 0.000861 s
"""

# An older build without -s: "Average inference time cost: X ms" and no percentiles.
PERF_TEST_OLD = """\
Session creation time cost: 0.0512 s
Total inference time cost: 0.341 s
Total inference requests: 100
Average inference time cost: 3.41 ms
Total inference run time: 0.3411 s
Avg CPU usage: 99 %
Peak working set size: 48128000 bytes
"""


def test_perf_test_with_percentiles():
    s = parse_perf_test(PERF_TEST)
    assert s.runs == 100
    assert s.mean_ms == pytest.approx(0.391402)
    assert s.p50_ms == pytest.approx(0.381) and s.p90_ms == pytest.approx(0.422)
    assert s.min_ms == pytest.approx(0.362) and s.max_ms == pytest.approx(0.861)
    assert s.peak_memory_mb == pytest.approx(31.813632)
    assert s.init_ms == pytest.approx(41.2311) and s.first_ms == 2.0
    assert s.percentile_note == ""


def test_perf_test_old_format():
    s = parse_perf_test(PERF_TEST_OLD)
    assert s.mean_ms == pytest.approx(3.41) and s.p50_ms == s.p90_ms == pytest.approx(3.41)
    assert "-s" in s.percentile_note
    with pytest.raises(ParseError, match="onnxruntime_perf_test"):
        parse_perf_test("Session creation time cost: 0.05 s\n")


# ------------------------------------------------------------------------------------------------- power stats

# `dumpsys android.hardware.power.stats.IPowerStats/default` (AIDL PowerStats HAL, PowerStats::dump: state
# residencies, energy consumers, then the energy meter with "  %32s   %14.2f mWs").
DUMPSYS_POWER_STATS = """\

============= PowerStats HAL 2.0 state residencies ==============
            Entity                State         Total time     Total entries   Last entry tstamp
              CPU0         CLUSTER0_OFF         2231445 ms             15432          2298811 ms
========== End of PowerStats HAL 2.0 state residencies ==========

============= PowerStats HAL 2.0 energy consumers ==============
CPU_CLUSTER0 :     1254331.25 mWs
       10123 -        4211.50 mWs
========== End of PowerStats HAL 2.0 energy consumers ==========

============= PowerStats HAL 2.0 energy meter ==============
                           Channel    Cumulative Energy
      [S4M_VDD_CPUCL0]:CPU(LITTLE)       1254331.25 mWs
         [S3M_VDD_CPUCL1]:CPU(MID)        842107.50 mWs
         [S2M_VDD_CPUCL2]:CPU(BIG)       2210984.75 mWs
               [S8M_LLDO2]:Display        301222.00 mWs
========== End of PowerStats HAL 2.0 energy meter ==========
"""

# The same with `delta` (dataFormatDelta "  %32s   %14.2f mWs (%14.2f)").
DUMPSYS_POWER_STATS_DELTA = """\

============= PowerStats HAL 2.0 energy meter ==============
Elapsed time: 2013 ms
                           Channel    Cumulative Energy (      Delta   )
      [S4M_VDD_CPUCL0]:CPU(LITTLE)       1254431.25 mWs (        100.00)
         [S3M_VDD_CPUCL1]:CPU(MID)        842157.50 mWs (         50.00)
         [S2M_VDD_CPUCL2]:CPU(BIG)       2212984.75 mWs (       2000.00)
               [S8M_LLDO2]:Display        301222.00 mWs (          0.00)
========== End of PowerStats HAL 2.0 energy meter ==========
"""

# `lshal debug android.hardware.power.stats@1.0::IPowerStats/default delta` (HIDL HAL 1.0 DumpEnergyDataDiffToFd).
LSHAL_POWER_STATS_DELTA = """\

============= PowerStats HAL 1.0 rail energy data ==============
Elapsed time: 1023 ms
          Subsys                 Rail    Cumulative Energy (      Delta   )
             CPU       VDD_CPU_LITTLE         98231.44 mWs (         12.50)
             CPU          VDD_CPU_BIG        152004.10 mWs (         40.25)
             GPU              VDD_GPU          3002.00 mWs (          none)
========== End of PowerStats HAL 1.0 rail energy data ==========
"""


def test_power_stats_hal2():
    r = parse_power_stats(DUMPSYS_POWER_STATS)
    assert r.hal == "2.0"
    assert r.rails_mws == {
        "[S4M_VDD_CPUCL0]:CPU(LITTLE)": 1254331.25,
        "[S3M_VDD_CPUCL1]:CPU(MID)": 842107.5,
        "[S2M_VDD_CPUCL2]:CPU(BIG)": 2210984.75,
        "[S8M_LLDO2]:Display": 301222.0,
    }  # the energy-consumers section above the meter is not read as rails
    assert r.total_mws == pytest.approx(4608645.5)
    assert r.deltas_mws == {} and r.elapsed_ms is None


def test_power_stats_hal2_delta_and_hal1():
    r = parse_power_stats(DUMPSYS_POWER_STATS_DELTA)
    assert r.elapsed_ms == 2013 and r.deltas_mws["[S2M_VDD_CPUCL2]:CPU(BIG)"] == 2000.0
    assert r.rails_mws["[S2M_VDD_CPUCL2]:CPU(BIG)"] == 2212984.75
    h1 = parse_power_stats(LSHAL_POWER_STATS_DELTA)
    assert h1.hal == "1.0" and h1.elapsed_ms == 1023
    assert h1.rails_mws == {"CPU:VDD_CPU_LITTLE": 98231.44, "CPU:VDD_CPU_BIG": 152004.1, "GPU:VDD_GPU": 3002.0}
    assert h1.deltas_mws == {"CPU:VDD_CPU_LITTLE": 12.5, "CPU:VDD_CPU_BIG": 40.25}


def test_power_stats_absent():
    assert parse_power_stats("Can't find service: android.hardware.power.stats.IPowerStats/default\n") is None
    assert parse_power_stats("") is None


def _hal_dump(rails: dict[str, float]) -> str:
    """A HAL 2.0 meter dump in the HAL's own row format (for the arithmetic test)."""
    rows = "".join("  %32s   %14.2f mWs\n" % (name, value) for name, value in rails.items())
    return (
        "\n============= PowerStats HAL 2.0 energy meter ==============\n"
        + "  %32s   %18s\n" % ("Channel", "Cumulative Energy")
        + rows
        + "========== End of PowerStats HAL 2.0 energy meter ==========\n"
    )


def test_energy_per_inference_subtracts_load_and_idle():
    # Truth: 3 mJ per inference, 10 ms each; both runs spend 500 mJ and 1 s loading; the device idles at 40 mW.
    def snap(t: float, e: float) -> Snapshot:
        return hal_snapshot(t, parse_power_stats(_hal_dump({"[A]:CPU(BIG)": e * 0.75, "[B]:CPU(LITTLE)": e * 0.25})))

    t1 = 1.0 + 5 * 0.01
    t2 = 1.0 + 105 * 0.01
    e1 = 40 * t1 + 500 + 5 * 3
    e2 = 40 * t2 + 500 + 105 * 3
    run1 = Window(snap(100.0, 10_000.0), snap(100.0 + t1, 10_000.0 + e1), 5)
    run2 = Window(snap(200.0, 20_000.0), snap(200.0 + t2, 20_000.0 + e2), 105)
    idle = Window(snap(300.0, 30_000.0), snap(302.0, 30_080.0), 0)
    res = per_inference(run1, run2, idle, METHOD_HAL)
    assert res.method == METHOD_HAL
    assert res.energy_mj == pytest.approx(3.0, rel=1e-3)
    assert res.detail["idle_power_w"] == pytest.approx(0.04)
    assert res.to_extra()["energy_method"] == "power_stats_hal"


def test_energy_below_noise_floor_is_not_reported_as_a_number():
    idle = Window(Snapshot(0.0, 0.0), Snapshot(1.0, 40.0))
    short = Window(Snapshot(0.0, 0.0), Snapshot(2.0, 580.0), 5)
    long = Window(Snapshot(0.0, 0.0), Snapshot(1.9, 570.0), 10)  # faster and cheaper: noise
    res = per_inference(short, long, idle, METHOD_HAL)
    assert res.energy_mj is None and res.method == METHOD_HAL and "noise floor" in res.note


def test_battery_integration():
    assert battery_power_w(-500_000, 4_000_000) == pytest.approx(2.0)  # 500 mA discharging at 4.0 V
    samples = [(float(t), 2.0) for t in range(11)]
    assert integrate_power(samples) == pytest.approx(20_000.0)
    w = battery_window(samples, 2.5, 5.5, inferences=7)
    assert w.energy_mj == pytest.approx(6_000.0) and w.seconds == pytest.approx(3.0) and w.inferences == 7


# ----------------------------------------------------------------------------------------- device descriptions

GETPROP = """\
[dalvik.vm.heapsize]: [512m]
[ro.board.platform]: [zuma]
[ro.build.fingerprint]: [google/shiba/shiba:14/AP2A.240805.005/12025142:user/release-keys]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.hardware]: [shiba]
[ro.product.brand]: [google]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.cpu.abilist]: [arm64-v8a]
[ro.product.device]: [shiba]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 8]
[ro.soc.manufacturer]: [Google]
[ro.soc.model]: [Tensor G3]
[persist.sys.test.multiline]: [first line
second line]
[sys.boot_completed]: [1]
"""

MEMINFO = """\
MemTotal:        7824536 kB
MemFree:          214316 kB
MemAvailable:    3161244 kB
Buffers:            2476 kB
Cached:          2936344 kB
SwapTotal:       4194300 kB
SwapFree:        2581504 kB
HugePages_Total:       0
"""

# grep -H . /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq
CPUFREQ = "\n".join(
    f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq:{khz}"
    for i, khz in enumerate([1704000] * 4 + [2367000] * 4 + [2914000])
) + "\n"

CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 49.15\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
    f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
    for i, part in enumerate(["0xd46"] * 4 + ["0xd4d"] * 4 + ["0xd4e"])
)

DUMPSYS_BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3711000
  status: 2
  health: 2
  present: true
  level: 81
  scale: 100
  voltage: 4213
  temperature: 291
  technology: Li-ion
"""


def test_getprop_meminfo_cpufreq_cpuinfo():
    props = parse_getprop(GETPROP)
    assert props["ro.product.model"] == "Pixel 8" and props["ro.build.version.sdk"] == "34"
    assert props["persist.sys.test.multiline"] == "first line\nsecond line"
    assert props["sys.boot_completed"] == "1"
    mem = parse_meminfo(MEMINFO)
    assert mem["MemTotal"] == 7824536 and mem["HugePages_Total"] == 0
    with pytest.raises(ParseError, match="MemTotal"):
        parse_meminfo("MemFree: 1 kB\n")
    assert parse_cpufreq(CPUFREQ)[8] == 2914000 and len(parse_cpufreq(CPUFREQ)) == 9
    cores = parse_cpuinfo(CPUINFO)
    assert cores[8]["CPU part"] == "0xd4e" and cores[0]["CPU implementer"] == "0x41"
    bat = parse_dumpsys_battery(DUMPSYS_BATTERY)
    assert bat["level"] == "81" and bat["voltage"] == "4213"


def test_device_info_matches_pixel8_and_drafts_a_valid_profile():
    info = device_info("33081FDH2000XY", "device", getprop=GETPROP, meminfo=MEMINFO, cpufreq=CPUFREQ, cpuinfo=CPUINFO)
    assert (info.model, info.manufacturer, info.abi, info.sdk) == ("Pixel 8", "Google", "arm64-v8a", 34)
    assert info.soc == "Google Tensor G3" and info.soc_source == "ro.soc.model"
    assert info.ram_gb == pytest.approx(8.01, abs=0.01)
    assert info.cpu_max_ghz == (1.704,) * 4 + (2.367,) * 4 + (2.914,)
    assert info.cpu_cores == ("Cortex-A510",) * 4 + ("Cortex-A715",) * 4 + ("Cortex-X3",)
    assert (info.matched_profile, info.match_kind) == ("pixel-8", "model")
    assert not info.is_emulator
    text = draft_profile(info)
    prof = parse_profile(text, "draft")
    assert prof.name == "google-pixel-8" and prof.platform == "android" and prof.ram_gb == 8.0
    assert [(c.core, c.count, c.max_ghz) for c in prof.cpu_clusters] == [
        ("Cortex-X3", 1, 2.914),
        ("Cortex-A715", 4, 2.367),
        ("Cortex-A510", 4, 1.704),
    ]
    assert prof.default_threads == 4 and prof.tier == "flagship"
    assert "33081FDH2000XY" in prof.sources["soc"] and "placeholder" in prof.sources["power"]


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"ro.product.model": "SM-S921U", "ro.product.manufacturer": "samsung", "ro.soc.model": "SM8650"},
         ("galaxy-s24-snapdragon", "soc")),
        ({"ro.product.model": "SM-A546B", "ro.product.manufacturer": "samsung", "ro.soc.model": "s5e8835"},
         ("galaxy-a54", "soc")),
        ({"ro.product.model": "Pixel 6a", "ro.product.manufacturer": "Google"}, ("pixel-6a", "model")),
        ({"ro.product.model": "Pixel Experimental", "ro.board.platform": "gs201"}, ("pixel-7a", "soc")),
        ({"ro.product.model": "Pixel 8 Pro", "ro.product.manufacturer": "Google", "ro.soc.model": "Tensor G3"},
         ("pixel-8", "soc")),
        ({"ro.product.model": "Moto G", "ro.board.platform": "unknownchip"}, (None, None)),
    ],
)
def test_profile_matching(props, expected):
    text = "".join(f"[{k}]: [{v}]\n" for k, v in props.items())
    info = device_info("SERIAL1", "device", getprop=text)
    assert (info.matched_profile, info.match_kind) == expected


def test_emulator_is_recognised_and_drafts_with_x86_64():
    props = {
        "ro.product.model": "sdk_gphone64_x86_64",
        "ro.product.manufacturer": "Google",
        "ro.hardware": "ranchu",
        "ro.kernel.qemu": "1",
        "ro.product.cpu.abi": "x86_64",
        "ro.build.version.sdk": "35",
    }
    text = "".join(f"[{k}]: [{v}]\n" for k, v in props.items())
    cpuinfo = "".join(f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\n" for i in range(4))
    freq = "".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq:2200000\n" for i in range(4))
    info = device_info("emulator-5554", "device", getprop=text, meminfo="MemTotal: 2014508 kB\n", cpuinfo=cpuinfo, cpufreq=freq)
    assert info.is_emulator and info.abi == "x86_64" and info.matched_profile is None
    assert info.soc == "ranchu" and info.soc_source == "ro.hardware"
    prof = parse_profile(draft_profile(info), "draft")
    assert prof.abi == "x86_64" and prof.ram_gb == 2.0 and prof.tier == "low"
    assert prof.cpu_clusters[0].count == 4 and prof.cpu_clusters[0].core.startswith("Intel")


def test_marketed_ram():
    assert marketed_ram_gb(7.82) == 8 and marketed_ram_gb(11.4) == 12 and marketed_ram_gb(3.6) == 4


# ------------------------------------------------------------------------------------------------ runner cache


def _elf(machine: int, elf_class: int = 2) -> bytes:
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + b"\0" * 8
    return ident + struct.pack("<HH", 2, machine) + b"\0" * 44


def test_cache_add_identifies_kind_and_abi(tmp_path):
    src = tmp_path / "android_arm64_benchmark_model"
    src.write_bytes(_elf(0xB7))
    root = tmp_path / "cache"
    added = cache.add(src, root=root)
    assert (added.kind, added.abi) == ("benchmark_model", "arm64-v8a")
    assert added.path == root / "benchmark_model" / "arm64-v8a" / src.name
    assert added.path.stat().st_mode & 0o111
    x86 = tmp_path / "executor_runner"
    x86.write_bytes(_elf(0x3E))
    assert cache.add(x86, root=root).abi == "x86_64"
    arm32 = tmp_path / "onnxruntime_perf_test"
    arm32.write_bytes(_elf(0x28, elf_class=1))
    assert cache.add(arm32, root=root).abi == "armeabi-v7a"
    assert cache.find("benchmark_model", "arm64-v8a", root=root).sha256 == added.sha256
    assert cache.find("executor_runner", "arm64-v8a", root=root) is None
    assert [(b.kind, b.abi) for b in cache.list_cached(root=root)] == [
        ("benchmark_model", "arm64-v8a"),
        ("executor_runner", "x86_64"),
        ("onnxruntime_perf_test", "armeabi-v7a"),
    ]
    assert cache.kind_for_artifact(tmp_path / "m.pte") == "executor_runner"


def test_cache_refuses_unknown_names_and_non_elf(tmp_path):
    bad = tmp_path / "my_tool"
    bad.write_bytes(_elf(0xB7))
    with pytest.raises(ConfigError, match="benchmark_model, executor_runner, onnxruntime_perf_test"):
        cache.add(bad, root=tmp_path / "c")
    script = tmp_path / "benchmark_model"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ConfigError, match="not an ELF"):
        cache.add(script, root=tmp_path / "c")
    with pytest.raises(ConfigError, match="does not exist"):
        cache.add(tmp_path / "nothing", root=tmp_path / "c")
