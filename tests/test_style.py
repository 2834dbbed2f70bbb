"""Style transfer: VGG19's public layout and weight-file checks, the losses, the Gatys optimisation (losses fall,
colour preservation keeps chroma, coarse to fine, several styles), the feed-forward network (odd sizes), training,
and the pipeline and CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convgen
from convgen.config import build_config
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError, ConvgenError
from convgen.losses.perceptual import (
    LossWeights,
    PerceptualLoss,
    gradient_field,
    gram,
    sliced_wasserstein,
    total_variation,
)
from convgen.models.backbones import vgg
from convgen.models.style import TransformNet
from convgen.pipelines.style import (
    Gatys,
    GatysOptions,
    gatys,
    recombine_chroma,
    rgb_to_ycbcr,
    scales,
    split_iterations,
    to_tensor,
    ycbcr_to_rgb,
)
from tests.conftest import SHARED_DATA, cli, with_overrides

STYLES = SHARED_DATA / "styles"
PHOTOS = SHARED_DATA / "bsds500" / "test"

# torchvision's VGG19 ``features``: (index, in channels, out channels) of every 3 x 3 convolution, written out
# from the published architecture (configuration "E"), not from convgen's code
PUBLIC_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
                (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]  # fmt: skip


def public_state_dict(seed: int = 0, classifier: bool = True) -> dict[str, torch.Tensor]:
    """A state dict in the layout of torchvision's vgg19-dcbb9e9d.pth (classifier included, as in the file)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, cin, cout in PUBLIC_CONVS:
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    if classifier:
        for i, (cin, cout) in zip((0, 3, 6), ((25088, 4096), (4096, 4096), (4096, 1000)), strict=True):
            state[f"classifier.{i}.weight"] = torch.zeros(cout, cin)
            state[f"classifier.{i}.bias"] = torch.zeros(cout)
    return state


def photo(side: int = 48, seed: int = 0) -> np.ndarray:
    img = np.asarray(Image.open(sorted(PHOTOS.glob("*.jpg"))[seed]).convert("RGB"), np.float32) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    return vgg.resize_to(x, side)[0].permute(1, 2, 0).numpy().copy()


def painting(name: str = "starry_night.jpg", side: int = 64) -> np.ndarray:
    img = np.asarray(Image.open(STYLES / name).convert("RGB"), np.float32) / 255
    return vgg.resize_to(torch.from_numpy(img).permute(2, 0, 1)[None], side)[0].permute(1, 2, 0).numpy().copy()


@pytest.fixture(scope="module")
def features() -> vgg.VGG19Features:
    return vgg.random_vgg19()


# -- VGG19 -------------------------------------------------------------------------------------------------------
def test_vgg19_state_dict_matches_the_public_layout():
    own = vgg.VGG19Features().state_dict()
    public = {k: v.shape for k, v in public_state_dict(classifier=False).items()}
    assert list(own) == list(public)
    assert {k: v.shape for k, v in own.items()} == public
    assert vgg.LAYERS["relu1_1"] == 1 and vgg.LAYERS["relu4_2"] == 22 and vgg.LAYERS["relu5_1"] == 29
    assert vgg.LAYERS["pool5"] == 36 and len(vgg.VGG19Features().features) == 37


def test_vgg19_loads_a_layout_file_and_computes_its_features(tmp_path):
    state = public_state_dict()
    path = tmp_path / "vgg19-mine.pth"  # no hash in the name: the user's own file, loaded without a checksum
    torch.save(state, path)
    net = vgg.build_vgg19(path)
    assert net.name == "vgg19-imagenet"
    x = torch.rand(1, 3, 20, 24)
    out = net(x, ("relu1_1", "relu2_1"))
    mean, std = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    h = torch.nn.functional.conv2d((x - mean) / std, state["features.0.weight"], state["features.0.bias"], padding=1)
    assert torch.allclose(out["relu1_1"], h.relu(), atol=1e-5)
    assert out["relu2_1"].shape == (1, 128, 10, 12)
    # also through the resolution rules: an explicit path and the environment variable
    assert vgg.resolve_weights(path) == path


