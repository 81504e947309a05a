"""End to end through the real ExecuTorch runtime: build, then check the files a user and an app build get."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.data import digits_split


def build(capsys, out: pathlib.Path, *extra: str) -> tuple[int, dict]:
    code = main(["build", "--out", str(out), "--json", "--runs", "20", "--warmup", "3", *extra])
    stdout = capsys.readouterr().out
    return code, json.loads(stdout)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def int8_build(digits_int8_build):
    """The issue's acceptance command: digits on host (and two phones), half the channels pruned, static int8, 3 blocks
    of 30 runs; the session's shared build (tests/conftest.py), which the integrate tests read too."""
    return digits_int8_build


def by_target(manifest: dict) -> dict[str, dict]:
    return {a["target"]: a for a in manifest["artifacts"]}


def test_int8_build_writes_pte_manifest_and_build_json(int8_build):
    code, summary, out = int8_build
    assert code == 0, summary
    assert (out / "host" / "model.pte").is_file()
    assert summary["skipped_targets"] == {}
    assert (out / "host" / "manifest.json").is_file()
    assert json.loads((out / "build.json").read_text()) == summary
    assert not list(out.glob(".staging-*")) and not list(out.parent.glob(f".{out.name}.staging-*")), \
        "staging folder left behind"


def test_manifest_matches_the_file_and_the_plan(int8_build):
    _, summary, out = int8_build
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    art = by_target(manifest)["executorch"]
    pte = out / "host" / art["path"]
    assert art["sha256"] == sha256(pte)
    assert art["size_bytes"] == pte.stat().st_size
    assert art["target"] == "executorch" and art["scheme"] == "int8"
    assert art["inputs"][0]["shape"] == [1, 1, 8, 8] and art["outputs"][0]["shape"] == [1, 10]
    assert art["lowering"]["delegated_share"] > 0.9
    pruning = manifest["pruning"]
    assert pruning["params_after"] < 0.5 * pruning["params_before"]
    assert pruning["macs_after"] < 0.5 * pruning["macs_before"]
    assert pruning["channels"], "no layer changed width"
    for name, (before, after) in pruning["channels"].items():
        assert after < before and after % 8 == 0, (name, before, after)
    assert manifest["model"]["preprocessing"]
    assert manifest["device"]["name"] == "host"


def test_quality_and_verdicts(int8_build):
    _, _, out = int8_build
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    art = by_target(manifest)["executorch"]
    quality = art["quality"]
    assert quality["kind"] == "eval_accuracy"
    assert quality["parity_metric"] == "top1_agreement" and quality["parity_value"] >= 0.98
    assert quality["reference_accuracy"] >= 0.97
    assert quality["samples"] == len(digits_split().eval_x)
    measured = art["measured"]
    assert measured["where"] == "host" and measured["runner"] == "executorch.runtime"
    assert 0 < measured["latency_p50_ms"] <= measured["latency_p90_ms"]
    assert measured["runs"] == 3 * 30 and measured["peak_memory_mb"] > art["size_bytes"] / 1e6  # 3 blocks of 30
    assert len(measured["extra"]["block_p50_ms"]) == 3
    assert measured["latency_p50_ms"] == pytest.approx(float(np.median(measured["extra"]["block_p50_ms"])), abs=1e-5)
    predicted = art["predicted"]
    assert predicted["device"] == "host" and predicted["status"] in ("uncalibrated", "estimated", "calibrated")
    for key in ("latency_p50_ms", "model_size_mb", "peak_memory_mb", "energy_mj"):
        assert predicted[key] > 0, key
    checks = {c["name"]: c for c in art["verdict"]["checks"]}
    assert set(checks) == {"latency", "model_size", "peak_memory", "energy", "accuracy_drop"}
    for name in ("latency", "model_size", "peak_memory", "accuracy_drop"):
        c = checks[name]
        assert c["status"] == ("pass" if c["value"] <= c["limit"] else "fail"), c
    assert checks["energy"]["status"] == "unverified" and "modelled" in checks["energy"]["note"]


