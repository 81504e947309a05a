"""Shared fixtures: one model cache per test session, one trained digits model, the digits builds that several
modules read (built once per session; a test that changes a build works on its own copy), and calibration exports
made once per session."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """Point edgeprune's model cache at a folder private to this test session."""
    path = tmp_path_factory.mktemp("edgeprune-cache")
    old = os.environ.get("EDGEPRUNE_CACHE_DIR")
    os.environ["EDGEPRUNE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EDGEPRUNE_CACHE_DIR", None)
    else:
        os.environ["EDGEPRUNE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits_training(cache_dir, tmp_path_factory) -> dict:
    """The bundled example's one real training run of the session, into a cache folder of its own (progress calls
    and seconds recorded, for tests/test_digits_example.py); the weights are then copied into the session's cache,
    where `examples:digits` and `digits.load_trained()` find them."""
    from edgeprune.examples import digits

    folder = tmp_path_factory.mktemp("digits-cache")
    calls: list[tuple[int, int]] = []
    start = time.perf_counter()
    model = digits.load_trained(cache_dir=folder, progress=lambda e, n: calls.append((e, n)))
    seconds = time.perf_counter() - start
    shutil.copyfile(digits.weights_path(folder), digits.weights_path(cache_dir))
    return {"model": model, "cache": folder, "seconds": seconds, "progress": calls}


@pytest.fixture(scope="session")
def digits_model(digits_training):
    """The bundled example, trained once for the whole session."""
    return digits_training["model"]


def _cli_build(out: Path, *argv: str) -> tuple[int, dict, Path]:
    """`edgeprune build ... --out OUT --json` in process: (exit code, the printed summary, OUT)."""
    from edgeprune.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["build", *argv, "--out", str(out), "--json"])
    return code, json.loads(buf.getvalue()), out


@pytest.fixture(scope="session")
def digits_fp32_build(tmp_path_factory, digits_model) -> tuple[int, dict, Path]:
    """(code, summary, dist): the digits example unpruned at fp32 for ExecuTorch, for pixel-8 and host, built once
    per session. Read it, never change it: tests that validate (which appends to manifests) work on a copy."""
    out = tmp_path_factory.mktemp("digits-fp32") / "dist"
    return _cli_build(out, "--model", "examples:digits", "--device", "pixel-8", "--device", "host", "--target",
                      "executorch", "--runs", "20", "--warmup", "3")


@pytest.fixture(scope="session")
def digits_int8_build(tmp_path_factory, digits_model) -> tuple[int, dict, Path]:
    """(code, summary, dist): the digits example, half the channels pruned, static int8, every target, for host,
    pixel-8 and galaxy-a14, built once per session (3 blocks of 30 runs). Read it, never change it.

    It is also the shared build of tests/integrate_dist.py (same devices, plan and targets), so the manifest-schema
    tests read this one instead of building their own."""
    out = tmp_path_factory.mktemp("digits-int8") / "dist"
    built = _cli_build(out, "--model", "examples:digits", "--device", "host", "--device", "pixel-8", "--device",
                       "galaxy-a14", "--prune", "0.5", "--quant", "int8", "--runs", "30", "--warmup", "5")
    import integrate_dist

    if tuple(integrate_dist.DEVICES) == ("host", "pixel-8", "galaxy-a14"):
        integrate_dist._BUILT.setdefault("dist", out)
    return built


# ------------------------------------------------------------------------------------------------ calibration


def _network_key(model, example, target: str, scheme: str, threads: int) -> str:
    """What a calibration export is made from: the modules (their repr and plain attributes such as a block's
    `residual` or the head's `keepdim`), every tensor of the state, the example input, and (target, scheme, threads)."""
    h = hashlib.sha256(repr(model).encode())
    for name, module in model.named_modules():
        plain = {k: v for k, v in vars(module).items()
                 if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None)))}
        h.update(f"{name}:{type(module).__qualname__}:{sorted(plain.items())!r}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(example.detach().cpu().contiguous().numpy().tobytes())
    h.update(f"{tuple(example.shape)}|{target}|{scheme}|{threads}".encode())
    return h.hexdigest()


@pytest.fixture(scope="session")
def _calibration_exports(tmp_path_factory) -> tuple[Path, dict]:
    return tmp_path_factory.mktemp("calibration-exports"), {}


@pytest.fixture(scope="module")
def reuse_calibration_exports(_calibration_exports):
    """For the rest of the module, `run_calibration` exports each suite network (and the reference network) once per
    session: a network exported before from the same modules, weights, example, target, scheme and thread count is a
    copy of that real export (a calibration deletes its files after each run, so the first export is kept aside)."""
    from edgeprune.cost import calibrate

    folder, done = _calibration_exports
    export = calibrate.export_network

    def export_once(model, example, target, scheme, threads, workdir):
        key = _network_key(model, example, target, scheme, threads)
        if key not in done:
            keep = folder / key[:24]
            keep.mkdir()
            done[key] = export(model, example, target, scheme, threads, keep)
        first = done[key]
        path = Path(workdir) / first.path.name
        shutil.copyfile(first.path, path)
        return dataclasses.replace(first, path=path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calibrate, "export_network", export_once)
        yield


TINY_FACTORY = textwrap.dedent(
    '''
    import torch
    from torch import nn

    class Tiny(nn.Module):
        example_input_shape = (1, 1, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            return self.head(x.mean((2, 3)))

    def tiny():
        torch.manual_seed(0)
        return Tiny()

    def not_a_module():
        return {"weights": 1}
    '''
)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A user model package `user_models` importable as `user_models:tiny`."""
    (tmp_path / "user_models.py").write_text(TINY_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_models"