def test_vgg19_file_of_another_layout_is_a_one_line_error(tmp_path):
    state = public_state_dict(classifier=False)
    del state["features.34.bias"]
    torch.save(state, tmp_path / "v.pth")
    with pytest.raises(ConvgenError, match="not the torchvision VGG19 layout"):
        vgg.build_vgg19(tmp_path / "v.pth")


def test_wrong_checksum_and_truncated_files_are_one_line_errors(tmp_path):
    fake = tmp_path / vgg.WEIGHTS_FILE  # the public name, other bytes: its SHA-256 does not start with dcbb9e9d
    torch.save(public_state_dict(classifier=False), fake)
    with pytest.raises(ConvgenError, match="SHA-256 does not start with dcbb9e9d") as e:
        vgg.build_vgg19(fake)
    assert "\n" not in str(e.value)
    whole = tmp_path / "mine.pth"
    torch.save(public_state_dict(classifier=False), whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ConvgenError, match="not a readable weights file"):
        vgg.build_vgg19(cut)
    style = tmp_path / "s.png"
    Image.fromarray((painting(side=32) * 255).astype(np.uint8)).save(style)
    Image.fromarray((photo(32) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    for bad in (fake, cut, tmp_path / "missing.pth"):
        r = cli("stylize", "--style", str(style), "--input", str(tmp_path / "in.png"), "--output",
                str(tmp_path / "out.png"), "--vgg-weights", str(bad), "--iterations", "2")  # fmt: skip
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "out.png").exists()


@pytest.fixture
def weights_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_is_checked_against_the_prefix_in_the_name(weights_server, tmp_path, monkeypatch):
    root, url = weights_server
    src = tmp_path / "src.pth"
    torch.save(public_state_dict(), src)
    prefix = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    name = f"vgg19-{prefix}.pth"
    (root / name).write_bytes(src.read_bytes())
    (root / vgg.WEIGHTS_FILE).write_bytes(src.read_bytes())  # the public name with other bytes
    cache = tmp_path / "cache"
    with pytest.raises(ConvgenError, match="checksum mismatch"):
        vgg.fetch_weights(cache, [url])
    assert not (cache / vgg.WEIGHTS_FILE).exists()  # nothing half-written or wrong is left
    monkeypatch.setattr(vgg, "WEIGHTS_FILE", name)
    monkeypatch.setattr(vgg, "WEIGHTS_SHA256_PREFIX", prefix)
    path = vgg.fetch_weights(cache, [url])
    assert path == cache / name and vgg.build_vgg19(path).name == "vgg19-imagenet"


def test_feature_network_resolution(tmp_path, monkeypatch):
    assert vgg.feature_network("auto").name == "random-vgg19"  # no file anywhere: the fallback, named
    with pytest.raises(ConvgenError, match="VGG19 ImageNet weights are not available"):
        vgg.feature_network("vgg19-imagenet")
    with pytest.raises(ConvgenError, match="feature network"):
        vgg.feature_network("resnet")
    path = tmp_path / "w.pth"
    torch.save(public_state_dict(), path)
    monkeypatch.setenv("CONVGEN_VGG_WEIGHTS", str(path))
    assert vgg.feature_network("auto").name == "vgg19-imagenet"
    assert vgg.feature_network("random-vgg19").name == "random-vgg19"


def test_random_fallback_is_seeded_and_tiny_inputs_are_padded(features):
    a, b = vgg.random_vgg19(), vgg.random_vgg19()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.features[0].weight, vgg.random_vgg19(seed=1).features[0].weight)
    out = features(torch.rand(1, 3, 3, 517), ("relu5_1",))
    assert out["relu5_1"].shape == (1, 512, 1, 32)


