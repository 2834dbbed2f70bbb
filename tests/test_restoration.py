"""Restoration: degradations by the protocol, networks, tiled inference, training, the `convgen restore` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convgen
from convgen.classical import fills
from convgen.config import build_config
from convgen.data.degradations import make_degradation
from convgen.data.degradations.inpaint import framed_mask, mask_out, random_mask
from convgen.data.degradations.noise import gaussian_noise
from convgen.data.degradations.superres import bicubic_downscale
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError, ConvgenError
from convgen.losses.pixel import restoration_loss
from convgen.metrics.reference import psnr
from convgen.models import build_model
from convgen.pipelines.restore import RestorationPipeline
from convgen.pipelines.tiling import _ramp
from convgen.registry import DEGRADATIONS
from tests.conftest import SHARED_DATA, cli


def degradation(**cfg):
    """A degradation object from config values (``kind`` defaults to noise)."""
    return make_degradation(cfg)


def smooth_images(n: int, size: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Piecewise-smooth test images (blurred blobs and edges), N x H x W x C uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.zeros((size, size, channels))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, 1, 3)
            img += (
                rng.uniform(0.1, 0.5, channels) * (((yy - cy) ** 2 + (xx - cx) ** 2) < (0.1 + 0.3 * r) ** 2)[..., None]
            )
        img += 0.2 * np.sin(6 * xx + rng.uniform(0, 6))[..., None]
        out.append(np.clip(img / img.max(), 0, 1))
    return (np.stack(out) * 255).astype(np.uint8)


def write_folder(path: Path, images: np.ndarray) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path / f"{i:03d}.png")
    return path


def restore_config(root: Path, **overrides) -> dict:
    cfg = {
        "name": "tiny-denoise",
        "seed": 0,
        "task": {"type": "restoration", "degradation": {"kind": "noise", "sigma": 25}, "loss": "l2"},
        "model": {"type": "dncnn", "channels": 1, "depth": 5, "width": 16},
        "data": {
            "type": "image-patches",
            "root": str(root),
            "patch_size": 32,
            "stride": 16,
            "val_count": 2,
            "val_crop": 48,
        },
        "train": {
            "epochs": 100,
            "max_steps": 40,
            "batch_size": 16,
            "lr": 0.002,
            "optimizer": "adam",
            "log_every": 5,
            "eval_every": 40,
            "ckpt_every": 20,
            "progress": False,
        },
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        cfg[section][field] = value
    return cfg


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("imgs") / "train", smooth_images(12, 64))


@pytest.fixture(scope="module")
def trained(image_dir: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "denoise"
    Trainer(build_config(restore_config(image_dir)), run).fit()
    return run


# -- degradations ---------------------------------------------------------------------------------------------------


def test_gaussian_noise_is_the_protocol_formula():
    clean = np.random.default_rng(5).random((21, 17))
    noisy = gaussian_noise(clean, 25, seed=3)
    expected = clean + np.random.default_rng(3).standard_normal(clean.shape) * 25 / 255
    np.testing.assert_array_equal(noisy, expected)
    assert noisy.min() < 0 or noisy.max() > 1  # not clipped
    assert len(np.unique(np.round(noisy * 255, 6))) > 256  # not quantised


def test_training_noise_has_the_requested_level():
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((8, 1, 64, 64), 0.5)
    noisy, cond = degradation(sigma=25).batch(clean, gen)
    assert abs((noisy - clean).std().item() - 25 / 255) < 0.002
    assert torch.allclose(cond, torch.full_like(cond, 25 / 255))
    noisy, cond = degradation(sigma=None, sigma_range=[0, 55]).batch(clean, gen)
    stds = (noisy - clean).flatten(1).std(1) * 255
    levels = cond[:, 0, 0, 0] * 255
    assert torch.all(levels <= 55) and levels.std() > 5
    assert torch.allclose(stds, levels, atol=2.0)


def test_poisson_gaussian_noise_is_unbiased_and_signal_dependent():
    gen = torch.Generator().manual_seed(0)
    clean = torch.cat([torch.full((4, 1, 64, 64), 0.1), torch.full((4, 1, 64, 64), 0.9)])
    noisy, _ = degradation(kind="poisson-gaussian", sigma=0, peak=[50, 50]).batch(clean, gen)
    assert abs(noisy.mean().item() - 0.5) < 0.01
    dark, bright = (noisy - clean)[:4].std(), (noisy - clean)[4:].std()
    assert abs(dark.item() - (0.1 / 50) ** 0.5) < 0.005 and abs(bright.item() - (0.9 / 50) ** 0.5) < 0.01


@pytest.mark.parametrize("kind", ["boxes", "strokes", "mixed"])
@pytest.mark.parametrize("coverage", [0.1, 0.25, 0.4])
def test_masks_are_binary_with_the_requested_coverage(kind, coverage):
    for seed, (h, w) in enumerate([(64, 64), (128, 96), (321, 481)]):
        m = random_mask(h, w, coverage, kind, seed)
        assert m.dtype == bool and m.shape == (h, w)
        assert coverage <= m.mean() <= coverage + 0.011, (kind, h, w, m.mean())
    assert np.array_equal(random_mask(50, 60, 0.2, kind, 7), random_mask(50, 60, 0.2, kind, 7))


def test_framed_training_masks_have_whole_photo_hole_sizes():
    """mask_frame: a patch's mask is a window of a mask drawn for the whole photo, so its strokes are as wide as on
    a photo (brush 3-8 % of 321 px = 10-26 px) instead of 3-8 % of the patch."""
    import cv2

    def widest(m):  # the largest inscribed radius of a hole, in pixels
        return cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5).max()

    rng = np.random.default_rng(0)
    framed = [framed_mask(96, 96, [321, 481], [0.1, 0.4], "strokes", rng) for _ in range(24)]
    plain = [random_mask(96, 96, c, "strokes", i) for i, c in enumerate(np.linspace(0.1, 0.4, 24))]
    for m in framed:
        assert m.dtype == bool and m.shape == (96, 96) and m.mean() >= 0.05
    assert np.median([widest(m) for m in framed]) > 1.5 * np.median([widest(m) for m in plain])
    cfg = degradation(kind="inpaint", mask="boxes", coverage=[0.1, 0.4], mask_frame=[321, 481])
    x, m = cfg.batch(torch.rand(3, 3, 64, 80), torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 64, 80) and m.shape == (3, 1, 64, 80) and set(m.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="mask_frame"):
        degradation(kind="inpaint", mask_frame=[321])


def test_superres_and_jpeg_degradations():
    gen = torch.Generator().manual_seed(0)
    clean = torch.from_numpy(smooth_images(2, 64, 3)).permute(0, 3, 1, 2).float() / 255
    low, _ = degradation(kind="superres", scale=4).batch(clean, gen)
    assert low.shape == clean.shape and 20 < psnr(clean.numpy(), low.clamp(0, 1).numpy()) < 60
    # the down-sampling is antialiased bicubic: on a linear ramp it returns the ramp at the new pixel centres
    # (a 2-pixel-wide low-res pixel centred between high-res pixels 2j and 2j + 1), away from the borders
    ramp = torch.arange(48, dtype=torch.float64).view(1, 1, 1, 48).expand(1, 1, 8, 48)
    small = bicubic_downscale(ramp, 2)
    assert small.shape == (1, 1, 4, 24)
    torch.testing.assert_close(small[..., 3:-3], (2 * torch.arange(24.0) + 0.5)[3:-3].expand(1, 1, 4, 18).double())
    # ... and antialiased: a pattern of period 3 px, above the low-res Nyquist frequency, is mostly filtered out
    # instead of aliasing (plain bicubic sampling keeps 0.78 of its amplitude; measured 0.16 here)
    stripes = torch.cos(2 * torch.pi * torch.arange(96.0) / 3).view(1, 1, 1, 96).expand(1, 1, 8, 96)
    assert bicubic_downscale(stripes, 2)[..., 4:-4].abs().max() < 0.2
    up = torch.nn.functional.interpolate(bicubic_downscale(clean, 4), size=(64, 64), mode="bicubic")
    torch.testing.assert_close(low, up)  # the model's input: down-sampled, then bicubic back to full size
    jp, _ = degradation(kind="jpeg", quality=[10, 10]).batch(clean, gen)
    assert jp.shape == clean.shape and not torch.equal(jp, clean)
    assert torch.equal(jp * 255, (jp * 255).round())  # decoded 8-bit values


def test_bad_degradation_configs():
    with pytest.raises(ConfigError, match="sigma"):
        degradation(sigma=25, sigma_range=[0, 50])
    with pytest.raises(ConfigError, match="coverage"):
        degradation(kind="inpaint", coverage=[0.5, 1.2])
    with pytest.raises(ConfigError, match="task.degradation.mask' is for inpaint degradations"):
        degradation(kind="superres", mask="boxes")  # another kind's key, set: refused
    with pytest.raises(ConfigError, match="unknown config key 'task.degradation.scael'; did you mean"):
        degradation(kind="superres", scael=2)
    with pytest.raises(ConfigError, match="unknown degradation kind 'blur'"):
        degradation(kind="blur")


def test_each_degradation_kind_has_its_own_schema_and_old_flat_configs_load():
    """Each kind keeps only its own keys; a config saved when one flat schema held every kind's keys (every zoo
    model's config.json) loads, and a run saved that way resumes."""
    flat = {"kind": "superres", "sigma": 25.0, "sigma_range": None, "peak": [10.0, 200.0], "mask": "mixed",
            "coverage": [0.05, 0.5], "prefill": "zero", "scale": 4, "quality": [10, 50]}  # fmt: skip
    cfg = build_config({"task": {"type": "restoration", "degradation": flat}, "model": {"type": "dncnn"},
                        "data": {"type": "mnist"}})  # fmt: skip
    assert cfg.to_dict()["task"]["degradation"] == {"kind": "superres", "scale": 4}
    assert degradation(kind="noise").cfg.sigma == 25.0 and degradation().verb == "denoise"
    noise = build_config({"task": {"type": "restoration"}, "model": {"type": "dncnn"}, "data": {"type": "mnist"}})
    assert noise.to_dict()["task"]["degradation"] == {"kind": "noise", "sigma": 25.0, "sigma_range": None}


