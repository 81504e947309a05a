"""dist/report.html in a real browser: headless Chromium, driven over the DevTools protocol, loads the page written
for a real build and measures each chart's drawn SVG shapes; no console error and no request beyond the file."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from edgeprune.errors import ConfigError
from edgeprune.report import write_report

CHROMIUM = os.environ.get("EDGEPRUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--mute-audio", "--remote-debugging-port=0"]


class Chromium:
    """Headless Chromium with one DevTools websocket to the browser; `open` gives a page session."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.profile = Path(tempfile.mkdtemp(prefix="edgeprune-chromium-"))
        self.proc: subprocess.Popen | None = None
        self.ws: websocket.WebSocket | None = None
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "Chromium":
        self.proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while not (active.is_file() and len(active.read_text().split()) == 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {self.proc.poll()})")
            time.sleep(0.05)
        port, path = active.read_text().split()
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=self.timeout_s,
                                              suppress_origin=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        assert self.ws is not None
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            event = json.loads(self.ws.recv())
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        raise TimeoutError(method)

    def open(self, path: Path, width: int = 1366, height: int = 768) -> "Page":
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.send("Page.navigate", session, url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def _events(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.browser.events if e.get("method") == method and e.get("sessionId") == self.session]

    @property
    def console_errors(self) -> list[str]:
        self.evaluate("0")  # drain events queued before this point
        out = [json.dumps(p.get("args")) for p in self._events("Runtime.consoleAPICalled") if p.get("type") in ("error", "assert")]
        out += [json.dumps(p["exceptionDetails"]) for p in self._events("Runtime.exceptionThrown")]
        out += [p["entry"].get("text", "") for p in self._events("Log.entryAdded") if p["entry"].get("level") == "error"]
        return out

    @property
    def requests(self) -> list[str]:
        self.evaluate("0")
        return [p["request"]["url"] for p in self._events("Network.requestWillBeSent")]

    def evaluate(self, expression: str) -> Any:
        result = self.browser.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def charts(self) -> list[dict[str, Any]]:
        """Every chart SVG: its section, box on screen, and its data marks (bars, points) with a non-empty box."""
        return self.evaluate("""
            Array.from(document.querySelectorAll('svg.chart')).map(svg => {
              const box = svg.getBoundingClientRect();
              const marks = Array.from(svg.querySelectorAll('.bar, .point')).map(e => e.getBBox());
              const texts = Array.from(svg.querySelectorAll('text')).map(e => e.getBBox());
              return {kind: svg.dataset.chart, section: svg.closest('section') ? svg.closest('section').id : null,
                      width: box.width, height: box.height, marks: marks.length,
                      drawn: marks.filter(b => b.width > 0 && b.height > 0).length,
                      texts: texts.filter(b => b.width > 0 && b.height > 0).length};
            })""")

    def screenshot(self, full: bool = True) -> bytes:
        result = self.browser.send("Page.captureScreenshot", self.session, format="png", captureBeyondViewport=full)
        return base64.b64decode(result["data"])


# ------------------------------------------------------------------------------------------------ builds

def _fixed_build(out: Path) -> Path:
    """A real fixed-plan build for two devices: host (judged here) and pixel-8 (unverified on a host)."""
    from edgeprune.pipeline import BuildRequest, build

    build(BuildRequest(model="examples:digits", out=out, devices=("host", "pixel-8"), targets=("executorch",),
                       prune=0.5, quant="fp32", finetune_epochs=1, runs=10, warmup=2, blocks=2))
    return out


def _record_etdump(device_dir: Path) -> Path:
    """Profile the device's .pte with ExecuTorch's event tracer and record the ETDump in its manifest entry, where
    `edgeprune validate --on adb:SERIAL` records the one a profiling executor_runner writes on the phone."""
    import torch
    from executorch.runtime import Runtime

    etdump = device_dir / "model.host-profile.etdp"
    program = Runtime.get().load_program(str(device_dir / "model.pte"), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    for _ in range(5):
        method.execute((torch.rand(1, 1, 8, 8),))
    program.write_etdump_result_to_file(str(etdump), str(device_dir / "debug.bin"))
    (device_dir / "debug.bin").unlink(missing_ok=True)
    manifest_path = device_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["measured"]["extra"]["etdump_path"] = str(etdump)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return etdump


# A planned build takes ~11 minutes here (345 plans visited, 8 brief fine-tunes), too long for the suite. So the
# Pareto-front test renders a recorded shape: the planning block of build.json from a real run of
#   edgeprune build --model examples:digits --device host --latency-ms 0.2 --target executorch
# (2026-12-06, edgeprune 0.1.0 at 8447edd; the front, the chosen plan, its stages, its accepted round and the two
# brief fine-tunes of front plans, verbatim), over a real build of that chosen plan's per-layer keep ratios.
RECORDED_LAYER_KEEP = {"blocks.2.conv.1.0": 0.5, "blocks.2.conv.2.0": 0.75, "blocks.3.conv.1.0": 0.75,
                       "blocks.4.conv.1.0": 0.5, "blocks.5.conv.1.0": 0.5, "blocks.5.conv.2.0": 0.5,
                       "blocks.6.conv.1.0": 0.25, "blocks.7.conv.1.0": 0.25, "blocks.7.conv.2.0": 0.875, "head.0": 0.875}
RECORDED_FRONT = [  # target, scheme, importance, threads, keep per stage, proxy accuracy, predicted costs
    ("executorch", "int8", "fpgm", 1, (0.625, 0.25, 0.375, 0.25, 0.25, 0.5), 0.766, (0.12995, 0.09862, 0.09899, 0.77968)),
    ("executorch", "int8", "l2", 1, (0.75, 0.25, 0.25, 0.25, 0.25, 0.5), 0.7744, (0.14123, 0.09956, 0.09993, 0.84738)),
    ("executorch", "int8", "l2", 1, (0.75, 0.25, 0.375, 0.25, 0.25, 0.5), 0.8357, (0.14952, 0.1031, 0.10347, 0.89714)),
    ("executorch", "fp32", "fpgm", 1, (0.875, 0.25, 0.625, 0.5, 0.25, 0.875), 0.9652, (0.15474, 0.37726, 0.37763, 0.92842)),
    ("executorch", "fp32", "fpgm", 1, (1.0, 0.25, 0.625, 0.5, 0.25, 0.875), 0.9721, (0.16444, 0.3974, 0.39777, 0.98662)),
    ("executorch", "fp32", "fpgm", 1, (1.0, 0.25, 0.75, 0.5, 0.25, 0.875), 0.9749, (0.17021, 0.41563, 0.416, 1.02125)),
    ("executorch", "fp32", "fpgm", 1, (1.0, 0.875, 0.75, 0.5, 0.25, 0.875), 0.9763, (0.19578, 0.45159, 0.45196, 1.17465)),
    ("executorch", "fp32", "fpgm", 1, (1.0, 1.0, 0.75, 0.5, 0.25, 0.875), 0.9777, (0.20054, 0.45879, 0.45916, 1.20326)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 0.875, 0.25, 1.0), 0.9805, (0.24171, 0.73137, 0.73174, 1.45024)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 1.0, 0.25, 1.0), 0.9833, (0.24222, 0.80389, 0.80426, 1.45333)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 1.0, 0.625, 1.0), 0.9847, (0.24372, 0.98641, 0.98678, 1.46233)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 1.0, 0.75, 1.0), 0.9861, (0.24422, 1.04725, 1.04762, 1.46532)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 1.0, 0.875, 1.0), 0.9875, (0.24472, 1.10809, 1.10846, 1.46832)),
    ("executorch", "fp32", "l2", 1, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 0.9889, (0.24522, 1.16894, 1.1693, 1.47132)),
]
RECORDED_PLANNING = json.loads("""{
 "device": "host",
 "chosen": {"target": "executorch", "scheme": "fp32", "importance": "fpgm", "threads": 1,
  "keep": {"stage1": 1.0, "stage2": 0.5, "stage3": 0.75, "stage4": 0.5, "stage5": 0.25, "stage6": 0.875},
  "accuracy": 0.9944289693593314,
  "predicted": {"latency_ms": 0.18554, "model_size_mb": 0.43032, "peak_memory_mb": 0.43069, "energy_mj": 1.11322}},
 "buckets": {"stage1": ["blocks.0.conv.1.0", "blocks.0.conv.2.0", "blocks.1.conv.1.0"], "stage2": ["blocks.2.conv.1.0"],
  "stage3": ["blocks.2.conv.2.0", "blocks.3.conv.1.0"], "stage4": ["blocks.4.conv.1.0", "blocks.5.conv.1.0",
  "blocks.5.conv.2.0"], "stage5": ["blocks.6.conv.1.0", "blocks.7.conv.1.0"], "stage6": ["blocks.7.conv.2.0", "head.0"]},
 "rounds": [{"round": 4, "candidate": "executorch/fp32 keep 1/0.5/0.75/0.5/0.25/0.875 fpgm, 1 thread",
  "predicted": {"latency_ms": 0.18554, "model_size_mb": 0.43032, "peak_memory_mb": 0.43069, "energy_mj": 1.11322},
  "measured": {"latency_ms": 0.179221, "latency_point_ms": 0.15684850006891793, "latency_low_ms": 0.127349,
   "model_size_mb": 0.429992, "peak_memory_mb": 0.43036}, "met": true, "action": "accepted"}],
 "finetuned": [
  {"target": "executorch", "scheme": "fp32", "importance": "fpgm", "threads": 1,
   "keep": {"stage1": 1.0, "stage2": 1.0, "stage3": 0.75, "stage4": 0.5, "stage5": 0.25, "stage6": 0.875},
   "proxy_accuracy": 0.9777, "accuracy": 0.9860724233983287, "epochs": 3, "params": 111578},
  {"target": "executorch", "scheme": "fp32", "importance": "fpgm", "threads": 1,
   "keep": {"stage1": 1.0, "stage2": 0.25, "stage3": 0.75, "stage4": 0.5, "stage5": 0.25, "stage6": 0.875},
   "proxy_accuracy": 0.9749, "accuracy": 0.9860724233983287, "epochs": 3, "params": 100490}],
 "visited": 345, "seconds": 664.17, "final_finetune_s": 61.26,
 "searched": {"importance": ["l2", "fpgm"], "threads": [1, 2], "dropped": ["executorch/fp32 at 2 threads: the unpruned
  model measured 0.3567 ms, no faster than 0.2452 ms with fewer threads"]}}""".replace("\n", " "))
