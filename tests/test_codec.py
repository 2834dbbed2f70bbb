"""The learned codec: entropy tables, the integer hyper-synthesis, the bitstream and its errors, the commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convgen
from convgen.config import build_config
from convgen.engine.trainer import Trainer
from convgen.entropy import bitstream
from convgen.entropy.integer import FRACTIONAL_BITS, quantize_layers, run_integer
from convgen.entropy.tables import PRECISION, CodecTables, quantize_pmf
from convgen.errors import ConvgenError
from convgen.metrics.reference import bits_per_pixel_of_file
from tests.conftest import ENV_PYTHONPATH, SHARED_DATA, cli, with_overrides


def codec_config(**overrides) -> dict:
    cfg = {
        "name": "tiny-codec",
        "seed": 0,
        "task": {"type": "codec", "gray_fraction": 0.3},
        "model": {"type": "codec", "width": 16, "latent": 16, "hyper_width": 16,
                  "lambdas": [0.002, 0.008, 0.03, 0.1]},
        "data": {"type": "image-patches", "root": str(SHARED_DATA / "bsds500" / "train"), "channels": 3,
                 "patch_size": 64, "stride": 64, "limit": 6, "val_count": 2, "val_crop": 128},
        "train": {"max_steps": 60, "batch_size": 8, "lr": 0.002, "log_every": 10, "eval_every": 30,
                  "ckpt_every": 30, "progress": False},
    }  # fmt: skip
    return with_overrides(cfg, overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("codec") / "run"
    Trainer(build_config(codec_config()), run).fit()
    return run


@pytest.fixture(scope="module")
def pipe(trained: Path):
    return convgen.load(trained, device="cpu")


def photo(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """A smooth image with some texture (gradients plus noise), float in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 1)
    base = np.stack([0.5 + 0.4 * np.sin(6 * xx + k) * np.cos(4 * yy) for k in range(c)], -1)
    return np.clip(base + 0.05 * rng.standard_normal((h, w, c)), 0, 1).astype(np.float32)


def test_pmf_quantisation_is_exact_and_keeps_every_symbol():
    for pmf in (np.array([1.0]), np.array([0.5, 0.5, 0.0]), np.random.default_rng(0).dirichlet(np.ones(300)),
                np.r_[1.0, np.full(999, 1e-15)]):  # fmt: skip
        q = quantize_pmf(pmf)
        assert q.sum() == 1 << PRECISION and q.min() >= 1 and q.dtype == np.int64
        assert np.array_equal(q, quantize_pmf(pmf.copy()))  # a pure function of its input
    big = np.random.default_rng(1).dirichlet(np.ones(50))
    q = quantize_pmf(big)
    assert np.abs(q / q.sum() - big).max() < 1e-3


def test_integer_hyper_synthesis_tracks_the_float_one_and_ignores_threads():
    torch.manual_seed(0)
    from convgen.models.codec import ImageCodec

    net = ImageCodec(ImageCodec.Config(width=16, latent=24, hyper_width=16)).eval()
    tables = CodecTables({f"hs.{k}": v for k, v in quantize_layers(net.h_s).items()})
    z = torch.randint(-6, 7, (1, 16, 5, 7)).double()
    z_fixed = z * 2**FRACTIONAL_BITS
    layers = len(net.h_s)
    outs = []
    for threads in (1, 3):
        torch.set_num_threads(threads)
        outs.append(run_integer(tables, "hs.", z_fixed, layers))
    torch.set_num_threads(2)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0], torch.floor(outs[0]))  # integers throughout
    with torch.no_grad():
        ref = net.h_s(z.float()).double()
    assert (outs[0] / 2**FRACTIONAL_BITS - ref).abs().max() < 0.05


def test_training_lowers_the_rate_distortion_loss_and_exports_tables(trained: Path):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    model = trained / "model"
    assert (model / "tables.safetensors").is_file()
    assert "tables.safetensors" in json.loads((model / "meta.json").read_text())["files"]
    val = [r for r in rows if "val/loss" in r][-1]
    assert val["val/bpp_q1"] < val["val/bpp_q4"]  # the rate rises with the quality


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 517, 3), (513, 511, 1), (64, 64, 3), (70, 33, 1)])
def test_round_trip_is_exact_for_odd_sizes_gray_and_rgb(pipe, shape):
    image = photo(*shape, seed=sum(shape))
    data = pipe.compress_array(image, quality=2)
    assert data == pipe.compress_array(image, quality=2)  # encoding is deterministic
    first, second = pipe.decompress_bytes(data), pipe.decompress_bytes(data)
    assert first.shape == shape and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    if shape[0] * shape[1] >= 4096:  # a real image comes back close to itself, not as garbage
        assert float(np.mean((first - image) ** 2)) < float(np.var(image))


