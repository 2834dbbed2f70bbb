"""Safe image reading and writing.

Reading returns writable float32 arrays of shape HxWxC in [0, 1] (``.npy`` inputs keep their values unclipped, so
the noise protocol survives). Decoding refuses decompression bombs before any pixel is decoded and turns truncated or
non-image files into one-line :class:`ImageError` messages. Images are read as people see them: the EXIF
orientation is applied, 16-bit PNGs keep their precision (gray and RGB), NaN or infinite values (float TIFF,
``.npy``) are refused, and an animation (GIF, APNG, WebP with several frames) is refused rather than read as its
first frame.

Channel rules (explicit, never silent):
  * gray model (1 channel): gray is used as is; RGB/RGBA whose colour channels are equal (gray saved as RGB) are
    reduced to one channel; a colour image is an error.
  * colour model (3 channels): gray is replicated; RGB is used as is.
  * an alpha channel is dropped when fully opaque; a transparent image is an error.
  * any other channel count (for example a 5-channel ``.npy``) is an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from convgen.errors import ConvgenError, ImageError
from convgen.io.atomic import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    from convgen.io.provenance import Provenance

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
READABLE_SUFFIXES = IMAGE_SUFFIXES + (".npy",)
DEFAULT_MAX_PIXELS = 100_000_000  # 10k x 10k; bigger images are refused as possible decompression bombs

ImageFile.LOAD_TRUNCATED_IMAGES = False


def max_pixels() -> int:
    value = os.environ.get("CONVGEN_MAX_IMAGE_PIXELS")
    return int(value) if value else DEFAULT_MAX_PIXELS


def _check_size(path: Path, width: int, height: int, limit: int | None) -> None:
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise ImageError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(possible decompression bomb; raise CONVGEN_MAX_IMAGE_PIXELS if you trust it)"
        )


@contextlib.contextmanager
def _opened(path: Path, limit: int | None) -> Iterator[Image.Image]:
    """Pillow's image of ``path``, refused before any pixel is decoded when it is over the pixel limit or holds
    several frames; every decoder error or warning in the block (a warning means a damaged file, e.g. a TIFF
    tag past its end) becomes one :class:`ImageError`."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we enforce our own limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(path, img.width, img.height, limit)
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    raise ImageError(
                        f"{path}: holds {frames} frames (an animation or a multi-page file); convgen reads "
                        "single images (save the frame you want as its own file)"
                    )
                yield img
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, zlib.error, EOFError, Warning) as e:
        raise ImageError(f"{path}: truncated or corrupt image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode(path: Path, limit: int | None) -> np.ndarray:
    with _opened(path, limit) as img:
        img.load()
        arr = _png16_rgb(path, img) if img.format == "PNG" and img.mode in ("RGB", "RGBA") else None
        if arr is None:
            arr = _pil_to_array(ImageOps.exif_transpose(img))
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError(f"{path}: image contains NaN or infinite values")
    return arr


def _png16_rgb(path: Path, img: Image.Image) -> np.ndarray | None:
    """A 16-bit RGB(A) PNG at full precision (Pillow reads those as 8-bit), or None for an 8-bit one."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[24] != 16:  # IHDR bit depth
        return None
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 3:
        return None
    rgb = raw[..., [2, 1, 0, 3][: raw.shape[-1]]] if raw.shape[-1] in (3, 4) else raw
    return np.ascontiguousarray(rgb, dtype=np.float32) / 65535.0


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    if mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        return (arr / (65535.0 if arr.max() > 255 else 255.0))[..., None]
    if mode == "F":
        return np.array(img, dtype=np.float32)[..., None]  # a writable copy of Pillow's buffer
    if mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _read_npy(path: Path, limit: int | None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise ImageError(f"{path}: not a valid .npy array ({e})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ImageError(f"{path}: expected an HxW or HxWxC array, got shape {tuple(arr.shape)}")
    if arr.shape[-1] > 4 and arr.shape[0] in (1, 3, 4):
        raise ImageError(f"{path}: shape {tuple(arr.shape)} looks channels-first; save it as HxWxC")
    if arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: {arr.shape[-1]} channels; expected 1 (gray), 3 (RGB) or an alpha variant")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{path}: an empty array (shape {tuple(arr.shape)})")
    _check_size(path, arr.shape[1], arr.shape[0], limit)
    if arr.dtype == np.uint8:
        return np.asarray(arr, dtype=np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"{path}: expected a float (or uint8) array, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float32)  # a writable copy, not a view of the read-only memory map
    if not np.isfinite(out).all():
        raise ImageError(f"{path}: array contains NaN or infinite values")
    return out


def probe_image(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Height and width from a file's header, without decoding its pixels: a missing, unidentifiable, animated,
    oversized or wrongly shaped file is refused here, before a folder job writes anything. (A file truncated after
    its header is only found when it is decoded.)"""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise ImageError(f"{path}: not a valid .npy array ({e})") from None
        if arr.ndim not in (2, 3):
            raise ImageError(f"{path}: expected an HxW or HxWxC array, got shape {tuple(arr.shape)}")
        _check_size(path, arr.shape[1], arr.shape[0], max_pixels)
        return int(arr.shape[0]), int(arr.shape[1])
    with _opened(path, max_pixels) as img:
        return img.height, img.width


def stored_ndim(path: str | Path) -> int:
    """2 for a ``.npy`` file holding an H x W array, else 3: what an output written for this input keeps."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return 3
    try:
        return 2 if np.load(path, allow_pickle=False, mmap_mode="r").ndim == 2 else 3
    except (ValueError, OSError, EOFError):
        return 3  # read_image reports what is wrong with the file


def read_image(path: str | Path, channels: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Read an image or ``.npy`` file as float32 HxWxC; convert to ``channels`` by the module's rules."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    arr = _read_npy(path, max_pixels) if path.suffix.lower() == ".npy" else _decode(path, max_pixels)
    if channels is not None:
        arr = convert_channels(arr, channels, str(path))
    return arr


def convert_channels(arr: np.ndarray, channels: int, name: str = "image") -> np.ndarray:
    c = arr.shape[-1]
    if c not in (1, 2, 3, 4):
        raise ImageError(f"{name}: has {c} channels; expected 1 (gray), 3 (RGB) or an alpha variant")
    if c in (2, 4):
        alpha = arr[..., -1]
        if float(alpha.min()) < 1.0:
            raise ImageError(f"{name}: has transparent pixels; flatten the alpha channel before use")
        arr, c = arr[..., :-1], c - 1
    if channels == c:
        return np.ascontiguousarray(arr)
    if channels == 3 and c == 1:
        return np.repeat(arr, 3, axis=-1)
    if channels == 1 and c == 3:
        if np.abs(arr - arr[..., :1]).max() > 1.0 / 255.0:
            raise ImageError(f"{name}: is a colour (RGB) image but the model takes 1-channel gray images")
        return np.ascontiguousarray(arr[..., :1])
    raise ImageError(f"{name}: cannot convert {c}-channel image to {channels} channels")


def to_uint8(arr: np.ndarray) -> np.ndarray:
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: str | Path, arr: np.ndarray, metadata: dict[str, str] | None = None,
                provenance: Provenance | None = None) -> Path:  # fmt: skip
    """Write HxW or HxWxC float data atomically: ``.npy`` keeps float32 values, anything else is an 8-bit image.
    ``metadata`` becomes PNG text chunks (other formats ignore it); ``provenance`` adds the XMP record and, when
    c2pa-python is installed, a signed C2PA manifest (:mod:`convgen.io.provenance`)."""
    path = Path(path)
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ConvgenError(f"{path.name}: not written: {bad:,} of its {arr.size:,} values are NaN or infinite "
                           "(a non-finite option value or a broken model)")  # fmt: skip
    if path.suffix.lower() == ".npy":
        return atomic_write(path, lambda p: np.save(p, arr.astype(np.float32, copy=False), allow_pickle=False))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    pixels = to_uint8(arr) if arr.dtype != np.uint8 else arr
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(), "PNG")
    return atomic_write_bytes(path, encode_image(pixels, fmt, metadata, provenance, path.name))


def encode_image(pixels: np.ndarray, fmt: str, metadata: dict[str, str] | None = None,
                 provenance: Provenance | None = None, title: str = "image") -> bytes:  # fmt: skip
    """8-bit pixels encoded as PNG, JPEG or TIFF, with PNG text ``metadata``; with ``provenance`` its XMP and,
    when c2pa-python is installed, a C2PA manifest (``title``: the file name it records)."""
    extra: dict = {}
    if provenance is not None:
        pixels, provenance = provenance.apply_mark(pixels)
    xmp = provenance.xmp().encode("utf-8") if provenance is not None else None
    if fmt == "PNG" and (metadata or xmp):
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in (metadata or {}).items():
            info.add_text(k, v)
        if xmp:
            from convgen.io.provenance import XMP_KEY

            info.add_itxt(XMP_KEY, xmp.decode("utf-8"))
        extra["pnginfo"] = info
    elif fmt == "JPEG":
        extra = {"xmp": xmp} if xmp else {}
    elif fmt == "TIFF" and xmp:
        extra["tiffinfo"] = {700: xmp}
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **extra)
    if provenance is None or not provenance.sign:
        return buf.getvalue()
    from convgen.io import provenance as prov

    return prov.sign(buf.getvalue(), fmt, title, provenance) if prov.c2pa_available() else buf.getvalue()


def list_images(directory: str | Path, suffixes: Iterable[str] = READABLE_SUFFIXES) -> list[Path]:
    """Files with image suffixes directly in ``directory``, in byte-wise sorted name order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"{directory}: directory not found")
    allowed = tuple(s.lower() for s in suffixes)
    files = [
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in allowed and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: p.name.encode())


def resolve_inputs(path: str | Path) -> list[Path]:
    """A file is a list of one; a directory lists its images; anything else is an error."""
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ImageError(f"{path}: no images found (looked for {', '.join(READABLE_SUFFIXES)})")
        return files
    if path.is_file():
        return [path]
    raise ImageError(f"{path}: file or directory not found")


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A boolean H x W mask (True = missing) from a gray PNG (255 missing, 0 known) or a 0/1 ``.npy``."""
    m = read_image(path)
    if m.shape[-1] != 1:
        if m.shape[-1] in (3, 4) and np.abs(m[..., :3] - m[..., :1]).max() == 0:
            m = m[..., :1]
        else:
            raise ImageError(f"{path}: a mask must be a 1-channel (grayscale) image")
    m = m[..., 0]
    if m.shape != shape:
        raise ImageError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}")
    if not np.all((m == 0) | (m == 1)):
        raise ImageError(f"{path}: mask is not binary (expected only 0 = known and 255 = missing)")
    if m.all():
        raise ImageError(f"{path}: the mask marks every pixel missing; there is nothing to fill from")
    if not m.any():
        print(f"convgen: warning: {path}: mask marks no missing pixel", file=sys.stderr)
    return m.astype(bool)
