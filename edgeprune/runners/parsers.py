"""Pure text parsers for what Android devices and native benchmark programs print.

Nothing here talks to a device: each function takes the text a tool printed and returns typed values, or raises
`ParseError` naming what was missing. The formats follow the tools' own format strings:

- LiteRT / TFLite classic `benchmark_model` (`tflite/tools/benchmark/benchmark_model.cc`, stats lines from
  `stats_calculator.h`) and the LiteRT CompiledModel `benchmark_model` (`litert/tools/benchmark_litert_model.h`,
  whose "BENCHMARK RESULTS" block follows the classic lines);
- ExecuTorch `executor_runner` (`examples/portable/executor_runner/executor_runner.cpp`, ET_LOG lines in the POSIX
  PAL's `"%c %02u:%02u:%02u.%06lu executorch:%s:%zu] %s"` format);
- `onnxruntime_perf_test` (`onnxruntime/test/perftest/`), with and without `-s` percentile lines;
- the power-stats HAL dumps: AIDL HAL 2.0 (`dumpsys android.hardware.power.stats.IPowerStats/default [delta]`) and
  HIDL HAL 1.0 (`lshal debug android.hardware.power.stats@1.0::IPowerStats/default [delta]`);
- `getprop`, `/proc/meminfo`, `/proc/cpuinfo`, cpufreq `cpuinfo_max_freq` files, `dumpsys battery`.

Lines may carry a logger prefix (`INFO: `, `I tflite  : `, `[file:line]`): every parser searches within lines
rather than anchoring at their start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class ParseError(ValueError):
    """The text does not contain what the parser needs; the message names the tool and the missing line."""


@dataclass(frozen=True)
class BenchStats:
    """Latency (ms) and memory figures a native benchmark program printed.

    `p50_ms`/`p90_ms` are exact when the tool prints per-run samples or those percentiles; otherwise the field
    `percentile_note` says what stood in for them (e.g. the tool's p95 for p90).
    """

    tool: str
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    warmup_runs: int | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    samples_ms: tuple[float, ...] = ()
    peak_memory_mb: float | None = None
    memory_method: str = "not reported by the tool"
    percentile_note: str = ""
    extra: dict = field(default_factory=dict)


def _f(text: str) -> float:
    return float(text)


def _percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) without importing numpy."""
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ----------------------------------------------------------------------------------------------- benchmark_model

_STAT_LINE = re.compile(
    rf"count=(?P<count>\d+)\s+first=(?P<first>{_NUM})\s+curr=(?P<curr>{_NUM})\s+min=(?P<min>{_NUM})\s+"
    rf"max=(?P<max>{_NUM})\s+avg=(?P<avg>{_NUM})\s+std=(?P<std>{_NUM})"
    rf"(?:\s+p5=(?P<p5>{_NUM})\s+median=(?P<median>{_NUM})\s+p95=(?P<p95>{_NUM}))?"
)
_STAT_ALL_SAME = re.compile(rf"count=(?P<count>\d+)\s+curr=(?P<curr>{_NUM})")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})"
)
_PEAK_MONITOR = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{_NUM})")
_FOOTPRINT_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})"
)
_FOOTPRINT_OLD = re.compile(rf"Peak memory footprint \(MB\): init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})")
_LITERT_HEADER = "========== BENCHMARK RESULTS =========="


def _litert_value(text: str, label: str) -> re.Match | None:
    return re.search(rf"{re.escape(label)}:\s+(?P<v>{_NUM})(?:\s*ms)?(?:\s*\((?P<runs>\d+) runs\))?", text)