def test_a_run_saved_with_the_flat_degradation_schema_resumes(image_dir: Path, tmp_path: Path):
    cfg = restore_config(image_dir, train__max_steps=20, train__ckpt_every=10, train__eval_every=10)
    Trainer(build_config({**cfg, "train": {**cfg["train"], "max_steps": 10}}), tmp_path / "b").fit()
    for path in (tmp_path / "b").rglob("config.json"):  # as a run of the previous release wrote them
        saved = json.loads(path.read_text())
        saved["task"]["degradation"].update({"peak": [10.0, 200.0], "mask": "mixed", "coverage": [0.05, 0.5],
                                             "prefill": "zero", "scale": 2, "quality": [10, 50]})  # fmt: skip
        path.write_text(json.dumps(saved))
    for path in (tmp_path / "b").rglob("meta.json"):  # which recorded no checksums either
        meta = json.loads(path.read_text())
        meta.pop("files", None)
        path.write_text(json.dumps(meta))
    resumed = Trainer(build_config(cfg), tmp_path / "b", resume="latest").fit()
    assert resumed.step == 20


# -- networks ---------------------------------------------------------------------------------------------------------

NETS = [
    {"type": "dncnn", "depth": 4, "width": 8},
    {"type": "dncnn", "depth": 4, "width": 8, "downscale": 2, "cond_channels": 1},
    {"type": "unet-restore", "widths": [8, 16, 32], "channels": 3},
    {"type": "unet-restore", "widths": [8, 16, 32], "attention": True, "attention_heads": 2},
    {"type": "unet-restore", "widths": [8, 16], "gated": True, "cond_channels": 1, "residual": False},
    {"type": "convlstm-restore", "width": 8, "steps": 3},
]