# -- losses ------------------------------------------------------------------------------------------------------
def test_gram_total_variation_and_style_mix(features):
    f = torch.randn(2, 4, 3, 5)
    manual = torch.stack([m.reshape(4, 15) @ m.reshape(4, 15).T / 60 for m in f])
    assert torch.allclose(gram(f), manual, atol=1e-6)
    x = torch.zeros(1, 1, 2, 3)
    x[..., 1, :] = 1
    assert total_variation(x).item() == pytest.approx(1.0)  # vertical: all 1; horizontal: 0
    s1, s2 = to_tensor(painting(side=32)), to_tensor(painting("the_scream.jpg", 32))
    g1 = PerceptualLoss.style_targets(features, [s1], ("relu1_1", "relu3_1"))
    g2 = PerceptualLoss.style_targets(features, [s2], ("relu1_1", "relu3_1"))
    mixed = PerceptualLoss.style_targets(features, [s1, s2], ("relu1_1", "relu3_1"), mix=[3, 1])
    for k in g1:
        assert torch.allclose(mixed[k], 0.75 * g1[k] + 0.25 * g2[k], rtol=1e-5, atol=1e-7)
    loss = PerceptualLoss(features, g1)
    parts = loss(s1, loss.content_features(s1))
    assert parts["style"].item() < 1e-10 and parts["content"].item() < 1e-10


def test_multiscale_style_loss_compares_each_scale_with_the_downscaled_painting(features):
    layers = ("relu1_1", "relu2_1")
    art, other = to_tensor(painting(side=64)), to_tensor(painting("the_scream.jpg", 64))
    targets = PerceptualLoss.multiscale_targets(features, [art], (1.0, 0.5), layers)
    half = PerceptualLoss.downscale(art, 0.5)
    direct = PerceptualLoss.style_targets(features, [half], layers)
    assert half.shape[-1] == 32 and torch.allclose(targets[1]["relu1_1"], direct["relu1_1"])
    multi = PerceptualLoss(features, targets, weights=LossWeights(content=0.0), scales=(1.0, 0.5))
    assert multi(art, None)["style"].item() < 1e-10  # the painting matches itself at every scale
    # the multi-scale loss is the mean of the single-scale losses, the half-size one taken on downscaled images
    full = PerceptualLoss(features, targets[0], weights=LossWeights(content=0.0))
    coarse = PerceptualLoss(features, targets[1], weights=LossWeights(content=0.0))
    expect = (full(other, None)["style"] + coarse(PerceptualLoss.downscale(other, 0.5), None)["style"]) / 2
    assert multi(other, None)["style"].item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ValueError, match="one set of style Grams per scale"):
        PerceptualLoss(features, targets, scales=(1.0,))