def parse_benchmark_model(text: str) -> BenchStats:
    """Parse LiteRT's `benchmark_model` output: the classic TFLite tool or the LiteRT CompiledModel tool.

    Classic: the timed run's statistics line (`count=… first=… … avg=… std=…[ p5=… median=… p95=…]`, in µs) and
    `Inference timings in us: …`. CompiledModel: the `BENCHMARK RESULTS` block (ms), whose classic lines it also
    prints first. Peak memory: `--report_peak_memory_footprint`'s periodic peak, else the LiteRT `Peak memory:`,
    else the overall footprint delta.
    """
    litert = _LITERT_HEADER in text
    stat_lines = []
    timings = _TIMINGS.search(text)
    cut = timings.start() if timings else len(text)
    if litert:
        cut = min(cut, text.index(_LITERT_HEADER))
    for line in text[:cut].splitlines():
        m = _STAT_LINE.search(line) or _STAT_ALL_SAME.search(line)
        if m:
            stat_lines.append(m)
    timed = stat_lines[-1] if stat_lines else None  # the warm-up phase prints its own line first
    warmup_line = stat_lines[-2] if len(stat_lines) >= 2 else None

    runs = mean = mn = mx = std = p50 = p90 = None
    note = ""
    if litert:
        block = text[text.index(_LITERT_HEADER):]
        avg = _litert_value(block, "Inference (avg)")
        if avg is None:
            raise ParseError("benchmark_model (LiteRT): no 'Inference (avg):' line in the BENCHMARK RESULTS block")
        mean = _f(avg["v"])
        runs = int(avg["runs"]) if avg["runs"] else None
        found = {label: _litert_value(block, f"Inference ({label})") for label in ("min", "max", "std")}
        mn, mx, std = (None if found[k] is None else _f(found[k]["v"]) for k in ("min", "max", "std"))
    if timed is not None and timed.groupdict().get("first") is not None:
        runs = runs or int(timed["count"])
        if mean is None:
            mean = _f(timed["avg"]) / 1e3
            mn, mx, std = _f(timed["min"]) / 1e3, _f(timed["max"]) / 1e3, _f(timed["std"]) / 1e3
        if timed["median"] is not None:
            p50 = _f(timed["median"]) / 1e3
            p90 = _f(timed["p95"]) / 1e3
            note = "p90 is the tool's p95 (benchmark_model reports p5/median/p95 only): a conservative stand-in"
    elif timed is not None and mean is None:  # "count=N curr=X(all same)"
        runs = int(timed["count"])
        mean = mn = mx = _f(timed["curr"]) / 1e3
        std = 0.0
    if mean is None and timings is not None:
        mean = _f(timings["avg"]) / 1e3
    if mean is None:
        raise ParseError(
            "benchmark_model: no timed statistics found (expected a 'count=… avg=…' line or "
            "'Inference timings in us: …'); was the run cut short?"
        )
    if p50 is None:
        p50 = mean
        p90 = mx if mx is not None else mean
        note = "the tool printed no percentiles: p50 is the mean and p90 the maximum over the timed runs"

    init_ms = first_ms = None
    if timings is not None:
        init_ms, first_ms = _f(timings["init"]) / 1e3, _f(timings["first"]) / 1e3
    elif litert:
        m = _litert_value(text, "Model initialization")
        init_ms = _f(m["v"]) if m else None
        m = _litert_value(text, "Warmup (first)")
        first_ms = _f(m["v"]) if m else None
    warmup_runs = None
    if litert:
        m = _litert_value(text, "Warmup (avg)")
        warmup_runs = int(m["runs"]) if m and m["runs"] else None
    if warmup_runs is None and warmup_line is not None:
        warmup_runs = int(warmup_line["count"])

    peak = None
    method = "not reported by the tool"
    if m := _PEAK_MONITOR.search(text):
        peak, method = _f(m["mb"]), "benchmark_model peak memory footprint via periodic monitoring (MB, whole tool)"
    elif litert and (m := re.search(rf"Peak memory:\s+(?P<v>{_NUM}) MB", text)):
        peak, method = _f(m["v"]), "benchmark_model (LiteRT) peak memory (MB, whole tool)"
    elif m := _FOOTPRINT_DELTA.search(text) or _FOOTPRINT_OLD.search(text):
        peak = _f(m["overall"])
        method = "benchmark_model overall memory footprint delta from the tool's start (MB, approximate)"
    elif litert and (m := re.search(rf"Overall footprint:\s+(?P<v>{_NUM}) MB", text)):
        peak, method = _f(m["v"]), "benchmark_model (LiteRT) overall memory footprint (MB)"

    return BenchStats(
        tool="benchmark_model (LiteRT CompiledModel)" if litert else "benchmark_model",
        runs=int(runs or 0),
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        min_ms=mn,
        max_ms=mx,
        std_ms=std,
        warmup_runs=warmup_runs,
        init_ms=init_ms,
        first_ms=first_ms,
        peak_memory_mb=peak,
        memory_method=method,
        percentile_note=note,
    )


