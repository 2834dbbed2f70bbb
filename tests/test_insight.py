"""Model insight: class activation maps, feature maps, filters, `convgen explain` and `convgen report`."""

from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from torch import nn

import convgen
from convgen.config import build_config
from convgen.data.export import export_images
from convgen.errors import ConvgenError
from convgen.metrics.audit import load_image_tensor
from convgen.viz.insight import conv_layers, default_cam_layer, feature_maps, filters, grad_cam
from tests.conftest import tiny_config
from tests.test_cli import assert_one_line_error, run_main
from tests.test_gan import gan_config


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "val"
    export_images(root, "val", 64)
    return root


class LinearOnImage(nn.Module):
    """score = sum(W * ReLU(conv(x))) with an identity 1x1 conv: both CAMs have closed forms."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.act = nn.ReLU()
        self.register_buffer("w", weight)

    def forward(self, x):
        return (self.act(self.conv(x)) * self.w).flatten(1).sum(1, keepdim=True)


def test_cams_match_their_closed_forms():
    torch.manual_seed(0)
    w = torch.zeros(1, 1, 8, 8)
    w[..., :, :4] = 1.0  # only the left half counts
    model = LinearOnImage(w)
    x = torch.rand(2, 1, 8, 8)
    hires, layer = grad_cam(model, x, lambda s: s[:, 0], method="hirescam")
    assert layer == "conv"
    expected = (x[:, 0] * w[0, 0]) / (x[:, 0] * w[0, 0]).flatten(1).amax(1)[:, None, None]
    torch.testing.assert_close(hires, expected)
    assert (hires[..., 4:] == 0).all()  # HiResCAM is zero where the score does not look
    gradcam, _ = grad_cam(model, x, lambda s: s[:, 0], method="gradcam")
    torch.testing.assert_close(gradcam, x[:, 0] / x[:, 0].flatten(1).amax(1)[:, None, None])  # mean(W) * A
    with pytest.raises(ConvgenError, match="unknown CAM method"):
        grad_cam(model, x, lambda s: s[:, 0], method="nope")
    with pytest.raises(ConvgenError, match="no layer 'missing'"):
        grad_cam(model, x, lambda s: s[:, 0], layer="missing")


def test_classifier_cam_falls_on_the_digit(digits):
    pipe = convgen.load("mnist-classifier", device="cpu")
    x = load_image_tensor(digits, None)
    assert default_cam_layer(pipe.model, x) == "body.4.0"  # 14 x 14, not the 7 x 7 last layer
    cam, _ = grad_cam(pipe.model, x, lambda logits: logits.max(1).values)
    assert cam.shape == (64, 28, 28) and cam.min() >= 0 and cam.max() <= 1
    digit = torch.from_numpy(np.stack([binary_dilation(m, iterations=2) for m in x[:, 0].numpy() > 0.3]))
    share = float((cam * digit).sum() / cam.sum())
    assert digit.float().mean() < 0.4 and share > 0.6, share  # far above the digit's share of the image
    assert (cam.flatten(1).amax(1) > 0).all()
    assert not pipe.model.training


def test_feature_maps_and_filters_shapes(digits):
    pipe = convgen.load("mnist-classifier", device="cpu")
    x = load_image_tensor(digits, 4)
    maps, name = feature_maps(pipe.model, x)
    first = pipe.model.get_submodule(conv_layers(pipe.model)[0])
    assert name == conv_layers(pipe.model)[0] and maps.shape == (first.out_channels, 1, 28, 28)
    assert maps.min() >= 0 and maps.max() <= 1
    kernels, _ = filters(pipe.model)
    assert kernels.shape == (first.out_channels, 1, 3, 3) and kernels.amax((1, 2, 3)).eq(1).all()


def test_explain_classifier_cli(capsys, digits, tmp_path):
    code, out, _ = run_main(capsys, ["explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path)])
    assert code == 0 and "hirescam at body.4.0" in out
    cam = np.asarray(Image.open(tmp_path / "gradcam.png"))
    assert cam.ndim == 3 and cam.shape[2] == 3
    for name in ("feature_maps.png", "filters.png"):
        assert (tmp_path / name).is_file()
    code, _, err = run_main(capsys, ["explain", "mnist-classifier", "--input", str(digits), "--out", str(tmp_path)])
    assert_one_line_error(code, err, "already holds explain pictures")
    code, _, err = run_main(
        capsys, ["explain", "denoise-gray-s25", "--input", str(digits), "--out", str(tmp_path / "x")]
    )
    assert_one_line_error(code, err, "not a classifier or a GAN checkpoint")


def test_explain_discriminator_and_report(capsys, tmp_path, digits):
    cfg = gan_config(train__max_steps=4)
    run = tmp_path / "gan"
    convgen.train(build_config(cfg), run)
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    code, out, _ = run_main(
        capsys, ["explain", str(ckpt), "--input", str(digits), "--out", str(tmp_path / "d"), "--json"]
    )
    assert code == 0
    import json

    result = json.loads(out)
    assert result["kind"] == "discriminator" and len(result["realness_logits"]) == 16
    assert result["gradcam_layer"].startswith("net.main")

    code, out, _ = run_main(capsys, ["report", str(run)])
    assert code == 0
    page = (run / "report.html").read_text()
    parser = _Collect()
    parser.feed(page)
    assert "tiny-gan" in parser.title and parser.images >= 2  # curves + sample grid, embedded
    assert "val/fd" in page and "generator" in page and "&quot;ndf&quot;: 8" in page
    code, _, err = run_main(capsys, ["report", str(run)])
    assert_one_line_error(code, err, "already exists; pass --overwrite")
    assert main_ok(["report", str(run), "--overwrite"])
    code, _, err = run_main(capsys, ["report", str(tmp_path / "none")])
    assert_one_line_error(code, err, "run directory not found")


def test_report_of_a_classifier_run(tmp_path):
    run = tmp_path / "cls"
    convgen.train(build_config(tiny_config()), run)
    out = tmp_path / "elsewhere" / "r.html"
    assert main_ok(["report", str(run), "--out", str(out)])
    page = out.read_text()
    assert "val/accuracy" in page and "classifier" in page and "data:image/png;base64," in page


def main_ok(argv) -> bool:
    from convgen.cli import main

    return main(argv) == 0


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.images, self._in_title = "", 0, False

    def handle_starttag(self, tag, attrs):
        self._in_title = tag == "title"
        if tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,"):
            self.images += 1

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False
