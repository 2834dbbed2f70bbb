"""Natural colour images (issue 36): the fast whitened classifier, its optimiser groups, schedule and augmentation."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import convgen
from convgen.config import TrainConfig, build_config
from convgen.data.formats import read_image_folder
from convgen.data.transforms import AugmentConfig
from convgen.engine.optim import make_optimizer, make_scheduler
from convgen.errors import ConfigError
from convgen.io.images import write_image
from convgen.models.classifier import WhitenedConvNet
from convgen.tasks.classification import ClassificationTask
from convgen.viz.curves import read_metrics
from tests.conftest import cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _net(**kw) -> WhitenedConvNet:
    torch.manual_seed(0)
    return WhitenedConvNet(WhitenedConvNet.Config(widths=[8, 16, 16], **kw))


def test_whitening_stem_decorrelates_training_patches():
    net = _net()
    x = torch.rand(64, 3, 32, 32) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    x[:, 1] += 0.5 * x[:, 0]  # correlated channels
    net.init_from_data(x)
    w = net.whiten.weight
    assert w.shape == (24, 3, 2, 2) and not w.requires_grad
    assert torch.equal(w[12:], -w[:12])  # both signs
    z = torch.nn.functional.conv2d((x - net.mean) / net.std, w[:12]).permute(1, 0, 2, 3).reshape(12, -1)
    cov = z @ z.T / z.shape[1]
    assert torch.allclose(cov, torch.eye(12), atol=0.02)  # eigenvalue + eps: within 2% of the identity


def test_flip_tta_makes_the_prediction_mirror_invariant_and_features_are_one_view():
    net = _net(tta="flip").eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), net(x.flip(-1)), atol=1e-5)
        assert not torch.allclose(net.features(x), net.features(x.flip(-1)), atol=1e-3)
        assert net.features(x).shape == (4, 16)
        full = _net(tta="flip-translate").eval()
        full.load_state_dict(net.state_dict())
        assert full(x).shape == (4, 10) and not torch.allclose(full(x), net(x))
        net.train()
        assert not torch.allclose(net(x), net(x.flip(-1)), atol=1e-4)  # training sees one view


def test_norm_parameters_learn_faster_with_the_same_decay_per_step():
    net = _net()
    groups = ClassificationTask.param_groups(net, 64.0)
    cfg = TrainConfig(optimizer="sgd", lr=0.5, weight_decay=0.01, momentum=0.85)
    opt = make_optimizer(groups, cfg)
    plain, norm = opt.param_groups
    assert plain["lr"] == 0.5 and norm["lr"] == 32.0
    assert plain["lr"] * plain["weight_decay"] == pytest.approx(norm["lr"] * norm["weight_decay"])
    norm_params = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm["params"]} <= norm_params and len(norm["params"]) == 6  # biases only: scale fixed
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    assert ClassificationTask.param_groups(net, 1.0) == [p for p in net.parameters() if p.requires_grad]


def test_triangle_schedule():
    cfg = TrainConfig(scheduler="triangle", warmup_fraction=0.2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, cfg, 100)
    factors = []
    for _ in range(101):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert factors[0] == pytest.approx(0.2) and factors[20] == pytest.approx(1.0) and factors[100] == 0.0
    assert factors[60] == pytest.approx(0.5) and max(factors) == pytest.approx(1.0)


def test_reflect_crop_adds_no_black_border():
    x = torch.full((8, 3, 16, 16), 0.7)
    gen = torch.Generator().manual_seed(0)
    out = AugmentConfig(crop_padding=2, crop_reflect=True).apply(x, gen)
    assert torch.equal(out, x)
    zero = AugmentConfig(crop_padding=2).apply(x, torch.Generator().manual_seed(0))
    assert (zero == 0).any()


def _colour_folder(root, per_class: int = 40, size: int = 32):
    """Three classes written in reverse order: red-ish, green-ish and blue-ish noisy squares."""
    rng = np.random.default_rng(0)
    for c, name in reversed(list(enumerate(["cherry", "moss", "sky"]))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.uniform(0, 0.45, (size, size, 3))
            img[..., c] += 0.5
            write_image(root / name / f"{i:03d}.png", img.astype(np.float32))


def test_a_limit_on_class_folders_takes_every_class_in_turn(tmp_path):
    _colour_folder(tmp_path / "data", per_class=5)
    images, labels, classes = read_image_folder(tmp_path / "data", 3, limit=7)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0] and len(images) == 7
    full, full_labels, _ = read_image_folder(tmp_path / "data", 3)
    assert np.array_equal(images[1], full[5]) and np.array_equal(images[3], full[1])  # moss/000, cherry/001


def test_whitened_classifier_learns_a_colour_image_folder(tmp_path):
    _colour_folder(tmp_path / "data")
    images, labels, classes = read_image_folder(tmp_path / "data", 3)
    assert classes == ["cherry", "moss", "sky"] and images.dtype == np.uint8 and images.shape == (120, 32, 32, 3)
    assert images[labels == 2][..., 2].mean() > images[labels == 2][..., 0].mean() + 100  # sorted: sky = 2
    cfg = {
        "name": "tiny-cifar",
        "seed": 0,
        "task": {"type": "classification", "label_smoothing": 0.2, "norm_lr_scale": 64, "init_images": 64,
                 "augment": {"hflip": True, "crop_padding": 2, "crop_reflect": True}},
        "model": {"type": "whitened-convnet", "num_classes": 3, "widths": [8, 16, 16]},
        "data": {"type": "image-folder", "root": str(tmp_path / "data"), "val_count": 30},
        "train": {"epochs": 4, "batch_size": 30, "lr": 0.3, "momentum": 0.85, "weight_decay": 0.0015,
                  "optimizer": "sgd", "scheduler": "triangle", "warmup_fraction": 0.2, "log_every": 3,
                  "progress": False},
    }  # fmt: skip
    result = convgen.train(build_config(cfg), tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert result.best_value >= 0.9
    pipe = convgen.load(tmp_path / "run")
    predicted = pipe.classify_files(tmp_path / "data" / "sky")
    assert sum(v == 2 for v in predicted.values()) >= 36
    # a test set of class sub-folders: every image keyed by folder/file (names repeat across classes), scored
    out = cli("classify", str(tmp_path / "run"), "--input", str(tmp_path / "data"), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["predictions"]) == 120 and "moss/000.png" in report["predictions"]
    assert report["count"] == 120 and report["accuracy"] >= 0.9
    assert set(report["per_class_accuracy"]) == {"cherry", "moss", "sky"}
    truth = {"cherry": 0, "moss": 1, "sky": 2}
    right = sum(c == truth[k.split("/")[0]] for k, c in report["predictions"].items())
    assert report["accuracy"] == pytest.approx(right / 120)
    # the penultimate features as a domain feature space: probabilities are the model's own (head scale included)
    from convgen.metrics.extractors import ClassifierExtractor

    ex = ClassifierExtractor(str(tmp_path / "run"))
    batch = ex.prepare([images[i] / 255.0 for i in range(6)])
    feats, probs = ex(batch)
    assert feats.shape == (6, 16) and ex.tag == "domaincls"
    with torch.no_grad():
        pipe.model.cfg.tta = "none"
        assert torch.allclose(probs, pipe.predict_proba(batch), atol=1e-5)
    (tmp_path / "data" / "moss").rename(tmp_path / "data" / "lichen")  # not a class of the model: no score
    report = json.loads(cli("classify", str(tmp_path / "run"), "--input", str(tmp_path / "data"), "--json").stdout)
    assert "accuracy" not in report and len(report["predictions"]) == 120
    # a later stage (task.init_from) starts from the saved weights: one epoch at a vanishing rate keeps the first
    # stage's accuracy and its weights (a fresh head would be random)
    (tmp_path / "data" / "lichen").rename(tmp_path / "data" / "moss")
    later = {**cfg, "task": {**cfg["task"], "init_from": str(tmp_path / "run")},
             "train": {**cfg["train"], "epochs": 1, "lr": 1e-6}}  # fmt: skip
    again = convgen.train(build_config(later), tmp_path / "later")
    assert again.best_value >= 0.9
    from safetensors.torch import load_file

    first, second = (load_file(tmp_path / r / "model" / "classifier.safetensors") for r in ("run", "later"))
    assert torch.equal(first["whiten.weight"], second["whiten.weight"])
    assert torch.allclose(first["fc.weight"], second["fc.weight"], atol=1e-4)
    later["model"] = {**cfg["model"], "widths": [8, 16, 32]}
    with pytest.raises(ConfigError, match="do not fit"):
        convgen.train(build_config(later), tmp_path / "misfit")


def test_sngan_standard_cnn_layout():
    from convgen.models.gan import DCGAN

    cfg = DCGAN.Config(image_size=32, channels=3, z_dim=128, spectral_norm=True, d_norm="none", arch="sngan",
                       num_classes=10)  # fmt: skip
    m = DCGAN(cfg)
    convs = [x for x in m.discriminator.main if isinstance(x, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [
        (3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256), (3, 1, 512)]  # fmt: skip
    assert all(hasattr(c, "parametrizations") for c in convs)  # spectral norm on every layer
    last = [x for x in m.generator.main if isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    assert type(last) is torch.nn.Conv2d and last.kernel_size == (3, 3)
    z, y = torch.randn(5, 128), torch.randint(0, 10, (5,))
    x = m.generator(z, y)
    assert x.shape == (5, 3, 32, 32) and x.abs().max() <= 1 and m.discriminator(x, y).shape == (5,)
    plain = DCGAN(DCGAN.Config(image_size=32, channels=3))  # the default layout is unchanged
    assert [type(x).__name__ for x in plain.generator.main][-2:] == ["ConvTranspose2d", "Tanh"]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "cifar10" / "train").is_dir(), reason="../shared/data not present")
def test_zoo_cifar10_classifier_keeps_its_card_accuracy_on_the_held_out_images():
    from convgen.config import load_config
    from convgen.data.datasets import build_data

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs/classification/cifar10-classifier.yaml"))
    cfg.data.root = str(DATA / "cifar10" / "train")
    val = build_data(cfg.data).val  # the same 2,000 held-out images as in training (split_seed 0)
    x, y = val.batch(torch.arange(len(val)))
    pred = convgen.load("cifar10-classifier", device="cpu").predict_proba(x.float() / 255 if x.dtype == torch.uint8
                                                                          else x).argmax(1)  # fmt: skip
    assert (pred == y).float().mean().item() >= 0.915  # the card: 92.0% (cifar10-classifier-v1: 91.3%)


def _lookahead_config(root: Path, **train) -> dict:
    return {
        "name": "tiny-lookahead",
        "seed": 0,
        "task": {"type": "classification", "label_smoothing": 0.2, "norm_lr_scale": 64, "init_images": 64,
                 "lookahead_every": 2, "stem_bias_epochs": 1,
                 "augment": {"hflip": True, "crop_padding": 2, "crop_reflect": True}},
        "model": {"type": "whitened-convnet", "num_classes": 3, "widths": [8, 16, 16]},
        "data": {"type": "image-folder", "root": str(root), "val_count": 30},
        "train": {"epochs": 3, "batch_size": 30, "lr": 0.3, "momentum": 0.85, "weight_decay": 0.0015,
                  "optimizer": "sgd", "scheduler": "triangle", "warmup_fraction": 0.2, "log_every": 1,
                  "keep_last": 3, "progress": False, **train},
    }  # fmt: skip


def test_lookahead_and_stem_bias_freeze_resume_exactly_and_hand_over_the_slow_weights(tmp_path):
    from safetensors.torch import load_file

    _colour_folder(tmp_path / "data", per_class=30)
    convgen.train(build_config(_lookahead_config(tmp_path / "data")), tmp_path / "straight")
    ckpt = tmp_path / "straight" / "checkpoints"
    steps = sorted(ckpt.glob("step_*"))
    assert len(steps) == 3  # 60 training images in batches of 30: 2 steps an epoch, one checkpoint an epoch
    first, *_, last = [load_file(str(s / "classifier.safetensors")) for s in steps]
    # the whitening bias trained in epoch 1 and stayed put in epochs 2 and 3
    assert not torch.equal(first["whiten.bias"], torch.zeros_like(first["whiten.bias"]))
    assert torch.equal(first["whiten.bias"], last["whiten.bias"])
    # the last step hands the slow (lookahead) copy over: both networks end equal, running statistics included
    slow = load_file(str(steps[-1] / "lookahead.safetensors"))
    floats = [k for k in last if last[k].is_floating_point()]  # (BatchNorm's batch counters are the fast net's)
    assert slow.keys() == last.keys() and len(floats) > 10 and all(torch.equal(slow[k], last[k]) for k in floats)
    # stopped after the first epoch and resumed: the same weights, the slow copy included
    convgen.train(build_config(_lookahead_config(tmp_path / "data", stop_at_step=2)), tmp_path / "cut")
    convgen.train(None, tmp_path / "cut", resume="latest", overrides=["train.stop_at_step=null"])
    for name in ("classifier", "lookahead"):
        a = load_file(str(steps[-1] / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "cut" / "checkpoints" / steps[-1].name / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


# -- the colour VAE: a coupled mixture of discretized logistics and a spatial latent ------------------------------
def test_logistic_mixture_is_a_probability_and_reduces_to_one_logistic():
    from itertools import product

    from convgen.losses.likelihood import discretized_logistic_nll, discretized_mixture_nll, mixture_params

    assert mixture_params(3) == 10 and mixture_params(1) == 3
    # on a grid of 4 values per channel the 64 colours of one pixel take probability 1 between them, couplings
    # and several components included
    torch.manual_seed(0)
    params = torch.randn(1, 2 * 10, 1, 1)
    colours = torch.tensor(list(product(range(4), repeat=3)), dtype=torch.float32).view(64, 3, 1, 1) / 3
    p = torch.exp(-discretized_mixture_nll(params.expand(64, -1, -1, -1), colours, bins=4))
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    # one component without coupling is the single discretized logistic (its mean as a logit on [0, 1], its
    # scale half as large as on the [-1, 1] scale)
    x = (torch.rand(2, 3, 5, 5) * 255).round() / 255  # (means near the values: no bin's probability underflows)
    logit = torch.logit((x + 0.05 * torch.randn(2, 3, 5, 5)).clamp(0.01, 0.99))
    log_scale = torch.rand(2, 3, 5, 5) * 2 - 4
    no_coupling = torch.zeros(2, 3, 5, 5)  # tanh(0) = 0
    mix = torch.cat([torch.zeros(2, 1, 5, 5), 2 * torch.sigmoid(logit) - 1, log_scale + math.log(2), no_coupling], 1)
    torch.testing.assert_close(
        discretized_mixture_nll(mix, x),
        discretized_logistic_nll(torch.cat([logit, log_scale], 1), x),
        rtol=1e-4,
        atol=1e-3,
    )


def test_logistic_mixture_mean_follows_the_coupling():
    from convgen.losses.likelihood import DiscretizedLogisticMixture

    # one component, sharp scales: red at mean 0.2 (on [-1, 1]), green = 0.1 + 0.5 * red, blue = 0 - 0.5 * red + 0
    params = torch.tensor([0.0, 0.2, 0.1, 0.0, -6, -6, -6, math.atanh(0.5), math.atanh(-0.5), 0.0]).view(1, 10, 1, 1)
    mean = DiscretizedLogisticMixture.mean(params, 3).view(3)
    torch.testing.assert_close(mean, (torch.tensor([0.2, 0.2, -0.1]) + 1) / 2)
    # two equally weighted components average
    two = torch.cat([params[:, :1], params[:, :1], params[:, 1:4], -params[:, 1:4], params[:, 4:7], params[:, 4:7],
                     torch.zeros(1, 6, 1, 1)], 1)  # fmt: skip
    torch.testing.assert_close(DiscretizedLogisticMixture.mean(two, 3).view(3), torch.full((3,), 0.5))


def test_resnet_vae_spatial_latent_bounds_and_errors():
    from convgen.losses.likelihood import iwae_nll, log_weights
    from convgen.models.autoencoders import ResNetVAE

    torch.manual_seed(0)
    net = ResNetVAE(ResNetVAE.Config(image_size=16, width=8, downsamplings=2, blocks=1, latent_channels=4,
                                     mixtures=3))  # fmt: skip
    assert net.latent_dim == 4 * 4 * 4
    x = (torch.rand(5, 3, 16, 16) * 255).round() / 255
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (5, 64)
    params = net.decode(mu)
    assert params.shape == (5, 30, 16, 16)
    mean = net.mean_image(params)
    assert mean.shape == x.shape and mean.min() >= 0 and mean.max() <= 1
    with torch.no_grad():
        log_w, _ = log_weights(net, x, None, 16, torch.Generator().manual_seed(0))
    assert log_w.shape == (16, 5)
    assert bool((iwae_nll(log_w) <= -log_w.double().mean(0) + 1e-6).all())  # the IWAE bound is below the ELBO
    for key, value, match in (
        ("downsamplings", 5, "1..4"),
        ("image_size", 18, "multiple of 4"),
        ("num_classes", 10, "unconditional"),
        ("likelihood", "gauss", "unknown likelihood"),
        ("pixel_decoding", "sample", "needs likelihood logistic-mixture"),
    ):
        with pytest.raises(ConfigError, match=match):
            build_config(_resnet_vae_config(tmp_path=Path("."), **{key: value}))


def _resnet_vae_config(tmp_path: Path, **model) -> dict:
    return {
        "name": "tiny-colour-vae",
        "seed": 0,
        "task": {"type": "vae", "eval_samples": 20, "eval_batch_size": 20, "fd_extractor": "none"},
        "model": {"type": "resnet-vae", "image_size": 16, "width": 8, "blocks": 1, "latent_channels": 4,
                  "mixtures": 2, **model},
        "data": {"type": "image-folder", "root": str(tmp_path / "data"), "val_count": 20},
        "train": {"epochs": 100, "max_steps": 40, "batch_size": 20, "lr": 0.003, "log_every": 10, "eval_every": 20,
                  "ckpt_every": 20, "progress": False},
    }  # fmt: skip


def test_colour_vae_trains_to_fewer_bits_per_dim_and_reports_the_bound(tmp_path):
    _colour_folder(tmp_path / "data", per_class=20, size=16)
    run = tmp_path / "run"
    result = convgen.train(build_config(_resnet_vae_config(tmp_path)), run)
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "val/bpd" in r]
    assert len(rows) == 2 and rows[-1]["val/bpd"] < rows[0]["val/bpd"] < 8.5
    assert result.final_metrics["val/bpd"] == pytest.approx(rows[-1]["val/bpd"])
    r = cli("eval", "likelihood", str(run / "model"), "--input", str(tmp_path / "data" / "sky"), "--binarize", "none",
            "--samples", "8", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 20 and report["k"] == 8
    assert 0 < report["bits_per_dim"] <= report["bits_per_dim_elbo"] < 8.5  # the IWAE bound: below the ELBO
    # a later chunk from the saved model (task.init_from) starts where the first one ended
    later = _resnet_vae_config(tmp_path)
    later["task"]["init_from"] = str(run / "model")
    later["train"].update(max_steps=20, lr=0.0003)
    again = convgen.train(build_config(later), tmp_path / "later")
    assert again.final_metrics["val/bpd"] < rows[0]["val/bpd"]
    later["model"]["width"] = 16
    with pytest.raises(ConfigError, match="do not fit"):
        convgen.train(build_config(later), tmp_path / "misfit")


def test_causal_head_sees_only_earlier_pixels_and_generates_its_own_fixed_point():
    from convgen.losses.likelihood import DiscretizedLogisticMixture
    from convgen.models.autoencoders import ResNetVAE

    torch.manual_seed(0)
    net = ResNetVAE(ResNetVAE.Config(image_size=8, width=8, downsamplings=1, blocks=1, latent_channels=2,
                                     mixtures=2, autoregressive_kernel=5)).eval()  # fmt: skip
    with torch.no_grad():
        for p in net.causal.parameters():
            p.add_(0.3 * torch.randn_like(p))  # (not the zero-ish start: every weight matters)
        features = net.decode(torch.randn(2, net.latent_dim))
        x = torch.rand(2, 3, 8, 8)
        base = net.causal(features, x)
        y = x.clone()
        y[:, :, 4, 5] = 1 - y[:, :, 4, 5]  # change one pixel: only the pixels after it in raster order may move
        moved = (net.causal(features, y) - base).abs().amax((0, 1)) > 1e-6
        order = torch.arange(64).view(8, 8)
        assert not moved[order <= 4 * 8 + 5].any() and moved[5, 5] and moved[4, 6]
        # generating pixel by pixel, each at its conditional mean, gives an image that is its own teacher-forced
        # mean: the one-pass likelihood and the row-by-row generation use the same conditionals
        mean = net.mean_image(features)
        assert mean.shape == (2, 3, 8, 8) and mean.min() >= 0 and mean.max() <= 1
        torch.testing.assert_close(DiscretizedLogisticMixture.mean(net.causal(features, mean), 3), mean)
        assert torch.isfinite(net.nll(features, (x * 255).round() / 255)).all()
        net.pixel_decoding = "sample"  # ancestral sampling from a fixed seed: 8-bit values, the same on every call
        drawn = net.mean_image(features)
        assert torch.equal(drawn, net.mean_image(features)) and torch.equal(drawn, (drawn * 255).round() / 255)
        assert not torch.allclose(drawn, mean)


def test_mixture_samples_follow_its_probabilities():
    from itertools import product

    from convgen.losses.likelihood import discretized_mixture_nll, sample_mixture

    torch.manual_seed(1)
    spread = torch.tensor([1.0] * 2 + [0.5] * 6 + [-1.0] * 6 + [1.0] * 6).view(1, 20, 1, 1)  # logits, means, ...
    params = torch.randn(1, 2 * 10, 1, 1) * spread
    draws = sample_mixture(params.expand(20000, -1, -1, -1), 3, torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 3, 1, 1) and torch.equal(draws, (draws * 255).round() / 255)
    # on a coarse grid (4 bins per channel) the sampled colours' frequencies match the model's probabilities
    bins = (draws.view(-1, 3) * 3).round().long()  # nearest of 0, 1/3, 2/3, 1
    colours = torch.tensor(list(product(range(4), repeat=3)), dtype=torch.float32).view(64, 3, 1, 1) / 3
    p_coarse = torch.exp(-discretized_mixture_nll(params.expand(64, -1, -1, -1), colours, bins=4))
    freq = torch.zeros(64)
    freq.index_add_(0, bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], torch.ones(len(bins)))
    assert (freq / len(bins) - p_coarse).abs().max() < 0.02