@pytest.mark.parametrize("spec", NETS, ids=lambda s: s["type"] + "-" + "-".join(k for k in s if k != "type"))
def test_networks_keep_any_image_size(spec):
    cfg = build_config({"task": {"type": "restoration"}, "model": spec, "data": {"type": "mnist"}}).model
    net = build_model(cfg).eval()
    c = cfg.channels
    for h, w in [(37, 50), (64, 64), (17, 9)]:
        x = torch.rand(2, c, h, w)
        cond = torch.rand(2, 1, h, w) if net.cond_channels else None
        out = net(x, cond)
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        if net.residual:  # residual nets start close to the identity
            assert (out - x).abs().max() < 0.1


def test_tiled_inference_matches_untiled():
    cfg = build_config(
        {"task": {"type": "restoration"}, "model": {"type": "dncnn", "depth": 5, "width": 8}, "data": {"type": "mnist"}}
    )
    net = build_model(cfg.model).eval()
    torch.nn.init.normal_(net.net[-1].weight, 0, 0.1)  # a non-trivial output
    pipe = RestorationPipeline.__new__(RestorationPipeline)
    pipe.cfg, pipe.device, pipe.models, pipe.meta = cfg, torch.device("cpu"), {"restorer": net}, {}
    img = np.random.default_rng(0).random((150, 203, 1)).astype(np.float32)  # guard off: the network's own output
    whole = pipe.restore(img, tile=None, clip=False, guard=False)
    tiled = pipe.restore(img, tile=64, overlap=32, clip=False, guard=False)
    assert np.abs(whole - img).max() > 1e-2
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    # geometric self-ensemble: the mean of the net over the 8 flips/rotations, mapped back; tiling still agrees
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        views = [net(x), net(x.flip(-1)).flip(-1)]
        views += [torch.rot90(net(torch.rot90(x, k, (2, 3))), -k, (2, 3)) for k in (1, 2, 3)]
        views += [torch.rot90(net(torch.rot90(x, k, (2, 3)).flip(-1)).flip(-1), -k, (2, 3)) for k in (1, 2, 3)]
    expected = torch.stack(views).mean(0)[0].permute(1, 2, 0).numpy()
    ens = pipe.restore(img, tile=None, clip=False, guard=False, ensemble=8)
    assert np.abs(ens - whole).max() > 1e-4  # the net is not rotation-equivariant, so the views differ
    np.testing.assert_allclose(ens, expected, atol=1e-5)
    tiled_ens = pipe.restore(img, tile=64, overlap=32, clip=False, guard=False, ensemble=8)
    np.testing.assert_allclose(tiled_ens, ens, atol=1e-4)
    pipe.meta = {"inference": {"ensemble": 8}}  # a model's own default
    np.testing.assert_allclose(pipe.restore(img, tile=None, clip=False, guard=False), ens, atol=1e-6)
    with pytest.raises(convgen.errors.ConvgenError, match="ensemble"):
        pipe.restore(img, ensemble=3)


def test_blend_weights_cover_every_pixel():
    w = _ramp(64, True, True, 32)
    assert w[:8].sum() == 0 and w[-8:].sum() == 0 and w[24:40].min() == 1
    assert _ramp(10, False, False, 32).min() == 1


# -- training and inference -------------------------------------------------------------------------------------------


