"""The families that landed after the reliability work hold the same promises as the core (docs/reliability.md):
every case found by probing the VAE tools, diffusion, the codec, style transfer, the study tool and the web app as a
new user would ends in a correct result or one line ``convgen: error: ...`` — no traceback, no stray warning or
progress line, no exit 0 with a wrong picture, no 5xx, and no output left behind by a refused command."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convgen.entropy import bitstream
from convgen.errors import ConvgenError
from tests.conftest import ENV_PYTHONPATH, SHARED_DATA, cli

PAINTING = SHARED_DATA / "styles" / "the_scream.jpg"


def one_line_error(r: subprocess.CompletedProcess, contains: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("convgen: error: "), r.stderr
    assert contains in lines[0], r.stderr


def save(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def pics(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(0)
    digit = (rng.random((28, 28)) * 255).astype(np.uint8)
    out = {"digit": save(root / "digit.png", digit), "rgb": save(root / "rgb.png", np.stack([digit] * 3, -1)),
           "photo": save(root / "photo.png", (rng.random((40, 56, 3)) * 255).astype(np.uint8))}  # fmt: skip
    for name, arrays in (("rgbset", [np.stack([digit] * 3, -1)] * 3), ("mixed", [digit, digit[:20, :20], digit]),
                         ("big", [np.zeros((32, 32), np.uint8)] * 3), ("ok", [digit] * 4)):  # fmt: skip
        d = root / name
        d.mkdir()
        for i, a in enumerate(arrays):
            save(d / f"{i}.png", a)
        (d / "labels.csv").write_text("file,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(len(arrays))))
    save(root / "ok" / "extra.png", digit)  # in the folder, not in labels.csv
    return out | {k: root / k for k in ("rgbset", "mixed", "big", "ok")}


# -- style transfer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--optimizer", "adam", "--lr", "nan"], "--lr nan: must be a finite number"),
    (["--optimizer", "adam", "--lr", "-1"], "--lr -1: must be in (0, 1000]"),
    (["--style-weight", "inf"], "--style-weight inf: must be a finite number"),
    (["--style-mix", "nan"], "--style-mix [nan]: one finite weight >= 0 per style image"),
    (["--init", "zeros"], "--init must be one of content, noise, got 'zeros'"),
])  # fmt: skip
def test_stylize_refuses_bad_option_values_before_any_work(pics, tmp_path, args, message):
    r = cli("stylize", "--style", str(PAINTING), "--input", str(pics["photo"]), "--output", str(tmp_path / "o.png"),
            "--iterations", "1", *args)  # fmt: skip
    one_line_error(r, message)
    assert not (tmp_path / "o.png").exists()


def test_the_image_writer_refuses_non_finite_pixels(tmp_path):
    from convgen.io.images import write_image
    from convgen.viz.grid import save_grid

    img = np.zeros((8, 8, 3), np.float32)
    img[2, 3, 1] = np.nan
    for path in (tmp_path / "a.png", tmp_path / "a.npy"):
        with pytest.raises(ConvgenError, match="1 of its 192 values are NaN or infinite"):
            write_image(path, img)
        assert not path.exists()
    with pytest.raises(ConvgenError, match="NaN or infinite"):
        save_grid(np.full((2, 1, 4, 4), np.inf, np.float32), tmp_path / "g.png")


# -- the VAE tools ----------------------------------------------------------------------------------------------
def test_vae_tools_check_every_image_of_a_labelled_set(pics, tmp_path):
    out = tmp_path / "map.png"
    one_line_error(cli("latent-map", "mnist-vae", "--input", str(pics["rgbset"]), "--out", str(out)),
                   "rgbset/0.png: 3 channel(s); this model takes 1")  # fmt: skip
    one_line_error(cli("latent-map", "mnist-vae", "--input", str(pics["mixed"]), "--out", str(out)),
                   "mixed/1.png: 20x20 pixels; this model takes 28x28 images")  # fmt: skip
    one_line_error(cli("latent-map", "mnist-vae", "--input", str(pics["big"]), "--out", str(out)),
                   "big/0.png: 32x32 pixels; this model takes 28x28 images")  # fmt: skip
    one_line_error(cli("latent-map", "mnist-vae", "--input", str(pics["ok"]), "--out", str(out)),
                   "1 image(s) are not listed in labels.csv (extra.png)")  # fmt: skip
    one_line_error(cli("edit", "mnist-vae", "--input", str(pics["digit"]), "--from", "0", "--to", "1", "--reference",
                       str(pics["rgbset"]), "--out", str(out)), "3 channel(s); this model takes 1")  # fmt: skip
    one_line_error(cli("edit", "mnist-vae", "--input", str(pics["rgb"]), "--from", "0", "--to", "1", "--out",
                       str(out)), "rgb.png: 3 channel(s)")  # fmt: skip
    one_line_error(cli("traverse", "mnist-vae", "--input", str(pics["rgb"]), "--out", str(out)), "rgb.png: 3 channel")
    assert not out.exists()


def test_vae_edit_refuses_nothing_to_do_and_non_finite_strength(pics, tmp_path):
    out = tmp_path / "e.png"
    one_line_error(cli("edit", "mnist-vae", "--input", str(pics["digit"]), "--from", "3", "--to", "3", "--out",
                       str(out)), "--from and --to are both class 3")  # fmt: skip
    one_line_error(cli("edit", "mnist-vae", "--input", str(pics["digit"]), "--from", "3", "--to", "8", "--out",
                       str(out), "--strength", "nan"), "--strength nan: must be a finite number")  # fmt: skip
    assert not out.exists()
    # a conditional VAE: the input's class is --from; no message names a flag the command does not have
    r = cli("edit", "mnist-cvae", "--input", str(pics["digit"]), "--from", "3", "--to", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("reconstruct", "mnist-cvae", "--input", str(pics["digit"]), "--output", str(tmp_path / "r.png"))
    one_line_error(r, "mnist-cvae is class-conditional: give the images' class")
    r = cli("reconstruct", "mnist-cvae", "--input", str(pics["digit"]), "--output", str(tmp_path / "r.png"),
            "--label", "3")  # fmt: skip
    assert r.returncode == 0, r.stderr


# -- diffusion ----------------------------------------------------------------------------------------------------
def test_blind_diffusion_denoising_needs_no_scikit_image(pics, tmp_path):
    """The README's own example without --sigma, in a process where scikit-image cannot be imported."""
    script = ("import sys; sys.modules['skimage'] = None\n"
              "from convgen.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", script, "restore", "denoise", "mnist-ddpm", "--input",
                        str(pics["digit"]), "--output", str(tmp_path / "d.png"), "--steps", "2"],
                       capture_output=True, text=True, env=ENV_PYTHONPATH, timeout=300)  # fmt: skip
    assert r.returncode == 0 and (tmp_path / "d.png").is_file(), r.stderr


