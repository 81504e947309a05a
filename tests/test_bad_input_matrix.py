"""The bad-input matrix: for each case, a one-line typed error naming the value, its exit code, and nothing written or
lost (the working folder, with an earlier dist/ in it, is byte-identical afterwards).

Each case is (id, setup, argv, exit code, text the error must contain). `setup(tmp)` writes the case's inputs;
`argv` may use {tmp} for the case's folder. The cases span profiles, model specs, weights, data, budgets, plans,
manifests, command-line flags, device specs and output paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import shutil
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from edgeprune.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIXEL8 = yaml.safe_load((ROOT / "device_profiles" / "pixel-8.yaml").read_text())
TINY = """
import torch
from torch import nn

class Tiny(nn.Module):
    example_input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))

def tiny():
    return Tiny()

def shapeless():
    m = Tiny()
    del Tiny.example_input_shape
    return m

def not_a_module():
    return 42
"""


def _nothing(tmp: pathlib.Path) -> None:
    pass


def _profile(**changes) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        data = json.loads(json.dumps(PIXEL8))
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node[key]
            if value is _DELETE:
                del node[leaf]
            else:
                node[leaf] = value
        (tmp / "phone.yaml").write_text(yaml.safe_dump(data))
    return setup


_DELETE = object()


def _text(name: str, text: str) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        (tmp / name).write_text(text)
    return setup


def _weights(kind: str) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        path = tmp / "w.pt"
        if kind == "garbage":
            path.write_bytes(b"\x00not a zip\xff" * 10)
        elif kind == "tensor":
            torch.save(torch.zeros(3), path)
        elif kind == "pickled-code":
            path.write_bytes(pickle.dumps(os.getcwd))  # a callable: refused, never called
        elif kind == "mismatch":
            torch.save({"conv.weight": torch.zeros(1)}, path)
    return setup


def _npz(**arrays) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        np.savez(tmp / "d.npz", **arrays)
    return setup


GOOD_X = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
GOOD_Y = np.arange(40) % 10
NAN_X = GOOD_X.copy()
NAN_X[3, 0, 0, 0] = np.nan


def _plan(**changes) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        plan = {"schema_version": 1, "device": "host", "model": {"spec": "examples:digits"},
                "plan": {"target": "onnx", "scheme": "fp32", "importance": "l2", "round_to": 8, "threads": 1,
                         "seed": 0, "layer_keep_ratios": {}},
                "channels": {}, "recovery": None}
        for key, value in changes.items():
            (plan["plan"] if key in plan["plan"] else plan)[key] = value
        (tmp / "plan.yaml").write_text(yaml.safe_dump(plan))
    return setup


_REAL_BUILD: dict[str, pathlib.Path] = {}
"""The device folder of one real build (the `real_build` fixture), which the manifest cases copy and alter."""


def _manifest(entry_changes: dict | None = None, raw: str | None = None) -> Callable[[pathlib.Path], None]:
    def setup(tmp: pathlib.Path) -> None:
        folder = tmp / "built" / "host"
        shutil.copytree(_REAL_BUILD["host"], folder)
        (tmp / "secret.onnx").write_bytes(b"outside the dist folder")
        if raw is not None:
            (folder / "manifest.json").write_text(raw)
            return
        manifest = json.loads((folder / "manifest.json").read_text())
        entry = manifest["artifacts"][0]
        entry.update(entry_changes or {})
        if entry["path"] == "<absolute secret>":
            entry["path"] = str(tmp / "secret.onnx")
        target = (folder / entry["path"]).resolve()
        if target.is_file():  # the digest matches the outside file: only the path check can refuse it
            entry["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return setup


B = ["build", "--out", "{tmp}/dist", "--quiet", "--runs", "2", "--warmup", "0", "--blocks", "1"]
DIGITS = [*B, "--model", "examples:digits"]
FIXED = [*DIGITS, "--prune", "0", "--quant", "fp32", "--target", "onnx"]
TINYB = [*B, "--model", "matrix_models:tiny", "--prune", "0", "--quant", "fp32", "--target", "onnx"]
V = ["validate", "{tmp}/built", "--runs", "2", "--warmup", "0", "--blocks", "1"]

CASES = [
    # profiles
    ("profile-unknown-name", _nothing, [*FIXED, "--device", "pixel9"], 2, "profile 'pixel9' not found"),
    ("profile-missing-file", _nothing, [*FIXED, "--device", "{tmp}/nope.yaml"], 2, "does not exist"),
    ("profile-malformed-yaml", _text("phone.yaml", "name: [unclosed\n"), [*FIXED, "--device", "{tmp}/phone.yaml"], 2,
     "malformed YAML"),
    ("profile-unknown-key", _profile(colour="red"), [*FIXED, "--device", "{tmp}/phone.yaml"], 2, "colour"),
    ("profile-negative-budget", _profile(budget__latency_ms=-5), [*FIXED, "--device", "{tmp}/phone.yaml"], 2,
     "latency_ms"),
    ("profile-missing-sources", _profile(sources=_DELETE), [*FIXED, "--device", "{tmp}/phone.yaml"], 2, "sources"),
    ("profile-unsupported-target", _profile(supported_targets=["executorch"]),
     [*FIXED, "--device", "{tmp}/phone.yaml"], 2, "does not support target 'onnx'"),
    ("profile-not-a-mapping", _text("phone.yaml", "- a\n- b\n"), [*FIXED, "--device", "{tmp}/phone.yaml"], 2,
     "mapping"),
    ("device-given-twice", _nothing, [*FIXED, "--device", "host", "--device", "host"], 2, "given twice"),
    # model specs
    ("model-spec-without-form", _nothing, [*B, "--model", "resnet", "--prune", "0", "--quant", "fp32"], 2,
     "not understood"),
    ("model-unknown-example", _nothing, [*B, "--model", "examples:cats", "--prune", "0", "--quant", "fp32"], 2,
     "unknown example"),
    ("model-unknown-torchvision", _nothing, [*B, "--model", "torchvision:resnet9000", "--prune", "0", "--quant",
                                             "fp32"], 2, "unknown architecture"),
    ("model-module-does-not-import", _nothing, [*B, "--model", "nosuchpkg.models:f", "--prune", "0", "--quant",
                                                "fp32"], 2, "does not import"),
    ("model-factory-not-a-module", _nothing, [*B, "--model", "matrix_models:not_a_module", "--prune", "0", "--quant",
                                              "fp32"], 2, "not a torch.nn.Module"),
    ("model-factory-missing", _nothing, [*B, "--model", "matrix_models:nothing_here", "--prune", "0", "--quant",
                                         "fp32"], 2, "no callable"),
    ("model-shape-mismatch", _nothing, [*TINYB, "--input-shape", "1,3,8,8"], 2, "fails on an input of shape"),
    ("model-input-shape-batch-2", _nothing, [*TINYB, "--input-shape", "2,1,8,8"], 2, "batch"),
    # weights
    ("weights-missing", _nothing, [*TINYB, "--weights", "{tmp}/none.pt"], 2, "does not exist"),
    ("weights-garbage", _weights("garbage"), [*TINYB, "--weights", "{tmp}/w.pt"], 2, "w.pt"),
    ("weights-a-tensor", _weights("tensor"), [*TINYB, "--weights", "{tmp}/w.pt"], 2, "not a state_dict"),
    ("weights-pickled-code", _weights("pickled-code"), [*TINYB, "--weights", "{tmp}/w.pt"], 2, "refused"),
    ("weights-wrong-keys", _weights("mismatch"), [*TINYB, "--weights", "{tmp}/w.pt"], 2, "does not match"),
    # data
    ("data-missing", _nothing, [*TINYB, "--data", "{tmp}/none.npz"], 2, "none.npz"),
    ("data-npz-without-x", _npz(y=GOOD_Y), [*TINYB, "--data", "{tmp}/d.npz"], 2, "x"),
    ("data-wrong-shape", _npz(x=GOOD_X[:, :, :4], y=GOOD_Y), [*TINYB, "--data", "{tmp}/d.npz"], 2, "shape"),
    ("data-with-nan", _npz(x=NAN_X, y=GOOD_Y), [*TINYB, "--data", "{tmp}/d.npz"], 2, "NaN"),
    ("data-label-count", _npz(x=GOOD_X, y=GOOD_Y[:30]), [*TINYB, "--data", "{tmp}/d.npz"], 2, "label"),
    ("data-no-samples", _npz(x=GOOD_X[:0], y=GOOD_Y[:0]), [*TINYB, "--data", "{tmp}/d.npz"], 2, "d.npz"),
    # budgets
    ("budget-negative-latency", _nothing, [*FIXED, "--latency-ms", "-3"], 2, "-3"),
    ("budget-latency-not-a-number", _nothing, [*FIXED, "--latency-ms", "fast"], 2, "'fast' is not a number"),
    ("budget-zero-size", _nothing, [*FIXED, "--size-mb", "0"], 2, "must be > 0"),
    ("budget-negative-accuracy-drop", _nothing, [*FIXED, "--max-accuracy-drop", "-1"], 2, "must be >= 0"),
    ("budget-accuracy-without-labels", _nothing, [*B, "--model", "matrix_models:tiny", "--prune", "0", "--quant",
                                                  "fp32", "--max-accuracy-drop", "1"], 2, "labelled"),
    # plans (apply)
    ("plan-missing", _nothing, ["apply", "{tmp}/plan.yaml", "--model", "examples:digits", "--out", "{tmp}/dist"], 2,
     "does not exist"),
    ("plan-not-yaml", _text("plan.yaml", "plan: [unclosed\n"), ["apply", "{tmp}/plan.yaml", "--model",
                                                                 "examples:digits", "--out", "{tmp}/dist"], 2,
     "not readable YAML"),
    ("plan-newer-schema", _plan(schema_version=99), ["apply", "{tmp}/plan.yaml", "--model", "examples:digits",
                                                     "--out", "{tmp}/dist"], 2, "newer"),
    ("plan-unknown-target", _plan(target="coreml"), ["apply", "{tmp}/plan.yaml", "--model", "examples:digits",
                                                     "--out", "{tmp}/dist"], 2, "coreml"),
    ("plan-keep-ratio-zero", _plan(layer_keep_ratios={"features.0": 0.0}),
     ["apply", "{tmp}/plan.yaml", "--model", "examples:digits", "--out", "{tmp}/dist"], 2, "keep ratio"),
    ("plan-zero-threads", _plan(threads=0), ["apply", "{tmp}/plan.yaml", "--model", "examples:digits", "--out",
                                             "{tmp}/dist"], 2, "threads"),
    # manifests (validate)
    ("manifest-folder-without-one", _nothing, ["validate", "{tmp}", "--runs", "2"], 2, "manifest"),
    ("manifest-not-json", _manifest(raw="{not json"), V, 2, "manifest"),
    ("manifest-path-escapes", _manifest({"path": "../../secret.onnx"}), V, 2, "outside its folder"),
    ("manifest-absolute-path", _manifest({"path": "<absolute secret>"}), V, 2, "outside its folder"),
    ("manifest-entry-not-a-mapping", _manifest(raw=json.dumps({"schema_version": 1, "device": {"name": "host"},
                                                               "artifacts": [7]})), V, 2, "manifest"),
    # command-line flags
    ("flag-prune-out-of-range", _nothing, [*DIGITS, "--prune", "1.5", "--quant", "fp32"], 2, "--prune 1.5"),
    ("flag-unknown-quant", _nothing, [*DIGITS, "--quant", "int4"], 2, "int4"),
    ("flag-unknown-target", _nothing, [*DIGITS, "--prune", "0", "--target", "coreml"], 2, "coreml"),
    ("flag-zero-blocks", _nothing, [*FIXED[:-8], "--runs", "2", "--blocks", "0", "--model", "examples:digits",
                                    "--prune", "0", "--quant", "fp32", "--target", "onnx"], 2, "blocks"),
    ("flag-zero-threads", _nothing, [*FIXED, "--threads", "0"], 2, "--threads 0"),
    ("flag-unknown-option", _nothing, [*FIXED, "--colour", "red"], 2, "unrecognized arguments"),
    ("flag-negative-finetune", _nothing, [*FIXED, "--finetune-epochs", "-1"], 2, "finetune-epochs"),
    ("flag-unknown-scheme-to-search", _nothing, [*DIGITS, "--schemes", "fp32,int3"], 2, "int3"),
    # device specs
    ("on-unknown-form", _nothing, [*FIXED, "--on", "bluetooth:phone"], 2, "bluetooth:phone"),
    ("on-adb-all-for-build", _nothing, [*FIXED, "--on", "adb:all"], 2, "adb:all"),
    ("on-ssh-without-host", _nothing, [*FIXED, "--on", "ssh:"], 2, "ssh:"),
    # output paths
    ("out-is-a-file", _text("dist", "I am a file"), FIXED, 2, "is not a folder"),
    ("out-below-a-file", _text("blocker", "x"), [*FIXED[:2], "{tmp}/blocker/dist", *FIXED[3:]], 2, "is a file"),
]


@pytest.fixture(scope="module", autouse=True)
def real_build(tmp_path_factory, digits_model):
    import edgeprune

    out = tmp_path_factory.mktemp("real") / "dist"
    edgeprune.build("examples:digits", targets=["onnx"], plan=edgeprune.FixedPlan(),
                    measure=edgeprune.Measure(runs=2, warmup=0, blocks=1), out=out)
    _REAL_BUILD["host"] = out / "host"


@pytest.fixture
def models_on_path(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "matrix_models.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(pkg))
    return pkg


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_the_matrix_has_at_least_40_cases_in_every_area():
    areas = {case[0].split("-")[0] for case in CASES}
    assert len(CASES) >= 40
    assert areas >= {"profile", "model", "weights", "data", "budget", "plan", "manifest", "flag", "on", "out"}


@pytest.mark.parametrize("name, setup, argv, code, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, digits_model, models_on_path, name, setup, argv, code, needle):
    case = tmp_path / "case"
    case.mkdir()
    setup(case)
    if not (case / "dist").exists():  # an earlier build's output must survive the refused run untouched
        (case / "dist" / "host").mkdir(parents=True)
        (case / "dist" / "host" / "manifest.json").write_text('{"earlier": true}')
    before = _snapshot(case)
    try:
        got = main([a.replace("{tmp}", str(case)) for a in argv])
    except SystemExit as exc:  # argparse refuses a flag before main's handlers run
        got = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, f"{name}: exit {got}, stderr {err!r}"
    assert len(lines) == 1, f"{name}: expected a one-line error, got {err!r}"
    assert needle in lines[0], f"{name}: {needle!r} not in {lines[0]!r}"
    assert "internal error" not in lines[0]
    assert _snapshot(case) == before, f"{name}: the run wrote or removed files"