def test_denoiser_learns_and_beats_its_input(trained: Path):
    lines = [json.loads(s) for s in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in lines if "train/loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    val = [r for r in lines if "val/psnr" in r][-1]
    assert val["val/psnr"] > val["val/psnr_input"] + 3
    assert (trained / "restoration.png").is_file()


def test_restoration_resume_is_exact(image_dir: Path, tmp_path: Path):
    cfg = restore_config(image_dir, train__max_steps=20, train__ckpt_every=10, train__eval_every=10)
    full = Trainer(build_config(cfg), tmp_path / "a").fit()
    Trainer(build_config({**cfg, "train": {**cfg["train"], "max_steps": 10}}), tmp_path / "b").fit()
    resumed = Trainer(build_config(cfg), tmp_path / "b", resume="latest").fit()
    assert resumed.final_metrics["val/psnr"] == pytest.approx(full.final_metrics["val/psnr"], abs=1e-6)


def test_psnr_loss_is_minus_the_per_sample_psnr():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 16, 16, generator=gen)
    out = clean + torch.randn(3, 3, 16, 16, generator=gen) * torch.tensor([0.03, 0.1, 0.3]).view(3, 1, 1, 1)
    ref = [psnr(c.numpy(), o.numpy()) for c, o in zip(clean, out, strict=True)]
    loss = restoration_loss(out, clean, "psnr", None)
    assert loss.item() == pytest.approx(-np.mean(ref), abs=0.02)  # the 1e-5 floor moves 30 dB by 0.04 dB
    # with hole weights (B x 1 x H x W, as for inpainting), the weighted MSE per sample
    weight = 1.0 + 5.0 * (torch.rand(3, 1, 16, 16, generator=gen) < 0.3).float()
    wmse = ((out - clean).square() * weight).sum((1, 2, 3)) / (weight.sum((1, 2, 3)) * 3)
    assert restoration_loss(out, clean, "psnr", weight).item() == pytest.approx(
        (10 * torch.log10(wmse + 1e-5)).mean().item(), rel=1e-5
    )
    # unlike L2 over the batch, each sample's gradient is scaled by 1 / its own error: the smooth one counts
    out.requires_grad_(True)
    restoration_loss(out, clean, "psnr", None).backward()
    per_sample = out.grad.flatten(1).norm(dim=1)
    assert per_sample[0] > per_sample[1] > per_sample[2]


def test_pipeline_denoises_protocol_noise(trained: Path):
    pipe = convgen.load(trained)
    clean = smooth_images(1, 96, seed=9)[0].astype(np.float32) / 255
    noisy = gaussian_noise(clean, 25, 0).astype(np.float32)
    out = pipe.restore(noisy)
    assert out.shape == clean.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert psnr(clean, out) > psnr(clean, np.clip(noisy, 0, 1)) + 3


def test_inpainting_task_trains_and_keeps_known_pixels(image_dir: Path, tmp_path: Path):
    cfg = restore_config(
        image_dir,
        task__degradation={"kind": "inpaint", "coverage": [0.1, 0.3]},
        train__max_steps=10,
        train__eval_every=10,
    )
    cfg["model"] = {"type": "unet-restore", "widths": [8, 16], "gated": True, "cond_channels": 1, "residual": False}
    result = Trainer(build_config(cfg), tmp_path / "inp").fit()
    assert "val/psnr_missing" in result.final_metrics
    pipe = convgen.load(tmp_path / "inp")
    img = smooth_images(1, 48, seed=3)[0].astype(np.float32) / 255
    mask = random_mask(48, 48, 0.3, "boxes", 0).astype(np.float32)
    out = pipe.restore(img, mask=mask)
    known = mask[..., None] == 0
    np.testing.assert_array_equal(out[np.broadcast_to(known, out.shape)], img[np.broadcast_to(known, img.shape)])


def test_inpainting_config_errors(image_dir: Path, tmp_path: Path):
    cfg = restore_config(image_dir, task__degradation={"kind": "inpaint"})
    with pytest.raises(ConfigError, match="cond_channels"):
        Trainer(build_config(cfg), tmp_path / "x").fit()


# -- CLI ----------------------------------------------------------------------------------------------------


def test_restore_cli_folder_png_and_npy(trained: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    clean = smooth_images(2, 40, seed=4).astype(np.float32) / 255
    Image.fromarray((clean[0, ..., 0] * 255).astype(np.uint8)).save(src / "a.png")
    np.save(src / "b.npy", gaussian_noise(clean[1], 25, 1).astype(np.float32))
    r = cli("restore", "denoise", str(trained), "--input", str(src), "--output", str(tmp_path / "out"), "--sigma", "25")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.npy"]
    out = np.load(tmp_path / "out" / "b.npy")
    assert out.dtype == np.float32 and out.shape == (40, 40, 1)
    # nothing is overwritten without asking
    r = cli("restore", "denoise", str(trained), "--input", str(src), "--output", str(tmp_path / "out"))
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    out_dir = str(tmp_path / "out")
    r = cli(
        "restore", "denoise", str(trained), "--input", str(src), "--output", out_dir, "--overwrite", "--ensemble", "2"
    )
    assert r.returncode == 0, r.stderr
    r = cli(
        "restore", "denoise", str(trained), "--input", str(src), "--output", out_dir, "--overwrite", "--ensemble", "3"
    )
    assert r.returncode == 2 and "--ensemble 3: must be 1, 2, 4 or 8" in r.stderr


def test_restore_cli_errors(trained: Path, tmp_path: Path):
    img = tmp_path / "x.png"
    Image.fromarray(smooth_images(1, 32, 3)[0]).save(img)
    cases = [
        (("denoise", str(trained), "--input", str(img)), "colour"),  # RGB into a gray model
        (("inpaint", str(trained), "--input", str(img), "--mask", str(img)), "not an inpaint model"),
        (("denoise", str(trained), "--input", str(tmp_path / "missing.png")), "not found"),
        (("denoise", "no-such-model", "--input", str(img)), "unknown model"),
        (("denoise", "mnist-classifier", "--input", str(img)), "not a restoration model"),
    ]
    for args, message in cases:
        r = cli("restore", *args[:2], *args[2:], "--output", str(tmp_path / "o.png"))
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_masks_are_clear_errors(tmp_path: Path):
    from convgen.errors import ImageError
    from convgen.io.images import read_mask

    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "size.png")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "gray.png")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(ImageError, match="mask is 12x10 but the image is 8x8"):
        read_mask(tmp_path / "size.png", (8, 8))
    with pytest.raises(ImageError, match="not binary"):
        read_mask(tmp_path / "gray.png", (8, 8))
    with pytest.raises(ImageError, match="1-channel"):
        read_mask(tmp_path / "rgb.png", (8, 8))
    ok = np.zeros((8, 8), np.uint8)
    ok[2:4] = 255
    Image.fromarray(ok).save(tmp_path / "ok.png")
    assert read_mask(tmp_path / "ok.png", (8, 8)).sum() == 16 and read_mask(tmp_path / "ok.png", (8, 8)).dtype == bool