def test_estimated_noise_level_equals_scikit_image():
    skimage = pytest.importorskip("skimage.restoration")
    from convgen.classical.noise import estimate_sigma

    rng = np.random.default_rng(1)
    for shape in ((28, 28), (33, 47, 3), (64, 17, 1)):
        x = np.clip(0.4 + 0.2 * rng.random(shape) + rng.normal(0, 0.05, shape), 0, 1)
        ref = skimage.estimate_sigma(x, channel_axis=-1 if len(shape) == 3 else None, average_sigmas=True)
        assert estimate_sigma(x) == pytest.approx(ref, rel=1e-12)


def test_repaint_refuses_a_resampling_that_would_do_nothing(pics, tmp_path):
    mask = save(tmp_path / "m.png", np.repeat((np.arange(28) < 14)[:, None], 28, 1).astype(np.uint8) * 255)
    r = cli("restore", "inpaint", "mnist-ddpm", "--input", str(pics["digit"]), "--mask", str(mask), "--output",
            str(tmp_path / "o.png"), "--steps", "4", "--jump", "5", "--resample", "3")  # fmt: skip
    one_line_error(r, "--jump 5 must be smaller than --steps 4 for --resample 3 to do anything")
    r = cli("restore", "inpaint", "mnist-ddpm", "--input", str(pics["digit"]), "--mask", str(mask), "--output",
            str(tmp_path / "o.png"), "--tile", "256")  # fmt: skip
    one_line_error(r, "inpaint with mnist-ddpm does not take --tile")
    assert not (tmp_path / "o.png").exists()