RECORDED_PLANNING["pareto_front"] = [
    {"target": t, "scheme": s, "importance": imp, "threads": th, "keep": {f"stage{i + 1}": k for i, k in enumerate(keep)},
     "proxy_accuracy": proxy, "predicted": dict(zip(("latency_ms", "model_size_mb", "peak_memory_mb", "energy_mj"), costs))}
    for t, s, imp, th, keep, proxy, costs in RECORDED_FRONT]


@pytest.fixture(scope="module")
def dists(tmp_path_factory, digits_model) -> dict[str, Path]:
    """'fixed': a real build (host with an ETDump, pixel-8); 'planned': its host part with the recorded planning."""
    from edgeprune.pipeline import BuildRequest, build

    root = tmp_path_factory.mktemp("report")
    fixed = root / "fixed"
    build(BuildRequest(model="examples:digits", out=fixed, devices=("host", "pixel-8"), targets=("executorch",),
                       quant="fp32", layer_keep_ratios=RECORDED_LAYER_KEEP, importance="fpgm", finetune_epochs=1,
                       threads=1, runs=10, warmup=2, blocks=2))
    _record_etdump(fixed / "host")
    planned = root / "planned"
    shutil.copytree(fixed / "host", planned / "host")
    summary = json.loads((fixed / "build.json").read_text())
    summary["mode"] = "planned for the budgets"
    summary["devices"] = [d | {"planning": RECORDED_PLANNING} for d in summary["devices"] if d["device"] == "host"]
    (planned / "build.json").write_text(json.dumps(summary, indent=2))
    return {"fixed": fixed, "planned": planned}