# ----------------------------------------------------------------------------------------------- executor_runner

_ET_ITER = re.compile(rf"Iteration (?P<i>\d+) of (?P<n>\d+): (?P<ms>{_NUM}) ms")
_ET_TOTAL = re.compile(rf"Model executed successfully (?P<n>\d+) time\(s\) in (?P<ms>{_NUM}) ms")
_ET_BUFFER = re.compile(r"Setting up (?:CPU |device )?planned buffer (?P<id>\d+), size (?P<size>\d+)")
_ET_LOADED = re.compile(rf"Model loaded in (?P<ms>{_NUM}) ms")
_ET_ETDUMP = re.compile(r"ETDump written to file '(?P<path>[^']*)'")
_ET_ERROR = re.compile(r"^E \d\d:\d\d:\d\d\.\d+ executorch:\S+\] (?P<msg>.*)$", re.M)


def parse_executor_runner(text: str, warmup: int = 0) -> BenchStats:
    """Parse ExecuTorch `executor_runner` output run with `--num_executions=warmup+runs`.

    The first `warmup` `Iteration i of n: X ms` lines are dropped; percentiles come from the remaining samples.
    Builds without per-iteration lines give only `Model executed successfully N time(s) in T ms` (mean only).
    Memory: the planned buffers it set up (`Setting up … planned buffer i, size N.`), in bytes; the program's own
    bytes and XNNPACK's workspace are not included.
    """
    samples = [(int(m["i"]), _f(m["ms"])) for m in _ET_ITER.finditer(text)]
    total = _ET_TOTAL.search(text)
    if not samples and total is None:
        errors = [m["msg"] for m in _ET_ERROR.finditer(text)]
        why = f"; it logged: {errors[-1]}" if errors else ""
        raise ParseError(f"executor_runner: no 'Model executed successfully' or 'Iteration' lines{why}")
    note = ""
    timed = [ms for i, ms in samples if i > warmup]
    if timed:
        runs = len(timed)
        mean = sum(timed) / runs
        p50, p90 = _percentile(timed, 50), _percentile(timed, 90)
        mn, mx = min(timed), max(timed)
        std = (sum((x - mean) ** 2 for x in timed) / runs) ** 0.5
    else:
        n = int(total["n"])
        runs = n
        mean = _f(total["ms"]) / max(n, 1)
        p50 = p90 = mean
        mn = mx = std = None
        note = "this executor_runner prints no per-iteration times: p50 and p90 are the mean over all executions"
        if warmup:
            note += f" (its {warmup} warm-up executions included)"
    buffers = {int(m["id"]): int(m["size"]) for m in _ET_BUFFER.finditer(text)}
    planned = sum(buffers.values()) if buffers else None
    loaded = _ET_LOADED.search(text)
    etdump = _ET_ETDUMP.search(text)
    return BenchStats(
        tool="executor_runner",
        runs=runs,
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        min_ms=mn,
        max_ms=mx,
        std_ms=std,
        warmup_runs=warmup if timed else None,
        init_ms=_f(loaded["ms"]) if loaded else None,
        first_ms=samples[0][1] if samples else None,
        samples_ms=tuple(timed),
        peak_memory_mb=None if planned is None else planned / 1e6,
        memory_method="planned buffers executor_runner set up (MB); excludes program bytes and XNNPACK workspace"
        if planned is not None
        else "not reported by the tool",
        percentile_note=note,
        extra={"planned_buffer_bytes": planned, "etdump_path": etdump["path"] if etdump else None},
    )


# ------------------------------------------------------------------------------------------ onnxruntime_perf_test