def test_a_refused_inpainting_prints_no_warning_first(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 20)).astype(np.float32))
    mask = save(tmp_path / "m.png", np.zeros((28, 28), np.uint8))
    r = cli("restore", "inpaint", "inpaint", "--input", str(tmp_path / "x.npy"), "--mask", str(mask), "--output",
            str(tmp_path / "o.png"))  # fmt: skip
    one_line_error(r, "mask is 28x28 but the image is 20x20")


# -- the codec ----------------------------------------------------------------------------------------------------
def _forge(data: bytes, **fields) -> bytes:
    """The file with header fields changed and the CRC recomputed (what a crafted file looks like)."""
    names = ("magic", "version", "quality", "channels", "n", "digest", "height", "width")
    values = dict(zip(names, struct.unpack_from(">4sBBBB16sII", data), strict=True)) | fields
    head = struct.pack(">4sBBBB16sII", *(values[n] for n in names))
    body = head + data[len(head) : -4]
    return body + struct.pack(">I", zlib.crc32(body))


def test_forged_codec_headers_behind_valid_checksums_are_refused(pics, tmp_path):
    import convgen

    pipe = convgen.load("codec")
    photo = np.asarray(Image.open(pics["photo"]), np.float32) / 255
    colour, gray = pipe.compress_array(photo, 2), pipe.compress_array(photo.mean(-1, keepdims=True), 2)
    cases = {"quality 0": _forge(colour, quality=0), "quality 9": _forge(colour, quality=9),
             "taller": _forge(colour, height=80), "shorter": _forge(colour, height=24),
             "wider": _forge(colour, width=120), "colour called gray": _forge(colour, channels=1),
             "one stream": _forge(colour, n=1)}  # fmt: skip
    for what, data in cases.items():
        with pytest.raises(ConvgenError, match="damaged codec file"):
            pipe.decompress_bytes(data, what)
    assert pipe.decompress_bytes(gray).shape == (40, 56, 1) and pipe.decompress_bytes(colour).shape == (40, 56, 3)
    with pytest.raises(ConvgenError, match="the header disagrees with the copy inside its stream"):
        pipe.decompress_bytes(_forge(gray, channels=3))
    for what, data in cases.items():  # and through the command line: one line, no output folder left behind
        src = tmp_path / f"{what.replace(' ', '_')}{bitstream.SUFFIX}"
        src.write_bytes(data)
        one_line_error(cli("decompress", "--input", str(src), "--output", str(tmp_path / "out" / what)), "damaged")
        assert not (tmp_path / "out").exists()


def test_refused_compression_leaves_no_output_folder(pics, tmp_path):
    one_line_error(cli("compress", "codec", "--input", str(pics["photo"]), "--output", str(tmp_path / "a" / "b"),
                       "--quality", "9"), "--quality 9: must be in 1..5")  # fmt: skip
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    one_line_error(cli("compress", "codec", "--input", str(tmp_path / "junk.png"), "--output",
                       str(tmp_path / "c")), "junk.png")  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# -- the study tool and help texts -----------------------------------------------------------------------------
