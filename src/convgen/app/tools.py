"""What the server runs on its workers: the same pipeline calls as the CLI, so the same pixels.

``sample_grid`` is ``convgen sample --grid``; ``restore_upload`` is ``convgen restore VERB`` on the uploaded file
(written to a private temporary folder, removed after the request); the image tools (``TOOLS``) are the pages of
the other families: one :class:`Tool` per family, registered here, served by the app's core through one generic
endpoint and page (``/api/tool/<name>``, ``/tool/<name>``) without an edit to it.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convgen.errors import ConvgenError
from convgen.io.images import IMAGE_SUFFIXES, probe_image
from convgen.options import Options, fields_of, parse_text
from convgen.pipelines import Pipeline, RestorePipeline, Sampler, StylePipeline
from convgen.pipelines.codec import CodecPipeline, decompress


@dataclass
class Upload:
    """An uploaded file: the name the browser gave (for messages only) and its bytes."""

    name: str
    data: bytes

    def save(self, folder: Path, stem: str) -> Path:
        suffix = Path(self.name).suffix.lower()
        path = folder / (stem + (suffix if suffix in IMAGE_SUFFIXES else ".png"))
        path.write_bytes(self.data)
        return path


class _Scratch:
    """A private temporary folder whose paths never appear in an error message (the upload's name does)."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="convgen-web-")
        self.path = Path(self._tmp.name)
        self.names: dict[str, str] = {}

    def save(self, upload: Upload, stem: str, max_pixels: int) -> Path:
        path = upload.save(self.path, stem)
        self.names[str(path)] = upload.name or stem
        probe_image(path, max_pixels=max_pixels)
        return path

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._tmp.cleanup()
        if isinstance(exc, ConvgenError):
            message = exc.template
            for path, name in self.names.items():
                message = message.replace(path, name)
            exc.template = message.replace(str(self.path) + "/", "")
            exc.args = ConvgenError(exc.template).args


def sample_grid(pipe: Sampler, n: int, seed: int, classes: list | None, options: dict[str, Any]) -> bytes:
    """The PNG grid ``convgen sample MODEL --n N --seed S [--class C] --grid G`` writes."""
    from convgen.viz.grid import save_grid

    images = pipe.sample(n, seed, classes, **options)
    with _Scratch() as tmp:
        return save_grid(images[:100], tmp.path / "grid.png", provenance=pipe.provenance("sample")).read_bytes()


def interpolation_frames(pipe: Sampler, steps: int, seed: int, mode: str, label, classes,
                         options: dict[str, Any] | None = None) -> list[str]:  # fmt: skip
    """One latent (or class) walk of ``steps`` frames, as PNG data URLs (``convgen interpolate --rows 1``)."""
    from convgen.io.images import encode_image, to_uint8

    images = pipe.interpolate(steps, 1, seed, mode, classes, label, **(options or {}))
    record = pipe.provenance("interpolate")
    frames = []
    for i, img in enumerate(images):
        arr = to_uint8(img.permute(1, 2, 0).numpy())
        png = encode_image(arr[..., 0] if arr.shape[-1] == 1 else arr, "PNG", provenance=record, title=f"frame{i}.png")
        frames.append("data:image/png;base64," + base64.b64encode(png).decode())
    return frames


def restore_upload(pipe: RestorePipeline, verb: str, image: Upload, mask: Upload | None, options: dict[str, Any],
                   max_pixels: int) -> bytes:  # fmt: skip
    """The PNG ``convgen restore VERB MODEL --input FILE --output OUT.png [--mask M]`` writes for the upload."""
    pipe.check_verb(verb, pipe.model_dir.name)
    with _Scratch() as tmp:
        src = tmp.save(image, "image", max_pixels)
        mask_path = tmp.save(mask, "mask", max_pixels) if mask is not None else None
        out = tmp.path / "restored.png"
        pipe.restore_files(src, out, mask=mask_path, verb=verb, **options)
        return out.read_bytes()


def parse_form(declared: type[Options] | None, text: dict[str, str], generic: tuple[str, ...] = ("model",)
               ) -> dict[str, Any]:  # fmt: skip
    """The text fields of a form (all but the endpoint's own ``generic`` ones) as typed option values, by the
    declaration; empty fields are left out (the default), unknown ones are passed on for the pipeline to refuse."""
    types = {f.name: tp for f, tp in fields_of(declared or Options)}
    out: dict[str, Any] = {}
    for key, raw in text.items():
        if key in generic or raw == "":
            continue
        out[key] = parse_text(key, types[key], raw) if key in types else raw
    return out


# -- the other families' pages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    """An image-in, image-out page for one family: ``run(pipe, input_path, folder, options)`` writes a PNG and
    returns its path and a few numbers to show beside it; ``declared(pipe)`` is the options the model declares for
    it (the page's form fields and their checks)."""

    name: str
    title: str
    pipeline: type
    run: Callable[[Pipeline, Path, Path, dict[str, Any]], tuple[Path, dict[str, Any]]]
    declared: Callable[[Pipeline], type[Options]]
    blurb: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "blurb": self.blurb}


TOOLS: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    if tool.name in TOOLS:
        raise ValueError(f"tool {tool.name!r} registered twice")
    TOOLS[tool.name] = tool
    return tool


def run_tool(tool: Tool, pipe: Pipeline, image: Upload, raw: dict[str, str], max_pixels: int) -> tuple[bytes, dict]:
    options = parse_form(tool.declared(pipe), raw)
    with _Scratch() as tmp:
        src = tmp.save(image, "image", max_pixels)
        out, info = tool.run(pipe, src, tmp.path, options)
        return out.read_bytes(), info


def _stylize(pipe: StylePipeline, src: Path, folder: Path, options: dict) -> tuple[Path, dict]:
    """``convgen stylize MODEL --input FILE --output OUT.png [options]``."""
    out = pipe.stylize_files(src, folder / "stylized.png", **options)[0]
    return out, {"style": ", ".join(pipe.style_names)}


def _codec(pipe: CodecPipeline, src: Path, folder: Path, options: dict) -> tuple[Path, dict]:
    """``convgen compress`` then ``convgen decompress``: the decoded image and its size."""
    from convgen.io.images import read_image

    packed = pipe.compress(src, folder / "packed", **options)[0]
    out = decompress(packed, folder / "decoded", model=pipe.model_dir)[0]
    h, w = read_image(src).shape[:2]
    size = packed.stat().st_size
    return out, {"bytes": size, "bpp": round(8 * size / (h * w), 4)}


register(Tool("stylize", "Style transfer", StylePipeline, _stylize, lambda pipe: pipe.stylize_options,
              "Paint a photo in the style a model was trained on (one network pass)."))  # fmt: skip
register(Tool("codec", "Learned compression", CodecPipeline, _codec, lambda pipe: pipe.compress_options,
              "Compress a photo with the learned codec: what comes back, and how many bits it took."))  # fmt: skip