_ORT_AVG = re.compile(rf"Average inference time cost(?: total)?:\s*(?P<ms>{_NUM})\s*ms")
_ORT_REQUESTS = re.compile(r"Total inference requests:\s*(?P<n>\d+)")
_ORT_RUNS = re.compile(r"^Runs:\s*(?P<n>\d+)", re.M)
_ORT_PEAK = re.compile(r"Peak working set size:\s*(?P<b>\d+)\s*bytes")
_ORT_SESSION = re.compile(rf"Session creation time cost:\s*(?P<s>{_NUM})\s*s")
_ORT_FIRST = re.compile(rf"First inference time cost:\s*(?P<ms>{_NUM})\s*ms")


def _ort_latency(text: str, label: str) -> float | None:
    m = re.search(rf"^{label} Latency:\s*(?P<s>{_NUM})\s*s\b", text, re.M)
    return None if m is None else _f(m["s"]) * 1e3


def parse_perf_test(text: str) -> BenchStats:
    """Parse `onnxruntime_perf_test` output. With `-s` it prints `Min/Max/P50/P90/… Latency: X s` lines."""
    avg = _ORT_AVG.search(text)
    if avg is None:
        raise ParseError("onnxruntime_perf_test: no 'Average inference time cost' line; did the session fail to load?")
    mean = _f(avg["ms"])
    req = _ORT_REQUESTS.search(text) or _ORT_RUNS.search(text)
    p50, p90 = _ort_latency(text, "P50"), _ort_latency(text, "P90")
    note = ""
    if p50 is None or p90 is None:
        p50 = p50 if p50 is not None else mean
        p90 = p90 if p90 is not None else mean
        note = "onnxruntime_perf_test printed no percentiles (run it with -s): the mean stands in for p50/p90"
    peak = _ORT_PEAK.search(text)
    session = _ORT_SESSION.search(text)
    first = _ORT_FIRST.search(text)
    return BenchStats(
        tool="onnxruntime_perf_test",
        runs=int(req["n"]) if req else 0,
        mean_ms=mean,
        p50_ms=p50,
        p90_ms=p90,
        min_ms=_ort_latency(text, "Min"),
        max_ms=_ort_latency(text, "Max"),
        warmup_runs=1 if first else None,
        init_ms=_f(session["s"]) * 1e3 if session else None,
        first_ms=_f(first["ms"]) if first else None,
        peak_memory_mb=int(peak["b"]) / 1e6 if peak else None,
        memory_method="onnxruntime_perf_test peak working set size of the whole tool (MB)"
        if peak
        else "not reported by the tool",
        percentile_note=note,
    )


# ------------------------------------------------------------------------------------------------- power stats

HAL2_METER_HEADER = "============= PowerStats HAL 2.0 energy meter =============="
HAL2_METER_FOOTER = "========== End of PowerStats HAL 2.0 energy meter =========="
HAL1_RAIL_HEADER = "============= PowerStats HAL 1.0 rail energy data =============="
HAL1_RAIL_FOOTER = "========== End of PowerStats HAL 1.0 rail energy data =========="

_HAL2_ROW = re.compile(rf"^\s*(?P<name>\S.*?)\s+(?P<mws>{_NUM}) mWs(?: \(\s*(?P<delta>{_NUM}|none)\))?\s*$")
_HAL1_ROW = re.compile(
    rf"^\s*(?P<subsys>\S+)\s+(?P<rail>\S+)\s+(?P<mws>{_NUM}) mWs(?: \(\s*(?P<delta>{_NUM}|none)\))?\s*$"
)
_ELAPSED = re.compile(r"Elapsed time: (?P<ms>\d+|unknown) ms")


@dataclass(frozen=True)
class PowerStatsReading:
    """Cumulative energy per rail in mWs (= mJ) from one power-stats HAL dump.

    `deltas_mws` holds the HAL's own deltas when the dump was taken with `delta` (relative to the previous `delta`
    dump by anyone on the device), else it is empty.
    """

    hal: str
    rails_mws: dict[str, float]
    deltas_mws: dict[str, float] = field(default_factory=dict)
    elapsed_ms: int | None = None

    @property
    def total_mws(self) -> float:
        return sum(self.rails_mws.values())