def test_study_create_says_nothing_before_an_error(pics, tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    save(real / "a.png", np.zeros((8, 8), np.uint8))
    (fake / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = cli("study", "create", "s", "--real", str(real), "--fake", str(fake), "--trials", "4", "--dir",
            str(tmp_path / "studies"))  # fmt: skip
    one_line_error(r, "b.png")
    assert not (tmp_path / "studies" / "s").exists()


def test_sample_help_names_no_wrong_default():
    r = cli("sample", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--sampler {prior,gmm} latents from the prior N(0, I) or from the ex-post Gaussian mixture (default: the " \
           "model's)" in text


# -- the web app ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from convgen.app.server import Settings, create_app

    return TestClient(create_app(Settings(read_timeout_s=0.5)))


def test_web_requests_that_were_500s(client, pics):
    r = client.post("/api/sample", content=b"[" * 100_000 + b"]" * 100_000,
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    name = "x" * 19_000
    r = client.post("/api/sample", json={"model": name, "n": 1})
    assert r.status_code == 404 and len(r.json()["error"]) < 400
    r = client.post("/api/sample", json={"model": "mnist-vae", "n": 1, "sampler": "y" * 100_000})
    assert r.status_code == 400 and len(r.json()["error"]) < 400
    with open(pics["digit"], "rb") as f:
        r = client.post("/api/restore/denoise", data={"model": "mnist-ddpm", "steps": "2"},
                        files={"image": ("d.png", f, "image/png")})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"  # sigma estimated, no scikit-image
    codec = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "codec")
    (quality,) = codec["options"]["codec"]
    assert quality["name"] == "quality" and quality["lo"] == 1 and quality["hi"] == 5 and quality["model_default"]


def test_a_stalled_json_body_is_408(client):
    """A client that sends its headers and stops: 408 after the read timeout, on the JSON path as on the multipart
    one (the timeout arrives inside an exception group on both)."""
    app = client.app
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    multipart = b"multipart/form-data; boundary=x"
    for path, kind in (("/api/sample", b"application/json"), ("/api/restore/denoise", multipart)):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"host", b"testserver"), (b"content-type", kind), (b"content-length", b"100")],
                 "client": ("127.0.0.1", 5), "server": ("testserver", 80), "scheme": "http", "http_version": "1.1",
                 "root_path": "", "asgi": {"version": "3.0"}}  # fmt: skip
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert start["status"] == 408, (path, start["status"], body)
        assert b"stopped arriving" in body


def test_uploads_leave_no_open_temporary_files(pics):
    """Spooled upload files are closed after each request (no ResourceWarning in the server's log)."""
    pytest.importorskip("fastapi")
    script = (
        "import gc, sys, warnings\n"
        "warnings.simplefilter('error', ResourceWarning)\n"
        "from fastapi.testclient import TestClient\n"
        "from convgen.app.server import Settings, create_app\n"
        "c = TestClient(create_app(Settings()))\n"
        "for _ in range(3):\n"
        "    with open(sys.argv[1], 'rb') as f:\n"
        "        r = c.post('/api/restore/denoise', data={'model': 'denoise-gray-s25'},\n"
        "                   files={'image': ('d.png', f, 'image/png')})\n"
        "    assert r.status_code == 200, r.text\n"
        "gc.collect()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-X", "dev", "-c", script, str(pics["digit"])], capture_output=True,
                       text=True, env=ENV_PYTHONPATH, timeout=300)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "ResourceWarning" not in r.stderr, r.stderr


def test_extras_are_pinned_like_torch():
    pins = {line.split("==")[0].lower() for line in (Path(__file__).parents[1] / "constraints.txt").read_text()
            .splitlines() if "==" in line and not line.startswith("#")}  # fmt: skip
    for name in ("torch", "fastapi", "starlette", "uvicorn", "python-multipart", "psycopg", "scikit-image",
                 "tensorboard", "playwright", "pytest", "ruff"):  # fmt: skip
        assert name in pins, name
    json.dumps(sorted(pins))