def test_rate_rises_with_quality_and_bpp_is_from_the_file_size(pipe, tmp_path: Path):
    image = photo(128, 192, 3)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / "a.png")
    sizes = []
    for q in (1, pipe.qualities):
        out = tmp_path / f"q{q}"
        written = pipe.compress(tmp_path / "a.png", out, quality=q)
        assert [p.name for p in written] == ["a.cvgc"]
        sizes.append(written[0].stat().st_size)
        assert bits_per_pixel_of_file(written[0], 128, 192) == pytest.approx(8 * sizes[-1] / (128 * 192))
    assert sizes[0] < sizes[1]


def test_decoding_in_another_process_with_other_threads_gives_the_same_pixels(pipe, trained: Path, tmp_path: Path):
    image = photo(200, 150, 3, seed=3)
    data = pipe.compress_array(image, quality=3)
    (tmp_path / "x.cvgc").write_bytes(data)
    here = pipe.decompress_bytes(data)
    code = (
        "import sys, numpy as np, torch; torch.set_num_threads(int(sys.argv[1])); import convgen;"
        "p = convgen.load(sys.argv[2], device='cpu');"
        "np.save(sys.argv[4], p.decompress_bytes(open(sys.argv[3], 'rb').read()))"
    )
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.npy"
        subprocess.run([sys.executable, "-c", code, str(threads), str(trained), str(tmp_path / "x.cvgc"), str(out)],
                       check=True, env=ENV_PYTHONPATH, timeout=120)  # fmt: skip
        assert np.array_equal(np.load(out), here)


