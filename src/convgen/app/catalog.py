"""The models a server offers: the zoo and the directories given at start, by name only.

A request names a model; the name is looked up in this table and nowhere else, so no parameter can reach a path
(``../``, an absolute path, a symlink) that was not given when the server started. Each model's pipeline is
loaded once, at start, through ``convgen.load`` (the same code path as the CLI).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from convgen import zoo
from convgen.errors import ConvgenError
from convgen.modeldir import resolve
from convgen.options import Options
from convgen.pipelines import Pipeline, RestorePipeline, Sampler, load


class UnknownModel(ConvgenError):
    """No model of that name on this server."""


def _model_dirs(root: Path) -> list[Path]:
    """``root`` itself when it is a saved model (or run) directory, else the model directories inside it."""
    if (root / "config.json").is_file() or (root / "model" / "config.json").is_file():
        return [root]
    if not root.is_dir():
        raise ConvgenError(f"{root}: `models` directory not found")
    found = [p for p in sorted(root.iterdir(), key=lambda p: p.name.encode())
             if p.is_dir() and ((p / "config.json").is_file() or (p / "model" / "config.json").is_file())]  # fmt: skip
    if not found:
        raise ConvgenError(f"{root}: holds no saved model directory (a folder with config.json)")
    return found


class Catalog:
    def __init__(self, model_dirs: list[str | Path] = (), device: str = "auto") -> None:
        self.device = device
        self.paths: dict[str, Path] = {name: zoo.model_dir(name) for name in zoo.names()}
        for root in map(Path, model_dirs):
            for d in _model_dirs(root):
                if d.name in self.paths:
                    raise ConvgenError(f"{d}: a model named {d.name!r} is already served (from {self.paths[d.name]});"
                                       " rename the directory")  # fmt: skip
                self.paths[d.name] = resolve(d)
        self._pipes: dict[str, Pipeline] = {}
        self._described: dict[str, dict[str, Any]] = {}
        for name in list(self.paths):
            try:
                self._pipes[name] = load(self.paths[name], device=device)
            except ConvgenError as e:
                print(f"convgen serve: skipping {name}: {e}", file=sys.stderr)
                del self.paths[name]

    def names(self) -> list[str]:
        return list(self.paths)

    def get(self, name: Any, expect: type | None = None, role: str = "") -> Pipeline:
        """The pipeline of a served model (``expect``: it must be that kind of pipeline)."""
        if not isinstance(name, str) or name not in self._pipes:
            shown = repr(name) if len(repr(name)) <= 60 else f"{repr(name)[:60]}... ({len(repr(name)):,} characters)"
            served = ", ".join(self.names())
            if len(served) > 200:  # the list grows with the zoo; the message must not
                served = served[:200].rsplit(", ", 1)[0] + f", ... ({len(self.names())} in all: GET /api/models)"
            raise UnknownModel(f"unknown model {shown} (this server has: {served})")
        pipe = self._pipes[name]
        if expect is not None and not isinstance(pipe, expect):
            raise ConvgenError(f"{name} is a {pipe.saved.task} model, not {role or expect.__name__}")
        return pipe

    def describe(self, name: str, tools: dict[str, Any]) -> dict[str, Any]:
        """What the pages need to offer a model: what it does and its choices (read once, the models being fixed
        at start)."""
        if name not in self._described:
            self._described[name] = self._describe(name, tools)
        return self._described[name]

    def _describe(self, name: str, tools: dict[str, Any]) -> dict[str, Any]:
        pipe = self._pipes[name]
        card = zoo.describe(name) if self.paths[name] == zoo.model_dir(name) else {}
        info: dict[str, Any] = {"name": name, "task": pipe.saved.task, "summary": card.get("summary", ""),
                                "zoo": bool(card), "generate": isinstance(pipe, Sampler)}  # fmt: skip
        options: dict[str, Any] = {}
        if isinstance(pipe, Sampler):
            info["classes"] = pipe.class_names if pipe.num_classes else []
            teacher = pipe.meta.get("distilled", {}).get("teacher")
            if teacher:  # a few-step student: the Generate page offers it first (a teacher it serves says which)
                info["distilled_from"] = teacher
            students = [n for n, p in self._pipes.items() if p.meta.get("distilled", {}).get("teacher") == name]
            if students:
                info["fast"] = students[0]
            options["sample"] = pipe.describe_options(pipe.sample_options)
            options["interpolate"] = pipe.describe_options(pipe.walk_options)
        info["verbs"] = list(pipe.verbs) if isinstance(pipe, RestorePipeline) else []
        if info["verbs"]:
            options["restore"] = {v: pipe.describe_options(pipe.restore_options.get(v, Options)) for v in info["verbs"]}
        info["tools"] = [t for t, tool in tools.items() if isinstance(pipe, tool.pipeline)]
        for t in info["tools"]:
            options[t] = pipe.describe_options(tools[t].declared(pipe))
        info["options"] = options
        return info