def test_sliced_wasserstein_matches_distributions_not_only_second_moments(features):
    torch.manual_seed(0)
    f = torch.randn(2, 1, 16, 16)  # one channel: every direction is +-1, so the loss is the 1-D W2^2 exactly
    assert sliced_wasserstein(f, f[0].flatten(1).T).item() == pytest.approx(
        (f[0].flatten().sort().values - f[1].flatten().sort().values).square().mean().item() / 2, rel=1e-5
    )
    assert sliced_wasserstein(f[:1] + 0.5, f[0].flatten(1).T).item() == pytest.approx(0.25, rel=1e-5)  # a shift
    # a two-valued (+-1) target has a Gaussian's second moment: equal Grams, different distributions
    two = torch.where(torch.rand(4096, 1) < 0.5, -1.0, 1.0)
    g = torch.randn(1, 1, 64, 64)
    g = g / g.square().mean().sqrt()
    assert (gram(g)[0, 0, 0] - two.square().mean()).abs().item() < 1e-5
    assert sliced_wasserstein(g, two).item() > 0.1
    # a target of another sample count is compared at the image's quantiles (the painting's sample of itself: ~0)
    x = torch.rand(1, 3, 24, 24)
    assert sliced_wasserstein(x, x[0].flatten(1).T[torch.randperm(576)[:200]]).item() < 2e-3
    # the loss over the feature network: the painting matches itself, another picture does not, gradients flow
    art, other = to_tensor(painting(side=64)), to_tensor(painting("the_scream.jpg", 64))
    layers = ("relu1_1", "relu2_1")
    targets = PerceptualLoss.multiscale_targets(features, [art], (1.0, 0.5), layers, statistic="sliced")
    n = art.shape[-2] * art.shape[-1]  # every position of the small painting (fewer than the sample cap)
    assert targets[0]["relu1_1"].shape == (n, 64) and targets[1]["relu2_1"].shape == (n // 16, 128)
    loss = PerceptualLoss(features, targets, weights=LossWeights(content=0.0), scales=(1.0, 0.5), statistic="sliced")
    assert loss(art, None)["style"].item() < 1e-6
    y = other.clone().requires_grad_(True)
    parts = loss(y, None)
    parts["total"].backward()
    assert parts["style"].item() > 0.05 and y.grad.abs().sum() > 0
    mixed = PerceptualLoss.style_targets(features, [art, other], layers, mix=[3, 1], statistic="sliced")
    m = other.shape[-2] * other.shape[-1]  # the samples in the weights' proportion, none drawn twice
    assert mixed["relu1_1"].shape == (round(0.75 * min(n / 0.75, m / 0.25)) + round(0.25 * min(n / 0.75, m / 0.25)), 64)
    with pytest.raises(ValueError, match="style statistic"):
        PerceptualLoss.style_targets(features, [art], layers, statistic="hist")


def test_gradient_term_matches_the_paintings_derivative_distribution(features):
    ramp = torch.linspace(0, 0.5, 41).expand(1, 3, 20, 41).contiguous()  # d/dx = 0.0125 per pixel, d/dy = 0
    g = gradient_field(ramp)
    assert g.shape == (1, 8, 18 * 39)
    slope = torch.asinh(torch.tensor(0.0125 / 0.01))
    assert torch.allclose(g[0, 0], slope.expand(18 * 39), atol=1e-4)  # along x: the slope, compressed
    assert g[0, 4].abs().max() < 1e-4  # along y (pi/2): nothing
    assert torch.allclose(g[0, 2], torch.asinh(torch.tensor(0.0125 * 2**-0.5 / 0.01)).expand(18 * 39), atol=1e-4)
    art, other = to_tensor(painting(side=64)), to_tensor(painting("the_scream.jpg", 64))
    layers, scales = ("relu1_1",), (1.0, 0.5)
    targets = PerceptualLoss.multiscale_targets(features, [art], scales, layers)
    grads = PerceptualLoss.gradient_targets([art], scales)
    assert [t.shape[0] for t in grads] == [8, 8]
    loss = PerceptualLoss(features, targets, weights=LossWeights(content=0.0, style=0.0, gradient=1.0),
                          scales=scales, gradients=grads)  # fmt: skip
    assert loss(art, None)["gradient"].item() < 1e-6  # the painting matches itself
    flat = torch.full_like(other, 0.5).requires_grad_(True)
    parts = loss(flat, None)
    parts["total"].backward()
    assert parts["gradient"].item() > 0.5 and flat.grad.abs().sum() > 0  # no strokes at all: far, and it pushes
    assert loss(other, None)["gradient"].item() > 1e-3
    off = PerceptualLoss(features, targets, weights=LossWeights(content=0.0), scales=scales)
    assert off(other, None)["gradient"].item() == 0.0  # no weight: not computed
    with pytest.raises(ValueError, match="one gradient target per scale"):
        PerceptualLoss(features, targets, scales=scales, gradients=grads[:1])


# -- the optimisation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_lowers_style_and_content_losses(features, optimizer):
    content, style = to_tensor(photo(40)), to_tensor(painting(side=64))
    opts = GatysOptions(iterations=40, optimizer=optimizer, init="noise", style_weight=10.0,
                        lr=0.05 if optimizer == "adam" else None)  # fmt: skip
    h: list[dict[str, float]] = []
    out = gatys(content, [style], features, opts, history=h)
    assert len(h) >= 40 and out.shape == content.shape and out.min() >= 0 and out.max() <= 1
    first, last = h[0], h[-1]
    assert last["style"] < 0.5 * first["style"], (first, last)
    assert last["content"] < 0.5 * first["content"], (first, last)
    assert last["total"] < 0.5 * first["total"]


def test_gatys_from_the_content_moves_towards_the_style_and_keeps_its_chroma_when_asked(features):
    content, style = to_tensor(photo(40)), to_tensor(painting(side=64))
    plain = gatys(content, [style], features, GatysOptions(iterations=15))
    kept = gatys(content, [style], features, GatysOptions(iterations=15, preserve_color=True))
    chroma = lambda x: rgb_to_ycbcr(x)[:, 1:]  # noqa: E731
    inside = (ycbcr_to_rgb(torch.cat([rgb_to_ycbcr(kept)[:, :1], chroma(content)], 1)) - kept).abs() < 1e-6
    inside = inside.all(1, keepdim=True).expand(-1, 2, -1, -1)  # pixels whose recombination needed no clipping
    assert inside.float().mean() > 0.5
    assert torch.allclose(chroma(kept)[inside], chroma(content)[inside], atol=1e-5)
    assert (chroma(plain) - chroma(content)).abs().mean() > 10 * (chroma(kept) - chroma(content)).abs().mean()
    assert (rgb_to_ycbcr(kept)[:, :1] - rgb_to_ycbcr(content)[:, :1]).abs().mean() > 0.01  # luminance changed


def test_colour_space_round_trip_and_recombination():
    x = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5)
    y = torch.rand(2, 3, 5, 7)
    mixed = recombine_chroma(y, x)
    assert torch.allclose(rgb_to_ycbcr(mixed)[:, 0], rgb_to_ycbcr(y)[:, 0], atol=1e-5)
    assert torch.allclose(rgb_to_ycbcr(mixed)[:, 1:], rgb_to_ycbcr(x)[:, 1:], atol=1e-5)