@pytest.fixture(scope="module")
def browser():
    with Chromium() as chromium:
        yield chromium


def _sections(page: Page) -> dict[str, str]:
    """Each device section's id -> its text."""
    return page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('section.device'))"
                         ".map(s => [s.id, s.innerText]))")


def _assert_clean(page: Page, report: Path) -> None:
    assert page.console_errors == []
    assert page.requests == [report.resolve().as_uri()]  # the page itself, nothing else: no CDN, no fonts
    assert page.evaluate("document.querySelectorAll('script, img, iframe, link, object, embed').length") == 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than a laptop screen"


def _drawn(charts: list[dict[str, Any]], section: str, kind: str) -> dict[str, Any]:
    found = [c for c in charts if c["section"] == section and c["kind"] == kind]
    assert len(found) == 1, (section, kind, charts)
    chart = found[0]
    assert chart["width"] > 100 and chart["height"] > 50, chart
    assert chart["marks"] > 0 and chart["drawn"] == chart["marks"], chart
    assert chart["texts"] > 3, chart  # axis labels and titles laid out
    return chart


@pytest.mark.slow
def test_fixed_build_report_draws_its_charts_in_chromium(dists, browser):
    report = write_report(dists["fixed"])
    assert report == dists["fixed"] / "report.html"
    page = browser.open(report)
    _assert_clean(page, report)
    charts = page.charts()
    host, pixel = "dev-0-host", "dev-1-pixel-8"
    for section in (host, pixel):
        budgets = _drawn(charts, section, "budgets")
        assert budgets["marks"] == 5  # one artifact: latency, size, memory, energy, accuracy drop
        _drawn(charts, section, "keep")
    ops = _drawn(charts, host, "ops")
    assert ops["marks"] >= 3  # XNNPACK's fully connected, convolution and depthwise kinds at least
    assert not [c for c in charts if c["kind"] in ("pareto", "stages")]
    assert {c["kind"] for c in charts if c["section"] == pixel} == {"budgets", "keep"}
    text = _sections(page)
    for section in (host, pixel):
        assert "No Pareto front: the plan was fixed" in text[section]
    assert "No per-operator profile" in text[pixel]
    assert "model.host-profile.etdp" in text[host]
    pixel_status = page.evaluate("Array.from(document.querySelectorAll('#dev-1-pixel-8 svg[data-chart=budgets] "
                                 "text.status')).map(t => t.lastChild.nodeValue)")
    assert pixel_status.count("unverified") == 3, pixel_status  # latency, memory, energy: a phone judged on a host


