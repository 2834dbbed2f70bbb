"""VAEs and autoencoders: likelihood maths on known answers, the IWAE bound against the ELBO, training, resume,
sampling through the Sampler API, reconstruction and the one-line errors of the commands."""

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
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError, ConvgenError
from convgen.losses.likelihood import (
    bernoulli_nll,
    bits_per_dim,
    discretized_logistic_nll,
    free_bits_kl,
    gaussian_kl,
    gaussian_kl_per_dim,
    iwae_nll,
)
from tests.conftest import cli, with_overrides


def vae_config(**overrides) -> dict:
    cfg = {
        "name": "tiny-vae",
        "seed": 0,
        "task": {"type": "vae", "eval_samples": 100, "fd_extractor": "mnist-classifier", "kl_warmup_steps": 20},
        "model": {"type": "conv-vae", "latent_dim": 8, "width": 8, "hidden": 64},
        "data": {"type": "mnist", "limit": 600, "val_count": 100},
        "train": {"max_steps": 60, "batch_size": 50, "lr": 0.003, "log_every": 10, "eval_every": 30,
                  "ckpt_every": 30, "progress": False},
    }  # fmt: skip
    return with_overrides(cfg, overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    Trainer(build_config(vae_config()), run).fit()
    return run


@pytest.fixture(scope="module")
def trained_cvae(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cvae") / "run"
    Trainer(build_config(vae_config(model__num_classes=10)), run).fit()
    return run


def test_likelihood_conversions_on_known_answers():
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    nll = bernoulli_nll(torch.zeros(3, 1, 28, 28), x)  # p = 0.5 everywhere
    torch.testing.assert_close(nll, torch.full((3,), 784 * math.log(2)))
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # the discretized logistic is a probability over the 256 values of a pixel
    values = torch.arange(256, dtype=torch.float32).view(256, 1, 1, 1) / 255
    params = torch.tensor([0.3, -2.0]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
    assert torch.exp(-discretized_logistic_nll(params, values)).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_free_bits_floor_each_dimension_and_stop_its_gradient():
    mu = torch.tensor([[2.0, 0.01], [2.0, -0.01]], requires_grad=True)  # dimension 0 carries 2 nats, dimension 1 ~0
    logvar = torch.zeros(2, 2)
    kl = free_bits_kl(gaussian_kl_per_dim(mu, logvar), floor=0.5)
    assert kl.shape == (2,)
    torch.testing.assert_close(kl, torch.full((2,), 2.0 + 0.5))  # 0.5 * 2^2 = 2 nats above the floor, the other at it
    kl.sum().backward()
    assert mu.grad[:, 0].abs().min() > 0 and torch.equal(mu.grad[:, 1], torch.zeros(2))  # no push to switch off
    # a floor of 0: the plain KL (batch mean)
    torch.testing.assert_close(
        free_bits_kl(gaussian_kl_per_dim(mu, logvar), 0.0), gaussian_kl(mu, logvar).mean().expand(2)
    )


def test_iwae_is_never_above_the_elbo_and_falls_with_k(trained: Path):
    pipe = convgen.load(trained, device="cpu")
    from convgen.data.datasets import bundled_mnist_paths
    from convgen.data.formats import read_idx_pair

    images, _ = read_idx_pair(*bundled_mnist_paths())
    x = torch.from_numpy(images[7980:8000]).permute(0, 3, 1, 2).float() / 255
    by_k = {}
    for k in (1, 10, 100):
        runs = [pipe.likelihood(x, k=k, seed=s, progress=False) for s in range(3)]
        for r in runs:
            e, w = np.array(r["per_image"]["neg_elbo_nats"]), np.array(r["per_image"]["nll_iwae_nats"])
            assert (w <= e + 1e-9).all()  # on every image
            if k == 1:
                np.testing.assert_allclose(w, e, rtol=1e-12)  # one sample: the IWAE estimate is the ELBO
        by_k[k] = np.mean([r["nll_iwae_nats"] for r in runs])
        assert runs[0]["bits_per_dim"] == pytest.approx(runs[0]["nll_iwae_nats"] / (784 * math.log(2)))
    assert by_k[1] > by_k[10] > by_k[100]
    log_w = torch.tensor([[-3.0], [-1.0]])
    assert iwae_nll(log_w).item() == pytest.approx(-(math.log((math.exp(-3) + math.exp(-1)) / 2)))


def test_training_lowers_the_negative_elbo_and_exports(trained: Path):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train = [r["train/neg_elbo"] for r in records if "train/neg_elbo" in r]
    val = [r["val/neg_elbo"] for r in records if "val/neg_elbo" in r]
    assert train[-1] < 0.75 * train[0] and val[-1] < val[0]
    assert {"val/fd", "val/rec", "val/kl"} <= set(records[-1])
    meta = json.loads((trained / "model" / "meta.json").read_text())
    assert meta["binarize"] == "stochastic" and meta["best_metric"] == "val/neg_elbo"
    assert (trained / "samples.png").is_file() and (trained / "reconstructions.png").is_file()


def test_resume_is_exact(tmp_path: Path):
    cfg = vae_config(train__max_steps=20, train__ckpt_every=10, train__eval_every=10, train__deterministic=True)
    Trainer(build_config(cfg), tmp_path / "a").fit()
    Trainer(build_config({**cfg, "train": {**cfg["train"], "max_steps": 10}}), tmp_path / "b").fit()
    Trainer(build_config(cfg), tmp_path / "b", resume="latest").fit()
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000020" / "vae.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000020" / "vae.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_iwae_objective_plain_and_denoising_autoencoders_train(tmp_path: Path):
    for name, overrides in (
        ("iwae", {"task__iwae_k": 5}),
        ("ae", {"model__variational": False, "task__fd_extractor": "none"}),
        ("dae", {"model__variational": False, "task__corruption": {"kind": "noise", "sigma": 60.0}}),
        ("reference", {"model": {"type": "mlp-vae", "latent_dim": 8, "hidden": 64}}),
    ):
        cfg = vae_config(train__max_steps=20, train__eval_every=20, train__ckpt_every=20)
        for key, value in overrides.items():
            if key == "model":
                cfg["model"] = value
            else:
                section, _, field = key.partition("__")
                cfg[section][field] = value
        result = Trainer(build_config(cfg), tmp_path / name).fit()
        assert math.isfinite(result.final_metrics["val/neg_elbo"]), name
    with pytest.raises(ConfigError, match="iwae_k"):
        build_config(vae_config(task__iwae_k=0))
    with pytest.raises(ConfigError, match="needs a variational model"):
        Trainer(build_config(vae_config(task__iwae_k=3, model__variational=False)), tmp_path / "x").fit()


def test_ex_post_gaussian_mixture_recovers_clusters_and_samples(trained: Path):
    from convgen.models.autoencoders import GaussianMixture

    gen = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(400, 2, generator=gen) * 0.1 + 3, torch.randn(600, 2, generator=gen) * 0.3 - 2])
    gmm = GaussianMixture(2, 2).fit(z, seed=0)
    order = gmm.means[:, 0].argsort()
    torch.testing.assert_close(gmm.means[order], torch.tensor([[-2.0, -2.0], [3.0, 3.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(gmm.log_weights.exp()[order], torch.tensor([0.6, 0.4]), atol=0.01, rtol=0)
    draws = gmm.sample(2000, torch.Generator().manual_seed(1))
    assert abs((draws[:, 0] > 0).float().mean().item() - 0.4) < 0.05
    # exported with the model (task.finalize_export), listed in its checksums, used by sampler="gmm"
    assert (trained / "model" / "gmm.safetensors").is_file()
    assert "gmm.safetensors" in json.loads((trained / "model" / "meta.json").read_text())["files"]
    pipe = convgen.load(trained, device="cpu")
    ex_post, prior = pipe.sample(8, seed=0, sampler="gmm"), pipe.sample(8, seed=0)
    assert ex_post.shape == prior.shape and not torch.equal(ex_post, prior)
    torch.testing.assert_close(ex_post, pipe.sample(8, seed=0, sampler="gmm"))
    with pytest.raises(ConvgenError, match="sampler"):
        pipe.sample(4, sampler="flow")
    with pytest.raises(ConvgenError, match="sampling with mnist-dcgan does not take"):
        convgen.load("mnist-dcgan").sample(2, sampler="gmm")


def test_sampler_api_and_reconstruction(trained: Path, trained_cvae: Path):
    pipe = convgen.load(trained, device="cpu")
    a, b = pipe.sample(6, seed=3), pipe.sample(6, seed=3, batch_size=4)
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert pipe.interpolate(steps=4, rows=2, seed=1).shape == (8, 1, 28, 28)
    digit = np.zeros((28, 28), np.float32)
    digit[6:22, 12:16] = 1
    rec = pipe.reconstruct(digit)
    assert rec.shape == (28, 28, 1) and rec.dtype == np.float32
    cpipe = convgen.load(trained_cvae, device="cpu")
    groups = cpipe.sample_per_class(3, seed=0)
    assert sorted(groups) == list(range(10)) and all(g.shape == (3, 1, 28, 28) for g in groups.values())
    assert cpipe.interpolate(steps=3, rows=1, classes=(3, 8)).shape == (3, 1, 28, 28)
    ex_post = cpipe.sample_per_class(3, seed=0, sampler="gmm")  # each class from its own mixture components
    assert all(g.shape == (3, 1, 28, 28) for g in ex_post.values())
    gmm = cpipe.models["gmm"]
    assert sorted(gmm.component_class.tolist()) == sorted(list(range(10)) * (len(gmm.component_class) // 10))
    with pytest.raises(ConvgenError, match="out of range"):
        cpipe.sample(4, classes=[12])
    with pytest.raises(ConvgenError, match="class-conditional"):
        cpipe.reconstruct(digit)
    assert cpipe.reconstruct(digit, label=1).shape == (28, 28, 1)


def test_commands_and_their_errors(trained: Path, tmp_path: Path):
    d = tmp_path / "digits"
    r = cli("data", "export", "--split", "val", "--limit", "12", "--out", str(d))
    assert r.returncode == 0, r.stderr
    r = cli("eval", "likelihood", str(trained), "--input", str(d), "--samples", "20", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"neg_elbo_nats", "nll_iwae_nats", "bits_per_dim", "k", "n", "protocol"} <= set(out)
    assert out["k"] == 20 and out["n"] == 12
    assert out["nll_iwae_nats"] <= out["neg_elbo_nats"]
    r = cli("reconstruct", str(trained), "--input", str(d), "--output", str(tmp_path / "rec"))
    assert r.returncode == 0 and len(list((tmp_path / "rec").glob("*.png"))) == 12
    r = cli("sample", str(trained), "--n", "5", "--seed", "0", "--out", str(tmp_path / "s"))
    assert r.returncode == 0 and len(list((tmp_path / "s").glob("*.png"))) == 5
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray((np.zeros((28, 28, 3)) + [255, 0, 0]).astype(np.uint8)).save(tmp_path / "rgb.png")
    for args, needle in (
        (["reconstruct", str(trained), "--input", str(tmp_path / "big.png"), "--output", str(tmp_path / "o.png")],
         "this model takes 28x28"),
        (["reconstruct", str(trained), "--input", str(tmp_path / "rgb.png"), "--output", str(tmp_path / "o.png")],
         "channel"),
        (["eval", "likelihood", str(trained), "--input", str(d), "--samples", "0"], "--samples 0"),
        (["eval", "likelihood", "denoise-gray-s25", "--input", str(d)], "not a VAE"),
        (["sample", str(trained), "--n", "2", "--class", "3", "--out", str(tmp_path / "c")], "unconditional"),
    ):  # fmt: skip
        r = cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_latent_tools(trained: Path, tmp_path: Path):
    pipe = convgen.load(trained, device="cpu")
    digit = np.zeros((28, 28), np.float32)
    digit[5:23, 10:18] = 1
    rec = torch.from_numpy(pipe.reconstruct(digit)).permute(2, 0, 1)
    still = pipe.attribute_shift(digit, torch.zeros(pipe.net.latent_dim), steps=4)
    assert still.shape == (4, 1, 28, 28)
    for img in still:  # a zero direction returns the reconstruction at every step
        torch.testing.assert_close(img, rec, atol=1e-6, rtol=0)
    from convgen.pipelines.vae import labelled_set

    images, labels = labelled_set(None, None)  # the bundled validation digits
    assert images.shape == (1000, 1, 28, 28) and len(labels) == 1000
    means = pipe.class_means(images[:300], labels[:300])
    moved = pipe.attribute_shift(digit, means[8] - means[1], steps=3)
    assert not torch.allclose(moved[0], moved[-1])
    grid = pipe.traverse(digit, dims=[0, 3], steps=5)
    assert grid.shape == (10, 1, 28, 28)
    assert sorted(pipe.active_dims()) == list(range(pipe.net.latent_dim))
    what = pipe.latent_map(images[:200], labels[:200], tmp_path / "map.png")
    assert "PCA projection of the 8-D latent" in what and Image.open(tmp_path / "map.png").size[0] > 300
    with pytest.raises(ConvgenError, match="already exists"):
        pipe.latent_map(images[:200], labels[:200], tmp_path / "map.png")
    with pytest.raises(ConvgenError, match="latent dimensions"):
        pipe.traverse(dims=[99])
    with pytest.raises(ConvgenError, match="the latent has 8"):
        pipe.attribute_shift(digit, torch.zeros(3))
    two = tmp_path / "two"
    Trainer(build_config(vae_config(model__latent_dim=2, train__max_steps=10, train__eval_every=10)), two).fit()
    assert convgen.load(two).latent_map(images[:100], labels[:100], tmp_path / "m2.png") == "the 2-D latent itself"


def test_latent_tool_commands(trained: Path, tmp_path: Path):
    d = tmp_path / "digits"
    assert cli("data", "export", "--split", "val", "--limit", "30", "--out", str(d)).returncode == 0
    ok = [
        ["traverse", str(trained), "--out", str(tmp_path / "t.png"), "--steps", "4"],
        ["edit", str(trained), "--input", str(d / "00000.png"), "--from", "2", "--to", "7",
         "--out", str(tmp_path / "e.png"), "--reference", str(d)],
        ["latent-map", str(trained), "--input", str(d), "--out", str(tmp_path / "m.png")],
    ]  # fmt: skip
    for args in ok:
        r = cli(*args)
        assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "e.png").size[0] > 6 * 28
    for args, needle in (
        (ok[0], "already exists"),
        (["edit", str(trained), "--input", str(d / "00000.png"), "--from", "2", "--to", "12", "--out",
          str(tmp_path / "e2.png"), "--reference", str(d)], "class 12 has no image"),
        (["traverse", str(trained), "--out", str(tmp_path / "t2.png"), "--span", "0"], "--span"),
        (["latent-map", "mnist-dcgan", "--out", str(tmp_path / "m2.png")], "not a VAE"),
    ):  # fmt: skip
        r = cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_zoo_mixture_is_what_the_preset_refits_and_the_sampler_benchmark_runs(tmp_path: Path):
    """The zoo's ex-post mixture is what export fits with the preset's ``ex_post_components`` (so the recipe
    reproduces it), and ``benchmarks/vae_sampler.py`` scores a refitted mixture."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import vae_sampler

    from convgen.config import load_config

    preset = load_config(Path(__file__).resolve().parents[1] / "configs" / "vae" / "mnist-vae.yaml")
    copy = vae_sampler.refit("mnist-vae", preset.model.ex_post_components, tmp_path / "refit")
    zoo = Path(convgen.__file__).parent / "zoo" / "mnist-vae" / "gmm.safetensors"
    ours, theirs = load_file(copy / "gmm.safetensors"), load_file(zoo)
    # equal up to float rounding: the encoder's sums differ between CPUs (an AVX-512 machine gives 1e-4 off)
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k], atol=1e-3) for k in ours)
    extractor = vae_sampler.get_extractor("mnist-classifier")
    x_real = torch.rand(200, 1, 28, 28)
    row = vae_sampler.evaluate_model(str(copy), 100, 10, extractor, x_real, sampler="prior")
    assert row["fd_mnistcls"] > 0 and len(row["class_shares"]) == 10


def test_vae_refuses_other_families_sampling_options(tmp_path, capsys):
    """`--guidance` / `--steps` / `--eta` belong to diffusion models: a VAE says so instead of a traceback."""
    from convgen.cli import main

    assert main(["sample", "mnist-vae", "--n", "2", "--out", str(tmp_path / "s"), "--guidance", "2"]) == 2
    assert "sampling with mnist-vae does not take --guidance (it takes --sampler)" in capsys.readouterr().err