def _section(text: str, header: str, footer: str) -> str | None:
    start = text.find(header)
    if start < 0:
        return None
    end = text.find(footer, start)
    return text[start + len(header): end if end >= 0 else len(text)]


def parse_power_stats(text: str) -> PowerStatsReading | None:
    """The energy-meter rails from a power-stats HAL dump (AIDL 2.0 or HIDL 1.0), or None if there are none.

    HAL 2.0 rows are `  %32s   %14.2f mWs[ (%14.2f)]` with channel names like `[S4M_VDD_CPUCL0]:CPU(LITTLE)`;
    HAL 1.0 rows are `  %14s   %18s   %14.2f mWs[ (%14.2f|none)]` (subsystem, rail).
    """
    body = _section(text, HAL2_METER_HEADER, HAL2_METER_FOOTER)
    hal = "2.0"
    if body is None:
        body = _section(text, HAL1_RAIL_HEADER, HAL1_RAIL_FOOTER)
        hal = "1.0"
    if body is None:
        return None
    rails: dict[str, float] = {}
    deltas: dict[str, float] = {}
    for line in body.splitlines():
        if hal == "1.0":
            m = _HAL1_ROW.match(line)
            name = f"{m['subsys']}:{m['rail']}" if m else None
        else:
            m = _HAL2_ROW.match(line)
            name = m["name"].strip() if m else None
        if m is None:
            continue
        rails[name] = _f(m["mws"])
        if m["delta"] not in (None, "none"):
            deltas[name] = _f(m["delta"])
    if not rails:
        return None
    elapsed = _ELAPSED.search(body)
    return PowerStatsReading(
        hal=hal,
        rails_mws=rails,
        deltas_mws=deltas,
        elapsed_ms=int(elapsed["ms"]) if elapsed and elapsed["ms"] != "unknown" else None,
    )


# ---------------------------------------------------------------------------------------- device description text

_PROP = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` per line; a value may continue over several lines) as a dict."""
    props: dict[str, str] = {}
    pending: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.rstrip("\r")
        if pending is not None:
            key, parts = pending
            if line.endswith("]"):
                parts.append(line[:-1])
                props[key] = "\n".join(parts)
                pending = None
            else:
                parts.append(line)
            continue
        m = _PROP.match(line)
        if m:
            props[m["key"]] = m["value"]
        elif (start := re.match(r"^\[(?P<key>[^\]]+)\]: \[(?P<rest>.*)$", line)) is not None:
            pending = (start["key"], [start["rest"]])
    return props


def parse_meminfo(text: str) -> dict[str, int]:
    """`/proc/meminfo` as {field: kB} (fields without a unit, e.g. HugePages_Total, are plain counts)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(?P<key>[\w()]+):\s+(?P<value>\d+)(?:\s+kB)?\s*$", line.strip())
        if m:
            out[m["key"]] = int(m["value"])
    if "MemTotal" not in out:
        raise ParseError("/proc/meminfo: no 'MemTotal:' line")
    return out


def parse_cpufreq(text: str) -> dict[int, int]:
    """Per-core `cpuinfo_max_freq` (kHz) from lines `…/cpuN/cpufreq/cpuinfo_max_freq:VALUE` (`grep -H .` style)."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        m = re.search(r"cpu(?P<cpu>\d+)/cpufreq/\w+[:\s]\s*(?P<khz>\d+)\s*$", line)
        if m:
            out[int(m["cpu"])] = int(m["khz"])
    return dict(sorted(out.items()))


def parse_cpuinfo(text: str) -> dict[int, dict[str, str]]:
    """`/proc/cpuinfo` as {processor index: {field: value}} (arm64: 'CPU implementer', 'CPU part'; x86: 'model name')."""
    cores: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if ":" not in line:
            current = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            current = cores.setdefault(int(value), {})
        elif current is not None:
            current[key] = value
    return cores


def parse_dumpsys_battery(text: str) -> dict[str, str]:
    """`dumpsys battery` (`Current Battery Service state:` then `  key: value` lines) as a dict of strings."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(?P<key>[A-Za-z][\w ]*?):\s*(?P<value>.*)$", line)
        if m:
            out[m["key"]] = m["value"].strip()
    return out
