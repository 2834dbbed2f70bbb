"""Diffusion: the schedule's closed forms against direct computation, the samplers' defining properties (DDIM
eta = 0 deterministic, eta = 1 over all steps = DDPM, guidance 0 = unconditional, RePaint keeps known pixels), a
tiny U-Net's outputs (diffusers-style expected slices), training, resume, and the pipeline and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import convgen
from convgen.config import build_config
from convgen.diffusion import (
    ImageNoise,
    NoiseSchedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    denoise_from,
    guided_predictor,
    repaint_cost,
    repaint_sample,
    repaint_schedule,
)
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError
from convgen.io.images import read_image
from convgen.models.diffusion import UNet, timestep_embedding
from tests.conftest import cli, with_overrides


def ddpm_config(**overrides) -> dict:
    cfg = {
        "name": "tiny-ddpm",
        "seed": 0,
        "task": {"type": "diffusion", "timesteps": 100, "sample_steps": 4, "eval_samples": 20,
                 "fd_extractor": "mnist-classifier", "sample_grid": 20},
        "model": {"type": "unet", "widths": [8, 16], "attention_heads": 2, "groups": 4, "num_classes": 10},
        "data": {"type": "mnist", "limit": 600, "val_count": 100},
        "train": {"max_steps": 40, "batch_size": 50, "lr": 0.003, "log_every": 10, "eval_every": 40,
                  "ckpt_every": 40, "progress": False},
    }  # fmt: skip
    return with_overrides(cfg, overrides)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddpm") / "run"
    Trainer(build_config(ddpm_config()), run).fit()
    return run / "model"


# -- the schedule ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_closed_forms_match_direct_computation(kind):
    s = NoiseSchedule.make(kind, 200)
    abar, prod = [], 1.0
    for b in s.betas.tolist():
        prod *= 1 - b
        abar.append(prod)
    assert torch.allclose(s.alphas_cumprod, torch.tensor(abar, dtype=torch.float64), rtol=1e-12)
    if kind == "cosine":  # abar_t = f(t) / f(0) wherever the beta clip is not active
        f = [math.cos(((t / 200) + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(201)]
        direct = torch.tensor([f[t + 1] / f[0] for t in range(200)], dtype=torch.float64)
        assert torch.allclose(s.alphas_cumprod[:-5], direct[:-5], rtol=1e-9)
    else:
        assert s.betas[0] == pytest.approx(5 * 1e-4) and s.betas[-1] == pytest.approx(5 * 0.02)
    # posterior q(x_{t-1} | x_t, x_0) by Gaussian conditioning: precision = 1/(1-abar') + alpha/beta
    x0, xt = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for t in (1, 50, 199):
        ab_prev, a, b = abar[t - 1], 1 - s.betas[t].item(), s.betas[t].item()
        var = 1 / (1 / (1 - ab_prev) + a / b)
        mean = var * (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(a) * xt / b)
        m, v = s.posterior(x0, xt, torch.tensor([t] * 3))
        assert torch.allclose(m, mean, atol=1e-10)
        assert torch.allclose(v.flatten(), torch.tensor([var] * 3, dtype=torch.float64), rtol=1e-9)
    m0, v0 = s.posterior(x0, xt, torch.tensor([0] * 3))
    assert torch.allclose(m0, x0) and float(v0.max()) == 0  # the last step returns the clean estimate


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
def test_parameterisations_round_trip(kind):
    s = NoiseSchedule.make("cosine", 1000)
    x0 = torch.rand(4, 1, 6, 6) * 1.6 - 0.8
    noise = torch.randn(4, 1, 6, 6)
    t = torch.tensor([0, 10, 500, 999])
    xt = s.q_sample(x0, t, noise)
    est_x0, est_eps = s.split(kind, xt, s.target(kind, x0, noise, t), t, clip=False)
    # x0 from eps is ill-conditioned where abar ~ 0 (t = 999) and eps from x0 where abar ~ 1 (t = 0)
    assert torch.allclose(est_x0[:3], x0[:3], atol=1e-3) and torch.allclose(est_eps[1:], noise[1:], atol=1e-3)
    assert s.timestep_for_sigma(float(s.sigma(300))) == 300


def test_q_sample_has_the_forward_process_moments():
    s = NoiseSchedule.make("linear", 1000)
    x0 = torch.full((20000, 1, 1, 1), 0.5)
    noise = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    xt = s.q_sample(x0, torch.full((20000,), 400), noise)
    ab = float(s.abar(400))
    assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 0.5, abs=0.02)
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.05)


# -- samplers ----------------------------------------------------------------------------------------------------
def toy_predict(schedule, kind="eps"):
    """A fixed smooth 'network': x0_hat = tanh(x) scaled, any timestep."""

    def net(x, t, labels):
        shift = 0 if labels is None else labels.float()[:, None, None, None] * 0.1
        return torch.tanh(x) * 0.5 + shift + 0.001 * t.float()[:, None, None, None]

    return net


def test_ddim_eta0_is_deterministic_and_eta1_all_steps_is_ddpm():
    s = NoiseSchedule.make("linear", 50)
    predict = guided_predictor(toy_predict(s), s, "eps", None, 1.0, None)
    x = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(predict, x.clone(), s, 10, 0.0, ImageNoise([1, 2, 3]))
    b = ddim_sample(predict, x.clone(), s, 10, 0.0, ImageNoise([7, 8, 9]))
    assert torch.equal(a, b)  # no noise is drawn with eta 0
    # eta 1 on every step: the same per-step distribution as DDPM, so with the same draws the same path
    ddim = ddim_sample(predict, x.clone(), s, 50, 1.0, ImageNoise([4, 5, 6]))
    ddpm = ddpm_sample(predict, x.clone(), s, ImageNoise([4, 5, 6]))
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    # and one step by one step, the mean and the variance agree
    x0, eps = predict(x, 30)
    zero = lambda like: torch.zeros_like(like)  # noqa: E731
    assert torch.allclose(ddim_step(s, x, 30, 29, x0, eps, 1.0, zero), ddpm_step(s, x, 30, x0, zero), atol=1e-6)
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]


def test_guidance_zero_is_the_unconditional_model_and_one_the_conditional():
    s = NoiseSchedule.make("cosine", 100)
    net = toy_predict(s)
    x, y = torch.randn(4, 1, 5, 5), torch.tensor([0, 3, 5, 9])
    null = torch.full_like(y, 10)
    tb = torch.full((4,), 40)
    uncond = s.split("eps", x, net(x, tb, null), tb)
    cond = s.split("eps", x, net(x, tb, y), tb)
    for w, want in ((0.0, uncond), (1.0, cond)):
        got = guided_predictor(net, s, "eps", y, w, 10)(x, 40)
        assert all(torch.allclose(g, e) for g, e in zip(got, want, strict=True))
    out = net(x, tb, null) + 3 * (net(x, tb, y) - net(x, tb, null))
    got = guided_predictor(net, s, "eps", y, 3.0, 10)(x, 40)
    assert torch.allclose(got[0], s.split("eps", x, out, tb)[0], atol=1e-6)


def test_repaint_keeps_known_pixels_and_follows_its_schedule():
    seq = repaint_schedule(10, 2, 3)
    assert seq[0] == 10 and seq[-1] == 0 and all(abs(a - b) == 1 for a, b in zip(seq[:-1], seq[1:], strict=True))
    assert repaint_cost(10, 2, 3) == 10 + len(range(0, 8, 2)) * 2 * 2
    assert repaint_schedule(10, 2, 1) == list(range(10, -1, -1))
    s = NoiseSchedule.make("cosine", 100)
    predict = guided_predictor(toy_predict(s), s, "eps", None, 1.0, None)
    known = torch.rand(2, 1, 8, 8) * 2 - 1
    keep = torch.zeros(2, 1, 8, 8)
    keep[:, :, :4] = 1
    out = repaint_sample(predict, known, keep, s, ImageNoise([1, 2]), steps=10, jump=2, resample=3)
    assert torch.equal(out[:, :, :4], known[:, :, :4])
    assert not torch.allclose(out[:, :, 4:], known[:, :, 4:])
    noisy = known + 0.2 * torch.randn_like(known)
    den = denoise_from(predict, noisy, s, 0.2, 5)
    assert den.shape == noisy.shape and torch.isfinite(den).all()


# -- the U-Net ---------------------------------------------------------------------------------------------------
def test_tiny_unet_expected_slices_and_shapes():
    torch.manual_seed(0)
    net = UNet(UNet.Config(widths=[4, 8], blocks=1, attention_heads=2, groups=4, num_classes=3, dropout=0.0))
    assert sum(p.numel() for p in net.parameters()) == 11961
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 500])
    assert torch.equal(net(x, t, torch.tensor([0, 3])), torch.zeros(2, 1, 12, 12))  # zero-initialised output
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    net.eval()
    out = net(x, t, torch.tensor([0, 3]))
    expected0 = [-0.50681, -0.10313, 0.58228, 0.47871, -0.57922, -0.29616, -0.22298, -0.43808, -0.15465]
    expected1 = [-0.07026, 0.07822, 0.46237, 0.28418, -0.59447, 0.73889, 0.21431, -0.17655, -0.54974]
    assert torch.allclose(out[0, 0, -3:, -3:].flatten(), torch.tensor(expected0), atol=1e-4)
    assert torch.allclose(out[1, 0, :3, :3].flatten(), torch.tensor(expected1), atol=1e-4)
    assert torch.equal(net(x, t, None), net(x, t, torch.tensor([3, 3])))  # no labels = the null class
    odd = net(torch.randn(1, 1, 13, 9), torch.tensor([3]))
    assert odd.shape == (1, 1, 13, 9)
    emb = timestep_embedding(torch.tensor([0.0, 5.0]), 6)
    assert torch.allclose(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    assert torch.allclose(emb[1, 3], torch.tensor(math.sin(5.0)))


def test_bad_model_and_task_values_are_refused():
    with pytest.raises(ConfigError, match="model.widths"):
        build_config(ddpm_config(model__widths=[6, 16]))
    with pytest.raises(ConfigError, match="attention_heads"):
        build_config(ddpm_config(model__attention_heads=3))
    with pytest.raises(ConfigError, match="task.sample_steps"):
        build_config(ddpm_config(task__sample_steps=101))
    with pytest.raises(ConfigError, match="task.schedule"):
        build_config(ddpm_config(task__schedule="quadratic"))


# -- training ----------------------------------------------------------------------------------------------------
def test_training_lowers_the_loss_exports_ema_and_scores_samples(tiny_model: Path):
    run = tiny_model.parent
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert np.mean(losses[-2:]) < 0.6 * losses[0]
    val = [r for r in rows if "val/fd" in r][-1]
    assert {"val/fd", "val/loss", "val/class_accuracy", "val/diversity"} <= set(val)
    assert sorted(p.name for p in tiny_model.glob("*.safetensors")) == ["unet_ema.safetensors"]
    meta = json.loads((tiny_model / "meta.json").read_text())
    assert meta["inference"] == {"steps": 4, "guidance": 2.0, "eta": 0.0}
    assert (run / "samples.png").is_file()


def test_resume_is_exact(tmp_path: Path, monkeypatch):
    """With random flips on (their draws are part of the resume state); every training batch goes through them and
    some images come out mirrored; a run without them differs."""
    from convgen.data.transforms import random_hflip

    mirrored = []

    def spy(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = random_hflip(x, gen)
        mirrored.append(not torch.equal(out, x))
        return out

    monkeypatch.setattr("convgen.tasks.diffusion.random_hflip", spy)
    cfg = ddpm_config(train__max_steps=8, train__ckpt_every=4, train__eval_every=4, train__deterministic=True,
                      task__fd_extractor="none", task__hflip=True)  # fmt: skip
    Trainer(build_config(cfg), tmp_path / "a").fit()
    assert len(mirrored) == 8 and all(mirrored)  # 50 digits a batch: some mirrored in every one
    Trainer(build_config({**cfg, "train": {**cfg["train"], "max_steps": 4}}), tmp_path / "b").fit()
    Trainer(build_config(cfg), tmp_path / "b", resume="latest").fit()
    Trainer(build_config({**cfg, "task": {**cfg["task"], "hflip": False}}), tmp_path / "c").fit()

    def weights(run: str, name: str) -> dict:
        return load_file(str(tmp_path / run / "checkpoints" / "step_00000008" / f"{name}.safetensors"))

    for name in ("unet", "unet_ema"):
        a, b, c = weights("a", name), weights("b", name), weights("c", name)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)


# -- pipeline and CLI --------------------------------------------------------------------------------------------
def test_sampling_is_deterministic_batch_invariant_and_checks_options(tiny_model: Path):
    pipe = convgen.load(tiny_model)
    assert isinstance(pipe, convgen.pipelines.DiffusionPipeline) and pipe.num_classes == 10
    a = pipe.sample(6, seed=3, steps=3)
    b = pipe.sample(6, seed=3, steps=3, batch_size=4)
    assert a.shape == (6, 1, 28, 28) and a.dtype == torch.float32 and 0 <= float(a.min()) <= float(a.max()) <= 1
    # equal up to float rounding, which the first step from pure noise amplifies (x0 = (x - s eps) / sqrt(abar))
    assert torch.allclose(a, b, atol=1e-2) and float((a - b).abs().mean()) < 1e-4
    assert not torch.equal(a, pipe.sample(6, seed=4, steps=3))
    assert not torch.equal(a, pipe.sample(6, seed=3, steps=3, guidance=0.0))
    per = pipe.sample_per_class(2, seed=0, steps=2)
    assert sorted(per) == list(range(10)) and per[0].shape == (2, 1, 28, 28)
    strip = pipe.interpolate(steps=4, rows=2, seed=0)
    assert strip.shape == (8, 1, 28, 28)
    walk = pipe.interpolate(steps=3, rows=1, seed=0, classes=(1, 7))
    assert walk.shape == (3, 1, 28, 28) and not torch.equal(walk[0], walk[-1])
    for bad, match in (({"steps": 0}, "steps 0: must be in 1..100"), ({"guidance": -1.0}, "guidance -1: must be in"),
                       ({"eta": 2.0}, "eta 2: must be in"), ({"sampler": "gmm"}, "does not take sampler")):  # fmt: skip
        with pytest.raises(convgen.errors.ConvgenError, match=match):
            pipe.sample(2, **bad)


def test_restore_inpaint_keeps_known_pixels_and_denoise_reduces_error(tiny_model: Path, tmp_path: Path):

    pipe = convgen.load(tiny_model)
    rng = np.random.default_rng(0)
    clean = np.zeros((28, 28), np.float32)
    clean[6:22, 12:16] = 1.0
    mask = np.zeros((28, 28), bool)
    mask[:14] = True
    painted = np.where(mask, 1.0, clean).astype(np.float32)
    out = pipe.inpaint(painted, mask, steps=4, jump=2, resample=2)
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert np.array_equal(out[~mask, 0], painted[~mask])
    assert np.array_equal(out, pipe.inpaint(painted, mask, steps=4, jump=2, resample=2))  # deterministic per seed
    # restore_files runs the files as one batch, with the noise each file would get alone
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        Image.fromarray((np.roll(painted, 3 * k, axis=1) * 255).astype(np.uint8)).save(tmp_path / "in" / f"{k}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / f"{k}.png")
    pipe.restore_files(tmp_path / "in", tmp_path / "out", mask=tmp_path / "masks", steps=4, jump=2, resample=2)
    for k in range(3):
        img = np.asarray(Image.open(tmp_path / "in" / f"{k}.png"), np.float32) / 255
        alone = np.round(pipe.inpaint(img, mask, steps=4, jump=2, resample=2)[..., 0] * 255)
        batched = np.asarray(Image.open(tmp_path / "out" / f"{k}.png"), np.float32)
        assert np.abs(alone - batched).max() <= 3 and np.abs(alone - batched).mean() < 0.1  # rounding only
    noisy = np.clip(clean + rng.normal(0, 50 / 255, clean.shape), 0, 1).astype(np.float32)
    den = pipe.denoise(noisy, steps=3)  # sigma estimated
    assert den.shape == (28, 28, 1) and np.isfinite(den).all()
    with pytest.raises(convgen.errors.ImageError, match="4 to 256 px"):
        pipe.denoise(np.zeros((300, 300), np.float32), sigma=10)
    with pytest.raises(convgen.errors.ConvgenError, match="does not take jump"):
        pipe.denoise(noisy, sigma=10, jump=2)


def test_cli_sample_twice_identical_and_restore_verbs(tiny_model: Path, tmp_path: Path):
    model, x, e = str(tiny_model), str(tmp_path / "x.png"), str(tmp_path / "e.png")
    for run in ("a", "b"):
        r = cli("sample", model, "--n", "5", "--seed", "0", "--steps", "3", "--out", str(tmp_path / run))
        assert r.returncode == 0, r.stderr
    r = cli("sample", model, "--n", "5", "--seed", "0", "--steps", "3", "--out", str(tmp_path / "p"), "--no-provenance")
    assert r.returncode == 0, r.stderr
    for f in ("00000.png", "00004.png"):  # the same pixels; a C2PA manifest is signed afresh each time
        assert np.array_equal(read_image(tmp_path / "a" / f), read_image(tmp_path / "b" / f))
        assert np.array_equal(read_image(tmp_path / "a" / f), read_image(tmp_path / "p" / f))
    r = cli("sample", model, "--per-class", "1", "--steps", "2", "--guidance", "3", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [str(c) for c in range(10)]
    img = np.zeros((28, 28), np.uint8)
    img[5:23, 10:18] = 255
    img[:14] = 255
    m = np.zeros((28, 28), np.uint8)
    m[:14] = 255
    Image.fromarray(img).save(tmp_path / "x.png")
    Image.fromarray(m).save(tmp_path / "m.png")
    r = cli("restore", "inpaint", model, "--input", x, "--mask", str(tmp_path / "m.png"),
            "--output", str(tmp_path / "o.png"), "--steps", "3", "--jump", "1", "--resample", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = np.array(Image.open(tmp_path / "o.png"))
    assert out.shape == (28, 28) and np.array_equal(out[14:], img[14:])
    r = cli("restore", "denoise", model, "--input", x, "--output", str(tmp_path / "d.png"),
            "--sigma", "40", "--steps", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for args, match in (
        (["restore", "inpaint", model, "--input", x, "--output", e],
         "needs a --mask"),
        (["restore", "denoise", model, "--input", x, "--output", e,
          "--sigma", "300"], "--sigma 300"),
        (["restore", "denoise", "denoise-gray-s25", "--input", x, "--output",
          e, "--steps", "3"], "does not take --steps"),
        (["sample", model, "--n", "2", "--steps", "101", "--out", str(tmp_path / "f")], "--steps 101"),
    ):  # fmt: skip
        r = cli(*args)
        assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr, r.stderr
