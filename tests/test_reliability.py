"""Nothing lost, nothing silent: bad data is refused with one line naming the file, no user file is replaced
without --overwrite, runs survive faults (a second writer, a corrupt checkpoint, a full disk), images are read as
people see them. Each case goes through the command line as a user runs it (tests.conftest.cli)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from convgen.io.lock import DirectoryLock
from tests.conftest import cli, tiny_config


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("convgen: error:"), r.stderr
    for n in needles:
        assert n in lines[0], r.stderr


def gray_png(path: Path, size=(32, 40), seed: int = 0) -> Path:
    Image.fromarray((np.random.default_rng(seed).random(size) * 255).astype(np.uint8)).save(path)
    return path


# -- non-finite data ------------------------------------------------------------------------------------------------


def test_nan_in_any_input_is_refused_naming_the_file(tmp_path: Path):
    arr = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    arr[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(tmp_path / "nan.npy"), "--output",
            str(tmp_path / "o.npy"))  # fmt: skip
    one_line_error(r, "nan.npy", "NaN")
    assert not (tmp_path / "o.npy").exists()
    tif = arr.copy()
    tif[0, 0] = np.inf
    Image.fromarray(tif, mode="F").save(tmp_path / "inf.tif")
    r = cli("classify", "mnist-classifier", "--input", str(tmp_path / "inf.tif"))
    one_line_error(r, "inf.tif", "NaN or infinite")
    images = np.random.default_rng(0).random((40, 28, 28)).astype(np.float32)
    images[5, 1, 1] = np.nan
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(40) % 10)
    cfg = tiny_config()
    cfg["data"] = {"type": "numpy", "path": str(tmp_path / "data.npz"), "val_count": 10}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    one_line_error(cli("train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")), "data.npz", "NaN")
    assert not (tmp_path / "run").exists()  # a run that failed before writing anything leaves no folder


def _copy_zoo(name: str, dest: Path) -> Path:
    from convgen import zoo

    shutil.copytree(zoo.model_dir(name), dest)
    return dest


def test_damaged_or_wrong_weights_in_a_model_directory(tmp_path: Path):
    img = gray_png(tmp_path / "in.png")
    model = _copy_zoo("denoise-gray-s25", tmp_path / "m")
    weights = model / "restorer.safetensors"
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.ndim == 4)
    args = ("restore", "denoise", str(model), "--input", str(img), "--output")
    wrong = dict(state, **{key: state[key][:, :1].clone()})
    save_file(wrong, str(weights))
    meta = json.loads((model / "meta.json").read_text())
    meta.pop("files")  # a directory without checksums: the shape check still holds
    (model / "meta.json").write_text(json.dumps(meta))
    one_line_error(cli(*args, str(tmp_path / "o1.png")), key, "has shape")
    save_file(dict(state, **{key: state[key] * float("nan")}), str(weights))
    one_line_error(cli(*args, str(tmp_path / "o2.png")), "NaN")
    model2 = _copy_zoo("denoise-gray-s25", tmp_path / "m2")
    raw = bytearray((model2 / "restorer.safetensors").read_bytes())
    raw[-100] ^= 0x40  # one flipped bit in the tensor data: a different model, caught by the checksum
    (model2 / "restorer.safetensors").write_bytes(bytes(raw))
    r = cli("restore", "denoise", str(model2), "--input", str(img), "--output", str(tmp_path / "o3.png"))
    one_line_error(r, "does not match the checksum")
    assert not any((tmp_path / f"o{i}.png").exists() for i in (1, 2, 3))


# -- nothing replaced without --overwrite ------------------------------------------------------------------------


def test_no_output_is_replaced_without_overwrite(tmp_path: Path):
    (tmp_path / "grid.png").write_bytes(b"mine")
    r = cli("sample", "mnist-dcgan", "--n", "4", "--out", str(tmp_path / "s"), "--grid", str(tmp_path / "grid.png"))
    one_line_error(r, "grid.png already exists", "--overwrite")
    assert (tmp_path / "grid.png").read_bytes() == b"mine" and not (tmp_path / "s").exists()
    r = cli("sample", "mnist-dcgan", "--n", "4", "--out", str(tmp_path / "s"), "--grid", str(tmp_path / "grid.png"),
            "--overwrite")  # fmt: skip
    assert r.returncode == 0 and Image.open(tmp_path / "grid.png").size[0] > 28
    for flag in ("--out", "--gif"):
        mine = tmp_path / f"mine{flag[2:]}"
        mine.write_bytes(b"mine")
        other = {"--out": str(tmp_path / "strip.png"), "--gif": str(tmp_path / "w.gif")}
        other[flag] = str(mine)
        r = cli("interpolate", "mnist-dcgan", "--out", other["--out"], "--gif", other["--gif"])
        one_line_error(r, "already exists")
        assert mine.read_bytes() == b"mine"
    digits = tmp_path / "d"
    digits.mkdir()
    gray_png(digits / "a.png", (28, 28))
    assert cli("explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path / "x")).returncode == 0
    r = cli("explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path / "x"))
    one_line_error(r, "already holds explain pictures")
    r = cli("explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path / "x"), "--overwrite")
    assert r.returncode == 0, r.stderr
    one_line_error(cli("explain", "mnist-classifier", "--input", str(digits), "--out", str(digits / "a.png")), "file")
    one_line_error(
        cli("explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path / "y"), "--target", "10"),
        "--target 10 is out of range",
    )
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    r = cli("average", "denoise-gray-s25", "denoise-gray-s25", "--out", str(folder), "--overwrite")
    one_line_error(r, "not a model directory")
    assert (folder / "notes.txt").read_text() == "mine"


def test_two_inputs_that_would_share_an_output_name_are_refused(tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    gray_png(src / "x.png")
    Image.open(src / "x.png").save(src / "x.jpg")  # would also become x.png
    r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(src), "--output", str(tmp_path / "out"))
    one_line_error(r, "x.jpg and x.png would both be written as")
    assert not (tmp_path / "out").exists()


def test_a_folder_job_checks_every_input_before_writing(tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "d"):
        gray_png(src / f"{name}.png", seed=ord(name))
    (src / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # not decodable even as a header
    r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(src), "--output", str(tmp_path / "out"))
    one_line_error(r, "c.png")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    good = (src / "d.png").read_bytes()
    (src / "c.png").write_bytes(good[: len(good) // 2])  # a valid header, truncated data: found when decoded
    r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(src), "--output", str(tmp_path / "out"))
    one_line_error(r, "c.png", "2 of 4 outputs written, a.png to b.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_user_errors_are_one_line(tmp_path: Path):
    img = gray_png(tmp_path / "in.png", (40, 40))
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "all.png")
    r = cli("restore", "inpaint", "inpaint", "--input", str(img), "--mask", str(tmp_path / "all.png"), "--output",
            str(tmp_path / "o.png"))  # fmt: skip
    one_line_error(r, "every pixel missing")
    for args, needle in (
        (["sample", "mnist-dcgan", "--n", "4", "--batch-size", "0", "--out", str(tmp_path / "s")], "--batch-size"),
        (["classify", "mnist-classifier", "--input", str(img), "--batch-size", "-3"], "--batch-size"),
        (["sample", "mnist-dcgan", "--n", "4", "--out", str(img)], "already exists"),
        (["eval", "restoration", "--reference", str(img), "--restored", str(img), "--data-range", "0"], "--data-range"),
        (["eval", "generation", "--real", str(tmp_path), "--fake", str(tmp_path)], "at least 10"),
        (["data", "export", "--limit", "0", "--out", str(tmp_path / "e")], "--limit"),
        (["data", "export", "--out", str(img)], "is a file"),
    ):
        one_line_error(cli(*args), needle)


# -- runs survive faults ----------------------------------------------------------------------------------------


def _tiny_run_config(tmp_path: Path, **train) -> Path:
    cfg = tiny_config()
    cfg["train"].update({"epochs": 1, "max_steps": 8, "ckpt_every": 2, "eval_every": 4, "keep_last": 4, **train})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path: Path):
    cfg, run = _tiny_run_config(tmp_path), tmp_path / "run"
    with DirectoryLock(run):  # this test process holds the run, as a training process would
        r = cli("train", str(cfg), "--out", str(run))
        one_line_error(r, "in use by another convgen process", f"pid {os.getpid()}")
    (run / ".lock").write_text("999999")  # left by a process that died: nobody holds it
    r = cli("train", str(cfg), "--out", str(run))
    assert r.returncode == 0, r.stderr
    assert (run / "model" / "config.json").is_file()


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path: Path):
    cfg, run = _tiny_run_config(tmp_path, max_steps=6), tmp_path / "run"
    assert cli("train", str(cfg), "--out", str(run)).returncode == 0
    ckpts = run / "checkpoints"
    newest = ckpts / "step_00000006"
    weights = newest / "classifier.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated, as by a full disk or a killed copy
    r = cli("train", str(cfg), "train.max_steps=8", "--out", str(run), "--resume", "latest")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "step_00000006" in warnings[0] and "resuming from step_00000004" in warnings[0]
    assert "resumed from" in r.stderr and "at step 4" in r.stderr
    last = ckpts / "step_00000008"
    (last / "state.safetensors").write_bytes(b"\0" * 16)
    r = cli("train", str(cfg), "train.max_steps=10", "--out", str(run), "--resume", str(last))
    one_line_error(r, "step_00000008", "the checkpoint is corrupt")  # an explicit checkpoint is never skipped
    for c in ckpts.glob("step_*"):
        (c / "state.json").write_text("{")
    one_line_error(cli("train", str(cfg), "--out", str(run), "--resume", "latest"), "every checkpoint is corrupt")


def test_outputs_are_readable_by_others_under_the_usual_umask(tmp_path: Path):
    cfg, run = _tiny_run_config(tmp_path, max_steps=2), tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert cli("train", str(cfg), "--out", str(run)).returncode == 0
    finally:
        os.umask(old)
    model = run / "model"
    assert stat.S_IMODE(model.stat().st_mode) == 0o755
    for f in model.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs on this machine (needs root)")
    try:
        img = gray_png(tmp_path / "big.png", (256, 256))
        r = cli("restore", "denoise", "denoise-gray-s25", "--input", str(img), "--output", str(mnt / "o.npy"))
        one_line_error(r, "no space left")
        assert list(mnt.iterdir()) == []  # no temporary or partial file
        r = cli("sample", "mnist-dcgan", "--n", "400", "--out", str(mnt / "s"))
        one_line_error(r, "no space left")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- images read as people see them ---------------------------------------------------------------------------


def test_exif_orientation_16_bit_colour_and_animations(tmp_path: Path):
    import cv2

    from convgen.io.images import read_image

    wide = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert read_image(tmp_path / "rot.jpg").shape == (30, 20, 3)  # as a viewer shows it
    deep = (np.random.default_rng(1).random((8, 9, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    got = read_image(tmp_path / "deep.png")
    np.testing.assert_allclose(got, deep / 65535.0, atol=1e-7)  # 16-bit precision, not 8
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r = cli("classify", "mnist-classifier", "--input", str(tmp_path / "anim.gif"))
    one_line_error(r, "anim.gif", "2 frames")
