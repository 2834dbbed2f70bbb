"""The command line: the BENCHMARKS.md contract, and one-line errors with non-zero exits for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convgen.cli import main
from tests.conftest import ENV_PYTHONPATH, png_bytes


def run_main(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("convgen: error:") and pattern in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def bad_inputs(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(good)
    cases = {}
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "x.png").write_bytes(good.read_bytes()[:200])
    cases["truncated"] = (tmp_path / "trunc" / "x.png", "truncated or corrupt")
    (tmp_path / "text.png").write_text("not an image")
    cases["text"] = (tmp_path / "text.png", "not an image file")
    (tmp_path / "huge.png").write_bytes(png_bytes(50_000, 50_000, payload=b"x"))
    cases["huge"] = (tmp_path / "huge.png", "over the limit")
    np.save(tmp_path / "five.npy", np.zeros((28, 28, 5), np.float32))
    cases["channels"] = (tmp_path / "five.npy", "5 channels")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    cases["colour"] = (tmp_path / "rgb.png", "colour")
    cases["missing"] = (tmp_path / "missing.png", "not found")
    return cases


@pytest.mark.parametrize("case", ["truncated", "text", "huge", "channels", "colour", "missing"])
def test_classify_bad_input(capsys, bad_inputs, case):
    path, pattern = bad_inputs[case]
    code, out, err = run_main(capsys, ["classify", "mnist-classifier", "--input", str(path), "--json"])
    assert_one_line_error(code, err, pattern)
    assert out == ""


def test_unknown_model_name(capsys, tmp_path):
    code, _, err = run_main(capsys, ["classify", "no-such-model", "--input", str(tmp_path)])
    assert_one_line_error(code, err, "unknown model 'no-such-model'")


def test_unknown_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "task: {type: classification}\nmodel: {type: cnn-classifier}\ndata: {type: mnist}\n"
        "train: {epochs: 1, learning_rate: 0.1}\n"
    )
    code, _, err = run_main(capsys, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "'train.learning_rate'")


def test_bad_config_value_override(capsys, tmp_path):
    from tests.conftest import REPO

    code, _, err = run_main(
        capsys,
        [
            "train",
            str(REPO / "configs" / "classification" / "mnist-classifier.yaml"),
            "train.epochs=zero",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert_one_line_error(code, err, "train.epochs")


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_main(capsys, ["train", str(tmp_path / "nope.yaml")])
    assert_one_line_error(code, err, "not found")


def test_bad_arguments_are_one_line(capsys):
    code, _, err = run_main(capsys, ["classify", "mnist-classifier"])
    assert_one_line_error(code, err, "--input")


def test_classify_json_contract(capsys, digits_dir):
    folder, truth = digits_dir
    code, out, _ = run_main(capsys, ["classify", "mnist-classifier", "--input", str(folder), "--json"])
    assert code == 0
    predictions = json.loads(out)["predictions"]
    assert set(predictions) == set(truth)
    assert all(isinstance(v, int) for v in predictions.values())
    correct = sum(predictions[k] == truth[k] for k in truth)
    assert correct >= 38  # these 40 digits are in the validation split the model never trained on


def test_zoo_list_json(capsys):
    code, out, _ = run_main(capsys, ["zoo", "list", "--json"])
    assert code == 0
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert models["mnist-classifier"]["task"] == "classification"


def test_subprocess_error_has_no_traceback(bad_inputs):
    path, _ = bad_inputs["truncated"]
    proc = subprocess.run(
        [sys.executable, "-m", "convgen", "classify", "mnist-classifier", "--input", str(path)],
        capture_output=True,
        text=True,
        env=ENV_PYTHONPATH,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_help_everywhere():
    for argv in (["--help"], ["train", "--help"], ["classify", "--help"], ["zoo", "list", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0


def test_data_export_then_classify(capsys, tmp_path):
    code, _, _ = run_main(capsys, ["data", "export", "--split", "val", "--limit", "50", "--out", str(tmp_path / "d")])
    assert code == 0
    labels = dict(line.split(",") for line in (tmp_path / "d" / "labels.csv").read_text().splitlines()[1:])
    assert len(labels) == 50
    code, out, _ = run_main(capsys, ["classify", "mnist-classifier", "--input", str(tmp_path / "d"), "--json"])
    predictions = json.loads(out)["predictions"]
    assert sum(predictions[k] == int(v) for k, v in labels.items()) >= 48
    code, _, err = run_main(capsys, ["data", "export", "--out", str(tmp_path / "d")])
    assert_one_line_error(code, err, "not empty")
