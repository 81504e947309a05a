"""dist/report.html: one self-contained page (no CDN, no fonts, no scripts) that shows per device what was traded
for what: budgets against measured and predicted figures, the planner's Pareto front, keep ratios, a per-operator
profile where an ETDump exists, and the verdicts.

It reads only `build.json`, each device's `manifest.json` and `plan.yaml`; the charts are SVG drawn here. Every
string taken from those files is escaped, and a Content-Security-Policy forbids scripts and network loads, since a
manifest is untrusted input.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from edgeprune._io import atomic_write_bytes
from edgeprune.errors import ConfigError

REPORT_NAME = "report.html"
STATUS_COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "unverified": "#b7791f"}
OTHER_COLOUR = "#757575"
SCHEME_COLOUR = {"fp32": "#1f77b4", "fp16": "#9467bd", "int8": "#e07b00", "int8-dynamic": "#8c564b"}
PLANNER_KEY = {"latency": "latency_ms", "model_size": "model_size_mb", "peak_memory": "peak_memory_mb",
               "energy": "energy_mj"}
PREDICTED_KEY = {"latency": "latency_p50_ms", "model_size": "model_size_mb", "peak_memory": "peak_memory_mb",
                 "energy": "energy_mj"}
CHECK_TITLE = {"latency": "latency", "model_size": "model size", "peak_memory": "peak memory", "energy": "energy",
               "accuracy_drop": "accuracy drop"}
TOP_OPS = 12


# ------------------------------------------------------------------------------------------------ reading input

def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


MAX_FIGURE = 1e15
"""Larger magnitudes are no figure a build writes (MACs stay below it); they are shown as missing."""


def _num(value: Any) -> float | None:
    """A finite number of plausible size, or None for anything else (manifests are untrusted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if abs(value) <= MAX_FIGURE else None


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pair(value: Any) -> tuple[float, float] | None:
    items = _l(value)
    if len(items) == 2 and all(_num(v) is not None for v in items):
        return float(items[0]), float(items[1])
    return None


def _g(value: float | None, digits: int = 4) -> str:
    """A number with `digits` significant digits, '-' for none."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'{path}' is not readable JSON ({str(exc).splitlines()[0]}); rebuild with 'edgeprune build'") from None
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' is not an edgeprune file (a JSON object was expected); rebuild with 'edgeprune build'")
    return data


@dataclass
class _Device:
    name: str
    folder: Path
    summary: dict[str, Any]
    """The device's entry in build.json (plan, planning report, artifact summary)."""
    manifest: dict[str, Any] | None
    plan_yaml: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _load(dist: Path) -> tuple[dict[str, Any], list[_Device]]:
    build_path = dist / "build.json"
    if not dist.is_dir():
        raise ConfigError(f"'{dist}' is not a folder; give the output folder of 'edgeprune build' (it holds build.json)")
    if not build_path.is_file():
        raise ConfigError(f"no build.json in '{dist}' (looked for {build_path}); give the output folder of "
                          "'edgeprune build'")
    build = _read_json(build_path)
    entries = [d for d in _l(build.get("devices")) if isinstance(d, dict)]
    if not entries:  # an older or hand-made build.json: every folder with a manifest is a device
        entries = [{"device": p.parent.name, "dir": p.parent.name} for p in sorted(dist.glob("*/manifest.json"))]
    devices: list[_Device] = []
    for entry in entries:
        folder_name = str(entry.get("dir") or entry.get("device") or "")
        folder = (dist / folder_name).resolve()
        if not folder_name or folder.parent != dist.resolve():  # a dir entry must name a folder directly inside dist
            continue
        dev = _Device(str(entry.get("device") or folder_name), folder, entry, None)
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            dev.manifest = _read_json(manifest_path)
        else:
            dev.problems.append(f"no manifest.json in {folder_name}/: this device's artifacts were not built")
        plan_path = folder / "plan.yaml"
        if plan_path.is_file():
            try:
                plan = yaml.safe_load(plan_path.read_text())
                dev.plan_yaml = plan if isinstance(plan, dict) else None
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                dev.problems.append(f"plan.yaml is not readable YAML ({str(exc).splitlines()[0]})")
        devices.append(dev)
    if not any(d.manifest is not None for d in devices):
        looked = ", ".join(str(d.folder / "manifest.json") for d in devices) or f"{dist}/<device>/manifest.json"
        raise ConfigError(f"no device manifest in '{dist}' (looked for {looked}); give the output folder of a finished "
                          "'edgeprune build'")
    return build, devices


# ------------------------------------------------------------------------------------------------ SVG drawing

class _Svg:
    """A small SVG canvas: shapes carry a <title> (the hover text) and a class the browser test looks for."""

    def __init__(self, kind: str, width: int, height: int, label: str):
        self.kind, self.width, self.height, self.label = kind, width, height, label
        self.parts: list[str] = []

    def add(self, tag: str, attrs: dict[str, Any], text: str | None = None, title: str | None = None) -> None:
        attr = " ".join(f'{k.replace("_", "-")}="{_e(_fmt_attr(v))}"' for k, v in attrs.items() if v is not None)
        inner = (f"<title>{_e(title)}</title>" if title else "") + (_e(text) if text is not None else "")
        self.parts.append(f"<{tag} {attr}>{inner}</{tag}>" if inner else f"<{tag} {attr}/>")

    def text(self, x: float, y: float, text: str, *, anchor: str = "start", cls: str = "t", title: str | None = None,
             **attrs: Any) -> None:
        self.add("text", {"x": x, "y": y, "text_anchor": anchor, "class": cls, **attrs}, text, title)

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str, title: str | None = None) -> None:
        self.add("line", {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class": cls}, title=title)

    def render(self) -> str:
        body = "".join(self.parts)
        return (f'<svg class="chart" data-chart="{_e(self.kind)}" role="img" aria-label="{_e(self.label)}" '
                f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
                f'style="max-width:100%;height:auto" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _fmt_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


class _Linear:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, count: int = 5) -> list[float]:
        step = _nice_step((self.hi - self.lo) / max(count, 1))
        first = math.ceil(self.lo / step - 1e-9) * step
        out, v = [], first
        while v <= self.hi + step * 1e-6:
            out.append(round(v, 12))
            v += step
        return out


class _Log:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = math.log10(lo), math.log10(hi), a, b

    def __call__(self, v: float) -> float:
        lv = self.lo if v <= 0 else min(max(math.log10(v), self.lo), self.hi)
        return self.a + (lv - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        return [10.0 ** k for k in range(round(self.lo), round(self.hi) + 1)]


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _nice_range(lo: float, hi: float, pad: float = 0.06) -> tuple[float, float]:
    span = hi - lo or abs(hi) or 1.0
    lo, hi = lo - pad * span, hi + pad * span
    step = _nice_step((hi - lo) / 5)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _tick_label(v: float) -> str:
    return f"{v:.6g}"


def _whole_pct(ratio: float) -> str:
    return f"{100 * ratio:.0f}%"


def _pct_label(ratio: float) -> str:
    p = 100 * ratio
    return f"{p:.0f}%" if p >= 1 else f"{p:.2g}%"


def _x_axis(svg: _Svg, x: Any, ticks: Iterable[float], top: float, bottom: float, label: str,
            fmt: Any = _tick_label) -> None:
    """Vertical grid lines at `ticks`, their labels under the plot, and the axis title under those."""
    for tick in ticks:
        svg.line(x(tick), top - 4, x(tick), bottom, "grid")
        svg.text(x(tick), bottom + 16, fmt(tick), anchor="middle", cls="tick")
    svg.text((x.a + x.b) / 2, bottom + 34, label, anchor="middle", cls="axis")


def _bar_canvas(kind: str, label: str, rows: int, top: float, row_h: float, plot_l: float, plot_r: float,
                width: int = 560, hi: float = 1.0) -> tuple[_Svg, _Linear, float]:
    """A canvas for a horizontal bar chart of `rows` rows: the SVG, its x scale (0..hi) and the plot's bottom."""
    svg = _Svg(kind, width, int(top + row_h * rows + 44), label)
    return svg, _Linear(0.0, hi, plot_l, plot_r), top + row_h * rows


# ------------------------------------------------------------------------------------------------ budgets chart

@dataclass
class _BudgetRow:
    artifact: str
    check: str
    unit: str
    value: float | None
    limit: float | None
    status: str
    note: str
    predicted: float | None
    predicted_note: str
    interval: tuple[float, float] | None
    planned: float | None = None
    """The planner's prediction for the plan it chose (its cost model corrected by its measurements)."""


def _latest(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The verdict and measurement to chart for one artifact: its latest validation, else the build's own."""
    validations = [v for v in _l(entry.get("validations")) if isinstance(v, dict) and isinstance(v.get("verdict"), dict)]
    if validations:
        last = validations[-1]
        measured = _d(last.get("measured"))
        where = str(measured.get("where") or "?")
        return _d(last.get("verdict")), measured, f"validation on {where}, {last.get('validated_utc', '')}".rstrip(", ")
    measured = _d(entry.get("measured"))
    return _d(entry.get("verdict")), measured, f"build, measured on {measured.get('where') or '?'}"


def _artifact_label(entry: dict[str, Any]) -> str:
    return f"{entry.get('target', '?')} {entry.get('scheme', '')}".strip()


def _budget_rows(manifest: dict[str, Any], chosen: dict[str, Any]) -> tuple[list[_BudgetRow], list[str]]:
    """One row per artifact and budget, from the latest verdicts; `chosen` is the planning report's chosen plan."""
    rows: list[_BudgetRow] = []
    sources: list[str] = []
    percentile = str(_d(manifest.get("budget")).get("latency_percentile") or "p90")
    for entry in _l(manifest.get("artifacts")):
        if not isinstance(entry, dict):
            continue
        verdict, measured, source = _latest(entry)
        label = _artifact_label(entry)
        sources.append(f"{label}: {source}")
        predicted = _d(entry.get("predicted"))
        quality = _d(entry.get("quality"))
        from_build = measured is _d(entry.get("measured")) or not _l(entry.get("validations"))
        for check in _l(verdict.get("checks")):
            if not isinstance(check, dict):
                continue
            name = str(check.get("name", "?"))
            pred_key = PREDICTED_KEY.get(name)
            pred = _num(predicted.get(pred_key)) if pred_key else None
            pred_note = ""
            if pred is not None:
                what = "p50 latency" if name == "latency" else CHECK_TITLE.get(name, name)
                pred_note = f"predicted {what} {_g(pred)} {check.get('unit', '')} (cost model: {predicted.get('status', '?')})"
            interval = None
            if from_build and name == "latency":
                interval = _pair(_d(measured.get("timing")).get(f"{percentile}_ci95_ms"))
            elif from_build and name == "accuracy_drop":
                interval = _pair(quality.get("accuracy_drop_ci95_pct"))
            planned = None
            if chosen and (chosen.get("target"), chosen.get("scheme")) == (entry.get("target"), entry.get("scheme")):
                planned = _num(_d(chosen.get("predicted")).get(PLANNER_KEY.get(name, "")))
            rows.append(_BudgetRow(label, name, str(check.get("unit", "")), _num(check.get("value")),
                                   _num(check.get("limit")), str(check.get("status", "?")), str(check.get("note", "")),
                                   pred, pred_note, interval, planned))
    return rows, sources


def budgets_chart(rows: Sequence[_BudgetRow]) -> str:
    """Horizontal bars of value / limit on a log axis (100% = the limit), grouped by budget, one bar per artifact."""
    if not rows:
        return '<p class="none">No budget was judged for this device.</p>'
    figures = [(v, r.limit) for r in rows for v in (r.value, r.predicted, r.planned) if v is not None and r.limit]
    ratios = [v / limit for v, limit in figures if 0 < v / limit < math.inf]
    lo = 10 ** math.floor(math.log10(min(ratios))) if ratios else 0.01
    hi = 10 ** math.ceil(math.log10(max(ratios))) if ratios else 1.0
    lo, hi = min(max(lo, 1e-4), 0.1), min(max(hi, 10.0), 1e4)
    groups: dict[str, list[_BudgetRow]] = {}
    for r in rows:
        groups.setdefault(r.check, []).append(r)
    left, plot_l, plot_r, width = 8, 150, 640, 1000
    row_h, head_h, top = 20, 24, 50
    height = top + sum(head_h + row_h * len(g) for g in groups.values()) + 44
    svg = _Svg("budgets", width, height, "each budget: measured value as a share of its limit, with the prediction")
    x = _Log(lo, hi, plot_l, plot_r)
    # legend
    lx = plot_l
    for status in ("pass", "fail", "unverified"):
        svg.add("rect", {"x": lx, "y": 8, "width": 12, "height": 12, "fill": STATUS_COLOUR[status], "class": "swatch"})
        svg.text(lx + 16, 18, status)
        lx += 30 + 7 * len(status)
    svg.add("path", {"d": _diamond(lx + 6, 14, 6), "class": "pred"})
    svg.text(lx + 16, 18, "predicted by the cost model")
    lx += 190
    if any(r.planned is not None for r in rows):
        svg.add("path", {"d": _diamond(lx + 6, 14, 5), "class": "planned"})
        svg.text(lx + 16, 18, "predicted by the planner")
        lx += 170
    svg.line(lx, 20, lx + 16, 8, "interval")
    svg.line(lx, 14, lx + 16, 14, "interval")
    svg.text(lx + 22, 18, "95% interval")
    lx += 110
    svg.line(lx + 6, 6, lx + 6, 22, "limit")
    svg.text(lx + 14, 18, "limit (100%)")
    y = top
    bottom = height - 44
    _x_axis(svg, x, x.ticks(), top, bottom, "measured value as a share of the budget's limit (%, log scale)",
            _pct_label)
    for name, group in groups.items():
        first = group[0]
        limit_text = f"limit {_g(first.limit)} {first.unit}" if first.limit is not None else "no limit"
        svg.text(left, y + 16, f"{CHECK_TITLE.get(name, name)} ({first.unit}), {limit_text}", cls="group")
        y += head_h
        for r in group:
            colour = STATUS_COLOUR.get(r.status, OTHER_COLOUR)
            cy = y + row_h / 2
            svg.text(plot_l - 8, cy + 4, r.artifact, anchor="end")
            value_text = "-" if r.value is None else f"{_g(r.value)} {r.unit}"
            tip = f"{r.artifact}, {CHECK_TITLE.get(r.check, r.check)}: {value_text} of {_g(r.limit)} {r.unit}: {r.status}"
            tip += f"; {r.note}" if r.note else ""
            if r.value is not None and r.limit:
                ratio = r.value / r.limit
                end = x(ratio) if ratio > 0 else plot_l + 2
                svg.add("rect", {"x": plot_l, "y": y + 3, "width": max(end - plot_l, 2.0), "height": row_h - 6,
                                 "fill": colour, "class": "bar"}, title=tip)
                share = _pct_label(ratio) if ratio > 0 else "0%" if ratio == 0 else "< 0%"
                shown = f"{value_text}, {share}"
            else:
                shown = value_text
            if r.interval and r.limit:
                a, b = (x(v / r.limit) if v > 0 else plot_l for v in r.interval)
                svg.line(a, cy, b, cy, "interval", title=f"95% interval {_g(r.interval[0])}..{_g(r.interval[1])} {r.unit}")
                svg.line(a, cy - 5, a, cy + 5, "interval")
                svg.line(b, cy - 5, b, cy + 5, "interval")
            if r.predicted is not None and r.limit and r.predicted > 0:
                svg.add("path", {"d": _diamond(x(r.predicted / r.limit), cy, 6), "class": "pred"}, title=r.predicted_note)
            if r.planned is not None and r.limit and r.planned > 0:
                svg.add("path", {"d": _diamond(x(r.planned / r.limit), cy, 5), "class": "planned"},
                        title=f"the planner's prediction {_g(r.planned)} {r.unit} (its cost model corrected by the "
                              "plans it measured)")
            svg.text(plot_r + 10, cy + 4, shown, title=tip)
            svg.text(plot_r + 190, cy + 4, r.status, cls=f"status s-{_status_class(r.status)}", title=tip)
            y += row_h
    svg.line(x(1.0), top - 6, x(1.0), bottom, "limit")
    return svg.render()


def _diamond(cx: float, cy: float, r: float) -> str:
    return f"M{cx:.1f} {cy - r:.1f}L{cx + r:.1f} {cy:.1f}L{cx:.1f} {cy + r:.1f}L{cx - r:.1f} {cy:.1f}Z"


def _status_class(status: str) -> str:
    return status if status in STATUS_COLOUR else "other"


# ------------------------------------------------------------------------------------------------ keep ratios

def keep_chart(channels: dict[str, Any], requested: dict[str, float], uniform: float | None) -> str:
    """One bar per pruned layer: the share of its output channels kept (after / before), with the requested ratio."""
    rows = []
    for name, pair in channels.items():
        counts = _l(pair)
        if len(counts) == 2 and all(_num(c) is not None for c in counts) and int(counts[0]) > 0 <= int(counts[1]):
            rows.append((str(name), int(counts[0]), int(counts[1])))
    if not rows:
        return '<p class="none">No layer changed width: the model was not pruned.</p>'
    plot_l, plot_r, row_h, top = 170, 470, 15, 34
    svg, x, bottom = _bar_canvas("keep", "channels kept per pruned layer", len(rows), top, row_h, plot_l, plot_r)
    svg.add("rect", {"x": plot_l, "y": 8, "width": 12, "height": 12, "class": "keepbar"})
    svg.text(plot_l + 16, 18, "channels kept")
    svg.line(plot_l + 130, 6, plot_l + 130, 22, "req")
    svg.text(plot_l + 138, 18, "keep ratio the plan asked for")
    _x_axis(svg, x, x.ticks(5), top, bottom, "output channels kept (% of the layer's original width)", _whole_pct)
    for i, (name, before, after) in enumerate(rows):
        y = top + i * row_h
        short = name if len(name) <= 26 else "…" + name[-25:]
        keep = after / before
        want = requested.get(name, uniform)
        tip = f"{name}: {after} of {before} channels kept ({_pct(keep)})"
        if want is not None:
            tip += f"; the plan asked for {_pct(want)} (channel counts are rounded)"
        svg.text(plot_l - 6, y + 11, short, anchor="end", cls="small", title=name)
        svg.add("rect", {"x": plot_l, "y": y + 2, "width": max(x(keep) - plot_l, 1.0), "height": row_h - 4,
                         "class": "keepbar bar"}, title=tip)
        if want is not None:
            svg.line(x(want), y + 1, x(want), y + row_h - 1, "req", title=tip)
        svg.text(plot_r + 6, y + 11, f"{after}/{before}", cls="small", title=tip)
    return svg.render()


def stage_chart(keep: dict[str, Any], buckets: dict[str, Any]) -> str:
    """The planner's keep ratio per stage (groups of layers of about equal MACs)."""
    rows = [(str(k), float(v)) for k, v in keep.items() if _num(v) is not None]
    if not rows:
        return ""
    plot_l, plot_r, row_h, top = 170, 470, 20, 12
    svg, x, bottom = _bar_canvas("stages", "keep ratio the planner chose per stage", len(rows), top, row_h, plot_l,
                                 plot_r)
    _x_axis(svg, x, x.ticks(5), top, bottom, "keep ratio chosen per stage (% of channels kept)", _whole_pct)
    for i, (name, ratio) in enumerate(rows):
        y = top + i * row_h
        roots = [str(r) for r in _l(buckets.get(name))]
        tip = f"{name}: keep {_pct(ratio)}" + (f"; groups: {', '.join(roots)}" if roots else "")
        svg.text(plot_l - 6, y + 14, name, anchor="end", title=tip)
        svg.add("rect", {"x": plot_l, "y": y + 3, "width": max(x(ratio) - plot_l, 1.0), "height": row_h - 6,
                         "class": "stagebar bar"}, title=tip)
        svg.text(plot_r + 6, y + 14, _pct(ratio, 1), title=tip)
    return svg.render()


# ------------------------------------------------------------------------------------------------ per-op profile

def _etdump_ops(path: Path) -> tuple[list[tuple[str, float]], float | None]:
    """Per-operator-type time (ms, the sum over the type's calls of each call's median) and the whole execute's
    median, from an ETDump read with ExecuTorch's Inspector."""
    import statistics
    import warnings

    from executorch.devtools import Inspector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inspector = Inspector(etdump_path=str(path))
    by_type: dict[str, float] = {}
    total = None
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for ev in block.events:
            if ev.perf_data is None or not list(ev.perf_data.raw):
                continue
            ms = float(statistics.median(ev.perf_data.raw))
            name = re.sub(r" #\d+$", "", str(ev.name))
            if name == "Method::execute":
                total = ms
            elif name == "DELEGATE_CALL" or name.startswith(("Method::", "Program::")):
                continue
            else:
                by_type[name] = by_type.get(name, 0.0) + ms
    return sorted(by_type.items(), key=lambda kv: -kv[1]), total


def _find_etdump(dist: Path, folder: Path, manifest: dict[str, Any]) -> tuple[str, Path | None, str]:
    """The newest ETDump a measurement of this device recorded, as (artifact label, path, problem); only files
    inside the dist are read (a manifest is untrusted input)."""
    found: list[tuple[str, Path | None, str]] = []
    for entry in _l(manifest.get("artifacts")):
        if not isinstance(entry, dict):
            continue
        measurements = [_d(entry.get("measured"))] + [_d(_d(v).get("measured")) for v in _l(entry.get("validations"))]
        for measured in measurements:
            raw = _d(measured.get("extra")).get("etdump_path")
            if not isinstance(raw, str) or not raw:
                continue
            label = f"{_artifact_label(entry)} on {measured.get('where') or '?'}"
            recorded = Path(raw) if Path(raw).is_absolute() else folder / raw
            beside = folder / Path(raw).name  # where the runner puts it; also after the dist was moved or copied
            if _inside(recorded, dist) and recorded.is_file():
                found.append((label, recorded, ""))
            elif _inside(beside, dist) and beside.is_file():
                found.append((label, beside, ""))
            elif recorded.is_file():
                found.append((label, None, f"the ETDump {raw} recorded for {label} lies outside the dist folder; not read"))
            else:
                found.append((label, None, f"the ETDump {raw} recorded for {label} is not in {folder.name}/"))
    readable = [f for f in found if f[1] is not None]
    return (readable or found or [("", None, "")])[-1]


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def ops_chart(ops: Sequence[tuple[str, float]], total_ms: float | None) -> str:
    """Horizontal bars: time per inference per operator type (the top few, the rest summed)."""
    rows = [(n, v) for n, v in ops[:TOP_OPS]]
    rest = sum(v for _, v in ops[TOP_OPS:])
    if rest > 0:
        rows.append((f"{len(ops) - TOP_OPS} other operator types", rest))
    if total_ms is not None:
        overhead = total_ms - sum(v for _, v in ops)
        if overhead > 0:
            rows.append(("outside operators (runtime, delegate)", overhead))
    if not rows:
        return '<p class="none">The ETDump holds no timed operator.</p>'
    total = total_ms if total_ms else sum(v for _, v in rows)
    plot_l, plot_r, row_h, top = 262, 440, 20, 12
    hi = _nice_range(0.0, max(v for _, v in rows) * 1000, pad=0.02)[1]
    svg, x, bottom = _bar_canvas("ops", "time per inference by operator type", len(rows), top, row_h, plot_l, plot_r,
                                 hi=hi)
    _x_axis(svg, x, x.ticks(5), top, bottom, "time per inference (µs, median of the profiled runs)")
    for i, (name, ms) in enumerate(rows):
        y = top + i * row_h
        share = ms / total if total else None
        tip = f"{name}: {_g(ms * 1000)} µs ({_pct(share)} of the inference)"
        short = name if len(name) <= 40 else name[:39] + "…"
        svg.text(plot_l - 8, y + 14, short, anchor="end", cls="small", title=tip)
        svg.add("rect", {"x": plot_l, "y": y + 3, "width": max(x(ms * 1000) - plot_l, 1.0), "height": row_h - 6,
                         "class": "opbar bar"}, title=tip)
        micros = f"{_g(ms * 1000, 3)} µs" if ms * 1000 >= 0.5 else "< 1 µs"
        svg.text(plot_r + 8, y + 14, f"{micros} ({_pct(share)})", title=tip)
    return svg.render()


# ------------------------------------------------------------------------------------------------ tables

def _pill(status: str) -> str:
    return f'<span class="pill s-{_status_class(status)}">{_e(status)}</span>'


def _accuracy_cells(quality: dict[str, Any]) -> tuple[str, str]:
    """(what the accuracy is, its figure with interval and the unpruned model's) from a manifest quality block."""
    kind = str(quality.get("kind", ""))
    split = quality.get("split")
    samples = _num(quality.get("samples"))
    if kind == "eval_accuracy":
        what = f"top-1 accuracy, {split} split" if split else "top-1 accuracy"
    elif kind == "agreement_with_reference":
        what = "top-1 agreement with the unpruned model (no labels)"
    else:
        what = kind or "accuracy"
    if samples is not None:
        what += f", {samples:.0f} samples"
    art, ref = _num(quality.get("artifact_accuracy")), _num(quality.get("reference_accuracy"))
    text = _pct(art, 2)
    ci = _pair(quality.get("artifact_accuracy_ci95"))
    if ci:
        text += f" (95% CI {_pct(ci[0])}–{_pct(ci[1])})"
    if ref is not None:
        text += f"; unpruned {_pct(ref, 2)}"
        ref_ci = _pair(quality.get("reference_accuracy_ci95"))
        if ref_ci:
            text += f" ({_pct(ref_ci[0])}–{_pct(ref_ci[1])})"
    drop = _num(quality.get("accuracy_drop_pct"))
    if drop is not None:
        text += f"; drop {drop:.2f} points"
        drop_ci = _pair(quality.get("accuracy_drop_ci95_pct"))
        if drop_ci:
            text += f" ({drop_ci[0]:.2f} to {drop_ci[1]:.2f})"
    return what, text


def artifacts_table(manifest: dict[str, Any]) -> str:
    rows = []
    for entry in _l(manifest.get("artifacts")):
        if not isinstance(entry, dict):
            continue
        quality, measured = _d(entry.get("quality")), _d(entry.get("measured"))
        what, acc = _accuracy_cells(quality)
        size = _num(entry.get("size_bytes"))
        parity = f"{quality.get('parity_metric', '?')} {_g(_num(quality.get('parity_value')))}"
        parity += f" (limit {_g(_num(quality.get('parity_limit')))})"
        lowering = _d(entry.get("lowering"))
        share = _num(lowering.get("delegated_share"))
        latency = (f"{_g(_num(measured.get('latency_p50_ms')))} / {_g(_num(measured.get('latency_p90_ms')))} ms "
                   f"at {measured.get('threads', '?')} threads on {measured.get('where', '?')}")
        rows.append(
            "<tr>"
            f"<td><b>{_e(_artifact_label(entry))}</b><br><span class=dim>{_e(entry.get('path', ''))}</span></td>"
            f"<td class=num>{'-' if size is None else f'{size / 1e6:.3f} MB'}</td>"
            f"<td>{_e(acc)}<br><span class=dim>{_e(what)}</span></td>"
            f"<td>{_e(parity)}</td>"
            f"<td>{_e(latency)}<br><span class=dim>{_e(measured.get('runner', ''))}</span></td>"
            f"<td>{'-' if share is None else _e(_pct(share, 0))}</td>"
            "</tr>")
    head = ("<tr><th>artifact</th><th>file size</th><th>accuracy</th><th>parity with PyTorch</th>"
            "<th>latency p50 / p90 (measured at build)</th><th>ops delegated</th></tr>")
    return f'<table class="grid">{head}{"".join(rows)}</table>'


def verdicts_table(manifest: dict[str, Any]) -> str:
    rows = []
    for entry in _l(manifest.get("artifacts")):
        if not isinstance(entry, dict):
            continue
        runs = [("build", _d(entry.get("measured")), _d(entry.get("verdict")))]
        for v in _l(entry.get("validations")):
            v = _d(v)
            measured = _d(v.get("measured"))
            runs.append((f"validation {v.get('validated_utc', '')}".strip(), measured, _d(v.get("verdict"))))
        for source, measured, verdict in runs:
            checks = [c for c in _l(verdict.get("checks")) if isinstance(c, dict)]
            for i, c in enumerate(checks):
                first = (f'<td rowspan="{len(checks)}"><b>{_e(_artifact_label(entry))}</b></td>'
                         f'<td rowspan="{len(checks)}">{_e(source)}<br><span class=dim>on '
                         f'{_e(measured.get("where", "?"))}</span></td>') if i == 0 else ""
                value, limit = _num(c.get("value")), _num(c.get("limit"))
                unit = str(c.get("unit", ""))
                rows.append(f"<tr>{first}<td class=nw>{_e(CHECK_TITLE.get(str(c.get('name')), c.get('name', '?')))}</td>"
                            f"<td class=num>{_e(_g(value))} {_e(unit)}</td><td class=num>{_e(_g(limit))} {_e(unit)}</td>"
                            f"<td>{_pill(str(c.get('status', '?')))}</td><td class=note>{_e(c.get('note', ''))}</td></tr>")
    if not rows:
        return '<p class="none">No verdict was recorded.</p>'
    head = ("<tr><th>artifact</th><th>measured by</th><th>budget</th><th>value</th><th>limit</th><th>status</th>"
            "<th>note</th></tr>")
    return f'<table class="grid verdicts">{head}{"".join(rows)}</table>'


# ------------------------------------------------------------------------------------------------ the page

CSS = """
:root{--fg:#1d2330;--dim:#5b6475;--line:#d9dde5;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:18px 20px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:19px;margin:0}h3{font-size:15px;margin:0 0 6px}
.dim{color:var(--dim);font-size:12.5px}
header.top{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin-bottom:14px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 0}
dl.facts dt{color:var(--dim)}dl.facts dd{margin:0}
nav.devices{margin-top:10px;display:flex;flex-wrap:wrap;gap:8px}
nav.devices a{text-decoration:none;color:var(--fg);border:1px solid var(--line);border-radius:14px;padding:2px 10px;
background:#fafbfc}
section.device{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin:14px 0}
.devhead{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap;margin-bottom:8px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:0 14px;align-items:start}
.panel{border:1px solid var(--line);border-radius:6px;padding:10px 12px;margin-top:12px;overflow-x:auto}
.panel p.cap{margin:0 0 6px;color:var(--dim);font-size:12.5px}
p.none{margin:4px 0;color:var(--dim);font-style:italic}
p.warn{margin:4px 0;color:#8a1c1c}
table.grid{border-collapse:collapse;width:100%;font-size:13px}
table.grid th,table.grid td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
table.grid th{background:#f0f2f5;font-weight:600}
td.num{text-align:right;white-space:nowrap}td.nw{white-space:nowrap}td.note{color:var(--dim);font-size:12.5px}
.pill{display:inline-block;border-radius:10px;padding:0 8px;color:#fff;font-size:12px;font-weight:600}
.s-pass{background:#2e7d32}.s-fail{background:#c62828}.s-unverified{background:#b7791f}.s-other{background:#757575}
svg.chart{display:block;font-family:inherit}
svg .t{font-size:12px;fill:#1d2330}svg .small{font-size:11px;fill:#1d2330}svg .tick{font-size:11px;fill:#5b6475}
svg .axis{font-size:12px;fill:#1d2330;font-weight:600}svg .group{font-size:12.5px;font-weight:600;fill:#1d2330}
svg text.status{font-size:11.5px;font-weight:600}svg text.s-pass{fill:#2e7d32}svg text.s-fail{fill:#c62828}
svg text.s-unverified{fill:#b7791f}svg text.s-other{fill:#757575}
svg .grid{stroke:#e3e6ec;stroke-width:1}svg .frame{stroke:#9aa3b2;stroke-width:1}
svg .limit{stroke:#c62828;stroke-width:2;stroke-dasharray:5 3}
svg .interval{stroke:#1d2330;stroke-width:1.4}
svg .pred{fill:#fff;stroke:#1d2330;stroke-width:1.6}svg .planned{fill:#1d2330}
svg .keepbar{fill:#4c78a8}svg .stagebar{fill:#72b7b2}svg .opbar{fill:#4c78a8}
svg .req{stroke:#1d2330;stroke-width:2}
svg .front{fill:none;stroke:#9aa3b2;stroke-width:1.2;stroke-dasharray:3 3}
svg .tuned{stroke:#5b6475;stroke-width:1;stroke-dasharray:2 2}
svg .chosen{fill:none;stroke:#1d2330;stroke-width:2.2}
svg .budget{stroke:#c62828;stroke-width:1.6;stroke-dasharray:6 4}
svg .bar:hover,svg .point:hover{opacity:.8}
@media print{body{background:#fff}section.device{break-inside:avoid}}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _anchor(index: int, name: str) -> str:
    return f"dev-{index}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "device")


def _header(build: dict[str, Any], devices: Sequence[_Device]) -> str:
    model, data = _d(build.get("model")), _d(build.get("data"))
    versions = _d(build.get("versions"))
    shape = "×".join(str(v) for v in _l(model.get("input_shape")))
    model_text = f"{model.get('spec', '?')}" + (f", weights {model.get('weights')}" if model.get("weights") else "")
    model_text += f", input {shape}" if shape else ""
    splits = [f"{k} {data[k]}" for k in ("train", "validation", "val", "calibration", "eval", "test")
              if _num(data.get(k)) is not None]
    data_text = f"{data.get('source', '?')}" + (f" ({', '.join(splits)} samples" if splits else "")
    data_text += (f"; {data['num_classes']} classes" if _num(data.get("num_classes")) is not None else "") + (")" if splits else "")
    if data.get("labelled") is False:
        data_text += "; unlabelled: accuracy is agreement with the unpruned model"
    passed = build.get("passed")
    overall = "pass" if passed is True else "fail" if passed is False else "?"
    created = str(build.get("created_utc", "?"))
    facts = [
        ("model", model_text),
        ("preprocessing", str(model.get("preprocessing", "-"))),
        ("data", data_text),
        ("mode", str(build.get("mode", "?"))),
        ("built", created),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"),
    ]
    command = build.get("command")
    if isinstance(command, list) and command:
        facts.append(("command", " ".join(str(c) for c in command)))
    skipped = _d(build.get("skipped_targets"))
    if skipped:
        facts.append(("skipped targets", "; ".join(f"{k}: {v}" for k, v in skipped.items())))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    nav = "".join(f'<a href="#{_anchor(i, d.name)}">{_e(d.name)} {_device_pills(d)}</a>'
                  for i, d in enumerate(devices))
    return (f'<header class="top"><h1>edgeprune report: {_e(model.get("name", "model"))} {_pill(overall)}</h1>'
            f'<div class="dim">what each device got, and what was traded for it</div>'
            f'<dl class="facts">{dl}</dl><nav class="devices">{nav}</nav></header>')


def _device_pills(dev: _Device) -> str:
    """'fail' if any budget failed in the latest verdicts, else 'pass'; and how many checks are unverified."""
    if dev.manifest is None:
        return _pill("missing")
    checks = [_d(c) for a in _l(dev.manifest.get("artifacts")) for c in _l(_latest(_d(a))[0].get("checks"))]
    failed = any(c.get("status") == "fail" for c in checks) or dev.manifest.get("passed") is False
    unverified = sum(c.get("status") == "unverified" for c in checks)
    pills = _pill("fail" if failed else "pass")
    if unverified:
        pills += f' <span class="pill s-unverified" title="checks measured elsewhere or modelled">{unverified} unverified</span>'
    return pills


def _device_section(index: int, dist: Path, build: dict[str, Any], dev: _Device) -> str:
    parts = [f'<section class="device" id="{_anchor(index, dev.name)}">']
    manifest = dev.manifest or {}
    info = _d(manifest.get("device"))
    title = str(info.get("display_name") or dev.name)
    sub = ", ".join(str(info[k]) for k in ("platform", "soc", "abi", "tier") if info.get(k))
    parts.append(f'<div class="devhead"><h2>{_e(title)}</h2><span class="dim">{_e(dev.name)}'
                 f'{" · " + _e(sub) if sub else ""}</span><span>{_device_pills(dev)}</span></div>')
    for problem in dev.problems:
        parts.append(f'<p class="warn">{_e(problem)}</p>')
    if dev.manifest is None:
        parts.append("</section>")
        return "".join(parts)
    rows, sources = _budget_rows(manifest, _d(_d(dev.summary.get("planning")).get("chosen")))
    parts.append('<div class="panel"><h3>Budgets: measured against each limit, with the prediction</h3>'
                 f'<p class="cap">Charted from: {_e("; ".join(sources))}. Hover a bar for the verdict\'s note.</p>'
                 f'{budgets_chart(rows)}</div>')
    planning = _d(dev.summary.get("planning"))
    pareto = f'<div class="panel"><h3>Pareto front: accuracy against latency</h3>{_pareto_panel(planning, manifest, build)}</div>'
    keep = f'<div class="panel"><h3>Keep ratios</h3>{_keep_panel(planning, manifest, dev)}</div>'
    ops = f'<div class="panel"><h3>Per-operator latency</h3>{_ops_panel(dist, dev)}</div>'
    parts.append(f'<div class="cols"><div class="col">{pareto}{ops}</div><div class="col">{keep}</div></div>')
    parts.append(f'<div class="panel"><h3>Artifacts</h3>{artifacts_table(manifest)}</div>')
    parts.append(f'<div class="panel"><h3>Verdicts</h3>{verdicts_table(manifest)}</div>')
    parts.append("</section>")
    return "".join(parts)


def _keep_panel(planning: dict[str, Any], manifest: dict[str, Any], dev: _Device) -> str:
    pruning = _d(manifest.get("pruning"))
    channels = _d(pruning.get("channels")) or _d(_d(dev.plan_yaml).get("channels"))
    artifacts = [_d(a) for a in _l(manifest.get("artifacts"))]
    plan = _d(_d(dev.plan_yaml).get("plan")) or (_d(artifacts[0].get("plan")) if artifacts else {})
    requested = {str(k): float(v) for k, v in _d(plan.get("layer_keep_ratios")).items() if _num(v) is not None}
    uniform = None if requested else _num(pruning.get("keep_ratio"))
    out = []
    chosen = _d(planning.get("chosen"))
    stages = stage_chart(_d(chosen.get("keep")), _d(planning.get("buckets")))
    if stages:
        out.append('<p class="cap">The planner\'s keep ratio per stage (each stage: channel groups of about equal '
                   'MACs).</p>' + stages)
    params = (_num(pruning.get("params_before")), _num(pruning.get("params_after")))
    macs = (_num(pruning.get("macs_before")), _num(pruning.get("macs_after")))
    facts = []
    if None not in params and params[0]:
        facts.append(f"parameters {params[1]:,.0f} of {params[0]:,.0f} ({_pct(params[1] / params[0])})")
    if None not in macs and macs[0]:
        facts.append(f"MACs {macs[1]:,.0f} of {macs[0]:,.0f} ({_pct(macs[1] / macs[0])})")
    cap = "Channels kept per pruned layer" + (f"; {'; '.join(facts)}" if facts else "") + "."
    out.append(f'<p class="cap">{_e(cap)}</p>' + keep_chart(channels, requested, uniform))
    return "".join(out)


def _ops_panel(dist: Path, dev: _Device) -> str:
    label, path, problem = _find_etdump(dist, dev.folder, dev.manifest or {})
    if path is None:
        if problem:
            return f'<p class="none">{_e(problem)}.</p>'
        return ('<p class="none">No per-operator profile: no measurement of this device recorded an ETDump (an '
                'ExecuTorch executor_runner built with the event tracer writes one when run by edgeprune validate '
                '--on adb:SERIAL).</p>')
    try:
        ops, total = _etdump_ops(path)
    except Exception as exc:  # a corrupt or foreign file: say so, the rest of the report stands
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f'<p class="warn">The ETDump {_e(path.name)} ({_e(label)}) could not be read: {_e(first)}.</p>'
    total_text = f"; whole inference {_g(total * 1000, 3)} µs" if total is not None else ""
    return (f'<p class="cap">From the ETDump {_e(path.name)} ({_e(label)}){_e(total_text)}; each operator type\'s '
            f'time is the sum over its calls.</p>' + ops_chart(ops, total))


def render(dist: Path) -> str:
    """The report page for a build folder, as HTML text."""
    dist = Path(dist)
    build, devices = _load(dist)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sections = "".join(_device_section(i, dist, build, d) for i, d in enumerate(devices))
    title = f"edgeprune report: {_d(build.get('model')).get('name', 'model')}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f"{_header(build, devices)}{sections}"
        f'<p class="dim">Written {_e(now)} by edgeprune from {_e(dist.name)}/build.json and each device\'s '
        "manifest.json; <code>edgeprune report DIST</code> rewrites it.</p>"
        "</main></body></html>\n"
    )


def write_report(dist: Path) -> Path:
    """Write `dist/report.html` (atomically) from the build's build.json, manifests and plans; return its path."""
    dist = Path(dist)
    page = render(dist)
    path = dist / REPORT_NAME
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------------ Pareto front

@dataclass
class _Point:
    label: str
    scheme: str
    latency_ms: float
    proxy: float | None
    tuned: float | None
    size_mb: float | None


def _plan_label(entry: dict[str, Any]) -> str:
    keep = "/".join(f"{float(v):g}" for v in _d(entry.get("keep")).values() if _num(v) is not None)
    threads = entry.get("threads", "?")
    return (f"{entry.get('target', '?')} {entry.get('scheme', '?')}, {entry.get('importance', '?')}, "
            f"{threads} thread{'s' if threads != 1 else ''}, keep {keep or '?'}")


def _same_plan(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("target", "scheme", "importance", "threads", "keep")
    return all(a.get(k) == b.get(k) for k in keys)


def _pareto_panel(planning: dict[str, Any], manifest: dict[str, Any], build: dict[str, Any]) -> str:
    if not planning:
        if str(build.get("mode", "")).startswith("fixed"):
            return ('<p class="none">No Pareto front: the plan was fixed (--prune/--quant), so no plans were searched; '
                    'build without --prune and --quant to plan for the budgets.</p>')
        return '<p class="none">No Pareto front: build.json holds no planning report for this device.</p>'
    front = [_d(p) for p in _l(planning.get("pareto_front"))]
    chosen = _d(planning.get("chosen"))
    kinds = {str(_d(a.get("quality")).get("kind")) for a in _l(manifest.get("artifacts")) if isinstance(a, dict)}
    what = "top-1 agreement with the unpruned model" if kinds == {"agreement_with_reference"} else "top-1 accuracy"
    budget = _num(_d(manifest.get("budget")).get("latency_ms"))
    rounds = [_d(r) for r in _l(planning.get("rounds"))]
    measured = _num(_d(rounds[-1].get("measured")).get("latency_ms")) if rounds else None  # the plan kept is measured last
    for point in front:  # the accuracy after the brief fine-tune, where the plan was one of those ranked
        tuned = [t for t in _l(planning.get("finetuned")) if isinstance(t, dict) and _same_plan(t, point)]
        if tuned and "accuracy" not in point:
            point["accuracy"] = tuned[-1].get("accuracy")
    chart = pareto_chart(front, chosen, what, budget, measured)
    searched = _d(planning.get("searched"))
    cap = (f"{len(front)} plans on the front of {planning.get('visited', '?')} visited"
           f"{'; importance ' + ', '.join(map(str, _l(searched.get('importance')))) if searched.get('importance') else ''}"
           f"{'; threads ' + ', '.join(map(str, _l(searched.get('threads')))) if searched.get('threads') else ''}. "
           "Latency is the cost model's prediction; hollow markers are the proxy accuracy (each stage pruned, BatchNorm "
           "re-estimated, no fine-tuning), filled ones the accuracy after fine-tuning. Marker area is the model size.")
    chosen_text = ""
    if chosen:
        acc = _num(chosen.get("accuracy"))
        chosen_text = (f'<p class="cap"><b>Chosen:</b> {_e(_plan_label(chosen))}; {_e(what)} {_e(_pct(acc, 2))} '
                       f"after fine-tuning; predicted {_e(_g(_num(_d(chosen.get('predicted')).get('latency_ms'))))} ms"
                       + (f", measured {_e(_g(measured))} ms" if measured is not None else "") + ".</p>")
    return f'<p class="cap">{_e(cap)}</p>{chart}{chosen_text}'


def pareto_chart(front: Sequence[dict[str, Any]], chosen: dict[str, Any], what: str, budget_ms: float | None,
                 measured_ms: float | None) -> str:
    points = []
    for p in front:
        pred = _d(p.get("predicted"))
        latency = _num(pred.get("latency_ms"))
        if latency is None:
            continue
        points.append(_Point(_plan_label(p), str(p.get("scheme", "?")), latency, _num(p.get("proxy_accuracy")),
                             _num(p.get("accuracy")), _num(pred.get("model_size_mb"))))
    c_pred = _d(chosen.get("predicted"))
    c_lat, c_acc = _num(c_pred.get("latency_ms")), _num(chosen.get("accuracy"))
    if not points and c_lat is None:
        return '<p class="none">The planning report holds no plan with a predicted latency.</p>'
    xs = [p.latency_ms for p in points] + [v for v in (c_lat, measured_ms, budget_ms) if v is not None]
    ys = [v for p in points for v in (p.proxy, p.tuned) if v is not None] + ([c_acc] if c_acc is not None else [])
    sizes = [p.size_mb for p in points if p.size_mb] + ([_num(c_pred.get("model_size_mb"))] if _num(c_pred.get("model_size_mb")) else [])
    width, height = 560, 420
    left, right, top, bottom = 62, 540, 40, 360
    x = _Linear(*_nice_range(min(xs), max(xs)), left, right)
    ylo, yhi = _nice_range(100 * min(ys), 100 * max(ys)) if ys else (0.0, 100.0)
    y = _Linear(max(ylo, 0.0), min(yhi, 100.0), bottom - 10, top + 14)  # room for the markers inside the frame
    max_size = max(sizes) if sizes else 1.0

    def radius(size: float | None) -> float:
        return 2.5 + 6.5 * math.sqrt(min(size / max_size, 1.0)) if size and size > 0 and max_size > 0 else 4.0

    svg = _Svg("pareto", width, height, f"Pareto front: {what} against predicted latency")
    for tick in x.ticks(6):
        svg.line(x(tick), top, x(tick), bottom, "grid")
        svg.text(x(tick), bottom + 16, _tick_label(tick), anchor="middle", cls="tick")
    for tick in y.ticks(5):
        svg.line(left, y(tick), right, y(tick), "grid")
        svg.text(left - 6, y(tick) + 4, _tick_label(tick), anchor="end", cls="tick")
    svg.add("rect", {"x": left, "y": top, "width": right - left, "height": bottom - top, "fill": "none", "class": "frame"})
    svg.text((left + right) / 2, bottom + 36, "predicted latency (ms)", anchor="middle", cls="axis")
    svg.text(16, (top + bottom) / 2, f"{what} (%)", anchor="middle", cls="axis",
             transform=f"rotate(-90 16 {(top + bottom) / 2:.1f})")
    if budget_ms is not None:
        svg.line(x(budget_ms), top, x(budget_ms), bottom, "budget", title=f"latency budget {_g(budget_ms)} ms")
        svg.text(x(budget_ms) - 4, bottom - 6, f"latency budget {_g(budget_ms)} ms", anchor="end", cls="small")
    ordered = sorted((p for p in points if p.proxy is not None), key=lambda p: p.latency_ms)
    if len(ordered) > 1:
        d = "M" + " L".join(f"{x(p.latency_ms):.1f} {y(100 * p.proxy):.1f}" for p in ordered)
        svg.add("path", {"d": d, "class": "front"})
    for p in points:
        colour = SCHEME_COLOUR.get(p.scheme, OTHER_COLOUR)
        r = radius(p.size_mb)
        size = f", {_g(p.size_mb)} MB" if p.size_mb is not None else ""
        if p.proxy is not None:
            svg.add("circle", {"cx": x(p.latency_ms), "cy": y(100 * p.proxy), "r": r, "fill": "#fff",
                               "fill_opacity": 0.6, "stroke": colour, "stroke_width": 2, "class": "point"},
                    title=f"{p.label}: predicted {_g(p.latency_ms)} ms{size}, proxy {_pct(p.proxy, 2)}")
        if p.tuned is not None:
            if p.proxy is not None:
                svg.line(x(p.latency_ms), y(100 * p.proxy), x(p.latency_ms), y(100 * p.tuned), "tuned")
            svg.add("circle", {"cx": x(p.latency_ms), "cy": y(100 * p.tuned), "r": r, "fill": colour,
                               "fill_opacity": 0.85, "class": "point"},
                    title=f"{p.label}: predicted {_g(p.latency_ms)} ms{size}, fine-tuned {_pct(p.tuned, 2)}")
    if c_lat is not None and c_acc is not None:
        cx, cy = x(c_lat), y(100 * c_acc)
        tip = f"chosen: {_plan_label(chosen)}: predicted {_g(c_lat)} ms, {_pct(c_acc, 2)} after fine-tuning"
        svg.add("circle", {"cx": cx, "cy": cy, "r": radius(_num(c_pred.get("model_size_mb"))) + 5, "class": "chosen point"},
                title=tip)
        if measured_ms is not None:
            mx = x(measured_ms)
            svg.add("path", {"d": f"M{mx - 5:.1f} {cy - 5:.1f}L{mx + 5:.1f} {cy + 5:.1f}M{mx - 5:.1f} {cy + 5:.1f}"
                                  f"L{mx + 5:.1f} {cy - 5:.1f}", "class": "chosen point"},
                    title=f"chosen plan measured: {_g(measured_ms)} ms")
    # legend: schemes present, proxy/fine-tuned, measured
    lx = left
    for scheme in sorted({p.scheme for p in points}):
        svg.add("circle", {"cx": lx + 6, "cy": 14, "r": 5, "fill": SCHEME_COLOUR.get(scheme, OTHER_COLOUR),
                           "class": "swatch"})
        svg.text(lx + 15, 18, scheme)
        lx += 24 + 7 * len(scheme)
    svg.add("circle", {"cx": lx + 6, "cy": 14, "r": 5, "fill": "#fff", "stroke": "#5b6475", "stroke_width": 2})
    svg.text(lx + 15, 18, "proxy")
    svg.add("circle", {"cx": lx + 66, "cy": 14, "r": 5, "fill": "#5b6475"})
    svg.text(lx + 75, 18, "fine-tuned")
    svg.add("circle", {"cx": lx + 147, "cy": 14, "r": 6, "class": "chosen"})
    svg.text(lx + 157, 18, "chosen")
    if measured_ms is not None:
        mx = lx + 215
        svg.add("path", {"d": f"M{mx - 4} 10L{mx + 4} 18M{mx - 4} 18L{mx + 4} 10", "class": "chosen"})
        svg.text(mx + 9, 18, "chosen, measured")
    return svg.render()
