import numpy as np
import pytest
from PIL import Image

from convgen.errors import ImageError
from convgen.io.images import convert_channels, read_image, resolve_inputs, write_image
from convgen.viz.grid import make_grid, save_grid
from tests.conftest import png_bytes


def test_roundtrip_png_and_npy(tmp_path):
    arr = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    write_image(tmp_path / "a.png", arr)
    back = read_image(tmp_path / "a.png")
    assert back.shape == (5, 7, 3) and back.dtype == np.float32
    assert np.abs(back - arr).max() <= 0.5 / 255 + 1e-6
    unclipped = arr * 3 - 1
    write_image(tmp_path / "a.npy", unclipped)
    assert np.array_equal(read_image(tmp_path / "a.npy"), unclipped)


def test_gray_modes(tmp_path):
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g.png").shape == (4, 4, 1)
    assert read_image(tmp_path / "g16.png").max() == pytest.approx(1.0)


def test_truncated_png(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    bad = tmp_path / "trunc.png"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_image(bad)


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am not an image\n")
    with pytest.raises(ImageError, match="not an image file"):
        read_image(p)


def test_decompression_bomb_header_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_bytes(50_000, 50_000, payload=b"x"))
    with pytest.raises(ImageError, match="50000x50000.*over the limit"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not found"):
        resolve_inputs(tmp_path / "nope")


def test_channel_rules():
    gray_rgb = np.repeat(np.random.default_rng(0).random((4, 4, 1)), 3, -1)
    assert convert_channels(gray_rgb, 1).shape == (4, 4, 1)
    colour = np.random.default_rng(1).random((4, 4, 3))
    with pytest.raises(ImageError, match="colour"):
        convert_channels(colour, 1)
    assert convert_channels(colour[..., :1], 3).shape == (4, 4, 3)
    opaque = np.concatenate([colour, np.ones((4, 4, 1))], -1)
    assert np.array_equal(convert_channels(opaque, 3), colour)
    transparent = opaque.copy()
    transparent[0, 0, 3] = 0.5
    with pytest.raises(ImageError, match="transparent"):
        convert_channels(transparent, 3)
    with pytest.raises(ImageError, match="5 channels"):
        convert_channels(np.zeros((4, 4, 5)), 3)


def test_bad_npy(tmp_path):
    np.save(tmp_path / "chw.npy", np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ImageError, match="channels-first"):
        read_image(tmp_path / "chw.npy")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(ImageError, match="NaN"):
        read_image(tmp_path / "nan.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ImageError, match="not a valid .npy"):
        read_image(tmp_path / "junk.npy")


def test_grid_layout(tmp_path):
    batch = np.zeros((10, 1, 4, 4), np.float32)
    batch[3] = 1.0
    grid = make_grid(batch, nrow=5, padding=1, pad_value=0.5)
    assert grid.shape == (2 * 5 + 1, 5 * 5 + 1, 1)
    assert grid[1:5, 1 + 3 * 5 : 5 + 3 * 5].min() == 1.0  # image 3 is at row 0, column 3
    save_grid(batch, tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").size[0] > 0