def test_fuzzed_files_are_always_a_one_line_error(pipe):
    data = pipe.compress_array(photo(64, 96, 3), quality=1)
    rng = np.random.default_rng(0)
    for i in range(1000):
        buf = bytearray(data)
        if i % 2:
            buf = buf[: int(rng.integers(0, len(buf)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(0, len(buf)))] ^= int(rng.integers(1, 256))
        with pytest.raises(ConvgenError):
            pipe.decompress_bytes(bytes(buf))


def test_damaged_streams_behind_a_valid_checksum_never_crash(pipe):
    """A crafted file with a correct CRC but garbage streams: an error or an image of the right shape, no crash."""
    data = pipe.compress_array(photo(64, 64, 1), quality=1)
    head, streams = bitstream.unpack(data)
    rng = np.random.default_rng(1)
    for _ in range(50):
        garbage = [rng.integers(0, 256, len(s) + 4 * int(rng.integers(-1, 2)), dtype=np.uint8).tobytes()
                   for s in streams]  # fmt: skip
        try:
            out = pipe.decompress_bytes(bitstream.pack(head, garbage))
        except ConvgenError:
            continue
        assert out.shape == (64, 64, 1) and np.isfinite(out).all()


def test_foreign_and_other_model_files_are_refused(pipe, tmp_path: Path):
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(ConvgenError, match="not a convgen codec file"):
        pipe.decompress_bytes(png.read_bytes())
    head, streams = bitstream.unpack(pipe.compress_array(photo(16, 16, 1)))
    head.digest = bytes(16)
    with pytest.raises(ConvgenError, match="another codec model"):
        pipe.decompress_bytes(bitstream.pack(head, streams))
    with pytest.raises(ConvgenError, match="quality"):
        pipe.compress_array(photo(16, 16, 1), quality=pipe.qualities + 1)


def test_commands_and_their_errors(trained: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((photo(40, 60, 3) * 255).astype(np.uint8)).save(src / "rgb.png")
    Image.fromarray((photo(50, 30, 1)[..., 0] * 255).astype(np.uint8)).save(src / "gray.png")
    r = cli("compress", str(trained), "--input", str(src), "--output", str(tmp_path / "c"), "--quality", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["gray.cvgc", "rgb.cvgc"]
    again = cli("compress", str(trained), "--input", str(src), "--output", str(tmp_path / "c"))
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    r = cli("decompress", "--input", str(tmp_path / "c"), "--output", str(tmp_path / "d"), "--model", str(trained))
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "d" / "rgb.png")).shape == (40, 60, 3)
    assert np.asarray(Image.open(tmp_path / "d" / "gray.png")).shape == (50, 30)
    nomodel = cli("decompress", "--input", str(tmp_path / "c"), "--output", str(tmp_path / "e"))
    assert nomodel.returncode != 0 and "digest" in nomodel.stderr and "--model" in nomodel.stderr
    (tmp_path / "bad.cvgc").write_bytes(b"CVGC\x01" + bytes(40))
    bad = cli("decompress", "--input", str(tmp_path / "bad.cvgc"), "--output", str(tmp_path / "f"), "--model",
              str(trained))  # fmt: skip
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "damaged" in bad.stderr
    q = cli("compress", str(trained), "--input", str(src), "--output", str(tmp_path / "g"), "--quality", "0")
    assert q.returncode != 0 and "--quality 0" in q.stderr


def test_the_factorized_prior_model_trains_and_round_trips(tmp_path: Path):
    cfg = codec_config(model__hyperprior=False, train__max_steps=20, train__eval_every=20, train__ckpt_every=20)
    Trainer(build_config(cfg), tmp_path / "run").fit()
    pipe = convgen.load(tmp_path / "run", device="cpu")
    assert not pipe.net.hyperprior and pipe.net.stride == 16
    for shape in ((1, 1, 3), (37, 90, 1)):
        data = pipe.compress_array(photo(*shape), quality=1)
        assert len(bitstream.unpack(data)[1]) == 1
        out = pipe.decompress_bytes(data)
        assert out.shape == shape and np.array_equal(out, pipe.decompress_bytes(data))


def test_bisection_fits_the_quantiles_and_a_loss_jump_asks_for_a_rollback():
    from convgen.entropy.models import EntropyBottleneck

    torch.manual_seed(0)
    eb = EntropyBottleneck(5)
    assert float(eb.aux_loss().detach()) > 10
    eb.fit_quantiles()
    assert float(eb.aux_loss().detach()) < 1e-2
    q = eb.quantiles.detach()[:, 0]
    assert bool((q[:, 0] < q[:, 1]).all() and (q[:, 1] < q[:, 2]).all())

    from convgen.data.datasets import build_data
    from convgen.engine.runtime import DistInfo
    from convgen.engine.task import Context
    from convgen.registry import TASKS

    cfg = build_config(codec_config())
    task = TASKS.get("codec")(cfg, build_data(cfg.data), Context(torch.device("cpu"), DistInfo()), 10)
    assert task.health({"val/loss": 2.0}, 10) is None
    assert task.health({"val/loss": 2.4}, 20) is None  # a drift is not a blow-up
    assert "jumped" in task.health({"val/loss": 3.0}, 30)


@pytest.mark.parametrize("name, channels", [("set12/05.png", 1), ("bsd68/test003.png", 1), ("rgb", 3)])
def test_the_zoo_codec_beats_jpeg_at_its_default_quality(name, channels):
    """On held-out photos: rates and PSNR rise with the quality, and the default quality writes <= 0.5 bpp with
    a higher PSNR than any Pillow JPEG file at least as large."""
    import io

    from convgen.io.images import read_image
    from convgen.metrics.reference import psnr

    pipe = convgen.load("codec", device="cpu")
    src = SHARED_DATA / "bsds500" / "test" / "100007.jpg" if name == "rgb" else SHARED_DATA / "denoise" / name
    image = read_image(src, channels)
    h, w, _ = image.shape
    rows = []
    for q in range(1, pipe.qualities + 1):
        data = pipe.compress_array(image, q)
        rows.append((8 * len(data) / (h * w), psnr(image, np.round(pipe.decompress_bytes(data) * 255) / 255)))
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(rows, rows[1:], strict=False))
    bpp, ours = rows[pipe.default_quality - 1]
    assert bpp <= 0.5
    pixels = (image[..., 0] if channels == 1 else image) * 255
    for quality in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(np.round(pixels).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        if 8 * len(buf.getvalue()) / (h * w) >= bpp:
            jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32).reshape(image.shape) / 255
            assert ours > psnr(image, jpeg), f"JPEG quality {quality} at >= {bpp:.3f} bpp"
            break


def test_an_image_too_large_for_the_codec_is_refused_before_any_work(pipe):
    with pytest.raises(ConvgenError, match="too large for the codec"):
        pipe.compress_array(np.zeros((4097, 4097, 1), np.float32))
    head, streams = bitstream.unpack(pipe.compress_array(photo(16, 16, 1)))
    head.height = head.width = 60000  # a crafted header with a valid checksum
    with pytest.raises(ConvgenError, match="impossible header"):
        pipe.decompress_bytes(bitstream.pack(head, streams))


def test_overlapping_decodes_put_the_thread_count_back():
    """The web app decodes on several worker threads: the global torch thread count must not stay at 1."""
    import threading
    import time

    import torch

    from convgen.pipelines.codec import _one_thread

    before = torch.get_num_threads()
    entered = threading.Barrier(2)

    def decode(hold: float) -> None:
        with _one_thread():
            entered.wait()
            assert torch.get_num_threads() == 1
            time.sleep(hold)

    workers = [threading.Thread(target=decode, args=(h,)) for h in (0.05, 0.15)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert torch.get_num_threads() == before
