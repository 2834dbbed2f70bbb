"""Options declared once (convgen.options): each pipeline declares what its verbs take, and the command line, the
web app and the Python API are built from that declaration alone; families register by being in their package;
losses come from the registry."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import convgen
from convgen.errors import ConfigError, ConvgenError
from convgen.options import Options, build, describe, option, parse_text
from convgen.registry import LOSSES, PIPELINES
from tests.conftest import ENV_PYTHONPATH

SRC = Path(convgen.__file__).resolve().parent


@dataclass
class Example(Options):
    strength: float = option(1.0, "how strong", lo=0, hi=4)
    sigma: float | None = option(None, "noise level", gt=0, hi=255)
    count: int = option(3, "how many", lo=1)
    mode: Literal["a", "b"] = option("a", "which")
    keep: bool = option(False, "keep it")
    layers: tuple[str, ...] = option(("x",), "names")


def test_declared_values_are_converted_and_checked_with_one_line_messages():
    assert build(Example, {"strength": 2, "count": 5.0}, "it").values()["strength"] == 2.0
    assert isinstance(build(Example, {"strength": 2}, "it").strength, float)
    bad = [({"strength": float("nan")}, "`strength` nan: must be a finite number"),
           ({"strength": float("inf")}, "`strength` inf: must be a finite number"),
           ({"strength": -1}, "`strength` -1: must be in [0, 4]"),
           ({"sigma": 0.0}, "`sigma` 0: must be in (0, 255]"),
           ({"count": 0}, "`count` 0: must be >= 1"),
           ({"count": True}, "`count` must be an integer, got True"),
           ({"count": "3"}, "`count` must be an integer, got '3'"),
           ({"mode": "c"}, "`mode` must be one of a, b, got 'c'"),
           ({"keep": 1}, "`keep` must be true or false, got 1"),
           ({"layers": "x"}, "`layers` must be a list, got 'x'"),
           ({"layers": []}, "`layers`: give at least one value"),
           ({"strenght": 1.0}, "it does not take `strenght`; did you mean `strength`?"),
           ({"zzz": 1}, "it does not take `zzz` (it takes `strength`, `sigma`, `count`, `mode`, `keep`, "
                        "`layers`)")]  # fmt: skip
    for given, message in bad:
        with pytest.raises(ConvgenError) as e:
            build(Example, given, "it")
        assert e.value.template == message
        assert "\n" not in str(e.value)
    # a model's narrower limits are checked with the declared ones, in one message
    with pytest.raises(ConvgenError, match=r"^count 9: must be in 1..5$"):
        build(Example, {"count": 9}, "it", {"count": {"hi": 5}})
    assert build(Example, {"count": 5}, "it", {"count": {"hi": 5}}).count == 5


def test_text_parsing_and_form_description():
    assert parse_text("sigma", float | None, "") is None and parse_text("sigma", float | None, " 2.5") == 2.5
    assert parse_text("keep", bool, "on") is True and parse_text("keep", bool, "false") is False
    assert parse_text("layers", tuple[str, ...], "relu1_1, relu2_1") == ["relu1_1", "relu2_1"]
    with pytest.raises(ConvgenError, match="^count 'x': not an integer$"):
        parse_text("count", int, "x")
    rows = {r["name"]: r for r in describe(Example, {"count": {"hi": 5}}, {"sigma": 25.0})}
    assert rows["strength"] == {"name": "strength", "type": "float", "default": 1.0, "nullable": False,
                                "help": "how strong", "lo": 0, "hi": 4, "gt": None, "lt": None, "choices": None}
    assert rows["count"]["hi"] == 5 and rows["sigma"]["model_default"] == 25.0 and rows["sigma"]["nullable"]
    assert rows["mode"]["type"] == "choice" and rows["mode"]["choices"] == ["a", "b"]
    assert rows["layers"]["type"] == "list[str]" and rows["layers"]["default"] == ["x"]
    json.dumps(rows)  # plain data


def _declarations():
    """(pipeline name, attribute, verb, declaration) of every registered pipeline."""
    from convgen.pipelines.restore import RestorePipeline
    from convgen.pipelines.sample import Sampler

    out = []
    for name, cls in PIPELINES.items():
        if issubclass(cls, Sampler):
            out += [(name, "sample_options", None, cls.sample_options), (name, "walk_options", None, cls.walk_options)]
        if issubclass(cls, RestorePipeline):
            out += [(name, "restore_options", v, cls.restore_options.get(v, Options)) for v in cls.restores]
    return out


def test_every_declaration_is_a_checked_options_dataclass_with_help_and_valid_defaults():
    decls = _declarations()
    assert len(decls) >= 10
    for name, attr, verb, cls in decls:
        assert issubclass(cls, Options) and dataclasses.is_dataclass(cls), (name, attr, verb)
        cls()  # the defaults pass the checks
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{name}.{attr}[{verb}].{f.name} has no help"


def _help(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "convgen", *args, "--help"], capture_output=True, text=True,
                       env=ENV_PYTHONPATH, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())


def test_the_command_line_flags_are_the_declared_fields_and_say_who_takes_them():
    sample, interpolate = _help("sample"), _help("interpolate")
    for name, attr, verb, cls in _declarations():
        text = {"sample_options": sample, "walk_options": interpolate}.get(attr) or _help("restore", verb)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            assert flag in text, (name, attr, verb, flag)
            assert f"{name} models" in text
    assert "--guidance X classifier-free guidance scale" in sample and "[diffusion models]" in sample
    assert "--sampler {prior,gmm}" in sample and "[vae models]" in sample
    assert "--clip, --no-clip" in _help("restore", "denoise")


def test_no_family_option_name_is_written_into_the_generic_front_ends():
    """The front ends build flags and forms from the declarations: a declared option's name appears in them only
    where it is also one of the command's own parameters (``seed`` of sample, ``steps`` of interpolate)."""
    names = {f.name for *_, cls in _declarations() for f in dataclasses.fields(cls)}
    names |= {"preserve_color", "size", "quality", "iterations", "optimizer", "style_weight", "tv_weight"}
    own = {"cli/restore.py": set(), "cli/generate.py": {"seed", "steps"}, "app/server.py": {"seed", "steps", "mode"},
           "app/tools.py": set(), "app/catalog.py": set()}  # fmt: skip
    for rel, allowed in own.items():
        tree = ast.parse((SRC / rel).read_text(encoding="utf-8"))
        literals = {n.value.lstrip("-").replace("-", "_") for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)}  # fmt: skip
        found = sorted((names & literals) - allowed)
        assert not found, f"{rel} names family options {found}"
    for page in sorted((SRC / "app" / "static").glob("*.js")) + sorted((SRC / "app" / "static").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        found = sorted(n for n in names - {"seed", "steps", "mode", "size", "label", "clip"}
                       if re.search(rf"[\"'#]{n}[\"']|id=\"{n}\"|\.{n}\b", text))  # fmt: skip
        assert not found, f"{page.name} names family options {found}"


def test_the_python_api_checks_the_same_fields_with_the_same_messages(tmp_path):
    ddpm, gan, denoiser = convgen.load("mnist-ddpm"), convgen.load("mnist-dcgan"), convgen.load("denoise-gray-s25")
    with pytest.raises(ConvgenError, match=r"^sampling with mnist-dcgan does not take guidance \(it takes truncation"):
        gan.sample(2, guidance=2.0)
    with pytest.raises(ConvgenError, match=r"^steps 5000: must be in 1..1000$"):
        ddpm.sample(2, steps=5000)
    with pytest.raises(ConvgenError, match=r"^eta nan: must be a finite number$"):
        ddpm.sample(2, eta=float("nan"))
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ConvgenError, match=r"^sigma -3: must be in \(0, 255\]$"):
        denoiser.restore(img, sigma=-3.0)
    with pytest.raises(ConvgenError, match=r"^denoise with denoise-gray-s25 does not take jump"):
        denoiser.restore(img, jump=2)
    with pytest.raises(ConvgenError) as e:
        denoiser.restore_files(tmp_path / "none.png", tmp_path / "o.png", tile=8)
    assert e.value.cli_message() == "--tile 8 is too small (at least 16 px)"
    assert not (tmp_path / "o.png").exists()