def test_coarse_to_fine_schedule_and_sizes(features):
    assert scales(300, 384) == [300] and scales(1024, 384) == [512, 1024] and scales(2048, 384) == [512, 1024, 2048]
    assert split_iterations(300, 1) == [300] and sum(split_iterations(301, 3)) == 301
    assert split_iterations(300, 2) == [200, 100]
    content, style = to_tensor(photo(80)), to_tensor(painting(side=64))
    opts, history = GatysOptions(iterations=6, size=64, coarse_side=32), []
    out = gatys(content, [style], features, opts, history=history)
    assert out.shape[-2:] == (round(content.shape[-2] * 64 / 80), 64)  # the content at a longer side of 64
    assert scales(64, 32) == [32, 64]
    assert len(history) >= 6


def test_gatys_options_are_checked():
    bads = [({"iterations": 0}, "iterations"), ({"optimizer": "sgd"}, "optimizer"),
            ({"style_weight": -1.0}, "style_weight"), ({"size": 8}, "size"), ({"init": "x"}, "init")]  # fmt: skip
    for bad, match in bads:
        with pytest.raises(ConvgenError, match=match):
            GatysOptions(**bad)
    g = Gatys([painting(side=32)])
    with pytest.raises(ConvgenError, match="does not take"):
        g.stylize(photo(32), tile=3)
    with pytest.raises(ConvgenError, match="style_mix"):
        Gatys([painting(side=32)], style_mix=[1.0, 2.0])


@pytest.mark.parametrize(("shape", "ok"), [((1, 1, 3), False), ((3, 517, 3), True), ((2, 2), True),
                                           ((5000, 3, 3), False), ((8, 8, 2), False)])  # fmt: skip
def test_odd_sizes_and_bad_shapes_for_both_methods(shape, ok, style_model):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    fast = convgen.load(style_model, device="cpu")
    g = Gatys([painting(side=32)])
    for run in (lambda: fast.stylize(image), lambda: g.stylize(image, iterations=2)):
        if ok:
            out = run()
            want = shape if len(shape) == 3 else (*shape, 1)
            assert out.shape == want and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
        else:
            with pytest.raises(ConvgenError):
                run()


# -- the feed-forward network and its training -------------------------------------------------------------------
def style_config(**overrides) -> dict:
    cfg = {
        "name": "tiny-style",
        "seed": 0,
        "task": {"type": "style", "style": [str(STYLES / "starry_night.jpg")], "style_size": 64,
                 "style_layers": ["relu1_1", "relu2_1", "relu3_1"], "content_layers": ["relu2_2"],
                 "eval_batch_size": 2},
        "model": {"type": "style-transform", "width": 4, "residual_blocks": 1},
        "data": {"type": "image-patches", "root": str(SHARED_DATA / "bsds500" / "train"), "channels": 3,
                 "patch_size": 32, "stride": 96, "scales": [0.3], "val_count": 2, "val_crop": 32},
        "train": {"max_steps": 60, "batch_size": 4, "lr": 0.01, "log_every": 10, "eval_every": 30,
                  "ckpt_every": 30, "progress": False},
    }  # fmt: skip
    return with_overrides(cfg, overrides)


