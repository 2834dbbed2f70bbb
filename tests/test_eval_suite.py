"""The evaluation suite: InceptionV3 layout and preprocessing, extractors, the statistics cache, streaming
statistics, the classifier two-sample test and the memorisation check."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from convgen.cli import main
from convgen.data.export import export_images
from convgen.errors import ConvgenError
from convgen.metrics.audit import load_image_tensor, memorization_report, two_sample_test
from convgen.metrics.distribution import evaluate_generation, per_class_precision_recall
from convgen.metrics.extractors import StatsCache, default_extractor, folder_features, get_extractor, stream_features
from convgen.models.backbones import inception
from convgen.models.backbones.inception import FIDInceptionV3, build_fid_inception, tf1_resize_bilinear
from tests.test_cli import assert_one_line_error, run_main
from tests.test_download import server  # noqa: F401, F811 - the 127.0.0.1 file server fixture


def published_layout() -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of pt_inception-2015-12-05-6726825d.pth, written out from the published graph
    (TF inception-2015-12-05 as ported by pytorch-fid: torchvision names, no aux head, 1008 classes)."""
    layout: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, kh, kw=None):
        layout[f"{name}.conv.weight"] = (cout, cin, kh, kw or kh)
        for p in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.bn.{p}"] = (cout,)

    for name, cin, cout, k in [
        ("Conv2d_1a_3x3", 3, 32, 3),
        ("Conv2d_2a_3x3", 32, 32, 3),
        ("Conv2d_2b_3x3", 32, 64, 3),
        ("Conv2d_3b_1x1", 64, 80, 1),
        ("Conv2d_4a_3x3", 80, 192, 3),
    ]:
        conv(name, cin, cout, k)
    for name, cin, pool in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        conv(f"{name}.branch1x1", cin, 64, 1)
        conv(f"{name}.branch5x5_1", cin, 48, 1)
        conv(f"{name}.branch5x5_2", 48, 64, 5)
        conv(f"{name}.branch3x3dbl_1", cin, 64, 1)
        conv(f"{name}.branch3x3dbl_2", 64, 96, 3)
        conv(f"{name}.branch3x3dbl_3", 96, 96, 3)
        conv(f"{name}.branch_pool", cin, pool, 1)
    conv("Mixed_6a.branch3x3", 288, 384, 3)
    conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
    conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3)
    conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3)
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        conv(f"{name}.branch1x1", 768, 192, 1)
        conv(f"{name}.branch7x7_1", 768, c7, 1)
        conv(f"{name}.branch7x7_2", c7, c7, 1, 7)
        conv(f"{name}.branch7x7_3", c7, 192, 7, 1)
        conv(f"{name}.branch7x7dbl_1", 768, c7, 1)
        conv(f"{name}.branch7x7dbl_2", c7, c7, 7, 1)
        conv(f"{name}.branch7x7dbl_3", c7, c7, 1, 7)
        conv(f"{name}.branch7x7dbl_4", c7, c7, 7, 1)
        conv(f"{name}.branch7x7dbl_5", c7, 192, 1, 7)
        conv(f"{name}.branch_pool", 768, 192, 1)
    conv("Mixed_7a.branch3x3_1", 768, 192, 1)
    conv("Mixed_7a.branch3x3_2", 192, 320, 3)
    conv("Mixed_7a.branch7x7x3_1", 768, 192, 1)
    conv("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7)
    conv("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1)
    conv("Mixed_7a.branch7x7x3_4", 192, 192, 3)
    for name, cin in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        conv(f"{name}.branch1x1", cin, 320, 1)
        conv(f"{name}.branch3x3_1", cin, 384, 1)
        conv(f"{name}.branch3x3_2a", 384, 384, 1, 3)
        conv(f"{name}.branch3x3_2b", 384, 384, 3, 1)
        conv(f"{name}.branch3x3dbl_1", cin, 448, 1)
        conv(f"{name}.branch3x3dbl_2", 448, 384, 3)
        conv(f"{name}.branch3x3dbl_3a", 384, 384, 1, 3)
        conv(f"{name}.branch3x3dbl_3b", 384, 384, 3, 1)
        conv(f"{name}.branch_pool", cin, 192, 1)
    layout["fc.weight"] = (1008, 2048)
    layout["fc.bias"] = (1008,)
    return layout


def layout_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in published_layout().items():
        if k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("bn.weight"):
            state[k] = torch.ones(shape)
        else:
            state[k] = torch.randn(shape, generator=g) * (0.05 if k.endswith("conv.weight") else 0.01)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / inception.WEIGHTS_FILE
    torch.save(layout_state_dict(), path)
    return path


def test_inception_state_dict_matches_published_layout():
    net = FIDInceptionV3()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == published_layout()
    # 27,161,264 torchvision parameters, minus the auxiliary head, plus 8 extra classes: the FID graph
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_inception_loads_layout_file_and_gives_2048_features(weights_file, tmp_path):
    net = build_fid_inception(weights_file)
    state = layout_state_dict()
    assert torch.equal(net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    x = torch.rand(2, 3, 40, 52)
    pool, logits = net(x)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and torch.isfinite(pool).all()
    assert (pool >= 0).all()  # average of ReLU outputs
    gray_pool, _ = net(x[:, :1])  # gray images are repeated to RGB
    rgb_pool, _ = net(x[:, :1].expand(-1, 3, -1, -1))
    torch.testing.assert_close(gray_pool, rgb_pool)
    from safetensors.torch import save_file

    save_file(state, tmp_path / "w.safetensors")
    torch.testing.assert_close(build_fid_inception(tmp_path / "w.safetensors")(x)[0], pool)
    torch.save({k: v for k, v in state.items() if "Mixed_7c" not in k}, tmp_path / "partial.pth")
    with pytest.raises(ConvgenError, match="not the FID InceptionV3 layout"):
        build_fid_inception(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a weights file")
    with pytest.raises(ConvgenError, match="not a readable weights file"):
        build_fid_inception(tmp_path / "junk.pth")
    wrong = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})  # a wrongly shaped tensor
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ConvgenError, match=r"fc.weight has shape \(1000, 2048\), the model needs \(1008, 2048\)"):
        build_fid_inception(tmp_path / "wrong.pth")
    nan = dict(state, **{"fc.bias": torch.full((1008,), float("nan"))})
    save_file(nan, tmp_path / "nan.safetensors")
    with pytest.raises(ConvgenError, match="fc.bias holds NaN"):
        build_fid_inception(tmp_path / "nan.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:5000])  # truncated
    with pytest.raises(ConvgenError, match="not a valid safetensors file"):
        build_fid_inception(tmp_path / "cut.safetensors")


def tf1_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TensorFlow 1.x resize_bilinear(align_corners=False), written out pixel by pixel."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        y = i * h / out_h
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(out_w):
            x = j * w / out_w
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w - 1), x - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * fx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * fx
            out[i, j] = top + (bottom - top) * fy
    return out


@pytest.mark.parametrize("shape,size", [((28, 28), (299, 299)), ((37, 20), (13, 29)), ((8, 8), (4, 4))])
def test_tf1_resize_matches_reference(shape, size):
    img = np.random.default_rng(0).uniform(0, 255, shape)
    ours = tf1_resize_bilinear(torch.from_numpy(img)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(ours, tf1_reference(img, *size), atol=1e-9)
    if size == (4, 4):  # no half-pixel offset: halving picks the even pixels exactly
        np.testing.assert_array_equal(ours, img[::2, ::2])
    half_pixel = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=size, mode="bilinear")
    assert not np.allclose(half_pixel[0, 0].numpy(), ours)  # why torch's own resize is not used


def test_streaming_statistics_equal_numpy(digits_dir, tmp_path):
    folder, _ = digits_dir
    ex = get_extractor("mnist-classifier")
    files = sorted(folder.glob("*.png"))
    fs = stream_features(files, ex, batch_size=7)
    f64 = fs.features.astype(np.float64)
    np.testing.assert_allclose(fs.mu, f64.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fs.sigma, np.cov(f64, rowvar=False), rtol=1e-5, atol=1e-7)
    assert fs.probs.shape == (len(files), 10)
    np.testing.assert_allclose(fs.probs.sum(1), 1, atol=1e-5)


def test_stats_cache_hits_misses_and_survives_damage(digits_dir, tmp_path):
    folder, _ = digits_dir
    ex = get_extractor("mnist-classifier")
    cache = StatsCache(tmp_path / "cache")
    first, key = folder_features(folder, ex, cache=cache)
    assert not first.cached and cache.path(key).is_file()
    again, _ = folder_features(folder, ex, cache=cache)
    assert again.cached
    np.testing.assert_array_equal(again.features, first.features)
    _, key_limited = folder_features(folder, ex, limit=20, cache=cache)
    assert key_limited != key and key_limited["n"] == 20 and key_limited["split"] == "first-20"
    cache.path(key).write_bytes(b"damaged")
    redone, _ = folder_features(folder, ex, cache=cache)
    assert not redone.cached and folder_features(folder, ex, cache=cache)[0].cached
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "zzz_new.png")  # the folder changed
    changed, key_changed = folder_features(folder, ex, cache=cache)
    assert not changed.cached and key_changed["dataset"] != key["dataset"]
    assert not list((tmp_path / "cache").glob(".*.tmp*"))  # atomic writes leave no temporary files