def test_degradation_module_lists_every_verb():
    assert {cls.verb for _, cls in DEGRADATIONS.items()} == {"denoise", "inpaint", "superres", "dejpeg"}


def test_init_from_gray_inflates_to_colour():
    """A colour net started from a gray one sees the channel mean and writes the same restoration to every channel,
    so on a gray picture given as RGB it reproduces the gray model exactly."""
    from convgen.tasks.restoration import RestorationTask

    gray = convgen.load("denoise-gray-s25", device="cpu")
    cfg = build_config(
        {
            "task": {"type": "restoration"},
            "model": {"type": "unet-restore", "channels": 3, "widths": [32, 64, 128, 256], "blocks": 1},
            "data": {"type": "image-patches", "root": "unused", "channels": 3},
        }
    )
    colour = build_model(cfg.model).eval()
    RestorationTask._init_from(colour, "denoise-gray-s25")
    x = torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        want = gray.models["restorer"](x, None)
        got = colour(x.expand(-1, 3, -1, -1), None)
    torch.testing.assert_close(got, want.expand(-1, 3, -1, -1), atol=1e-5, rtol=1e-5)
    wide = build_model(build_config({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "widths": [16, 32]}}).model)
    with pytest.raises(ConfigError, match="do not fit"):
        RestorationTask._init_from(wide, "denoise-gray-s25")