@pytest.fixture(scope="module")
def style_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("style") / "run"
    Trainer(build_config(style_config()), run).fit()
    return run


@pytest.fixture(scope="module")
def style_model(style_run) -> Path:
    return style_run / "model"


def test_transform_net_layout_and_sizes():
    net = TransformNet(TransformNet.Config(width=8, residual_blocks=2)).eval()
    kinds = [type(m).__name__ for m in net.modules()]
    assert "ReflectionPad2d" in kinds and "InstanceNorm2d" in kinds and "ConvTranspose2d" not in kinds
    with torch.no_grad():
        for h, w in [(3, 517), (2, 2), (33, 31), (64, 64)]:
            y = net(torch.rand(1, 3, h, w))
            assert y.shape == (1, 3, h, w) and y.min() >= 0 and y.max() <= 1


def test_training_lowers_the_loss_and_records_the_feature_network(style_run):
    rows = [json.loads(line) for line in (style_run / "metrics.jsonl").read_text().splitlines()]
    train = [r["train/loss"] for r in rows if "train/loss" in r]
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(val) == 2 and val[1] < val[0]
    assert np.mean(train[-2:]) < 0.7 * train[0], train
    meta = json.loads((style_run / "model" / "meta.json").read_text())
    assert meta["feature_net"] == "random-vgg19"
    assert meta["style"][0]["file"] == "starry_night.jpg" and len(meta["style"][0]["sha256"]) == 64
    assert sorted(p.name for p in (style_run / "model").glob("*.safetensors")) == ["transform.safetensors"]


