"""GAN task, models, stabilisers, training health, sampling and interpolation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import convgen
from convgen.config import build_config
from convgen.data.clusters import cluster_features, kmeans
from convgen.data.datasets import MNIST
from convgen.data.diffaugment import diff_augment
from convgen.engine.trainer import Trainer, TrainingError
from convgen.errors import ConfigError, ConvgenError
from convgen.models.gan import DCGAN
from convgen.pipelines.sample import GANSampler, lerp, slerp
from convgen.tasks import gan as gan_task
from tests.conftest import ENV_PYTHONPATH


def gan_config(**overrides) -> dict:
    """A GAN run that trains in seconds: 600 bundled digits, an 8-channel DCGAN at 28 px."""
    cfg = {
        "name": "tiny-gan",
        "seed": 0,
        "task": {"type": "gan", "eval_samples": 100, "fd_extractor": "mnist-classifier"},
        "model": {"type": "dcgan", "image_size": 28, "channels": 1, "ngf": 8, "ndf": 8, "z_dim": 16},
        "data": {"type": "mnist", "limit": 600, "val_count": 100},
        "train": {
            "epochs": 1,
            "batch_size": 25,
            "lr": 0.0005,
            "optimizer": "adam",
            "betas": [0.5, 0.999],
            "log_every": 2,
            "progress": False,
        },
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        cfg[section][field] = value
    return cfg


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "task_overrides, model_overrides",
    [
        ({"loss": "ns"}, {"d_pack": 2}),
        ({"loss": "hinge"}, {"spectral_norm": True, "d_norm": "none", "d_mbstd_group": 4}),
        ({"loss": "wgan-gp", "d_steps": 2}, {"d_norm": "none"}),
        ({"loss": "ls", "r1_gamma": 1.0, "r1_every": 2, "diffaugment": ["color", "translation", "cutout"]}, {}),
    ],
    ids=["ns-pacgan", "hinge-sn-mbstd", "wgan-gp", "ls-r1-diffaugment"],
)
def test_each_loss_trains_with_finite_losses(tmp_path, task_overrides, model_overrides):
    cfg = gan_config(train__max_steps=12, train__eval_every=12)
    cfg["task"].update(task_overrides)
    cfg["model"].update(model_overrides)
    cfg["train"]["batch_size"] = 24 if model_overrides.get("d_pack") else 25  # packs of 2 need an even batch
    result = convgen.train(build_config(cfg), tmp_path / "run")
    assert result.step == 12
    train = [r for r in records(tmp_path / "run") if "train/loss_d" in r]
    assert len(train) == 6
    for r in train:
        assert all(math.isfinite(v) for k, v in r.items() if k.startswith("train/"))
    if task_overrides.get("loss") == "wgan-gp" or task_overrides.get("r1_gamma"):
        assert any(r["train/penalty"] > 0 for r in train)
    assert math.isfinite(result.final_metrics["val/fd"])


@pytest.mark.slow
def test_gan_learns_digits(tmp_path):
    """D's loss falls from its chance-level start, and the samples' FD to real digits falls by a third."""
    cfg = gan_config(
        train__epochs=25, train__eval_every=100, train__lr=0.0005, model__ngf=32, model__ndf=32, model__z_dim=32
    )
    cfg["data"]["limit"] = 1100
    cfg["train"]["batch_size"] = 50
    convgen.train(build_config(cfg), tmp_path / "run")
    rows = records(tmp_path / "run")
    d = [r["train/loss_d"] for r in rows if "train/loss_d" in r]
    assert sum(d[-5:]) / 5 < d[0]
    fd = [r["val/fd"] for r in rows if "val/fd" in r]
    assert fd[-1] < 0.67 * fd[0], fd


def test_ema_differs_from_raw_and_is_what_sampling_uses(tmp_path):
    convgen.train(build_config(gan_config(train__max_steps=10)), tmp_path / "run")
    model = tmp_path / "run" / "model"
    raw, ema = load_file(str(model / "generator.safetensors")), load_file(str(model / "generator_ema.safetensors"))
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if k.endswith("weight"))

    pipe = convgen.load(tmp_path / "run", device="cpu")
    assert isinstance(pipe, GANSampler) and pipe.networks == ("generator_ema",)
    ref = DCGAN(build_config(gan_config()).model).generator
    ref.load_state_dict(ema)
    ref.eval()
    z = pipe.latents(6, seed=3)
    with torch.no_grad():
        expected = (ref(z).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(pipe.sample(6, seed=3), expected)
    assert pipe.sample(6, seed=3).shape == (6, 1, 28, 28)
    # same seed -> same images whatever the batch size
    torch.testing.assert_close(pipe.generate(z, batch_size=4), pipe.generate(z, batch_size=6))


@pytest.mark.parametrize("clusters", [0, 4], ids=["unconditional", "self-conditioned"])
def test_resume_is_exact(tmp_path, clusters):
    def cfg(max_steps):
        return build_config(
            gan_config(
                model__clusters=clusters,
                train__max_steps=max_steps,
                train__ckpt_every=8,
                train__eval_every=8,
                train__deterministic=True,
                train__threads=1,
                task__diffaugment=["translation", "cutout"],
                task__r1_gamma=0.5,
                task__r1_every=3,
                task__d_steps=2,
            )
        )

    convgen.train(cfg(16), tmp_path / "straight")
    convgen.train(cfg(8), tmp_path / "split")
    convgen.train(cfg(16), tmp_path / "split", resume="latest")
    for name in ("generator", "discriminator", "generator_ema"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "step_00000016" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step_00000016" / f"{name}.safetensors"))
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_resume_refuses_a_feature_extractor_with_other_weights(tmp_path):
    """The best checkpoint was chosen by FD in one classifier's features: a resume whose task.fd_extractor now
    names other weights (a retrained zoo classifier of the same name) must not compare FDs of two feature spaces."""
    import shutil

    from safetensors.torch import save_file

    from convgen import modeldir

    same, other = tmp_path / "renamed-classifier", tmp_path / "other-classifier"
    shutil.copytree(modeldir.open_model("mnist-classifier").path, same)
    shutil.copytree(same, other)
    for f in other.glob("*.safetensors"):
        weights = load_file(str(f))
        save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in weights.items()}, str(f))
    modeldir.record_checksums(other)  # a retrained classifier: other weights, a valid model directory
    run = tmp_path / "run"
    convgen.train(build_config(gan_config(train__max_steps=4, train__ckpt_every=4, train__eval_every=4)), run)
    state = json.loads((run / "checkpoints" / "step_00000004" / "state.json").read_text())
    assert state["task"]["validator_extractor"]["name"] == "mnist-classifier"
    longer = gan_config(train__max_steps=8, train__ckpt_every=4, train__eval_every=4, task__fd_extractor=str(other))
    with pytest.raises(ConfigError, match="resume with task.fd_extractor set to the original classifier"):
        convgen.train(build_config(longer), run, resume="latest")
    renamed = gan_config(train__max_steps=8, train__ckpt_every=4, train__eval_every=4, task__fd_extractor=str(same))
    assert convgen.train(build_config(renamed), run, resume="latest").step == 8  # same weights, new name: fine


def test_nan_guard_rolls_back_then_gives_up(tmp_path, monkeypatch):
    original = gan_task.GANTask.train_step
    fired = []

    def poisoned(self, batch, step):
        out = original(self, batch, step)
        if step == 13 and len(fired) < 1:
            fired.append(step)
            out["loss_g"] = float("nan")
        return out

    monkeypatch.setattr(gan_task.GANTask, "train_step", poisoned)
    cfg = gan_config(train__max_steps=20, train__ckpt_every=5, train__eval_every=10)
    result = convgen.train(build_config(cfg), tmp_path / "run")
    assert result.step == 20 and fired == [13]
    events = [r for r in records(tmp_path / "run") if r.get("event") == "rollback"]
    assert len(events) == 1 and events[0]["step"] == 10 and events[0]["at_step"] == 14
    assert "non-finite" in events[0]["reason"]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000020" / "state.json").read_text())
    assert state["health"] == {"rollbacks": 1, "lr_scale": 0.5}
    # learning rates were halved by the rollback
    assert records(tmp_path / "run")[-2].get("train/lr_g", 0.00025) == pytest.approx(0.00025)

    fired.clear()
    cfg = gan_config(train__max_steps=20, train__ckpt_every=5, train__max_rollbacks=0)
    with pytest.raises(TrainingError, match="non-finite training values .*loss_g nan.* at step 14"):
        convgen.train(build_config(cfg), tmp_path / "run2")


def test_collapse_detection_and_rollback(tmp_path, monkeypatch):
    original = gan_task.GANTask.evaluate
    calls = []

    def collapsing(self):
        out = original(self)
        calls.append(self.current_step)
        out["diversity"] = 0.9 if len(calls) < 3 else (0.05 if len(calls) == 3 else 0.8)
        return out

    monkeypatch.setattr(gan_task.GANTask, "evaluate", collapsing)
    cfg = gan_config(train__epochs=2, train__max_steps=24, train__ckpt_every=6, train__eval_every=6)
    result = convgen.train(build_config(cfg), tmp_path / "run")
    assert result.step == 24
    events = [r for r in records(tmp_path / "run") if r.get("event") == "rollback"]
    assert len(events) == 1 and "mode collapse" in events[0]["reason"] and events[0]["step"] == 12


def test_health_rule():
    task = gan_task.GANTask.__new__(gan_task.GANTask)
    task.cfg = build_config(gan_config())
    task.peak_diversity = 0.0
    assert task.health({"val/diversity": 0.05}, 10) is None  # early samples are alike: not a collapse
    assert task.health({"val/diversity": 0.6}, 20) is None
    assert "mode collapse" in task.health({"val/diversity": 0.1}, 30)


def test_conditional_samples_per_requested_class(tmp_path):
    cfg = gan_config(train__max_steps=6, model__num_classes=10, model__embed_dim=4)
    convgen.train(build_config(cfg), tmp_path / "run")
    out = tmp_path / "samples"
    proc = subprocess.run(
        [sys.executable, "-m", "convgen", "sample", str(tmp_path / "run"), "--per-class", "3", "--seed", "0"]
        + ["--out", str(out)],
        env=ENV_PYTHONPATH,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [str(c) for c in range(10)]
    for c in range(10):
        assert sorted(p.name for p in (out / str(c)).iterdir()) == ["00000.png", "00001.png", "00002.png"]
    pipe = convgen.load(tmp_path / "run", device="cpu")
    z = pipe.latents(4, seed=0)
    a, b = pipe.generate(z, torch.zeros(4, dtype=torch.long)), pipe.generate(z, torch.full((4,), 7))
    assert not torch.allclose(a, b)  # the label changes the image
    groups = pipe.sample_per_class(2, seed=0)
    torch.testing.assert_close(groups[7], pipe.generate(pipe.latents(20, 0)[14:16], torch.full((2,), 7)))
    # class interpolation starts and ends at the two classes
    strip = pipe.interpolate(steps=5, rows=2, seed=1, classes=(3, 8))
    zz = pipe.latents(4, 1)[:2]
    torch.testing.assert_close(strip[0::5], pipe.generate(zz, torch.full((2,), 3)))
    torch.testing.assert_close(strip[4::5], pipe.generate(zz, torch.full((2,), 8)))


def test_sample_and_interpolate_cli(tmp_path):
    convgen.train(build_config(gan_config(train__max_steps=4)), tmp_path / "run")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "convgen", *args], env=ENV_PYTHONPATH, capture_output=True, text=True
        )

    proc = cli("sample", str(tmp_path / "run"), "--n", "12", "--seed", "5", "--out", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"{i:05d}.png" for i in range(12)]
    again = cli("sample", str(tmp_path / "run"), "--n", "12", "--seed", "5", "--out", str(tmp_path / "s"))
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    bad = cli("sample", str(tmp_path / "run"), "--per-class", "2", "--out", str(tmp_path / "p"))
    assert bad.returncode == 2 and "unconditional" in bad.stderr and "Traceback" not in bad.stderr
    proc = cli("interpolate", str(tmp_path / "run"), "--out", str(tmp_path / "i.png"), "--gif", str(tmp_path / "i.gif"))
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(tmp_path / "i.gif") as gif:
        assert gif.n_frames == 18  # 10 steps there, 8 back
    with Image.open(tmp_path / "i.png") as strip:
        assert strip.size == (10 * 30 + 2, 4 * 30 + 2)


def test_interpolation_paths():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    t = torch.linspace(0, 1, 5)
    for f in (slerp, lerp):
        path = f(a, b, t)
        assert path.shape == (5, 3, 16)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    # slerp keeps the norm of equal-norm endpoints
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    torch.testing.assert_close(slerp(a, b, t).norm(dim=-1), torch.ones(5, 3))


def test_diffaugment_is_differentiable_and_keeps_shape():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    y = diff_augment(x, ["color", "translation", "cutout"], gen)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # translation moves content; cutout zeroes a quarter of the pixels
    gen = torch.Generator().manual_seed(1)
    ones = torch.ones(8, 1, 16, 16)
    cut = diff_augment(ones, ["cutout"], gen)
    assert ((cut == 0).float().mean(dim=(1, 2, 3)) <= 0.25 + 1e-6).all()
    assert (cut == 0).any()


@pytest.mark.parametrize("size", [28, 32, 64])
def test_dcgan_sizes(size):
    cfg = build_config(gan_config(model__image_size=size, model__channels=3)).model
    gan = DCGAN(cfg)
    x = gan.generator(torch.randn(2, 16))
    assert x.shape == (2, 3, size, size) and x.min() >= -1 and x.max() <= 1
    assert gan.discriminator(x).shape == (2,)


def test_minibatch_stddev_feature():
    """The extra map is the ProGAN statistic: per group (i % (B // g)), the std over the group of every feature,
    averaged; zero for identical images; the group shrinks to a divisor of the batch size."""
    from convgen.models.gan import MinibatchStddev

    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    out = MinibatchStddev(4)(x)
    assert out.shape == (8, 4, 5, 5) and torch.equal(out[:, :3], x)
    for j in range(2):  # groups {0, 2, 4, 6} and {1, 3, 5, 7}
        want = x[j::2].std(0, unbiased=False).mean()
        assert torch.allclose(out[j::2, 3], want.expand(4, 5, 5), atol=1e-4)
    same = MinibatchStddev(4)(x[:1].expand(8, -1, -1, -1))
    assert same[:, 3].abs().max() < 1e-3
    assert MinibatchStddev(4)(torch.randn(6, 2, 3, 3)).shape == (6, 3, 3, 3)  # group 3 (largest divisor <= 4)
    assert MinibatchStddev(4)(torch.randn(1, 2, 3, 3))[:, 2].abs().max() < 1e-3  # a single image: no spread
    cfg = build_config(gan_config(model__d_mbstd_group=4)).model
    d = DCGAN(cfg).discriminator
    assert d(torch.randn(6, 1, 28, 28)).shape == (6,)


def test_pacgan_discriminator_judges_packs(tmp_path):
    """d_pack = 2: D's first layer takes 2 stacked images, gives one logit per pair, and the task packs consecutive
    images of a batch; conditional GANs cannot pack."""
    cfg = build_config(gan_config(model__d_pack=2))
    d = DCGAN(cfg.model).discriminator
    assert d.main[0].weight.shape[1] == 2
    task = gan_task.GANTask.__new__(gan_task.GANTask)
    task.cfg, task.D, task.gen = cfg, d, torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(task._disc(x, None), d(torch.cat([x[0::2], x[1::2]], 1), None))
    with pytest.raises(ConfigError, match="unconditional"):
        build_config(gan_config(model__d_pack=2, model__num_classes=10))
    with pytest.raises(ConfigError, match="train.batch_size must be a multiple"):
        convgen.train(build_config(gan_config(model__d_pack=2)), tmp_path / "odd")  # batch 25


def test_reference_layout_matches_pytorch_examples():
    """The 64 px preset has main.py's layer shapes: G 100->512->256->128->64->1, D 1->64->128->256->512->1."""
    cfg = build_config(gan_config(model__image_size=64, model__ngf=64, model__ndf=64, model__z_dim=100)).model
    gan = DCGAN(cfg)
    g = [tuple(m.weight.shape) for m in gan.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert g == [(100, 512, 4, 4), (512, 256, 4, 4), (256, 128, 4, 4), (128, 64, 4, 4), (64, 1, 4, 4)]
    d = [tuple(m.weight.shape) for m in gan.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert d == [(64, 1, 4, 4), (128, 64, 4, 4), (256, 128, 4, 4), (512, 256, 4, 4), (1, 512, 4, 4)]
    n_g = sum(p.numel() for p in gan.generator.parameters())
    n_d = sum(p.numel() for p in gan.discriminator.parameters())
    assert (n_g, n_d) == (3_574_656, 2_763_520)  # main.py's netG / netD parameter counts for nc=1


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model__image_size", 30, "model.image_size"),
        ("task__diffaugment", ["zoom"], "task.diffaugment"),
        ("task__loss", "wasserstein", "task.loss"),
        ("model__d_mbstd_group", -1, "model.d_mbstd_group"),
        ("model__d_pack", 0, "model.d_pack"),
        ("model__clusters", -1, "model.clusters"),
        ("model__clusters", 3, "model.clusters"),  # with num_classes 10, below
    ],
)
def test_bad_gan_config_values(key, value, message):
    extra = {"model__num_classes": 10} if (key, value) == ("model__clusters", 3) else {}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_config(gan_config(**{key: value}, **extra))


def test_conditional_needs_matching_classes(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes is 5"):
        Trainer(build_config(gan_config(model__num_classes=5)), tmp_path / "run").fit()


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(300) % 3
    x = centres[truth] + 0.5 * torch.randn(300, 2, generator=gen)
    labels, found = kmeans(x, 3, seed=1)
    assert labels.dtype == torch.int64 and sorted(labels.unique().tolist()) == [0, 1, 2]
    for j in range(3):  # one found cluster per true cluster
        assert len(truth[labels == j].unique()) == 1
        assert torch.cdist(found[j : j + 1], centres).min() < 0.3
    assert torch.equal(kmeans(x, 3, seed=1)[0], labels)  # deterministic
    assert len(kmeans(x[:5], 5)[0].unique()) == 5  # every id used
    with pytest.raises(ValueError, match="k-means"):
        kmeans(x[:2], 3)
    f = cluster_features(torch.full((2, 3, 64, 48), 255, dtype=torch.uint8))
    assert f.shape == (2, 3 * 32 * 24) and torch.all(f == 1)


def test_self_conditioned_generator_picks_clusters_by_frequency():
    g = DCGAN(build_config(gan_config(model__clusters=4)).model).generator.eval()
    g.set_cluster_frequencies(torch.tensor([100, 200, 300, 400]))
    z = torch.randn(40_000, 16, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(g.cluster_of(z), minlength=4) / len(z)
    torch.testing.assert_close(share, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(g(z[:8]), g(z[:8], g.cluster_of(z[:8])))  # unconditional call = own cluster
        assert not torch.allclose(g(z[:8]), g(z[:8], (g.cluster_of(z[:8]) + 1) % 4))


def test_self_conditioned_gan_uses_clusters_not_labels(tmp_path, monkeypatch):
    """model.clusters: D and G are trained on k-means cluster ids of the training images (never the digit
    labels), the generator's prior is the clusters' frequencies, and the result samples like an unconditional
    model."""
    seen = []
    real_disc = gan_task.GANTask._disc
    monkeypatch.setattr(gan_task.GANTask, "_disc", lambda self, x, y: seen.append(y) or real_disc(self, x, y))
    cfg = build_config(gan_config(model__clusters=5, train__max_steps=4, train__eval_every=4))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    data = MNIST.build(cfg.data)
    expected, _ = kmeans(cluster_features(data.train.images), 5, seed=cfg.seed)
    assert torch.equal(trainer.task.data.train.labels, expected)
    assert not torch.equal(expected, data.train.labels)
    assert len(seen) == 4 * 2 + 4 and all(y is not None and int(y.max()) < 5 for y in seen)  # real, fake; G step
    cdf = load_file(str(tmp_path / "run" / "model" / "generator_ema.safetensors"))["cluster_cdf"]
    counts = torch.bincount(expected, minlength=5).double()
    torch.testing.assert_close(cdf.double(), counts.cumsum(0) / counts.sum(), atol=1e-6, rtol=0)
    pipe = convgen.load(tmp_path / "run", device="cpu")
    assert pipe.num_classes == 0 and pipe.sample(3, seed=0).shape == (3, 1, 28, 28)
    with pytest.raises(ConvgenError, match="unconditional"):
        pipe.sample_per_class(2, seed=0)
    walk = pipe.interpolate(steps=5, rows=2, seed=4)  # ends are the latents' own samples, cluster included
    z = pipe.latents(4, seed=4)
    torch.testing.assert_close(walk[[0, 4, 5, 9]], pipe.generate(z[[0, 2, 1, 3]]), atol=1e-5, rtol=0)
