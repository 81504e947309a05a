"""Bad input: a one-line typed error naming the value and the fix, exit code 2, nothing written."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from edgeprune.cli import main

PIXEL8_YAML = pathlib.Path(__file__).resolve().parents[1] / "device_profiles" / "pixel-8.yaml"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got: {err!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def assert_nothing_written(out: pathlib.Path) -> None:
    assert not out.exists() or not any(out.iterdir()), f"{out} holds {list(out.iterdir())}"


def build_args(out: pathlib.Path, *extra: str, model: str = "user_models:tiny") -> list[str]:
    return ["build", "--model", model, "--out", str(out), "--quiet", "--runs", "3", "--warmup", "1", *extra]


def test_unknown_device_lists_known_ones(tmp_path, capsys):
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--device", "pixel9"))
    assert code == 2
    assert_one_line_error(err, "pixel9", "pixel-8", "host")
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("  latency_ms: 20\n", "  latency: 20\n", ["budget.latency", "unknown key"]),
        ("  latency_ms: 20\n", "  latency_ms: -5\n", ["budget.latency_ms", "-5"]),
        ("ram_gb: 8\n", "ram: 8\n", ["ram"]),
        ("platform: android\n", "platform: [android\n", ["malformed YAML"]),
    ],
    ids=["unknown-key", "negative-budget", "missing-unit", "malformed-yaml"],
)
def test_bad_profile_yaml(tmp_path, capsys, old, new, needles):
    text = PIXEL8_YAML.read_text()
    assert old in text
    profile = tmp_path / "my-phone.yaml"
    profile.write_text(text.replace(old, new))
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--device", str(profile)))
    assert code == 2
    assert_one_line_error(err, "my-phone.yaml", *needles)
    assert_nothing_written(out)


def test_model_spec_that_does_not_import(tmp_path, capsys):
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, model="no_such_pkg.models:make"))
    assert code == 2
    assert_one_line_error(err, "no_such_pkg.models:make", "does not import")
    assert_nothing_written(out)


def test_factory_returning_no_module(tmp_path, capsys, user_models):
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, model="user_models:not_a_module"))
    assert code == 2
    assert_one_line_error(err, "user_models:not_a_module", "dict", "not a torch.nn.Module")
    assert_nothing_written(out)


def test_weights_that_do_not_match_name_the_first_key(tmp_path, capsys, user_models):
    import user_models as um

    state = um.tiny().state_dict()
    state["conv.weight"] = torch.zeros(8, 1, 3, 3)
    weights = tmp_path / "w.pt"
    torch.save(state, weights)
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--weights", str(weights)))
    assert code == 2
    assert_one_line_error(err, "w.pt", "conv.weight", "(8, 1, 3, 3)", "(16, 1, 3, 3)")
    assert_nothing_written(out)


class _Payload:
    """Unpickling this would create a marker file: proof that code in a weights file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_weights_with_pickled_code_are_refused_not_run(tmp_path, capsys, user_models):
    marker = tmp_path / "code-ran"
    weights = tmp_path / "evil.pt"
    torch.save({"conv.weight": _Payload(str(marker))}, weights)
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--weights", str(weights)))
    assert code == 2
    assert_one_line_error(err, "evil.pt", "refused")
    assert not marker.exists(), "the pickled code in the weights file was executed"
    assert_nothing_written(out)


@pytest.mark.parametrize("shape", ["1,3,abc", "1", "2,1,8,8", "1,0,8"])
def test_malformed_input_shape(tmp_path, capsys, user_models, shape):
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--input-shape", shape))
    assert code == 2
    assert_one_line_error(err, shape, "--input-shape")
    assert_nothing_written(out)


def test_output_folder_that_cannot_be_written(tmp_path, capsys, user_models):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, *build_args(blocker / "dist"))
    assert code == 2
    assert_one_line_error(err, "a-file", "--out")
    assert blocker.read_text() == "not a folder"


def test_data_file_without_x_and_y(tmp_path, capsys, user_models):
    data = tmp_path / "data.npz"
    np.savez(data, images=np.zeros((20, 1, 8, 8), np.float32), y=np.zeros(20, np.int64))
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--data", str(data)))
    assert code == 2
    assert_one_line_error(err, "data.npz", "'x'")
    assert_nothing_written(out)


def test_data_of_the_wrong_shape(tmp_path, capsys, user_models):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((20, 3, 8, 8), np.float32), y=np.zeros(20, np.int64))
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--data", str(data)))
    assert code == 2
    assert_one_line_error(err, "data.npz", "(20, 3, 8, 8)", "(N, 1, 8, 8)")
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "extra",
    [["--prune", "1.5"], ["--latency-ms", "-3"], ["--quant", "int4"], ["--target", "coreml"], ["--blocks", "0"]],
    ids=["prune-range", "negative-latency", "unknown-quant", "unknown-target", "no-blocks"],
)
def test_bad_options(tmp_path, capsys, user_models, extra):
    out = tmp_path / "dist"
    try:
        code = main(build_args(out, *extra))
    except SystemExit as exc:  # argparse's own type/choices errors exit through SystemExit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, extra[1])
    assert_nothing_written(out)


def test_max_accuracy_drop_without_labelled_data(tmp_path, capsys, user_models):
    out = tmp_path / "dist"
    code, _, err = run_cli(capsys, *build_args(out, "--max-accuracy-drop", "1"))
    assert code == 2
    assert_one_line_error(err, "--max-accuracy-drop", "labelled")
    assert_nothing_written(out)


def test_calibrate_refuses_a_phone_it_is_not_running_on(tmp_path, capsys):
    out = tmp_path / "cal.yaml"
    code, _, err = run_cli(capsys, "calibrate", "--device", "pixel-8", "--out", str(out))
    assert code == 2
    assert_one_line_error(err, "pixel-8", "host")
    assert not out.exists()