@pytest.mark.slow
def test_planned_build_report_draws_the_pareto_front(dists, browser):
    report = write_report(dists["planned"])
    page = browser.open(report)
    _assert_clean(page, report)
    charts = page.charts()
    pareto = _drawn(charts, "dev-0-host", "pareto")
    assert pareto["marks"] >= len(RECORDED_FRONT) + 1  # every front plan and the chosen one
    _drawn(charts, "dev-0-host", "stages")
    _drawn(charts, "dev-0-host", "budgets")
    chosen = page.evaluate("Array.from(document.querySelectorAll('svg[data-chart=pareto] circle.chosen.point'))"
                           ".map(c => c.getBBox()).filter(b => b.width > 0 && b.height > 0).length")
    assert chosen == 1
    planner_marks = page.evaluate("document.querySelectorAll('svg[data-chart=budgets] path.planned').length")
    assert planner_marks == 4 + 1  # latency, size, memory, energy, and the legend's
    text = _sections(page)["dev-0-host"]
    assert "14 plans on the front of 345 visited" in text
    assert "Chosen: executorch fp32, fpgm, 1 thread, keep 1/0.5/0.75/0.5/0.25/0.875" in text


def test_strings_from_a_manifest_are_escaped(dists, tmp_path, browser):
    hostile = '<script>document.title="owned"</script><img src="http://127.0.0.1:9/x.png">&amp;'
    dist = tmp_path / "dist"
    shutil.copytree(dists["planned"], dist)
    manifest_path = dist / "host" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["device"]["display_name"] = hostile
    manifest["artifacts"][0]["verdict"]["checks"][0]["note"] = hostile
    manifest["artifacts"][0]["quality"]["kind"] = hostile
    manifest["pruning"]["channels"][hostile] = [16, 8]
    manifest_path.write_text(json.dumps(manifest))
    summary = json.loads((dist / "build.json").read_text())
    summary["model"]["name"] = hostile
    summary["devices"][0]["planning"]["chosen"]["importance"] = hostile
    (dist / "build.json").write_text(json.dumps(summary))
    report = write_report(dist)
    assert "<script" not in report.read_text() and "<img" not in report.read_text()
    page = browser.open(report)
    _assert_clean(page, report)
    assert page.evaluate("document.querySelector('section.device h2').textContent") == hostile
    assert page.evaluate("document.title").startswith("edgeprune report: <script>")


def test_accuracy_labels_follow_the_quality_block():
    from edgeprune.report import _accuracy_cells

    what, text = _accuracy_cells({"kind": "eval_accuracy", "samples": 359, "split": "test", "artifact_accuracy": 0.98,
                                  "reference_accuracy": 0.99, "artifact_accuracy_ci95": [0.96, 0.99],
                                  "accuracy_drop_pct": 1.0, "accuracy_drop_ci95_pct": [-0.5, 2.5]})
    assert what == "top-1 accuracy, test split, 359 samples"
    assert text == "98.00% (95% CI 96.0%–99.0%); unpruned 99.00%; drop 1.00 points (-0.50 to 2.50)"
    what, text = _accuracy_cells({"kind": "eval_accuracy", "artifact_accuracy": 0.98, "reference_accuracy": 0.99})
    assert (what, text) == ("top-1 accuracy", "98.00%; unpruned 99.00%")
    what, text = _accuracy_cells({"kind": "agreement_with_reference", "artifact_accuracy": 0.9, "samples": 64,
                                  "artifact_accuracy_ci95": "not a pair"})
    assert what == "top-1 agreement with the unpruned model (no labels), 64 samples" and text == "90.00%"


