"""`convgen eval restoration|generation` through the CLI contract."""

import json

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from convgen.cli import main
from convgen.data.export import export_images
from tests.test_cli import assert_one_line_error, run_main


@pytest.fixture
def restoration_dirs(tmp_path):
    rng = np.random.default_rng(0)
    ref, out, masks = tmp_path / "ref", tmp_path / "out", tmp_path / "masks"
    for d in (ref, out, masks):
        d.mkdir()
    truth = {}
    for i in range(3):
        clean = rng.integers(0, 256, (48, 40), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(ref / f"{i}.png")
        Image.fromarray(noisy).save(out / f"{i}.png")
        m = np.zeros_like(clean)
        m[5:20, 5:25] = 255
        Image.fromarray(m).save(masks / f"{i}.png")
        c, n = clean / 255.0, noisy / 255.0
        truth[f"{i}.png"] = (
            peak_signal_noise_ratio(c, n, data_range=1.0),
            structural_similarity(c, n, data_range=1.0),
            m == 255,
            c,
            n,
        )
    return ref, out, masks, truth


def test_eval_restoration_agrees_with_skimage(capsys, restoration_dirs):
    ref, out, masks, truth = restoration_dirs
    code, stdout, _ = run_main(
        capsys, ["eval", "restoration", "--reference", str(ref), "--restored", str(out), "--mask", str(masks), "--json"]
    )
    assert code == 0
    result = json.loads(stdout)
    for name, (p, s, m, c, n) in truth.items():
        assert result["per_image"][name]["psnr"] == pytest.approx(p, abs=0.01)
        assert result["per_image"][name]["ssim"] == pytest.approx(s, abs=1e-4)
        assert result["per_image"][name]["psnr_missing"] == pytest.approx(
            peak_signal_noise_ratio(c[m], n[m], data_range=1.0), abs=0.01
        )
    assert result["psnr"] == pytest.approx(np.mean([t[0] for t in truth.values()]), abs=0.01)


def test_eval_restoration_npy_unclipped(capsys, tmp_path):
    rng = np.random.default_rng(3)
    clean = rng.random((32, 32))
    noisy = clean + rng.standard_normal(clean.shape) * 25 / 255  # unclipped, as in the noise protocol
    np.save(tmp_path / "ref.npy", clean.astype(np.float32))
    np.save(tmp_path / "out.npy", noisy.astype(np.float32))
    code, stdout, _ = run_main(
        capsys,
        [
            "eval",
            "restoration",
            "--reference",
            str(tmp_path / "ref.npy"),
            "--restored",
            str(tmp_path / "out.npy"),
            "--json",
        ],
    )
    expected = peak_signal_noise_ratio(
        clean.astype(np.float32).astype(np.float64), noisy.astype(np.float32).astype(np.float64), data_range=1.0
    )
    assert code == 0 and json.loads(stdout)["psnr"] == pytest.approx(expected, abs=1e-4)


def test_eval_restoration_bad_masks_and_sizes(capsys, restoration_dirs, tmp_path):
    ref, out, masks, _ = restoration_dirs
    Image.fromarray(np.full((48, 40), 128, np.uint8)).save(masks / "0.png")
    code, _, err = run_main(
        capsys, ["eval", "restoration", "--reference", str(ref), "--restored", str(out), "--mask", str(masks)]
    )
    assert_one_line_error(code, err, "not binary")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "0.png")
    code, _, err = run_main(
        capsys, ["eval", "restoration", "--reference", str(ref), "--restored", str(out), "--mask", str(masks)]
    )
    assert_one_line_error(code, err, "mask is 10x10")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(out / "1.png")
    code, _, err = run_main(capsys, ["eval", "restoration", "--reference", str(ref), "--restored", str(out)])
    assert_one_line_error(code, err, "differs from the reference")


def test_eval_generation_real_vs_real_far_below_real_vs_noise(capsys, tmp_path):
    export_images(tmp_path / "a", "train", 600)
    export_images(tmp_path / "b", "val", 600)
    rng = np.random.default_rng(0)
    (tmp_path / "noise").mkdir()
    for i in range(600):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise" / f"{i:05d}.png")
    code, out, _ = run_main(
        capsys, ["eval", "generation", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--json"]
    )
    assert code == 0
    real_real = json.loads(out)
    _, out, _ = run_main(
        capsys, ["eval", "generation", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "noise"), "--json"]
    )
    real_noise = json.loads(out)
    assert real_real["fid"] < 0.1 * real_noise["fid"]
    assert real_real["fd_mnistcls"] == real_real["fid"] and real_real["protocol"]["fid_is_standard"] is False
    assert real_real["precision"] > 0.5 and real_noise["precision"] < 0.1
    assert real_real["is"] > 5 and real_real["protocol"]["n_real"] == 600
    for key in ("kid", "recall", "density", "coverage"):
        assert key in real_real
    assert main(["eval", "generation", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "none")]) == 2
