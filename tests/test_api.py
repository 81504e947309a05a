"""The Python API: README's example as written, typed results and errors, the run log, and the project config."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeprune
from edgeprune._runlog import keep_log, run_log
from edgeprune.cli import command_line, main
from edgeprune.errors import ConfigError, ModelError

ROOT = Path(__file__).resolve().parents[1]
FLOOD_MARKERS = ("WARNING", "Warning", "absl", "oneDNN", "TensorFlow", "tensorflow", "INFO:", "LiteRT-Torch Convert",
                 "cpuinfo", "[START]")
GLOG_LINE = re.compile(r"^[IWEF]\d{4} ", re.M)  # absl/glog: W1206 21:39:12.978000 ...


def _floods(text: str) -> list[str]:
    return [m for m in FLOOD_MARKERS if m in text] + GLOG_LINE.findall(text)


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- python-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no marked python example"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path, cache_dir):
    """The README's example, run in a fresh interpreter: artifacts and verdicts for both devices."""
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    env = os.environ | {"EDGEPRUNE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["host", "pixel-8"]
    for line in lines:
        assert "model.pte" in line and "test top-1" in line and "no budget failed" in line, line
    pte = tmp_path / "dist-api" / "host" / "model.pte"
    assert pte.is_file() and pte.stat().st_size > 0
    manifest = json.loads((tmp_path / "dist-api" / "host" / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "python:Sequential"
    assert manifest["data"]["source"] == "in-memory arrays"
    # quiet: what the converters printed is in the log, not on the terminal
    assert not _floods(proc.stderr + proc.stdout), proc.stderr[-2000:]
    assert (tmp_path / "dist-api" / "edgeprune.log").stat().st_size > 0


def _readme_main_command() -> list[str]:
    text = (ROOT / "README.md").read_text()
    line = next(line for line in text.splitlines() if "edgeprune build --model examples:digits" in line and "&&" in line)
    return line.split("&&")[-1].split()[1:]  # the arguments after .venv/bin/edgeprune


@pytest.mark.slow
def test_readme_main_command_shows_no_third_party_output(tmp_path, cache_dir, digits_model):
    """The README's main command in a real process: only edgeprune's progress and summary on the terminal (at most
    100 columns), the converters' and runtimes' output in dist/edgeprune.log. (`digits_model`: the process loads the
    session's trained example from the cache rather than training it again.)"""
    args = _readme_main_command()
    assert args[:3] == ["build", "--model", "examples:digits"], args
    env = os.environ | {"EDGEPRUNE_CACHE_DIR": str(cache_dir), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = proc.stdout + proc.stderr
    assert not _floods(terminal), terminal[-3000:]
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100
    assert "no budget failed" in proc.stdout
    log = (tmp_path / "dist" / "edgeprune.log").read_text()
    assert _floods(log), "the converters printed nothing at all: the check above proves nothing"


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))


def _arrays(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 4, n)


def test_build_from_memory_returns_typed_results_and_leaves_the_module_alone(tmp_path):
    model = _tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = edgeprune.build(model, _arrays(), input_shape=(1, 1, 8, 8), targets=["onnx"],
                             plan=edgeprune.FixedPlan(prune=0.25, finetune_epochs=1),
                             measure=edgeprune.Measure(runs=5, warmup=1, blocks=1), out=tmp_path / "dist")
    host = result.devices["host"]
    art = host.artifact("onnx")
    assert (host.folder / art.file).is_file()
    assert art.measurement.latency_p50_ms > 0 and art.verdict.checks
    assert host.plan.keep_ratio == 0.75 and host.plan.scheme == "fp32"
    assert result.summary["command"] == ["edgeprune.build(model='Sequential', devices=['host'])"]
    assert model.training, "the caller's module was put in eval mode"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="no 'executorch' artifact"):
        host.artifact("executorch")


def test_api_errors_are_the_typed_ones(tmp_path):
    with pytest.raises(ModelError, match="input shape unknown"):
        edgeprune.build(_tiny(), _arrays(), out=tmp_path / "a")
    with pytest.raises(ConfigError, match="data is a list"):
        edgeprune.build(_tiny(), [1, 2], input_shape=(1, 1, 8, 8), out=tmp_path / "b")
    with pytest.raises(ConfigError, match="latency_ms=-1"):
        edgeprune.build(_tiny(), _arrays(), input_shape=(1, 1, 8, 8), latency_ms=-1, out=tmp_path / "c")
    with pytest.raises(ConfigError, match="plan is a dict"):
        edgeprune.build(_tiny(), _arrays(), input_shape=(1, 1, 8, 8), plan={"prune": 0.5}, out=tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd"), "a refused build wrote something"


def test_run_log_keeps_third_party_output_off_the_terminal(tmp_path, capfd):
    with run_log() as term:
        os.write(1, b"native stdout banner\n")
        os.write(2, b"native stderr W0000 flood\n")
        print("python print from a converter")
        logging.getLogger("absl").warning("absl says hello")
        warnings.warn("a library deprecation", DeprecationWarning, stacklevel=1)
        print("edgeprune's own line", file=term.out)
    captured = capfd.readouterr()
    assert captured.out == "edgeprune's own line\n"
    assert captured.err == ""
    log = keep_log(term, tmp_path)
    text = log.read_text()
    for line in ("native stdout banner", "native stderr W0000 flood", "python print from a converter",
                 "absl says hello", "a library deprecation"):
        assert line in text


def test_verbose_run_log_shows_third_party_output_too(tmp_path, capfd):
    with run_log(verbose=True) as term:
        os.write(2, b"native flood line\n")
    captured = capfd.readouterr()
    assert "native flood line" in captured.err
    assert "native flood line" in keep_log(term, tmp_path).read_text()


def test_recorded_command_hides_key_paths():
    argv = ["validate", "dist", "--on", "ssh:pi@board", "--identity", "/home/me/.ssh/id_ed25519",
            "--known-hosts=/home/me/kh"]
    assert command_line(argv) == ("edgeprune", "validate", "dist", "--on", "ssh:pi@board", "--identity", "<given>",
                                  "--known-hosts=<given>")


# --- project config -------------------------------------------------------------------------------------------------

CONFIG = """\
schema_version: 1
out: dist
models:
  digits:
    model: examples:digits
    weights: weights.pt
    devices: [host]
    targets: [onnx]
    plan: {prune: 0.0, quant: fp32}
measure: {runs: 5, warmup: 1, blocks: 1}
"""


@pytest.mark.slow
def test_config_build_is_incremental(tmp_path, capsys, digits_model):
    torch.save(digits_model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "edgeprune.yaml").write_text(CONFIG)
    args = ["build", "--config", str(tmp_path / "edgeprune.yaml"), "--quiet"]
    assert main(args) == 0
    assert "digits: built" in capsys.readouterr().out
    onnx = tmp_path / "dist" / "digits" / "host" / "model.onnx"
    first = onnx.stat().st_mtime_ns

    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [f"digits: up to date (all budgets met): {tmp_path / 'dist' / 'digits'}"]
    assert onnx.stat().st_mtime_ns == first, "an up-to-date model was rebuilt"

    state = digits_model.state_dict()
    first_key = next(k for k, v in state.items() if v.dtype.is_floating_point)
    state[first_key] = state[first_key] * 1.001
    torch.save(state, tmp_path / "weights.pt")
    assert main(args) == 0
    assert "digits: built" in capsys.readouterr().out
    assert onnx.stat().st_mtime_ns != first, "changed weights did not rebuild"

    onnx.write_bytes(b"tampered")  # an artifact that no longer matches its manifest is rebuilt too
    assert main(args) == 0
    assert "digits: built" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("schema_version: 1\nmodels: {m: {model: examples:digits, colour: red}}\n", "models.m.colour: Extra inputs"),
    ("schema_version: 2\nmodels: {m: {model: examples:digits}}\n", "schema_version 2 is not supported"),
    ("schema_version: 1\nmodels: {}\n", "models"),
    ("schema_version: 1\nmodels: {../up: {model: examples:digits}}\n", "plain folder name"),
    ("- just a list\n", "must be a YAML mapping"),
    ("schema_version: 1\nmodels: {m: {model: examples:digits, plan: {prune: 1.5}}}\n", "models.m.plan.prune"),
])
def test_bad_config_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "edgeprune.yaml"
    path.write_text(text)
    assert main(["build", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeprune.yaml"]


def test_config_with_model_flags_is_refused(tmp_path, capsys):
    (tmp_path / "edgeprune.yaml").write_text(CONFIG)
    assert main(["build", "--config", str(tmp_path / "edgeprune.yaml"), "--model", "examples:digits"]) == 2
    assert "drop --model" in capsys.readouterr().err
