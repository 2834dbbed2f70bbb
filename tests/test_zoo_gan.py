"""The shipped GANs do what their model cards say (checked with the zoo mnist-classifier as judge)."""

from __future__ import annotations

import pytest
import torch

import convgen
from convgen import zoo


def test_gans_are_listed():
    listed = {m["name"]: m for m in zoo.list_models()}
    assert listed["mnist-dcgan"]["task"] == "gan" and listed["mnist-cgan"]["task"] == "gan"
    assert "fd_mnistcls_2000" in listed["mnist-dcgan"]["metrics"]


def test_mnist_cgan_generates_the_requested_digit():
    gen = convgen.load("mnist-cgan", device="cpu")
    judge = convgen.load("mnist-classifier", device="cpu")
    groups = gen.sample_per_class(30, seed=123)
    correct = sum(int((judge.predict(groups[c]) == c).sum()) for c in range(10))
    assert correct / 300 >= 0.95


def test_cifar10_cgan_draws_the_requested_class():
    gen = convgen.load("cifar10-cgan", device="cpu")
    judge = convgen.load("cifar10-classifier-v1", device="cpu")  # the judge of the card
    groups = gen.sample_per_class(20, seed=5)
    assert groups[0].shape == (20, 3, 32, 32) and groups[0].min() >= 0 and groups[0].max() <= 1
    correct = sum(int((judge.predict(groups[c]) == c).sum()) for c in range(10))
    assert correct / 200 >= 0.8  # measured 90.2% on 500 per class (seed 0); the judge: 91.3% on real photos


def test_mnist_dcgan_covers_every_digit_and_is_deterministic():
    gen = convgen.load("mnist-dcgan", device="cpu")
    judge = convgen.load("mnist-classifier", device="cpu")
    x = gen.sample(600, seed=7)
    assert x.shape == (600, 1, 28, 28) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    shares = torch.bincount(judge.predict(x), minlength=10).float() / len(x)
    assert shares.min() >= 0.04, shares  # measured 5.3% (2,000 samples: 6.2% at seed 0, 5.35-6.25% over seeds 0-5)
    torch.testing.assert_close(gen.sample(8, seed=7), x[:8])


def test_truncation_maps_latents_into_the_interval_keeping_their_rank():
    from convgen.models.gan import latents, truncate

    z = latents(2000, 8, seed=3)
    torch.testing.assert_close(truncate(z, 0), z)  # 0: none
    t = truncate(z, 0.7)
    assert t.abs().max() <= 0.7 and t.dtype == z.dtype and t.shape == z.shape
    assert torch.equal(t.argsort(0), z.argsort(0))  # monotone per coordinate: the same seed, more typical
    # uniform in rank: the truncated values follow N(0, 1) restricted to [-0.7, 0.7] (std 0.38 for that law)
    assert abs(float(t.std()) - 0.38) < 0.02
    kept = truncate(z, 0.5, keep=1)
    assert torch.equal(kept[:, 0], z[:, 0]) and kept[:, 1:].abs().max() <= 0.5
    torch.testing.assert_close(truncate(z, 9.0), z, atol=1e-4, rtol=0)  # far tails: almost no change


def test_gan_truncation_option_narrows_the_samples_and_defaults_from_the_model():
    from convgen.errors import ConvgenError

    gen = convgen.load("mnist-cgan", device="cpu")
    free = gen.sample(64, seed=0, classes=[3])
    torch.testing.assert_close(gen.sample(64, seed=0, classes=[3], truncation=0), free)
    narrow = gen.sample(64, seed=0, classes=[3], truncation=0.3)
    assert narrow.std(0).mean() < 0.8 * free.std(0).mean()  # less variety around the typical three
    gen.meta.setdefault("inference", {})["truncation"] = 0.3  # the model's default (meta.json ``inference``)
    torch.testing.assert_close(gen.sample(64, seed=0, classes=[3]), narrow)
    assert gen.option_defaults(gen.sample_options) == {"truncation": 0.3}  # what the web form shows
    assert convgen.load("cifar10-cgan", device="cpu").default_truncation == 1.0  # measured with it (its card)
    walk = gen.interpolate(steps=3, rows=1, seed=0, classes=(1, 7), truncation=0)
    assert walk.shape == (3, 1, 28, 28)
    for bad in (-1, float("nan"), 11):
        with pytest.raises(ConvgenError, match="truncation"):
            gen.sample(4, seed=0, truncation=bad)
    # self-conditioned: the cluster still comes from the untruncated first coordinate, so coverage is kept
    dcgan = convgen.load("mnist-dcgan", device="cpu")
    z = dcgan.latents(500, 0)
    assert torch.equal(dcgan.generator.cluster_of(dcgan.latents(500, 0, 0.5)), dcgan.generator.cluster_of(z))


def test_cli_sample_truncation(tmp_path):
    from tests.conftest import cli

    done = cli("sample", "mnist-cgan", "--n", "4", "--out", str(tmp_path / "s"), "--truncation", "0.5")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "s").glob("*.png"))) == 4
    bad = cli("sample", "mnist-cgan", "--n", "4", "--out", str(tmp_path / "b"), "--truncation", "-2")
    assert bad.returncode == 2 and "truncation" in bad.stderr and "Traceback" not in bad.stderr
