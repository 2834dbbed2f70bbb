"""Compress images to ``.cvgc`` files with a learned codec and decompress them (format:
:mod:`convgen.entropy.bitstream`).

Encoding: pad the image (replicated edges) to a multiple of the model's stride, analyse to the gained latent y,
and for the hyperprior code z with the entropy bottleneck, compute every y's table from z_hat with the integer
hyper-synthesis, and code round(y) with those tables. Decoding reverses it, synthesises, crops back, and for a gray
original averages the three coded channels. The synthesis runs on one thread so the pixels do not depend on the
caller's thread count.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convgen import zoo
from convgen.entropy import bitstream, coder
from convgen.entropy.tables import CodecTables
from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_write_bytes, output_folder, refuse_existing
from convgen.io.images import convert_channels, probe_image, read_image, resolve_inputs, write_image
from convgen.options import Options, option
from convgen.pipelines.base import Pipeline, check_distinct_targets
from convgen.registry import PIPELINES


def model_digest(model_dir: Path) -> bytes:
    """First 16 bytes of SHA-256 over the weights and the coding tables: what a file names its model by."""
    h = hashlib.sha256()
    for name in ("codec.safetensors", "tables.safetensors"):
        h.update((model_dir / name).read_bytes())
    return h.digest()[:16]


_THREADS = threading.Lock()
_one_thread_users = 0
_threads_before = 1


@contextmanager
def _one_thread():
    """Decode on one intra-op thread (the synthesis must give the same pixels on every machine). Torch's thread
    count is global: overlapping decodes (the web app's workers) keep it at 1 until the last one ends, which then
    puts back the count from before the first, instead of each restoring what another one set."""
    global _one_thread_users, _threads_before
    with _THREADS:
        if _one_thread_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _one_thread_users += 1
    try:
        yield
    finally:
        with _THREADS:
            _one_thread_users -= 1
            if _one_thread_users == 0:
                torch.set_num_threads(_threads_before)


@dataclass
class CompressOptions(Options):
    quality: int | None = option(None, "rate point 1..K, 1 = the smallest files (default: the model's)", lo=1,
                                 hi=bitstream.MAX_QUALITY)  # fmt: skip


@PIPELINES.register("codec")
class CodecPipeline(Pipeline):
    networks = ("codec",)
    compress_options = CompressOptions

    def __init__(self, saved, device: str = "cpu") -> None:
        if not saved.has("tables"):
            raise ConvgenError(f"{saved.path}: no tables.safetensors (export the model with convgen to build them)")
        super().__init__(saved, "cpu" if device == "auto" else device)
        self.net, self.tables = self.models["codec"], CodecTables(saved.weights("tables"))
        self.digest = model_digest(self.model_dir)

    @property
    def qualities(self) -> int:
        return self.net.qualities

    @property
    def default_quality(self) -> int:
        return int(self.meta.get("inference", {}).get("quality", (self.qualities + 1) // 2))

    def limits(self, declared) -> dict[str, dict]:
        return {"quality": {"hi": self.qualities}}

    def option_defaults(self, declared) -> dict[str, int]:
        return {"quality": self.default_quality}

    def check_quality(self, quality: int | None) -> int:
        q = self.checked(CompressOptions, {"quality": quality}, "compression")["quality"]
        return self.default_quality if q is None else q

    # -- one image ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compress_array(self, image: np.ndarray, quality: int | None = None, name: str = "image") -> bytes:
        """An H x W x C (C = 1 or 3) float image in [0, 1] -> the bytes of a ``.cvgc`` file."""
        q = self.check_quality(quality)
        if image.ndim != 3:
            raise ConvgenError(f"{name}: expected an H x W x C image, got shape {image.shape}")
        h, w, c = image.shape
        if c not in (1, 3):
            raise ConvgenError(f"{name}: {c} channels; the codec takes gray (1) or RGB (3)")
        if max(h, w) > bitstream.MAX_SIDE or h * w > bitstream.MAX_PIXELS:
            raise ConvgenError(f"{name}: {w}x{h} is too large for the codec (at most {bitstream.MAX_PIXELS:,} "
                               "pixels, e.g. 4096x4096); split it into parts")  # fmt: skip
        if not np.isfinite(image).all():
            raise ConvgenError(f"{name}: the image has NaN or infinite values")
        x = torch.from_numpy(np.ascontiguousarray(np.clip(image, 0, 1), dtype=np.float32)).permute(2, 0, 1)[None]
        x = self._pad(x.expand(1, 3, h, w) if c == 1 else x)
        qt = torch.tensor([q - 1])
        y = self.net.analysis(x.to(self.device), qt.to(self.device)).cpu()
        head = bitstream.Header(q, c, self.digest, h, w)
        prefix = bitstream.header_symbols(head)  # the header, repeated inside the first stream
        if not self.net.hyperprior:
            streams = [coder.bottleneck_encode(self.tables, y, prefix)[0]]
        else:
            z = self.net.h_a(y.abs().to(self.device)).cpu()
            z_stream, z_fixed = coder.bottleneck_encode(self.tables, z, prefix)
            streams = [z_stream, coder.gaussian_encode(self.tables, y, coder.scale_indexes(self.tables, z_fixed))]
        return bitstream.pack(head, streams)

    def decompress_bytes(self, data: bytes, name: str = "file") -> np.ndarray:
        """The H x W x C float32 image of a ``.cvgc`` file written with this model."""
        return self.decode(*bitstream.unpack(data, name), name)

    def check_header(self, head: bitstream.Header, name: str = "file", streams: int | None = None) -> None:
        """A file's header field by field against this model (a CRC proves nothing about a crafted file)."""
        if head.digest != self.digest:
            raise ConvgenError(f"{name}: written by another codec model (digest {head.digest.hex()})")
        if not 1 <= head.quality <= self.qualities:
            raise ConvgenError(f"{name}: damaged codec file (quality {head.quality}; the model has qualities "
                               f"1..{self.qualities})")  # fmt: skip
        if streams is not None and streams != (2 if self.net.hyperprior else 1):
            raise ConvgenError(f"{name}: damaged codec file ({streams} streams; the model writes "
                               f"{2 if self.net.hyperprior else 1})")  # fmt: skip

    @torch.no_grad()
    def decode(self, head: bitstream.Header, streams: list[bytes], name: str = "file") -> np.ndarray:
        """The image of an unpacked ``.cvgc`` file (:func:`convgen.entropy.bitstream.unpack`). Every stream must
        decode to exactly the symbols the header's size asks for, and a gray file must decode to gray."""
        self.check_header(head, name, len(streams))
        ph, pw = (-(-s // self.net.stride) * self.net.stride for s in (head.height, head.width))
        side = (ph // 16, pw // 16)
        expected = bitstream.header_symbols(head) if head.version >= 2 else []
        try:
            if not self.net.hyperprior:
                z, inside = coder.bottleneck_decode(self.tables, streams[0], (self.net.latent, *side), len(expected))
                y_hat = self._y_from_z(z)
            else:
                z_shape = (len(self.tables.get("eb_length")), ph // 64, pw // 64)
                z_fixed, inside = coder.bottleneck_decode(self.tables, streams[0], z_shape, len(expected))
                y_hat = coder.gaussian_decode(self.tables, streams[1], coder.scale_indexes(self.tables, z_fixed))
        except ConvgenError as e:
            raise ConvgenError(f"{name}: {e.template}") from None
        if inside != expected:
            raise ConvgenError(f"{name}: damaged codec file (the header disagrees with the copy inside its stream)")
        with _one_thread():
            x = self.net.synthesis(y_hat.to(self.device), torch.tensor([head.quality - 1], device=self.device))
        x = x.float().cpu().clamp(0, 1)[0, :, : head.height, : head.width].permute(1, 2, 0).numpy()
        return x.mean(-1, keepdims=True) if head.channels == 1 else x

    @staticmethod
    def _y_from_z(z_fixed: torch.Tensor) -> torch.Tensor:
        return (z_fixed / coder.MEDIAN_SCALE).float()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        s = self.net.stride
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % s, 0, -h % s), mode="replicate") if (h % s or w % s) else x

    # -- files -------------------------------------------------------------------------------------------------
    def compress(self, inputs: str | Path, output: str | Path, overwrite: bool = False, **options) -> list[Path]:
        """Each image of ``inputs`` (a file or folder) -> ``output/<stem>.cvgc``; returns the written files.
        ``options``: :class:`CompressOptions` (``quality``)."""
        q = self.check_quality(self.checked(self.compress_options, options, "compression")["quality"])
        files = resolve_inputs(inputs)
        targets = _plan(files, Path(output), bitstream.SUFFIX, overwrite, "the compressed files")
        for f in files:  # every input is checked before anything is written
            probe_image(f)
        with output_folder(output):
            for f, t in _progress(list(zip(files, targets, strict=True)), "compress"):
                image = read_image(f)
                image = convert_channels(image, 1 if image.shape[-1] in (1, 2) else 3, str(f))
                atomic_write_bytes(t, self.compress_array(image, q, str(f)))
        return targets


def _plan(files: Sequence[Path], output: Path, suffix: str, overwrite: bool, what: str) -> list[Path]:
    """``output/<stem><suffix>`` for each input, checked before any work: ``output`` is a folder (created), no two
    inputs share a target, nothing existing is replaced without ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise ConvgenError(f"{output} is a file; `output` is the folder {what} go in")
    targets = [output / (f.stem + suffix) for f in files]
    check_distinct_targets(files, targets)
    refuse_existing(targets, overwrite)
    return targets


def _progress(items: list, what: str):
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="image", disable=len(items) < 2 or not sys.stderr.isatty(), file=sys.stderr)


def find_codec(digest: bytes, model: str | Path | None = None, device: str = "cpu") -> CodecPipeline:
    """The codec a file names: ``model`` when given (it must match), else the zoo model with that digest."""
    from convgen.pipelines.base import load

    if model is not None:
        return load(model, device, expect=CodecPipeline, role="a codec")
    for path in (zoo.model_dir(name) for name in zoo.names()):
        if (path / "tables.safetensors").exists() and model_digest(path) == digest:
            return load(path, device, expect=CodecPipeline, role="a codec")
    raise ConvgenError(f"no installed codec model has digest {digest.hex()}; pass the model that wrote it (`model`)")


def decompress(inputs: str | Path, output: str | Path, model: str | Path | None = None, overwrite: bool = False,
               device: str = "cpu") -> list[Path]:  # fmt: skip
    """Each ``.cvgc`` file of ``inputs`` (a file or folder) -> ``output/<stem>.png``; the model is found from each
    file's digest (zoo) unless ``model`` is given."""
    inputs, output = Path(inputs), Path(output)
    if inputs.is_dir():
        files = sorted((p for p in inputs.iterdir() if p.suffix == bitstream.SUFFIX and p.is_file()),
                       key=lambda p: p.name.encode())  # fmt: skip
        if not files:
            raise ConvgenError(f"{inputs}: no {bitstream.SUFFIX} files found")
    elif inputs.is_file():
        files = [inputs]
    else:
        raise ConvgenError(f"{inputs}: file or directory not found")
    targets = _plan(files, output, ".png", overwrite, "the decoded images")
    pipes: dict[bytes, CodecPipeline] = {}
    for f in files:  # every file's header and its model are checked before anything is written
        head, _ = bitstream.unpack(f.read_bytes(), str(f))
        if head.digest not in pipes:
            pipes[head.digest] = find_codec(head.digest, model, device)
        pipes[head.digest].check_header(head, str(f))
    with output_folder(output):
        for f, t in _progress(list(zip(files, targets, strict=True)), "decompress"):
            head, streams = bitstream.unpack(f.read_bytes(), str(f))
            write_image(t, pipes[head.digest].decode(head, streams, str(f)))
    return targets