def test_default_extractor_per_data_type():
    assert default_extractor(np.zeros((28, 28, 1))) == "mnist-classifier"
    assert default_extractor(np.zeros((32, 32, 3))) == "inception-v3"
    assert default_extractor(np.zeros((256, 256, 1))) == "inception-v3"


def write_pngs(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:04d}.png")


def test_eval_generation_with_inception_weights(capsys, tmp_path, weights_file):
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "a", rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8))
    write_pngs(tmp_path / "b", rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    args = ["eval", "generation", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--json"]
    code, out, _ = run_main(capsys, [*args, "--inception-weights", str(weights_file), "--cache-dir", str(tmp_path)])
    assert code == 0
    result = json.loads(out)
    p = result["protocol"]
    assert p["extractor"] == "inception-v3" and p["fid_is_standard"] is True and p["feature_dim"] == 2048
    assert p["extractor_sha256_16"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()[:16]
    assert "TensorFlow-1 bilinear to 299x299" in p["resize"] and "fd_mnistcls" not in result
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    code, _, err = run_main(capsys, [*args, "--inception-weights", str(tmp_path / "missing.pth")])
    assert_one_line_error(code, err, "missing.pth: InceptionV3 weights file not found")


def test_inception_download_checks_the_published_digest(server, tmp_path, monkeypatch):  # noqa: F811
    www, base = server
    url = base + "/"
    (www / inception.WEIGHTS_FILE).write_bytes(b"tampered weights")  # does not start with 6726825d
    with pytest.raises(ConvgenError, match="checksum mismatch"):
        inception.fetch_weights(tmp_path / "cache", mirrors=[url])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    good = b"stand-in weights"
    monkeypatch.setattr(inception, "WEIGHTS_SHA256_PREFIX", hashlib.sha256(good).hexdigest()[:8])
    (www / inception.WEIGHTS_FILE).write_bytes(good)
    got = inception.fetch_weights(tmp_path / "cache", mirrors=[url])
    assert got.read_bytes() == good and got.name == inception.WEIGHTS_FILE


@pytest.fixture(scope="module")
def digit_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    export_images(root / "train", "train", 800)
    export_images(root / "val", "val", 300)
    return root


def test_two_sample_test_tells_noise_from_digits_but_not_digits_from_digits(digit_sets):
    real = load_image_tensor(digit_sets / "val", None)
    other_real = load_image_tensor(digit_sets / "train", 300, like=real)
    noise = torch.rand_like(real)
    assert real.shape == (300, 1, 28, 28)
    same = two_sample_test(real, other_real, epochs=4)
    different = two_sample_test(real, noise, epochs=4)
    assert different["accuracy"] > 0.95 and different["p_value"] < 1e-10
    assert same["accuracy"] < 0.62 and same["n_test"] == 300


def test_memorization_flags_copies_and_clears_new_samples(digit_sets, tmp_path):
    train = load_image_tensor(digit_sets / "train", None)
    held = load_image_tensor(digit_sets / "val", 150)
    copies = (train[:150] + 0.01 * torch.randn_like(train[:150])).clamp(0, 1)  # near-copies of training digits
    novel = load_image_tensor(digit_sets / "val", None)[150:]
    bad = memorization_report(copies, train, held, pairs_out=tmp_path / "pairs.png", n_pairs=8)
    good = memorization_report(novel, train, held)
    assert bad["near_copy_fraction"] > 0.9 and "possible memorisation" in bad["verdict"]
    assert bad["p_value_fake_closer"] < 1e-10 and bad["median_ratio"] < 0.2
    assert good["near_copy_fraction"] < 0.05 and 0.8 < good["median_ratio"] < 1.25
    assert "no sign of copying" in good["verdict"]
    pairs = np.asarray(Image.open(tmp_path / "pairs.png"))
    assert pairs.shape[:2] == (2 * 28 + 3 * 2, 8 * 28 + 9 * 2)


def test_eval_generation_cli_audits(capsys, digit_sets, tmp_path):
    args = ["eval", "generation", "--real", str(digit_sets / "val"), "--fake", str(digit_sets / "train"), "--json"]
    code, out, _ = run_main(
        capsys,
        [
            *args,
            "--train",
            str(digit_sets / "train"),
            "--pairs",
            str(tmp_path / "p.png"),
            "--two-sample",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert code == 0
    result = json.loads(out)
    assert result["protocol"]["extractor"] == "mnist-classifier"  # the default for 28 px gray digits
    assert result["memorization"]["near_copy_fraction"] > 0.9  # the "generator" output is its training set
    assert 0 <= result["two_sample"]["accuracy"] <= 1 and (tmp_path / "p.png").is_file()
    assert result["protocol"]["real_features_cached"] is False
    code, out, _ = run_main(capsys, [*args, "--cache-dir", str(tmp_path / "c")])
    assert json.loads(out)["protocol"]["real_features_cached"] is True
    code, _, err = run_main(capsys, [*args, "--pairs", str(tmp_path / "q.png")])
    assert_one_line_error(code, err, "--pairs needs --train")
    assert main([*args[:-1], "--extractor", "no-such-model"]) != 0


def test_evaluate_generation_python_api(digit_sets, tmp_path):
    result = evaluate_generation(digit_sets / "val", digit_sets / "train", cache=False, limit=100)
    assert result["protocol"]["n_real"] == 100 and result["fd_mnistcls"] == result["fid"]


def test_per_class_precision_recall_groups_by_the_predicted_class(capsys, digit_sets):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 4))
    real_probs = np.eye(2)[np.repeat([0, 1], 100)]
    # class-0 samples are real class-0 points; class-1 samples lie far off; only a tenth of the samples are class 1
    fake = np.concatenate([real[:90] + 0.01, real[100:110] + 50.0])
    fake_probs = np.eye(2)[np.repeat([0, 1], [90, 10])]
    rows = per_class_precision_recall(real, real_probs, fake, fake_probs, min_images=10)
    assert rows["0"]["precision"] == 1.0 and rows["0"]["recall"] > 0.8
    assert rows["1"]["precision"] == 0.0 and rows["1"]["recall"] == 0.0
    assert rows["1"]["fake_share"] == pytest.approx(0.1) and rows["1"]["real_share"] == pytest.approx(0.5)
    assert per_class_precision_recall(real, real_probs, fake, fake_probs, min_images=11)["1"]["precision"] is None
    # through the command: every digit class named, the samples' shares summing to one
    args = ["eval", "generation", "--real", str(digit_sets / "val"), "--fake", str(digit_sets / "train")]
    code, out, _ = run_main(capsys, [*args, "--per-class", "--no-cache", "--json"])
    assert code == 0
    result = json.loads(out)["per_class"]
    assert set(result) == {str(d) for d in range(10)}
    assert sum(r["fake_share"] for r in result.values()) == pytest.approx(1.0)
    assert all(r["precision"] is None or 0 <= r["precision"] <= 1 for r in result.values())
    code, out, _ = run_main(capsys, [*args, "--per-class", "--no-cache"])
    assert code == 0 and "class 7: precision" in out
    with pytest.raises(ConvgenError, match="domain classifier"):
        evaluate_generation(digit_sets / "val", digit_sets / "train", extractor="inception-v3", per_class=True)
