"""Fuzz and fault suite: seeded random corruption of image inputs, model directories and checkpoints.

Every case must end in a correct result or a one-line ``convgen: error:`` with a non-zero exit, never a traceback,
a Python warning, a hang (each run has a timeout) or a partial output file. The corruptions are drawn from a fixed
seed, so a failure reproduces; ``CONVGEN_FUZZ_CASES`` raises the number of cases for a longer local run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convgen.errors import ConvgenError
from tests.conftest import ENV_PYTHONPATH

CASES = int(os.environ.get("CONVGEN_FUZZ_CASES", "0"))
ENV = {**ENV_PYTHONPATH, "CONVGEN_MAX_IMAGE_PIXELS": "250000"}  # a corrupt header must not make a huge image


def _sources(rng: np.random.Generator) -> dict[str, bytes]:
    """Valid files of every readable kind, as bytes."""
    gray = (rng.random((24, 32)) * 255).astype(np.uint8)
    colour = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    out = {}
    for name, arr, fmt, kw in (
        ("g.png", gray, "PNG", {}),
        ("c.jpg", colour, "JPEG", {"quality": 90}),
        ("c.tif", colour, "TIFF", {}),
        ("f.tif", gray.astype(np.float32) / 255, "TIFF", {}),
        ("c.webp", colour, "WEBP", {}),
    ):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, (rng.random((24, 32, 3))).astype(np.float32))
    out["a.npy"] = buf.getvalue()
    return out


def corrupt(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded corruption: truncation, byte flips, a zeroed or random header, a huge size field, emptiness."""
    kind = rng.choice(["truncate", "flip", "flip-header", "zero-header", "junk", "huge", "empty", "repeat"])
    b = bytearray(data)
    if kind == "truncate":
        b = b[: int(rng.integers(1, max(2, len(b) - 1)))]
    elif kind in ("flip", "flip-header"):
        hi = min(len(b), 64) if kind == "flip-header" else len(b)
        for i in rng.integers(0, hi, int(rng.integers(1, 8))):
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "zero-header":
        b[: min(len(b), 32)] = bytes(min(len(b), 32))
    elif kind == "junk":
        b = bytearray(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
    elif kind == "huge":  # the first 4-byte field after a few header bytes set to a very large size
        at = int(rng.integers(4, min(len(b) - 4, 40)))
        b[at : at + 4] = (0x7FFF0000).to_bytes(4, "big")
    elif kind == "empty":
        b = bytearray()
    else:
        b = b + b[: len(b) // 2]
    return bytes(b), str(kind)


def _odd_npy(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid .npy files with contents convgen must refuse: wrong dtypes and shapes."""
    out = []
    for arr in (
        np.zeros((8, 8), np.complex64),
        np.array(["a", "b"]),
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((0, 5), np.float32),
        np.zeros((8, 8, 7), np.float32),
        np.full((6, 6), np.nan, np.float32),
        np.zeros((8, 8), np.int64),
    ):
        buf = io.BytesIO()
        np.save(buf, arr)
        out.append((f"odd_{arr.dtype}_{'x'.join(map(str, arr.shape))}.npy", buf.getvalue()))
    return out


def test_reading_corrupt_images_gives_an_image_or_one_error(tmp_path: Path):
    """Many cases through the reader itself (fast): an ImageError or a finite float image, nothing else."""
    from convgen.io.images import read_image

    rng = np.random.default_rng(2024)
    sources = _sources(rng)
    n = max(CASES, 240)
    outcomes: dict[str, int] = {}
    for i in range(n):
        name = list(sources)[i % len(sources)]
        data, kind = corrupt(sources[name], rng)
        path = tmp_path / f"{i:04d}_{kind}_{name}"
        path.write_bytes(data)
        os.environ["CONVGEN_MAX_IMAGE_PIXELS"] = "250000"
        try:
            arr = read_image(path)
        except ConvgenError as e:
            assert "\n" not in str(e) and str(path) in str(e), (path, str(e))
            outcomes["refused"] = outcomes.get("refused", 0) + 1
        else:
            assert arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4), path
            assert np.isfinite(arr).all() and arr.flags.writeable, path
            outcomes["read"] = outcomes.get("read", 0) + 1
        finally:
            os.environ.pop("CONVGEN_MAX_IMAGE_PIXELS", None)
    for name, data in _odd_npy(rng):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConvgenError):
            read_image(tmp_path / name)
    assert outcomes.get("refused", 0) > n // 3  # the corruptions are real


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convgen", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _check(r: subprocess.CompletedProcess, output: Path | None, what: str) -> str:
    assert "Traceback" not in r.stderr and "Warning:" not in r.stderr, (what, r.stderr)
    if r.returncode == 0:
        if output is not None:
            assert output.is_file(), what
        return "ok"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convgen: error:"), (what, r.stderr)
    if output is not None:
        assert not output.exists(), what  # no partial file
        assert not [p for p in output.parent.iterdir() if p.name.startswith(".")], what  # nor a temporary one
    return "error"


def test_the_cli_on_corrupt_inputs(tmp_path: Path):
    """End to end, each case in its own process: ``restore`` and ``classify`` on corrupted files."""
    rng = np.random.default_rng(7)
    sources = _sources(rng)
    results = []
    for i in range(max(CASES // 4, 12)):
        name = list(sources)[i % len(sources)]
        data, kind = corrupt(sources[name], rng)
        src = tmp_path / f"in{i:03d}{Path(name).suffix}"
        src.write_bytes(data)
        out_dir = tmp_path / f"out{i:03d}"
        out_dir.mkdir()
        out = out_dir / ("o.npy" if name.endswith(".npy") else "o.png")
        if i % 3 == 2:
            r = _run("classify", "mnist-classifier", "--input", str(src), "--json")
            results.append(_check(r, None, f"classify {kind} {name}"))
            if r.returncode == 0:
                assert list(json.loads(r.stdout)["predictions"]) == [src.name]
        else:
            r = _run("restore", "denoise", "denoise-color-blind", "--input", str(src), "--output", str(out))
            results.append(_check(r, out, f"restore {kind} {name}"))
    assert "error" in results


def test_corrupt_model_directories_and_checkpoints(tmp_path: Path):
    """Truncated, bit-flipped and replaced files in a model directory (restore) and in the newest checkpoint of a
    run (--resume latest): a one-line error, or a correct result from intact files."""
    from convgen import zoo

    rng = np.random.default_rng(11)
    img = tmp_path / "in.png"
    Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(img)
    for i in range(max(CASES // 8, 6)):
        model = tmp_path / f"m{i}"
        shutil.copytree(zoo.model_dir("denoise-gray-s25"), model)
        target = model / ["restorer.safetensors", "config.json", "meta.json"][i % 3]
        data, kind = corrupt(target.read_bytes(), rng)
        target.write_bytes(data)
        out = tmp_path / f"o{i}" / "o.png"
        out.parent.mkdir()
        r = _run("restore", "denoise", str(model), "--input", str(img), "--output", str(out))
        if _check(r, out, f"{kind} {target.name}") == "ok":  # e.g. a flip in meta.json's text: same weights
            want = _run("restore", "denoise", "denoise-gray-s25", "--input", str(img), "--output", str(out) + ".png")
            assert want.returncode == 0
            assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(str(out) + ".png")))

    import yaml

    from tests.conftest import tiny_config

    cfg = tiny_config()
    cfg["train"].update({"max_steps": 4, "ckpt_every": 2, "eval_every": 2, "keep_last": 3})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert _run("train", str(tmp_path / "c.yaml"), "--out", str(run)).returncode == 0
    pristine = tmp_path / "pristine"
    shutil.copytree(run, pristine)
    names = ["classifier.safetensors", "state.safetensors", "state.json", "meta.json", "config.json"]
    for i in range(max(CASES // 8, 5)):
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        target = run / "checkpoints" / "step_00000004" / names[i % len(names)]
        data, kind = corrupt(target.read_bytes(), rng)
        target.write_bytes(data)
        r = _run("train", str(tmp_path / "c.yaml"), "train.max_steps=6", "--out", str(run), "--resume", "latest")
        assert "Traceback" not in r.stderr, (kind, target.name, r.stderr)
        if r.returncode == 0:
            assert "resumed from" in r.stderr and (run / "checkpoints" / "step_00000006").is_dir()
        else:
            assert len(r.stderr.strip().splitlines()) == 1, (kind, target.name, r.stderr)


# -- the families that came after the reliability work -------------------------------------------------------------
def test_forged_codec_headers_behind_valid_checksums(tmp_path: Path):
    """Seeded header edits (quality, channels, stream count, height, width) with the CRC recomputed, decoded in
    process and, for some, through ``decompress``: refused in one line every time (the header is repeated inside
    the first stream), or, when a case changes nothing, the original image."""
    import struct
    import zlib

    import convgen

    rng = np.random.default_rng(31)
    pipe = convgen.load("codec")
    photo = np.asarray(Image.open(sorted((Path(__file__).parents[2] / "shared" / "data" / "bsds500" / "test")
                                          .glob("*.jpg"))[0]), np.float32)[:72, :90] / 255  # fmt: skip
    files = [pipe.compress_array(photo, 3), pipe.compress_array(photo.mean(-1, keepdims=True), 1)]
    names = ("magic", "version", "quality", "channels", "n", "digest", "height", "width")
    refused = 0
    for i in range(max(CASES // 4, 60)):
        data = files[i % 2]
        values = dict(zip(names, struct.unpack_from(">4sBBBB16sII", data), strict=True))
        field = ["quality", "channels", "n", "height", "width", "version"][int(rng.integers(0, 6))]
        values[field] = int(rng.choice([0, 1, 2, 3, 255, values[field] + 1, max(values[field] - 1, 0), 2**16,
                                         int(rng.integers(1, 200))]))  # fmt: skip
        if field in ("quality", "channels", "n", "version"):
            values[field] %= 256
        head = struct.pack(">4sBBBB16sII", *(values[n] for n in names))
        body = head + data[len(head) : -4]
        forged = body + struct.pack(">I", zlib.crc32(body))
        try:
            out = pipe.decompress_bytes(forged, f"case{i}")
        except ConvgenError as e:
            assert "\n" not in str(e) and str(e).startswith(f"case{i}: "), str(e)
            refused += 1
        else:
            assert forged == data, (i, field, values[field])  # only an unchanged file decodes
            assert np.isfinite(out).all()
        if i < 4:  # a few through the command line: one line, nothing written
            (tmp_path / f"f{i}.cvgc").write_bytes(forged)
            r = _run("decompress", "--input", str(tmp_path / f"f{i}.cvgc"), "--output", str(tmp_path / f"o{i}"))
            _check(r, None, f"decompress forged {field}")
            assert r.returncode == 0 or not (tmp_path / f"o{i}").exists()
    assert refused >= max(CASES // 4, 60) * 0.8


def _odd_value(rng: np.random.Generator):
    return [float("nan"), float("inf"), -1, 0, 10**9, -(10**9), 1e308, "x", "", True, None, [], [1.0, "a"],
            2.5, 1][int(rng.integers(0, 15))]  # fmt: skip


def test_stylize_with_fuzzed_options(tmp_path: Path):
    """Random values for every declared option of both style methods, through the Python API: a one-line
    ConvgenError before any file is written, or a finite picture."""
    from dataclasses import fields

    import convgen
    from convgen.pipelines.style import Gatys, GatysOptions

    rng = np.random.default_rng(5)
    src = tmp_path / "photo.png"
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(src)
    gatys = Gatys([np.asarray(Image.open(src), np.float32) / 255], feature_net="random-vgg19")
    fast = convgen.load("style-scream", device="cpu")
    names = [f.name for f in fields(GatysOptions)]
    outcomes = {"refused": 0, "ok": 0}
    for i in range(max(CASES // 4, 40)):
        opts = {names[int(k)]: _odd_value(rng) for k in rng.integers(0, len(names), int(rng.integers(1, 3)))}
        opts.setdefault("iterations", 2) if "iterations" not in opts else None
        pipe = fast if i % 3 == 0 else gatys
        out = tmp_path / f"o{i}.png"
        try:
            pipe.stylize_files(src, out, **opts)
        except ConvgenError as e:
            assert "\n" not in str(e) and not out.exists(), (opts, str(e))
            outcomes["refused"] += 1
        else:
            assert np.isfinite(np.asarray(Image.open(out), np.float32)).all(), opts
            outcomes["ok"] += 1
    assert outcomes["refused"] > 0


def test_vae_tools_with_fuzzed_labelled_sets(tmp_path: Path):
    """Folders of random sizes, channels and labels files (junk rows, missing columns, unknown classes, unlisted
    images) through ``latent-map`` and ``edit``'s reader: a one-line ConvgenError, or a picture."""
    import convgen
    from convgen.pipelines.vae import labelled_set

    rng = np.random.default_rng(9)
    pipe = convgen.load("mnist-vae", device="cpu")
    rows = ["{f},{c}", "{f}", "{f},x", "{f},{c},extra", "{f},-1", "{f},99", "{f},{c}"]
    outcomes = {"refused": 0, "ok": 0}
    for i in range(max(CASES // 4, 30)):
        d = tmp_path / f"set{i}"
        d.mkdir()
        lines = ["file,label"]
        for k in range(int(rng.integers(1, 5))):
            side = int(rng.choice([28, 28, 28, 20, 32]))
            shape = (side, side) if rng.random() < 0.8 else (side, side, 3)
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(d / f"{k}.png")
            if rng.random() < 0.9:
                lines.append(rows[int(rng.integers(0, len(rows)))].format(f=f"{k}.png", c=int(rng.integers(0, 10))))
        (d / "labels.csv").write_text("\n".join(lines) + "\n" if rng.random() < 0.9 else "garbage\x00\n")
        try:
            images, labels = labelled_set(d, None, pipe.prepare)
            pipe.latent_map(images, labels, tmp_path / f"m{i}.png")
        except ConvgenError as e:
            assert "\n" not in str(e) and not (tmp_path / f"m{i}.png").exists(), str(e)
            outcomes["refused"] += 1
        else:
            assert (tmp_path / f"m{i}.png").is_file()
            outcomes["ok"] += 1
    assert outcomes["refused"] > 0 and outcomes["ok"] > 0


def test_the_http_api_with_fuzzed_requests():
    """Random JSON bodies (odd types, long strings, deep nesting, unknown keys) on every JSON endpoint and random
    form fields on the upload endpoints: never a 5xx, every error one line."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from convgen.app.server import Settings, create_app

    rng = np.random.default_rng(13)
    client = TestClient(create_app(Settings(max_samples=4)))
    keys = ["model", "n", "seed", "class", "classes", "mode", "steps", "guidance", "eta", "sampler", "quality",
            "sigma", "tile", "x" * 300]  # fmt: skip
    models = ["mnist-dcgan", "mnist-cgan", "mnist-ddpm", "mnist-vae", "codec", "nope", "x" * 5000]
    buf = io.BytesIO()
    Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    for i in range(max(CASES // 4, 60)):
        body = {"model": models[int(rng.integers(0, len(models)))], "n": 1}
        for k in rng.integers(0, len(keys), int(rng.integers(1, 4))):
            body[keys[int(k)]] = _odd_value(rng)
        if i % 10 == 0:
            body["steps"] = [[[[1]]]] * 3
        url = ["/api/sample", "/api/interpolate"][i % 2]  # json.dumps writes NaN and Infinity, as some clients do
        r = client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code < 500, (url, body, r.text)
        if r.status_code >= 400:
            assert "\n" not in r.json()["error"] and len(r.json()["error"]) < 1000
        form = {"model": ["denoise-gray-s25", "mnist-ddpm", "codec", "style-scream"][i % 4]}
        for k in rng.integers(0, len(keys), int(rng.integers(0, 3))):
            form[keys[int(k)]] = str(_odd_value(rng))
        url = ["/api/restore/denoise", "/api/tool/codec", "/api/tool/stylize"][i % 3]
        r = client.post(url, data=form, files={"image": ("a.png", png if i % 5 else png[:40], "image/png")})
        assert r.status_code < 500, (url, form, r.text)
        if r.status_code >= 400:
            assert "\n" not in r.json()["error"]