def test_registration_needs_no_hand_kept_list_and_load_needs_no_cli():
    """Every module that registers something is imported by its registry's discovery alone, and ``convgen.load``
    opens every zoo model in a fresh interpreter that never imports the command line."""
    decorated: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for m in re.finditer(r"^\s*@(\w+)\.register\(\"([^\"]+)\"\)", path.read_text(encoding="utf-8"), re.M):
            decorated.setdefault(m.group(1), set()).add(m.group(2))
    assert {"MODELS", "TASKS", "PIPELINES", "LOSSES", "DATASETS", "DEGRADATIONS"} <= set(decorated)
    script = (
        "import json, sys\n"
        "import convgen\n"
        "from convgen import registry, zoo\n"
        "for name in zoo.names():\n"
        "    convgen.load(name, device='cpu')\n"
        "regs = {k: getattr(registry, k).names() for k in json.loads(sys.argv[1])}\n"
        "print(json.dumps({'cli': any(m.startswith('convgen.cli') for m in sys.modules), 'names': regs}))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, json.dumps(sorted(decorated))], capture_output=True, text=True,
                       env=ENV_PYTHONPATH, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cli"] is False
    for reg, names in decorated.items():
        assert names <= set(out["names"][reg]), (reg, names - set(out["names"][reg]))


def test_losses_come_from_the_registry():
    from convgen.config import build_config
    from convgen.losses.base import losses_of, make_loss

    families = {name: getattr(obj, "family", "") for name, obj in LOSSES.items()}
    assert families["perceptual"] == "perceptual" and families["rate-distortion"] == "rate-distortion"
    assert all(families.values()), families
    assert set(losses_of("pixel").names()) == {"charbonnier", "l1", "l2", "psnr"}
    raw = {"task": {"type": "restoration", "loss": "l2"}, "model": {"type": "dncnn"}, "data": {"type": "mnist"}}
    with pytest.raises(ConfigError, match=r"unknown pixel loss 'ns' \(known: charbonnier, l1, l2, psnr\)"):
        build_config({**raw, "task": {"type": "restoration", "loss": "ns"}})
    cfg = build_config({**raw, "task": {"type": "restoration", "loss": {"type": "charbonnier", "eps": 0.01}}})
    assert cfg.to_dict()["task"]["loss"] == {"type": "charbonnier", "eps": 0.01}
    assert build_config(cfg.to_dict()).to_dict() == cfg.to_dict()  # the saved form reloads
    import torch

    diff = torch.zeros(2, 1, 4, 4)
    assert float(make_loss(cfg.task.loss)(diff, None)) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"unknown adversarial loss 'l1'"):
        build_config({"task": {"type": "gan", "loss": "l1"}, "model": {"type": "dcgan"}, "data": {"type": "mnist"}})
    known = r"\(known: bernoulli, logistic, logistic-mixture\)"
    with pytest.raises(ConfigError, match=r"unknown likelihood 'gauss' " + known):
        build_config({"task": {"type": "vae"}, "model": {"type": "conv-vae", "likelihood": "gauss"},
                      "data": {"type": "mnist"}})  # fmt: skip


def test_explain_asks_the_pipeline():
    text = (SRC / "pipelines" / "explain.py").read_text(encoding="utf-8")
    for family_word in ("d_pack", "clusters", 'has("discriminator")', "ClassifierPipeline", "num_classes"):
        assert family_word not in text, family_word


def test_a_family_that_overrides_restore_itself_still_serves_files():
    """A restorer written to the older contract (overriding ``restore`` instead of ``restore_image``) is still
    called by the file and batch paths."""
    from convgen.pipelines.restore import RestorePipeline

    class Old(RestorePipeline):
        restores = ("identity",)

        def restore(self, image, mask=None, name="image", **options):
            return np.asarray(image, np.float32) * 2

    pipe = Old.__new__(Old)
    img = np.full((4, 4, 1), 0.25, np.float32)
    (out,) = pipe.restore_batch([img], [None], ["a"], "identity")
    assert np.allclose(out, 0.5)

    class Neither(RestorePipeline):
        restores = ("identity",)

    with pytest.raises(NotImplementedError, match="neither restore_image nor restore"):
        Neither.__new__(Neither).restore_batch([img], [None], ["a"], "identity")