def test_opponent_unet_starts_as_channelwise_opponent_denoiser():
    """Loaded from a gray model, opponent-unet equals: orthonormal opponent transform, the gray model on each channel
    (luminance scaled into [0, 1], chroma shifted by 0.5), transform back. Training then uses the luminance guide."""
    from convgen.tasks.restoration import RestorationTask

    gray = convgen.load("denoise-gray-s25", device="cpu").models["restorer"]
    cfg = build_config(
        {
            "task": {"type": "restoration"},
            "model": {"type": "opponent-unet"},
            "data": {"type": "image-patches", "root": "unused", "channels": 3},
        }
    )
    net = build_model(cfg.model).eval()
    RestorationTask._init_from(net, "denoise-gray-s25")
    m = torch.tensor([[1.0, 1, 1], [1, 0, -1], [1, -2, 1]])
    m = m / m.norm(dim=1, keepdim=True)
    torch.testing.assert_close(m @ m.T, torch.eye(3))  # orthonormal: white noise stays white, same sigma
    x = torch.rand(1, 3, 24, 40)
    opp = torch.einsum("kc,bchw->bkhw", m, x)
    scale, offset = torch.tensor([3**-0.5, 1, 1]).view(1, 3, 1, 1), torch.tensor([0, 0.5, 0.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        per_channel = torch.cat([gray((opp * scale + offset)[:, k : k + 1], None) for k in range(3)], 1)
        want = torch.einsum("kc,bkhw->bchw", m, (per_channel - offset) / scale)
        got = net(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert net.gray.head.weight.shape[1] == 2 and net.gray.head.weight[:, 1].abs().sum() == 0


def test_telea_prefill_is_opencv_telea_in_the_holes_only():
    """``prefill: telea`` fills the holes exactly as cv2.inpaint(TELEA, radius 3) on the 8-bit image, leaves the known
    pixels bit-exact, and is far closer to the truth in the holes than zeros; an inpainting net whose correction is
    zero therefore restores exactly the Telea result (so training starts from the classical method)."""
    import cv2

    clean = smooth_images(1, 64, channels=3, seed=5)[0].astype(np.float32) / 255
    mask = random_mask(64, 64, 0.3, "mixed", 1)
    x = torch.from_numpy(clean).permute(2, 0, 1)[None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    filled = mask_out(x, m, degradation(kind="inpaint", prefill="telea").cfg)[0].permute(1, 2, 0).numpy()
    zeroed = mask_out(x, m, degradation(kind="inpaint").cfg)[0].permute(1, 2, 0).numpy()
    u8 = np.ascontiguousarray((clean * (1 - mask[..., None]) * 255 + 0.5).astype(np.uint8))
    want = cv2.inpaint(u8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255
    np.testing.assert_allclose(filled[mask], want[mask], atol=1e-6)
    np.testing.assert_array_equal(filled[~mask], clean[~mask])
    np.testing.assert_array_equal(zeroed[mask], 0)
    assert psnr(clean, filled, mask=mask) > psnr(clean, zeroed, mask=mask) + 10
    # validation images go through the same function
    cfg = degradation(kind="inpaint", prefill="telea", coverage=[0.3, 0.3])
    d, c = cfg.protocol(clean, 1)
    np.testing.assert_allclose(d, filled, atol=1e-6)
    np.testing.assert_array_equal(c[..., 0] > 0.5, mask)
    with pytest.raises(ConfigError, match="prefill"):
        build_config({"task": {"type": "restoration", "degradation": {"kind": "inpaint", "prefill": "ns"}}})

    net_cfg = build_config(
        {
            "task": {"type": "restoration", "degradation": {"kind": "inpaint", "prefill": "telea"}},
            "model": {"type": "unet-restore", "channels": 3, "widths": [8, 16], "cond_channels": 1, "residual": False},
            "data": {"type": "image-patches", "root": "unused", "channels": 3},
        }
    )
    net = build_model(net_cfg.model).eval()
    torch.nn.init.zeros_(net.tail.weight)
    pipe = RestorationPipeline.__new__(RestorationPipeline)
    pipe.cfg, pipe.device, pipe.models, pipe.meta = net_cfg, torch.device("cpu"), {"restorer": net}, {}
    np.testing.assert_allclose(pipe.restore(clean, mask=mask.astype(np.float32)), filled, atol=1e-6)


def _photos_with_boxes(photos):
    """(clean H x W x 3, hole, clean as a 1 x 3 x H x W tensor, hole as 1 x 1 x H x W) per photo: box holes covering
    30 %, photo i seeded 10000 + i as in benchmarks/inpaint.py."""
    for i, f in enumerate(photos):
        clean = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255
        hole = random_mask(*clean.shape[:2], 0.3, "boxes", np.random.default_rng(10_000 + i))
        x = torch.from_numpy(clean).permute(2, 0, 1)[None]
        yield clean, hole, x, torch.from_numpy(hole.astype(np.float32))[None, None]


def _dense_gmrf(img: np.ndarray, hole: np.ndarray, lam: float) -> np.ndarray:
    """Reference conditional mean of the GMRF with precision L + lam L @ L, L the reflecting-border grid Laplacian
    built as a dense matrix from its definition (sum over in-image 4-neighbours of u_p - u_q)."""
    h, w = hole.shape
    n = h * w
    lap = np.zeros((n, n))
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    lap[y * w + x, y * w + x] += 1
                    lap[y * w + x, (y + dy) * w + x + dx] -= 1
    q = lap + lam * lap @ lap
    m = hole.reshape(-1)
    flat = img.reshape(n, -1).astype(np.float64).copy()
    flat[m] = np.linalg.solve(q[np.ix_(m, m)], -q[np.ix_(m, ~m)] @ flat[~m])
    return flat.reshape(img.shape)


@pytest.mark.parametrize("lam", [0.0, 1.0, 3.0])
def test_gmrf_fill_is_the_conditional_mean_of_its_prior(lam, monkeypatch):
    """:func:`gmrf_fill` solves exactly the GMRF conditional mean (dense reference, holes touching the border and
    each other), keeps known pixels bit-exact, reproduces a linear ramp (in the null space of L away from the
    border), and per-part solving gives the same result as one solve of the whole image."""

    rng = np.random.default_rng(3)
    img = rng.random((20, 23, 3))
    hole = np.zeros((20, 23), bool)
    hole[3:9, 4:12] = True
    hole[0:3, 18:23] = True  # touches the corner
    hole[14:18, 2:20] = True
    hole[12, 8] = True  # a single pixel 2 px from the box below: coupled through L @ L
    got = fills.gmrf_fill(img * ~hole[..., None], hole, lam)
    np.testing.assert_allclose(got, _dense_gmrf(img, hole, lam), atol=1e-10)
    np.testing.assert_array_equal(got[~hole], img[~hole])
    gray = fills.gmrf_fill(img[..., 0], hole, lam)
    assert gray.shape == (20, 23)
    np.testing.assert_allclose(gray, got[..., 0], atol=1e-12)

    yy, xx = np.mgrid[0:20, 0:23]
    ramp = (0.2 + 0.01 * yy + 0.02 * xx)[..., None]
    inner = np.zeros_like(hole)
    inner[4:16, 5:19] = True
    np.testing.assert_allclose(fills.gmrf_fill(ramp * ~inner[..., None], inner, lam), ramp, atol=1e-10)

    # more missing pixels than the limit, each part below it: solved part by part, same answer
    monkeypatch.setattr(fills, "GMRF_DIRECT_MAX", 100)
    np.testing.assert_allclose(fills.gmrf_fill(img * ~hole[..., None], hole, lam), got, atol=1e-10)
    with pytest.raises(ValueError, match="bilaplacian"):
        fills.gmrf_fill(img, hole, -1.0)
    with pytest.raises(ValueError, match="whole image"):
        fills.gmrf_fill(img, np.ones((20, 23), bool))


def test_gmrf_prefill_coarse_to_fine_on_large_holes_and_photos(monkeypatch):
    """A hole larger than ``GMRF_DIRECT_MAX`` is filled coarse-to-fine: within 0.1 dB of the exact fill on a
    photo; as ``prefill: gmrf`` it goes through mask_out (training, validation, ``restore inpaint``); and on held-out
    BSDS500 photos it beats OpenCV Telea on the missing pixels (box holes)."""

    photos = sorted((SHARED_DATA / "bsds500" / "test").glob("*.jpg"))[:3]
    if not photos:
        pytest.skip("../shared/data/bsds500 is not available")
    clean = np.asarray(Image.open(photos[0]).convert("RGB"), np.float64)[:160, :240] / 255
    hole = np.zeros(clean.shape[:2], bool)
    hole[20:140, 30:150] = True  # 14,400 px
    hole[60:70, 160:230] = True
    exact = fills.gmrf_fill(clean * ~hole[..., None], hole)
    monkeypatch.setattr(fills, "GMRF_DIRECT_MAX", 3000)
    monkeypatch.setattr(fills, "GMRF_BAND", 6)
    approx = fills.gmrf_fill(clean * ~hole[..., None], hole)
    np.testing.assert_array_equal(approx[~hole], clean[~hole])
    assert abs(psnr(clean, approx, mask=hole) - psnr(clean, exact, mask=hole)) < 0.1
    assert np.abs(approx - exact).max() < 0.05
    monkeypatch.undo()

    cfg = degradation(kind="inpaint", prefill="gmrf", bilaplacian=1.0)
    with pytest.raises(ConfigError, match="bilaplacian"):
        degradation(kind="inpaint", prefill="gmrf", bilaplacian=-0.5)
    gains = []
    for clean, hole, x, m in _photos_with_boxes(photos):
        filled = mask_out(x, m, cfg.cfg)[0].permute(1, 2, 0).numpy()
        assert filled.dtype == np.float32
        np.testing.assert_array_equal(filled[~hole], clean[~hole])
        np.testing.assert_allclose(filled, fills.gmrf_fill(clean * ~hole[..., None], hole), atol=1e-6)
        plain = mask_out(x, m, degradation(kind="inpaint", prefill="telea").cfg)[0].permute(1, 2, 0).numpy()
        gains.append(psnr(clean, filled, mask=hole) - psnr(clean, plain, mask=hole))
    assert np.mean(gains) > 0.5, gains


def test_telea_smooth_prefill_blurs_by_depth_and_beats_telea_on_photos():
    """``prefill: telea-smooth``: known pixels exact; a pixel at depth d in the hole holds the Telea fill blurred with
    std ``smooth_scale * d`` (checked against cv2.GaussianBlur at a depth where that std is exactly 4 px); a flat
    image stays flat; and on held-out BSDS500 photos it is closer to the truth in the holes than plain Telea."""
    import cv2

    from convgen.classical.fills import smooth_by_depth, telea_fill

    rng = np.random.default_rng(0)
    img = rng.random((96, 96, 3)).astype(np.float32)
    mask = np.zeros((96, 96), bool)
    mask[20:80, 30:90] = True
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    p = (50, 60)
    out = smooth_by_depth(img, mask, scale=4.0 / depth[p])
    np.testing.assert_array_equal(out[~mask], img[~mask])
    np.testing.assert_allclose(out[p], cv2.GaussianBlur(img, (0, 0), 4.0)[p], atol=1e-5)
    assert abs(out[p] - img[p]).max() > 0.05  # and that is not the unblurred value
    flat = np.full((96, 96, 3), 0.3, np.float32)
    np.testing.assert_allclose(smooth_by_depth(flat, mask), flat, atol=1e-6)

    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    cfg = degradation(kind="inpaint", prefill="telea-smooth", smooth_scale=0.8)
    want = smooth_by_depth(telea_fill(x * (1 - m), m)[0].permute(1, 2, 0).numpy(), mask, 0.8)
    np.testing.assert_allclose(mask_out(x, m, cfg.cfg)[0].permute(1, 2, 0).numpy(), want, atol=1e-6)
    with pytest.raises(ConfigError, match="smooth_scale"):
        degradation(kind="inpaint", prefill="telea-smooth", smooth_scale=0)

    photos = sorted((SHARED_DATA / "bsds500" / "test").glob("*.jpg"))[:3]
    if not photos:
        pytest.skip("../shared/data/bsds500 is not available")
    gains = []
    for clean, hole, x, m in _photos_with_boxes(photos):
        plain = mask_out(x, m, degradation(kind="inpaint", prefill="telea").cfg)[0].permute(1, 2, 0).numpy()
        smooth = mask_out(x, m, cfg.cfg)[0].permute(1, 2, 0).numpy()
        gains.append(psnr(clean, smooth, mask=hole) - psnr(clean, plain, mask=hole))
    assert np.mean(gains) > 0.3, gains


def test_average_models_is_the_weighted_mean_and_restores(trained: Path, tmp_path: Path):
    from safetensors.torch import load_file

    from convgen.errors import ConvgenError

    a, b = trained / "checkpoints" / "step_00000020", trained / "checkpoints" / "step_00000040"
    out = convgen.average_models([a, b], tmp_path / "avg", weights=[1, 3])
    wa, wb, wo = (load_file(str(d / "restorer.safetensors")) for d in (a, b, out))
    assert wo.keys() == wa.keys() and any(not torch.equal(wa[k], wb[k]) for k in wa if wa[k].is_floating_point())
    for k, v in wo.items():
        assert v.dtype == wa[k].dtype
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * wa[k] + 0.75 * wb[k], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(v, wa[k])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["average_weights"] == [0.25, 0.75] and "metrics" not in meta and len(meta["averaged_from"]) == 2
    clean = smooth_images(1, 64, seed=9)[0].astype(np.float32) / 255
    noisy = gaussian_noise(clean, 25, 0).astype(np.float32)
    assert psnr(clean, convgen.load(out).restore(noisy)) > psnr(clean, np.clip(noisy, 0, 1)) + 3
    # bad input: one model, wrong weights, an existing output, a different network
    other = tmp_path / "other"
    other.mkdir()
    for f in a.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((a / "config.json").read_text())
    cfg["model"]["width"] = 8
    (other / "config.json").write_text(json.dumps(cfg))
    for args, message in [
        (([a], tmp_path / "x"), "at least two"),
        (([a, b], tmp_path / "x", [1.0]), "1 weights for 2 models"),
        (([a, b], tmp_path / "x", [1.0, -1.0]), "must be >= 0"),
        (([a, b], tmp_path / "x", [1.0, float("nan")]), "must be >= 0"),
        (([a, b], out), "already exists"),
        (([a, other], tmp_path / "x"), "a different network"),
        (([a, b], trained, None, True), "cannot be \\(or hold\\) one of the models"),  # would delete the run
    ]:
        with pytest.raises(ConvgenError, match=message):
            convgen.average_models(*args)
    assert not (tmp_path / "x").exists()
    # the CLI: one line, exit 2, nothing overwritten without --overwrite
    before = (out / "restorer.safetensors").read_bytes()
    r = cli("average", str(a), str(b), "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (out / "restorer.safetensors").read_bytes() == before
    r = cli("average", str(a), str(b), "--out", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    first = next(k for k in wa if wa[k].is_floating_point())
    torch.testing.assert_close(load_file(str(out / "restorer.safetensors"))[first], (wa[first] + wb[first]) / 2)


# -- camera noise ------------------------------------------------------------------------------------------------
def _noise_stats(noisy: np.ndarray, clean: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(std on the 0-255 scale, horizontal neighbour correlation, R-G correlation, std per intensity fifth / its
    median) of the noise of one H x W x 3 pair."""
    d, v = (noisy - clean).astype(np.float64), clean.astype(np.float64)
    std = d.std() * 255
    hcorr = np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]
    rg = np.corrcoef(d[..., 0].ravel(), d[..., 1].ravel())[0, 1]
    edges = np.linspace(0, 1, 6)
    curve = np.array([d.ravel()[(v.ravel() >= a) & (v.ravel() < b)].std() if ((v >= a) & (v < b)).sum() > 500
                      else np.nan for a, b in zip(edges[:-1], edges[1:], strict=True)])  # fmt: skip
    return std, hcorr, rg, curve / np.nanmedian(curve)


def test_camera_noise_has_the_statistics_of_real_camera_noise():
    """The camera degradation against the 15 real pairs of ../shared/data/realnoise/cc15: its noise levels cover
    theirs, it is correlated between neighbouring pixels and across channels as theirs is (demosaicking, in-camera
    noise and chroma reduction), and it depends on the intensity the same way (weakest in the highlights)."""
    real_dir = SHARED_DATA / "realnoise" / "cc15"
    real = [_noise_stats(np.asarray(Image.open(f), np.float64) / 255,
                         np.asarray(Image.open(real_dir / "clean" / f.name), np.float64) / 255)
            for f in sorted((real_dir / "noisy").glob("*.png"))]  # fmt: skip
    assert len(real) == 15
    deg = make_degradation({"kind": "camera", "jpeg_probability": 0.0, "clean_probability": 0.0, "mosaic": 1.0})
    files = sorted((SHARED_DATA / "bsds500" / "train").glob("*.jpg"))[:48]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)[:128, :128] / 255)
                     .permute(2, 0, 1) for f in files])  # fmt: skip
    noisy, target = deg.degrade(x, torch.Generator().manual_seed(0))
    assert float((target - x).abs().mean()) < 1 / 255  # the noise-free camera keeps the photo (highlights aside)
    syn = [_noise_stats(noisy[i].permute(1, 2, 0).numpy(), target[i].permute(1, 2, 0).numpy()) for i in range(48)]
    real_std, syn_std = np.array([s[0] for s in real]), np.array([s[0] for s in syn])
    assert np.mean((syn_std >= real_std.min()) & (syn_std <= real_std.max())) > 0.3  # the real levels are common
    assert syn_std.min() < real_std.min() and syn_std.max() > real_std.max()  # and the range reaches past them
    real_h, syn_h = np.array([s[1] for s in real]), np.array([s[1] for s in syn])
    assert 0.55 < np.median(syn_h) < 0.85 and np.percentile(syn_h, 10) < np.median(real_h) < np.percentile(syn_h, 90)
    real_rg, syn_rg = np.array([s[2] for s in real]), np.array([s[2] for s in syn])
    assert real_rg.min() > 0.15 and np.percentile(syn_rg, 75) > np.median(real_rg)  # channels move together often
    real_curve, syn_curve = np.nanmedian([s[3] for s in real], 0), np.nanmedian([s[3] for s in syn], 0)
    assert real_curve[-1] < 0.9 and syn_curve[-1] < 0.9  # both weakest in the brightest fifth
    assert np.abs(real_curve[:3] - syn_curve[:3]).max() < 0.2  # and flat through the darks and mid-tones
    # a white-noise model has none of this
    white = make_degradation({"kind": "noise", "sigma": 6.0}).batch(x[:8].clone(), torch.Generator().manual_seed(0))[0]
    assert abs(_noise_stats(white[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy())[1]) < 0.1


def test_camera_noise_training_batches_and_protocol():
    deg = make_degradation({"kind": "camera"})
    clean = torch.rand(6, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    before = clean.clone()
    noisy, level = deg.batch(clean, torch.Generator().manual_seed(2))
    assert noisy.shape == clean.shape and level.shape == (6, 1, 32, 40) and torch.isfinite(noisy).all()
    assert float((clean - before).abs().mean()) < 0.01  # the target: the photo through the noise-free camera
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1 and float(level.min()) >= 0
    img = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    a, b = deg.protocol(img, 3), deg.protocol(img, 3)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], deg.protocol(img, 4)[0])  # seeded by index
    with pytest.raises(ConvgenError, match="colour"):
        deg.batch(torch.rand(2, 1, 8, 8), torch.Generator())