def test_a_folder_without_a_build_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no build.json in .*looked for .*build.json"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "build.json").write_text('{"devices": [{"device": "pixel-8", "dir": "pixel-8"}]}')
    with pytest.raises(ConfigError, match=r"no device manifest .*looked for .*pixel-8/manifest.json"):
        write_report(tmp_path)
    (tmp_path / "build.json").write_text("{not json")
    with pytest.raises(ConfigError, match="build.json' is not readable JSON"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_report_command_rewrites_the_page(dists, tmp_path):
    import argparse
    import io

    from rich.console import Console

    from edgeprune import cli_report

    parser = argparse.ArgumentParser()
    cli_report.add_parsers(parser.add_subparsers(dest="command"), argparse.ArgumentParser)
    dist = tmp_path / "dist"
    shutil.copytree(dists["planned"], dist)
    out = io.StringIO()
    assert cli_report.run(parser.parse_args(["report", str(dist)]), Console(file=out)) == 0
    assert out.getvalue().strip() == f"wrote {dist / 'report.html'}"
    assert (dist / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in dist.iterdir() if p.name.startswith(".")] == []  # no temp file left by the atomic write
    with pytest.raises(ConfigError, match="no build.json"):
        cli_report.run(parser.parse_args(["report", str(tmp_path)]), Console(file=out))


def test_an_unreadable_or_outside_etdump_is_named_not_fatal(dists, tmp_path):
    dist = tmp_path / "dist"
    shutil.copytree(dists["planned"], dist)
    manifest_path = dist / "host" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    extra = manifest["artifacts"][0]["measured"]["extra"]
    (dist / "host" / "model.host-profile.etdp").write_bytes(b"not an etdump")
    page = write_report(dist).read_text()
    assert "The ETDump model.host-profile.etdp (executorch fp32 on host) could not be read" in page
    outside = tmp_path / "elsewhere.etdp"
    outside.write_bytes(b"x")
    extra["etdump_path"] = str(outside)
    manifest_path.write_text(json.dumps(manifest))
    page = write_report(dist).read_text()
    assert "lies outside the dist folder; not read" in page and 'data-chart="budgets"' in page


ODD_VALUES = [None, "<x>", "", [], {}, -1, 0, 0.5, 1e308, 1e-300, -1e15, True, [1, 2], [0, 0], {"a": 1}, "stage1"]


def _mangle(obj: Any, rng: random.Random, share: float) -> Any:
    """The same structure with about `share` of its values (leaves, lists, objects) replaced by odd ones."""
    if isinstance(obj, (dict, list)) and rng.random() >= share / 6:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        out = {k: _mangle(v, rng, share) for k, v in items}
        return out if isinstance(obj, dict) else list(out.values())
    return obj if rng.random() >= share else rng.choice(ODD_VALUES)


def test_manifests_of_odd_values_still_render(dists, tmp_path):
    """Manifests are untrusted: any value of any type where a figure belongs leaves a page, not a traceback."""
    summary = json.loads((dists["planned"] / "build.json").read_text())
    manifest = json.loads((dists["planned"] / "host" / "manifest.json").read_text())
    for seed in range(120):
        rng = random.Random(seed)
        dist = tmp_path / f"dist{seed}"
        (dist / "host").mkdir(parents=True)
        share = 1.0 if seed < len(ODD_VALUES) else 0.4  # first every value odd, then a random part of them
        odd_summary = {k: _mangle(v, rng, share) for k, v in summary.items()}  # still objects at the top:
        odd_summary["devices"] = [{"device": "host", "dir": "host",  # anything else is a ConfigError
                                   "planning": _mangle(RECORDED_PLANNING, rng, share)}]
        (dist / "build.json").write_text(json.dumps(odd_summary))
        (dist / "host" / "manifest.json").write_text(json.dumps({k: _mangle(v, rng, share) for k, v in manifest.items()}))
        page = write_report(dist).read_text()
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>"), seed
