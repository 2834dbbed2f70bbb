"""Golden outputs of every zoo model: fixed small inputs, outputs compared with values recorded before the
architecture move (tests/golden/zoo_outputs.npz), so a restructure cannot change what users get.

Inputs are made here with NumPy and Pillow only (no convgen helpers that could move or change). Outputs are
compared with a tolerance, not a hash: the CPU model changes between machines (AVX2 / AVX-512 kernels round
differently), which moves float outputs by about 1e-6; a real behaviour change moves them by far more.

Regenerate (only when a change of outputs is intended and explained in the commit):
``python tests/test_golden.py --write``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convgen

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "zoo_outputs.npz"
GOLDEN_TRAIN = HERE / "golden" / "training_logs.npz"
SHARED_DATA = HERE.parents[0].parent / "shared" / "data"
SET12 = SHARED_DATA / "denoise" / "set12" / "01.png"
PHOTO = SHARED_DATA / "bsds500" / "test" / "100007.jpg"
ATOL = 2e-4
#: wider for diffusion samples from pure noise: the first DDIM step divides the network's output by sqrt(abar) of
#: the last timestep (5e-5), so float sums that differ with the thread count (3e-4 here, 1 vs 2 threads) show
#: (guidance 3 multiplies the difference of two predictions: 8.9e-3 between an AMD EPYC (AVX2) and the recording
#: Intel Xeon (AVX-512), 2 threads each)
ATOL_BY_KEY = {"mnist-ddpm/sample": 2e-3, "mnist-ddpm/per_class_guided": 1.5e-2, "mnist-ddpm-fast/per_class": 1e-2,
               "cifar10-vae/reconstruct_mean": 2e-3, "cifar10-ddpm/per_class": 1.5e-2}  # fmt: skip


def _gray_crop() -> np.ndarray:
    return np.asarray(Image.open(SET12).convert("L"), np.float32)[64:112, 80:128, None] / 255.0


def _colour_crop(size: int = 64) -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"), np.float32)[100 : 100 + size, 200 : 200 + size] / 255.0


def _noisy(clean: np.ndarray, sigma: float) -> np.ndarray:
    return (clean + np.random.default_rng(0).standard_normal(clean.shape) * sigma / 255).astype(np.float32)


def _jpeg(clean: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((clean * 255 + 0.5).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0


def _mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    m[10:30, 12:40] = 1
    for i in range(w):  # a diagonal stroke, 3 px wide
        m[max(0, min(h - 3, 40 + i // 3)) : max(0, min(h, 43 + i // 3)), i] = 1
    return m


def outputs(codec_streams: dict[str, bytes] | None = None) -> dict[str, np.ndarray]:
    """Every zoo model on its fixed input (keys are ``<model>/<what>``)."""
    out: dict[str, np.ndarray] = {}
    clf = convgen.load("mnist-classifier", device="cpu")
    digits = np.asarray(Image.open(SET12).convert("L").resize((28, 28)), np.float32) / 255.0
    batch = clf.prepare([digits[..., None], 1 - digits[..., None], _gray_crop()])
    out["mnist-classifier/probs"] = clf.predict_proba(batch).numpy()

    dcgan = convgen.load("mnist-dcgan", device="cpu")
    out["mnist-dcgan/sample"] = dcgan.sample(8, seed=0).numpy()
    out["mnist-dcgan/interpolate"] = dcgan.interpolate(steps=4, rows=2, seed=3).numpy()
    cgan = convgen.load("mnist-cgan", device="cpu")
    out["mnist-cgan/per_class"] = np.stack([v.numpy() for v in cgan.sample_per_class(2, seed=1).values()])
    out["mnist-cgan/sample_classes"] = cgan.sample(6, seed=2, classes=[3, 8]).numpy()
    out["mnist-cgan/interpolate_classes"] = cgan.interpolate(steps=3, rows=2, seed=4, classes=(1, 7)).numpy()
    colour_gan = convgen.load("cifar10-dcgan", device="cpu")
    out["cifar10-dcgan/sample"] = colour_gan.sample(4, seed=0).numpy()
    out["cifar10-dcgan/interpolate"] = colour_gan.interpolate(steps=3, rows=1, seed=3).numpy()
    colour_cgan = convgen.load("cifar10-cgan", device="cpu")  # truncation 1 by default (its meta.json)
    out["cifar10-cgan/per_class"] = np.stack([v.numpy() for v in colour_cgan.sample_per_class(1, seed=0).values()])
    out["cifar10-cgan/interpolate_classes"] = colour_cgan.interpolate(steps=3, rows=1, seed=3, classes=(1, 9)).numpy()

    vae = convgen.load("mnist-vae", device="cpu")
    out["mnist-vae/sample_gmm"] = vae.sample(6, seed=0).numpy()
    out["mnist-vae/sample_prior"] = vae.sample(6, seed=0, sampler="prior").numpy()
    out["mnist-vae/reconstruct"] = vae.reconstruct(digits)
    out["mnist-vae/interpolate"] = vae.interpolate(steps=3, rows=2, seed=5).numpy()
    cvae = convgen.load("mnist-cvae", device="cpu")
    out["mnist-cvae/per_class"] = np.stack([v.numpy() for v in cvae.sample_per_class(1, seed=1).values()])
    out["mnist-cvae/reconstruct"] = cvae.reconstruct(digits, label=3)
    # cifar10-vae draws its pixels one by one (its default): a rounding difference between CPUs can change a draw,
    # so the golden reconstruction takes each pixel's conditional mean (1,024 chained steps: a looser atol)
    colour_vae = convgen.load("cifar10-vae", device="cpu")
    crop = _colour_crop(32)
    colour_vae.net.pixel_decoding = "mean"
    out["cifar10-vae/reconstruct_mean"] = colour_vae.reconstruct(crop)
    lik = colour_vae.likelihood(torch.from_numpy(crop).permute(2, 0, 1)[None], k=4, binarization="none", progress=False)
    out["cifar10-vae/bits_per_dim"] = np.float32([lik["bits_per_dim"], lik["bits_per_dim_elbo"]])
    ddpm = convgen.load("mnist-ddpm", device="cpu")  # few steps: chained steps would amplify rounding between CPUs
    out["mnist-ddpm/sample"] = ddpm.sample(4, seed=0, steps=4).numpy()
    guided = ddpm.sample_per_class(1, seed=1, steps=3, guidance=3.0)
    out["mnist-ddpm/per_class_guided"] = np.stack([v.numpy() for v in guided.values()])
    top = np.zeros((28, 28), np.float32)
    top[:14] = 1
    out["mnist-ddpm/inpaint"] = ddpm.inpaint(np.where(top > 0, 1.0, digits), top, steps=4, jump=2, resample=2)
    out["mnist-ddpm/denoise"] = ddpm.denoise(_noisy(digits, 50), sigma=50, steps=3)
    fast = convgen.load("mnist-ddpm-fast", device="cpu")  # its own 8-step grid (8 chained steps: a looser atol)
    out["mnist-ddpm-fast/per_class"] = np.stack([v.numpy() for v in fast.sample_per_class(1, seed=1).values()])
    colour_ddpm = convgen.load("cifar10-ddpm", device="cpu").sample_per_class(1, seed=0, steps=3)  # guidance 2
    out["cifar10-ddpm/per_class"] = np.stack([v.numpy() for v in colour_ddpm.values()])

    gray, colour = _gray_crop(), _colour_crop()
    out["denoise-gray-s25/restore"] = convgen.load("denoise-gray-s25").restore(_noisy(gray, 25), sigma=25)
    out["denoise-gray-blind/restore"] = convgen.load("denoise-gray-blind").restore(_noisy(gray, 50))
    blind = convgen.load("denoise-color-blind")
    out["denoise-color-blind/restore"] = blind.restore(_noisy(colour, 25), ensemble=1)
    out["denoise-color-blind/restore_gray"] = blind.restore(_noisy(gray, 15)[..., 0], ensemble=1)
    real = convgen.load("denoise-real")
    out["denoise-real/restore"] = real.restore(_noisy(colour, 10))
    out["denoise-real/restore_gray_half"] = real.restore(_noisy(gray, 10)[..., 0], strength=0.5)
    out["dejpeg/restore"] = convgen.load("dejpeg").restore(_jpeg(colour, 30))
    low = colour.reshape(32, 2, 32, 2, 3).mean((1, 3))
    out["superres-x2/restore"] = convgen.load("superres-x2").restore(low)
    out["superres-x4/restore"] = convgen.load("superres-x4").restore(low[:16, :16])
    mask = _mask(64, 64)
    out["inpaint/restore"] = convgen.load("inpaint").restore(colour * (1 - mask[..., None]), mask=mask)
    out.update(_codec_outputs(gray, colour, codec_streams))
    for name in ("cifar10-classifier", "cifar10-classifier-v1"):
        cifar = convgen.load(name, device="cpu")
        views = cifar.prepare([colour, colour[::-1], np.repeat(gray, 3, -1)])
        out[f"{name}/probs"] = cifar.predict_proba(views).numpy()
    out.update(_watermark_outputs())
    for style in ("starry-night", "shipwreck", "scream"):
        fast = convgen.load(f"style-{style}")
        out[f"style-{style}/stylize"] = fast.stylize(colour)
        out[f"style-{style}/stylize_odd"] = fast.stylize(colour[:7, :45], preserve_color=True)
    return out


def _watermark_outputs() -> dict[str, np.ndarray]:
    """The watermark's residual for a fixed payload on a 128 px photo crop, and its decoder's logits for the marked
    crop at every zoom (floats: the rounded uint8 picture could differ by one level between CPUs)."""
    import torch

    from convgen.pipelines.watermark import encode_payload

    net = convgen.load("watermark", device="cpu").net
    x = torch.from_numpy(_colour_crop(128)).permute(2, 0, 1)[None]
    bits = torch.from_numpy(encode_payload(0x12345678)).float()[None]
    with torch.no_grad():
        residual = net.residual(x, bits, 39.0)
        logits = net.decode_zooms(x + residual)
    return {"watermark/residual": residual[0].numpy(), "watermark/logits": logits[0].numpy()}


def _codec_outputs(gray, colour, streams: dict[str, bytes] | None) -> dict[str, np.ndarray]:
    """The codec decodes its recorded files to the recorded pixels. The files are recorded, not re-encoded: a
    latent within float noise of a rounding boundary may round the other way on another CPU, which changes the
    file but is not a regression (the symbols of a given file decode exactly everywhere)."""
    codec = convgen.load("codec")
    out = {}
    for name, image, quality in (("gray", gray, 1), ("colour", colour, 3)):
        data = streams[name] if streams else codec.compress_array(image, quality)
        out[f"codec/stream_{name}"] = np.frombuffer(data, np.uint8).astype(np.float32)
        out[f"codec/decoded_{name}"] = codec.decompress_bytes(data)
    return out


def _train_config(task: dict, model: dict, data: dict, **train) -> dict:
    return {
        "name": "golden",
        "seed": 3,
        "task": task,
        "model": model,
        "data": data,
        "train": {
            "max_steps": 6,
            "batch_size": 10,
            "lr": 0.002,
            "log_every": 1,
            "eval_every": 3,
            "ckpt_every": 3,
            "progress": False,
            "deterministic": True,
            **train,
        },
    }


def training_runs() -> dict[str, dict]:
    """Tiny deterministic training runs of each task (trainer, optimiser step, EMA, validation)."""
    digits = {"type": "mnist", "limit": 120, "val_count": 40}
    patches = {"type": "image-patches", "root": str(SET12.parent), "patch_size": 24, "val_count": 2, "limit": 4,
               "val_crop": 48}  # fmt: skip
    return {
        "classification": _train_config(
            {"type": "classification", "augment": {"degrees": 10}},
            {"type": "cnn-classifier", "stages": [[8], [16]], "hidden": [16]},
            digits,
            scheduler="onecycle",
            warmup_fraction=0.2,
            grad_clip=1.0,
        ),
        "gan": _train_config(
            {
                "type": "gan",
                "eval_samples": 40,
                "fd_extractor": "mnist-classifier",
                "loss": "hinge",
                "r1_gamma": 1.0,
                "diffaugment": ["translation"],
            },
            {"type": "dcgan", "image_size": 28, "ngf": 8, "ndf": 8, "z_dim": 8},
            digits,
            optimizer="adam",
            betas=[0.5, 0.999],
        ),
        "cgan": _train_config(
            {"type": "gan", "eval_samples": 40, "fd_extractor": "mnist-classifier", "d_steps": 2},
            {"type": "dcgan", "image_size": 28, "ngf": 8, "ndf": 8, "z_dim": 8, "num_classes": 10},
            digits,
            optimizer="adam",
            betas=[0.5, 0.999],
        ),
        "denoise": _train_config(
            {"type": "restoration", "degradation": {"kind": "noise", "sigma": None, "sigma_range": [0, 50]}},
            {"type": "dncnn", "depth": 3, "width": 8},
            patches,
        ),
        "inpaint": _train_config(
            {"type": "restoration", "degradation": {"kind": "inpaint", "prefill": "gmrf"}, "loss": "psnr"},
            {"type": "unet-restore", "widths": [8, 16], "cond_channels": 1, "residual": False, "gated": True},
            patches,
        ),
    }


def training_logs(tmp: Path) -> dict[str, np.ndarray]:
    """The numbers every run logged (train and val records, in order), as one float64 array per run."""
    import json

    from convgen.config import load_config

    out = {}
    for name, cfg in training_runs().items():
        convgen.train(load_config(base=cfg), tmp / name)
        values = []
        for line in (tmp / name / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            values += [v for k, v in sorted(record.items()) if "/" in k and not k.endswith("images_per_s")]
        out[f"train-{name}"] = np.array(values, np.float64)
    return out


@pytest.mark.skipif(not SET12.is_file(), reason="../shared/data not present")
def test_tiny_training_runs_log_their_golden_numbers(tmp_path):
    want = dict(np.load(GOLDEN_TRAIN, allow_pickle=False))
    got = training_logs(tmp_path)
    assert got.keys() == want.keys()
    for key, value in got.items():
        assert value.shape == want[key].shape, key
        np.testing.assert_allclose(value, want[key], rtol=2e-3, atol=2e-4, err_msg=key)


@pytest.mark.skipif(not SET12.is_file() or not PHOTO.is_file(), reason="../shared/data not present")
def test_every_zoo_model_reproduces_its_golden_outputs():
    from convgen import zoo

    want = dict(np.load(GOLDEN, allow_pickle=False))
    streams = {n: want[f"codec/stream_{n}"].astype(np.uint8).tobytes() for n in ("gray", "colour")}
    got = outputs(streams)
    assert {k.split("/")[0] for k in got} == set(zoo.names()), "a zoo model has no golden output"
    assert got.keys() == want.keys()
    for key, value in got.items():
        assert value.shape == want[key].shape, key
        assert value.dtype == np.float32, key
        np.testing.assert_allclose(value, want[key], rtol=0, atol=ATOL_BY_KEY.get(key, ATOL), err_msg=key)
    probs = got["mnist-classifier/probs"]
    assert (probs.argmax(1) == want["mnist-classifier/probs"].argmax(1)).all()


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_golden.py --write")
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **outputs())
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.savez_compressed(GOLDEN_TRAIN, **training_logs(Path(tmp)))
    print(f"wrote {GOLDEN} and {GOLDEN_TRAIN}")
