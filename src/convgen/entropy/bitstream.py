"""The ``.cvgc`` file format of the learned codec (version 2; version 1 files are still read). All integers
big-endian.

====== ===== ==========================================================================================
offset bytes field
====== ===== ==========================================================================================
0      4     magic ``CVGC``
4      1     format version (2)
5      1     quality, 1-based
6      1     channels of the original image: 1 (gray) or 3 (RGB)
7      1     number of streams S (1: factorized prior, y; 2: hyperprior, z then y)
8      16    model digest: the first 16 bytes of SHA-256 over ``codec.safetensors`` + ``tables.safetensors``
24     4     image height
28     4     image width
32     4*S   byte length of each stream
..     ..    the streams (range-coded 32-bit words, little-endian)
end-4  4     CRC-32 of every byte before it
====== ===== ==========================================================================================

Latent shapes follow from the image size and the model, so they are not stored. Any damage (truncation, a
flipped byte, a foreign file) fails the magic, version, length or CRC check: a one-line error, never a picture.

Version 2 also codes the header's quality, channels, height and width as the first symbols of the first stream
(:func:`header_symbols`), so a header edited behind a recomputed CRC (a crafted file) disagrees with its own streams
and is refused; version 1 files are checked as far as their streams allow (the latent grid, not the exact size).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from convgen.errors import ConvgenError

MAGIC = b"CVGC"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SUFFIX = ".cvgc"
_HEAD = struct.Struct(">4sBBBB16sII")
MAX_QUALITY = 255  # one byte
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 24  # 16.8 megapixels (4096 x 4096): the transforms of a larger image need several GB


@dataclass
class Header:
    quality: int
    channels: int
    digest: bytes
    height: int
    width: int
    version: int = VERSION


def header_symbols(header: Header) -> list[int]:
    """The header fields a version 2 stream repeats, as bytes (0..255): quality, channels, height, width."""
    return [header.quality, header.channels, *header.height.to_bytes(4, "big"), *header.width.to_bytes(4, "big")]


def pack(header: Header, streams: list[bytes]) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, header.quality, header.channels, len(streams), header.digest,
                      header.height, header.width)  # fmt: skip
    body = head + b"".join(struct.pack(">I", len(s)) for s in streams) + b"".join(streams)
    return body + struct.pack(">I", zlib.crc32(body))


def unpack(data: bytes, name: str = "file") -> tuple[Header, list[bytes]]:
    """Header and streams of a ``.cvgc`` file; a ConvgenError naming ``name`` for anything else."""
    if len(data) < _HEAD.size + 4 or data[:4] != MAGIC:
        raise ConvgenError(f"{name}: not a convgen codec file (no CVGC header)")
    magic, version, quality, channels, n, digest, height, width = _HEAD.unpack_from(data)
    if version not in READABLE_VERSIONS:
        raise ConvgenError(f"{name}: codec format version {version}; this convgen reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")  # fmt: skip
    if struct.unpack(">I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise ConvgenError(f"{name}: damaged codec file (checksum mismatch: truncated or altered)")
    sides_ok = 1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS
    if channels not in (1, 3) or n not in (1, 2) or not sides_ok or quality < 1:
        raise ConvgenError(f"{name}: damaged codec file (impossible header values)")
    pos = _HEAD.size + 4 * n
    lengths = struct.unpack_from(f">{n}I", data, _HEAD.size) if len(data) >= pos else ()
    if len(lengths) != n or pos + sum(lengths) + 4 != len(data):
        raise ConvgenError(f"{name}: damaged codec file (stream lengths do not match the file size)")
    streams = []
    for length in lengths:
        streams.append(data[pos : pos + length])
        pos += length
    return Header(quality, channels, digest, height, width, version), streams