def test_resume_continues_exactly(tmp_path, style_run):
    from safetensors.torch import load_file

    part = tmp_path / "part"
    Trainer(build_config(style_config(train__max_steps=30)), part).fit()
    Trainer(build_config(style_config()), part, resume="latest").fit()
    a = load_file(style_run / "checkpoints" / "step_00000060" / "transform.safetensors")
    b = load_file(part / "checkpoints" / "step_00000060" / "transform.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sliced_style_training_resumes_exactly(tmp_path):
    """The sliced loss draws fresh random directions every step: resuming restores that generator too."""
    from safetensors.torch import load_file

    over = {"task__style_statistic": "sliced", "task__style_weight": 3.0, "train__max_steps": 20,
            "train__eval_every": 10, "train__ckpt_every": 10}  # fmt: skip
    Trainer(build_config(style_config(**over)), tmp_path / "whole").fit()
    Trainer(build_config(style_config(**{**over, "train__max_steps": 10})), tmp_path / "part").fit()
    Trainer(build_config(style_config(**over)), tmp_path / "part", resume="latest").fit()
    a = load_file(tmp_path / "whole" / "checkpoints" / "step_00000020" / "transform.safetensors")
    b = load_file(tmp_path / "part" / "checkpoints" / "step_00000020" / "transform.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "whole" / "model" / "meta.json").read_text())
    assert meta["loss"]["style_statistic"] == "sliced"


def test_a_later_stage_starts_from_a_saved_style_model(tmp_path, style_model):
    from safetensors.torch import load_file

    over = {"task__init_from": str(style_model), "task__gradient_weight": 5.0, "train__max_steps": 1,
            "train__lr": 1e-12, "train__eval_every": 1, "train__ckpt_every": 1}  # fmt: skip
    Trainer(build_config(style_config(**over)), tmp_path / "stage2").fit()
    a, b = (
        load_file(style_model / "transform.safetensors"),
        load_file(tmp_path / "stage2" / "model" / "transform.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    meta = json.loads((tmp_path / "stage2" / "model" / "meta.json").read_text())
    assert meta["loss"]["gradient_weight"] == 5.0
    rows = [json.loads(line) for line in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train/gradient", 0) > 0 for r in rows)
    with pytest.raises(ConvgenError, match="not a saved model directory"):
        Trainer(build_config(style_config(task__init_from=str(tmp_path))), tmp_path / "r3").fit()
    # a saved model of another width is a one-line error, not a load_state_dict traceback
    with pytest.raises(ConfigError, match="do not fit the configured model"):
        Trainer(build_config(style_config(task__init_from=str(style_model), model__width=8)), tmp_path / "r4").fit()


def test_bad_style_configs_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.style"):
        Trainer(build_config(style_config(task__style=[str(tmp_path / "none.jpg")])), tmp_path / "r").fit()
    with pytest.raises(ConfigError, match="not a VGG19 layer"):
        Trainer(build_config(style_config(task__style_layers=["relu9_1"])), tmp_path / "r2").fit()
    with pytest.raises(ConfigError, match="style_mix"):
        build_config(style_config(task__style_mix=[1.0, 1.0]))
    for bad in ([], [1.0, 2.0], [0.0]):
        with pytest.raises(ConfigError, match="task.style_scales"):
            build_config(style_config(task__style_scales=bad))
    with pytest.raises(ConfigError, match="task.style_statistic"):
        build_config(style_config(task__style_statistic="histogram"))
    with pytest.raises(ConfigError, match="task.gradient_weight"):
        build_config(style_config(task__gradient_weight=-1))


# -- pipeline and CLI -----------------------------------------------------------------------------------------------
def test_fast_pipeline_preserves_colour_and_resizes(style_model):
    pipe = convgen.load(style_model, device="cpu")
    img = photo(48)
    out = pipe.stylize(img)
    assert out.shape == img.shape and not np.allclose(out, img, atol=0.05)
    kept = pipe.stylize(img, preserve_color=True)
    c_in = rgb_to_ycbcr(to_tensor(img))[:, 1:]
    c_out = rgb_to_ycbcr(to_tensor(kept))[:, 1:]
    assert (c_out - c_in).abs().median() < 2e-3
    assert pipe.stylize(img, size=24).shape == (16, 24, 3)
    gray = pipe.stylize(img.mean(-1))
    assert gray.shape == (*img.shape[:2], 1)


def test_cli_fast_model_on_a_folder_and_gatys_on_a_file(tmp_path, style_model):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((photo(40) * 255).astype(np.uint8)).save(src / "a.jpg")
    Image.fromarray((photo(36, 1) * 255).astype(np.uint8)).save(src / "b.png")
    r = cli("stylize", str(style_model), "--input", str(src), "--output", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["method"] == "fast" and info["feature_net"] == "random-vgg19" and len(info["outputs"]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.size == (40, 27) and im.text["convgen:feature_net"] == "random-vgg19"
        assert im.text["convgen:style"] == "starry_night.jpg"
    r = cli("stylize", str(style_model), "--input", str(src), "--output", str(tmp_path / "out"))
    assert r.returncode == 2 and "already exists" in r.stderr  # nothing replaced without asking
    style = tmp_path / "style.png"
    Image.fromarray((painting(side=48) * 255).astype(np.uint8)).save(style)
    r = cli("stylize", "--style", str(style), str(style), "--style-mix", "2", "1", "--input", str(src / "b.png"),
            "--output", str(tmp_path / "g.png"), "--iterations", "4", "--preserve-color", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["method"] == "gatys" and info["feature_net"] == "random-vgg19" and "offline fallback" in r.stderr
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == (36, 24) and im.text["convgen:method"] == "gatys"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["MODEL", "--style", "STYLE"], "not both"),
        ([], "give a trained style MODEL or --style"),
        (["MODEL", "--iterations", "3"], "--iterations is an option of the Gatys"),
        (["--style", "missing.jpg"], "missing.jpg"),
        (["--style", "STYLE", "--style-mix", "1", "2"], "--style-mix"),
        (["mnist-dcgan"], "not a style model"),
        (["--style", "STYLE", "--iterations", "0"], "iterations"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, style_model, args, match):
    Image.fromarray((photo(32) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    Image.fromarray((painting(side=32) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    args = [str(style_model) if a == "MODEL" else str(tmp_path / "s.png") if a == "STYLE" else a for a in args]
    r = cli("stylize", *args, "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "o.png"))
    assert r.returncode == 2 and match in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o.png").exists()


def test_cli_tiny_and_corrupt_inputs_are_one_line_errors(tmp_path, style_model):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for name, match in (("dot.png", "too small"), ("bad.png", "bad.png")):
        r = cli("stylize", str(style_model), "--input", str(tmp_path / name), "--output", str(tmp_path / "o.png"))
        assert r.returncode == 2 and match in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "o.png").exists()
