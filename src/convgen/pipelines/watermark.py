"""Embedding and detecting convgen's invisible watermark: ``convgen.load("watermark").embed_files(...)`` /
``.detect_files(...)``, and the marker every generated picture goes through (:meth:`WatermarkPipeline.marker`).

**Payload and code.** A mark carries a 32-bit payload (by default the first 4 bytes of
``sha256("convgen:" + model name)``) sent twice: the network's 64 bits are ``payload XOR k1`` followed by
``payload XOR k2``, where ``k1``/``k2`` are fixed 32-bit keys (the first 8 bytes of ``sha256("convgen-watermark")``).
Decoding adds the two copies' logits (soft decision) to read the payload.

**Detection.** A copy-pair *agrees* when both copies read the same payload bit. Without a watermark the decoder's
bits are modelled as fair coins, so the number of agreeing pairs ``K`` of 32 is Binomial(32, 1/2). A picture is
read at five zooms (as it is, and as the centre crop of 71/50/35/25% of a larger picture,
:data:`~convgen.models.watermark.ZOOMS`); the reading with the most agreement counts and its p-value is
``5 x P(Binomial(32, 1/2) >= K)`` (Bonferroni for the five tries). A picture is reported as marked when that is
below :data:`P_THRESHOLD` (1e-4: at least 28 of the 32 pairs must agree). The model is only a model: the false-positive
rate actually measured on unmarked photos is in the model card and docs/benchmarks.md (benchmarks/watermark.py).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from convgen.errors import ConvgenError
from convgen.io.images import read_image, resolve_inputs, write_image
from convgen.models.watermark import ZOOMS
from convgen.options import Options, option
from convgen.pipelines.base import Pipeline
from convgen.registry import PIPELINES

PAYLOAD_BITS = 32
P_THRESHOLD = 1e-4
#: the default distance of a marked picture from its original (dB): what the zoo model was trained at
DEFAULT_PSNR = 39.0
#: images smaller than this on either side are not marked (too few pixels to carry the mark through a re-encode)
MIN_SIDE = 128
_KEYS = hashlib.sha256(b"convgen-watermark").digest()
K1 = int.from_bytes(_KEYS[:4], "big")
K2 = int.from_bytes(_KEYS[4:8], "big")


def default_payload(model: str) -> int:
    """The payload convgen writes into the pictures of ``model``: 4 bytes of ``sha256("convgen:" + model)``."""
    return int.from_bytes(hashlib.sha256(f"convgen:{model}".encode()).digest()[:4], "big")


def parse_payload(text: str) -> int:
    """A payload given as 8 hex digits (``0x`` allowed)."""
    t = text.strip().lower().removeprefix("0x")
    if len(t) != 8 or any(c not in "0123456789abcdef" for c in t):
        raise ConvgenError(f"`payload` {text!r}: must be 8 hex digits (32 bits), e.g. 1a2b3c4d")
    return int(t, 16)


def _bits(value: int) -> np.ndarray:
    return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.int64)


def encode_payload(payload: int) -> np.ndarray:
    """The 64 bits the network carries for ``payload``."""
    return np.concatenate([_bits(payload ^ K1), _bits(payload ^ K2)])


def binomial_tail(k: int, n: int = PAYLOAD_BITS) -> float:
    """P(Binomial(n, 1/2) >= k)."""
    return sum(math.comb(n, j) for j in range(max(0, k), n + 1)) / 2.0**n


@dataclass
class Detection:
    detected: bool
    payload: str | None  # 8 hex digits when detected
    bit_accuracy: float  # agreement of the 64 read bits with the code of the payload read
    p_value: float  # chance of at least this much agreement without a watermark
    agreeing_pairs: int

    def to_json(self) -> dict[str, Any]:
        return {"detected": self.detected, "payload": self.payload, "bit_accuracy": round(self.bit_accuracy, 6),
                "p_value": self.p_value, "agreeing_pairs": self.agreeing_pairs}  # fmt: skip


def read_logits(logits: np.ndarray, tests: int = 1) -> Detection:
    """The payload and detection verdict of the network's 64 logits; ``tests``: how many readings of the same
    picture were tried (the p-value is multiplied by it: Bonferroni)."""
    if logits.shape != (2 * PAYLOAD_BITS,):
        raise ConvgenError(f"a watermark decoder must give {2 * PAYLOAD_BITS} logits, not {logits.shape}")
    flip1 = _bits(K1) * 2 - 1  # XOR with a key bit 1 flips a logit's sign
    flip2 = _bits(K2) * 2 - 1
    a, b = -logits[:PAYLOAD_BITS] * flip1, -logits[PAYLOAD_BITS:] * flip2  # > 0: that copy reads payload bit 1
    agree = int(np.sum((a > 0) == (b > 0)))
    payload_bits = (a + b > 0).astype(np.int64)
    payload = int("".join(map(str, payload_bits)), 2)
    accuracy = float(np.mean((logits > 0).astype(np.int64) == encode_payload(payload)))
    p = min(1.0, binomial_tail(agree) * tests)
    detected = p < P_THRESHOLD
    return Detection(detected, f"{payload:08x}" if detected else None, accuracy, p, agree)


def best_reading(logits: np.ndarray) -> tuple[int, Detection]:
    """The row of ``logits`` (Z x 64: one picture read at several zooms, :data:`~convgen.models.watermark.ZOOMS`)
    that counts, and its verdict: the reading with the smallest p-value, that p-value multiplied by Z."""
    readings = [read_logits(row, tests=len(logits)) for row in logits]
    best = min(range(len(readings)), key=lambda i: (readings[i].p_value, -readings[i].agreeing_pairs))
    return best, readings[best]


def read_zooms(logits: np.ndarray) -> Detection:
    """The verdict of one picture read at several zooms (:func:`best_reading`)."""
    return best_reading(logits)[1]


@dataclass
class EmbedOptions(Options):
    payload: str | None = option(None, "32-bit payload as 8 hex digits (default: a digest of convgen + the model name)",
                                 metavar="HEX8")  # fmt: skip
    psnr: float = option(DEFAULT_PSNR, "distance of the marked image from the original in dB (higher: fainter, "
                         "less robust)", lo=30, hi=50)  # fmt: skip


@PIPELINES.register("watermark")
class WatermarkPipeline(Pipeline):
    """convgen's learned invisible watermark (zoo ``watermark``): embed a 32-bit payload, detect it later."""

    networks = ("watermark",)
    embed_options = EmbedOptions

    @property
    def net(self) -> torch.nn.Module:
        return self.models["watermark"]

    # -- arrays ------------------------------------------------------------------------------------------------
    @staticmethod
    def _rgb(image: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ConvgenError(f"{name}: the watermark is for colour (RGB) images; this one has "
                               f"{1 if arr.ndim == 2 else arr.shape[-1]} channel(s)")  # fmt: skip
        return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)

    @staticmethod
    def check_size(image: np.ndarray, name: str) -> None:
        """Refuse a picture too small to carry a mark (under :data:`MIN_SIDE` on either side)."""
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ConvgenError(f"{name}: {w}x{h} is too small to carry a watermark (at least {MIN_SIDE} px a side)")

    @torch.no_grad()
    def embed(self, image: np.ndarray, payload: int, psnr: float = DEFAULT_PSNR, name: str = "image") -> np.ndarray:
        """``image`` (H x W x 3, uint8 or floats in [0, 1], at least :data:`MIN_SIDE` a side) with ``payload``
        marked in it, as uint8."""
        x = self._rgb(image, name)
        self.check_size(x, name)
        bits = torch.from_numpy(encode_payload(payload)).float()[None].to(self.device)
        t = torch.from_numpy(x).permute(2, 0, 1)[None].to(self.device)
        marked = self.net.embed(t, bits, psnr)[0].permute(1, 2, 0).cpu().numpy()
        return (np.clip(marked, 0, 1) * 255 + 0.5).astype(np.uint8)

    @torch.no_grad()
    def detect(self, image: np.ndarray, name: str = "image") -> Detection:
        """Whether ``image`` (H x W x 3) carries a convgen watermark, and its payload."""
        x = torch.from_numpy(self._rgb(image, name)).permute(2, 0, 1)[None].to(self.device)
        return read_zooms(self.net.decode_zooms(x)[0].double().cpu().numpy())

    def marker(self, model: str, psnr: float = DEFAULT_PSNR) -> Callable[[np.ndarray], tuple[np.ndarray, str]]:
        """What the image writer calls on every generated picture: 8-bit pixels -> (marked pixels, the note its
        XMP records). Grey and small pictures are left as they are (the note says why)."""
        payload = default_payload(model)

        def mark(pixels: np.ndarray) -> tuple[np.ndarray, str]:
            if pixels.ndim != 3 or pixels.shape[-1] != 3:
                return pixels, "none (grey image)"
            if min(pixels.shape[:2]) < MIN_SIDE:
                return pixels, f"none (smaller than {MIN_SIDE} px)"
            return self.embed(pixels, payload, psnr), f"convgen {payload:08x}"

        return mark

    # -- files ---------------------------------------------------------------------------------------------------
    def embed_files(self, inputs: str | Path, output: str | Path, overwrite: bool = False, **options) -> list[Path]:
        """Mark every image of ``inputs`` (a file or folder) into ``output`` (a file or folder: outputs keep the input
        names, lossy inputs become PNG; a file output's suffix sets its format). Every input is read and checked
        before anything is written; existing outputs are an error unless ``overwrite``."""
        from convgen.pipelines.restore import plan_outputs

        checked = self.checked(EmbedOptions, options, "watermark embed")
        payload = default_payload(self.name) if checked["payload"] is None else parse_payload(checked["payload"])
        files = resolve_inputs(inputs)
        targets = plan_outputs(files, Path(inputs), Path(output), overwrite)
        images = [read_image(f, channels=3) for f in files]  # every input is read before anything is written
        for f, img in zip(files, images, strict=True):
            self.check_size(img, f.name)
        written = []
        for f, img, target in tqdm(list(zip(files, images, targets, strict=True)), desc="watermark embed",
                                   unit="img", file=sys.stderr, disable=len(files) < 2):  # fmt: skip
            marked = self.embed(img, payload, checked["psnr"], f.name)
            written.append(write_image(target, marked.astype(np.float32) / 255.0))
        return written

    def detect_files(self, inputs: str | Path) -> dict[str, Detection]:
        """The verdict for every image of ``inputs`` (a file or folder), by file name."""
        files = resolve_inputs(inputs)
        out = {}
        for f in tqdm(files, desc="watermark detect", unit="img", file=sys.stderr, disable=len(files) < 2):
            out[f.name] = self.detect(read_image(f, channels=3), f.name)
        return out

    @staticmethod
    def threshold() -> dict[str, Any]:
        z = len(ZOOMS)
        test = (f"agreeing copy-pairs K of {PAYLOAD_BITS} at the best of {z} zooms, "
                f"p = {z} x P(Binomial({PAYLOAD_BITS}, 1/2) >= K)")
        return {"p_value": P_THRESHOLD, "test": test, "min_agreeing_pairs": min_agreeing_pairs(z)}


def min_agreeing_pairs(tests: int = 1) -> int:
    """The fewest agreeing pairs that read as marked, with ``tests`` readings tried."""
    return next(k for k in range(PAYLOAD_BITS + 1) if binomial_tail(k) * tests < P_THRESHOLD)


def provenance_report(path: str | Path) -> dict[str, Any]:
    """Everything an image says about its origin: its XMP and C2PA records (:func:`convgen.io.provenance.read`)
    and the watermark verdict of the zoo ``watermark`` model (``None`` when the image is grey or unreadable as
    colour, or no watermark model is installed)."""
    from convgen import zoo
    from convgen.io.provenance import read
    from convgen.pipelines.base import load

    report = read(path)
    report["watermark"] = None
    if zoo.model_dir("watermark").is_dir():
        image = read_image(path)
        if image.ndim == 3 and image.shape[-1] == 3:
            report["watermark"] = load("watermark", device="cpu").detect(image, Path(path).name).to_json()
    return report