def test_pte_runs_on_its_own_with_the_reported_accuracy(int8_build):
    """Load the .pte with executorch.runtime directly (no edgeprune code) and recompute eval accuracy."""
    import torch
    from executorch.runtime import Runtime

    _, _, out = int8_build
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    method = Runtime.get().load_program(str(out / "host" / "model.pte")).load_method("forward")
    data = digits_split()
    preds = [int(method.execute((torch.from_numpy(x[None]),))[0].argmax()) for x in data.eval_x]
    accuracy = float((np.array(preds) == data.eval_y).mean())
    assert accuracy == pytest.approx(by_target(manifest)["executorch"]["quality"]["artifact_accuracy"], abs=1e-9)


def test_every_target_the_host_supports_is_built_loaded_and_parity_checked(int8_build):
    """By default a device gets every target it supports; each artifact loads in its own runtime."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    _, _, out = int8_build
    arts = by_target(json.loads((out / "host" / "manifest.json").read_text()))
    assert set(arts) == {"executorch", "tflite", "onnx"}
    for target, art in arts.items():
        path = out / "host" / art["path"]
        assert path.suffix == {"executorch": ".pte", "tflite": ".tflite", "onnx": ".onnx"}[target]
        assert art["sha256"] == sha256(path)
        assert art["quality"]["parity_passed"] is True and art["quality"]["parity_value"] >= 0.98
        assert art["measured"]["latency_p50_ms"] > 0 and art["lowering"]
    interpreter = Interpreter(model_path=str(out / "host" / arts["tflite"]["path"]))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # static int8 LiteRT models take int8 input
    session = onnxruntime.InferenceSession(str(out / "host" / arts["onnx"]["path"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 1, 8, 8]


def test_fleet_fp32_build_never_passes_a_phone_budget_on_a_host_measurement(digits_fp32_build):
    # `build --model examples:digits --device pixel-8 --device host --target executorch`, shared (tests/conftest.py)
    code, summary, out = digits_fp32_build
    assert {d["device"] for d in summary["devices"]} == {"pixel-8", "host"}
    phone = json.loads((out / "pixel-8" / "manifest.json").read_text())
    host = json.loads((out / "host" / "manifest.json").read_text())
    assert (out / "pixel-8" / "model.pte").read_bytes() == (out / "host" / "model.pte").read_bytes()
    phone_checks = {c["name"]: c for c in phone["artifacts"][0]["verdict"]["checks"]}
    assert phone_checks["latency"]["status"] == "unverified"
    assert phone_checks["latency"]["value"] > 0 and "measured on host" in phone_checks["latency"]["note"]
    assert phone_checks["peak_memory"]["status"] == "unverified"
    assert phone_checks["model_size"]["status"] == "pass"
    host_quality = host["artifacts"][0]["quality"]
    assert host_quality["parity_metric"] == "max_abs_diff" and host_quality["parity_value"] <= 1e-4
    assert code == (0 if summary["passed"] else 3)


def test_a_missed_budget_exits_3_and_says_which(tmp_path, capsys, digits_model):
    out = tmp_path / "dist"
    code, summary = build(capsys, out, "--model", "examples:digits", "--latency-ms", "0.0001", "--target", "executorch",
                          "--prune", "0", "--quant", "fp32")  # a fixed plan: built, then judged
    assert code == 3 and summary["passed"] is False
    checks = summary["devices"][0]["artifacts"][0]["checks"]
    assert checks["latency"] == "fail"
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    assert manifest["passed"] is False


def test_without_data_reports_agreement_and_judges_no_accuracy(tmp_path, capsys, user_models):
    out = tmp_path / "dist"
    code, summary = build(capsys, out, "--model", "user_models:tiny", "--prune", "0.5", "--target", "executorch")
    assert summary["data"]["labelled"] is False and summary["data"]["source"] == "generated"
    manifest = json.loads((out / "host" / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    assert art["quality"]["kind"] == "agreement_with_reference"
    assert art["quality"]["reference_accuracy"] is None
    checks = {c["name"]: c for c in art["verdict"]["checks"]}
    assert checks["accuracy_drop"]["status"] == "unverified"
    assert code in (0, 3)


def test_rebuild_replaces_the_device_folder_whole(tmp_path, capsys, user_models):
    out = tmp_path / "dist"
    build(capsys, out, "--model", "user_models:tiny", "--target", "onnx")
    (out / "host" / "stale.txt").write_text("left from an older build")
    build(capsys, out, "--model", "user_models:tiny", "--prune", "0.5", "--target", "onnx")
    assert not (out / "host" / "stale.txt").exists()
    assert not list(out.parent.glob(f".{out.name}.staging-*"))
