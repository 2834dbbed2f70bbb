"""Options a pipeline declares once, from which every front end is built.

A family declares what its verbs take as a dataclass of :func:`option` fields (a type, a default, bounds and a
help text)::

    @dataclass
    class DenoiseOptions(Options):
        sigma: float | None = option(None, "noise level on the 0-255 scale (non-blind models)", gt=0, hi=255)

and names it on its pipeline (``Sampler.sample_options``, ``RestorePipeline.restore_options[verb]``, ...). From
that declaration alone the command line builds its flags (``sigma`` -> ``--sigma``; a bool -> ``--flag`` /
``--no-flag``; a ``Literal`` -> choices), the web app builds its forms (:func:`describe`), and the Python API checks
the values (:func:`build`) with the same one-line messages; the checked values reach the family's code as keyword
arguments. Floats must be finite; bounds come from the field (``lo``/``hi`` inclusive, ``gt``/``lt`` exclusive) and,
where they depend on the model (a codec's number of qualities, a diffusion model's timesteps), from the pipeline's
:meth:`limits`. Imports nothing of convgen but its errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from convgen.errors import ConvgenError

_BOUNDS = ("lo", "hi", "gt", "lt")


def option(default: Any, help: str, *, lo: float | None = None, hi: float | None = None, gt: float | None = None,
           lt: float | None = None, metavar: str | None = None) -> Any:  # fmt: skip
    """A declared option: its default, help text and bounds (``lo <= v <= hi``, ``gt < v < lt``)."""
    meta = {"help": help, "lo": lo, "hi": hi, "gt": gt, "lt": lt, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Options:
    """Base of every declaration: the fields' types and bounds are checked on construction; a subclass adds checks
    that involve several fields in :meth:`check`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f.name, hints[f.name], getattr(self, f.name), f.metadata))
        self.check()

    def check(self) -> None:
        """Checks across fields (raise :class:`~convgen.errors.ConvgenError` naming the options in backticks)."""

    def values(self) -> dict[str, Any]:
        """The checked values, as the keyword arguments the family's code receives."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` as a message shows it: at most ``limit`` characters (a client may send megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# -- values ----------------------------------------------------------------------------------------------------------
def _bounds_text(meta: typing.Mapping[str, Any], integer: bool = False) -> str:
    lo, hi, gt, lt = (meta.get(k) for k in _BOUNDS)
    low = f"[{lo:g}" if lo is not None else (f"({gt:g}" if gt is not None else "")
    high = f"{hi:g}]" if hi is not None else (f"{lt:g})" if lt is not None else "")
    if integer and lo is not None and hi is not None:
        return f"must be in {lo:g}..{hi:g}"
    if low and high:
        return f"must be in {low}, {high}"
    if low:
        return f"must be {'>=' if lo is not None else '>'} {low[1:]}"
    return f"must be {'<=' if hi is not None else '<'} {high[:-1]}"


def check_bounds(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """Raise unless the number ``value`` lies within the bounds in ``meta`` (``lo``, ``hi``, ``gt``, ``lt``)."""
    lo, hi, gt, lt = (meta.get(k) for k in _BOUNDS)
    ok = ((lo is None or value >= lo) and (hi is None or value <= hi) and (gt is None or value > gt)
          and (lt is None or value < lt))  # fmt: skip
    if not ok:
        integer = isinstance(value, int)
        raise ConvgenError(f"`{name}` {value if integer else format(value, 'g')}: {_bounds_text(meta, integer)}")


def _scalar(name: str, tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str or a Literal), or a one-line error."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConvgenError(f"`{name}` must be one of {', '.join(map(str, choices))}, got {shown(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConvgenError(f"`{name}` must be true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                return int(value)
            raise ConvgenError(f"`{name}` must be an integer, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConvgenError(f"`{name}` must be a number, got {shown(value)}")
        if not math.isfinite(value):
            raise ConvgenError(f"`{name}` {value}: must be a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # a class given by index
        if not isinstance(value, str):
            raise ConvgenError(f"`{name}` must be a string, got {shown(value)}")
        return value
    raise TypeError(f"unsupported option type {tp!r} for {name}")  # a bug in a declaration, not user input


def split_type(tp: Any) -> tuple[Any, bool, bool]:
    """(item type, nullable, is a list) of a declared type: ``float | None`` -> (float, True, False)."""
    nullable = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
    if typing.get_origin(tp) in (list, tuple):
        return typing.get_args(tp)[0], nullable, True
    return tp, nullable, False


def check_value(name: str, tp: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    """``value`` converted to the declared type ``tp`` and checked against the bounds in ``meta``."""
    item, nullable, is_list = split_type(tp)
    if value is None:
        if nullable:
            return None
        raise ConvgenError(f"`{name}` must be given (it has no empty value)")
    if is_list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConvgenError(f"`{name}` must be a list, got {shown(value)}")
        if not value:
            raise ConvgenError(f"`{name}`: give at least one value")
        out = tuple(_scalar(name, item, v) for v in value)
        if item in (int, float):
            for v in out:
                check_bounds(name, v, meta)
        return out
    out = _scalar(name, item, value)
    if item in (int, float):
        check_bounds(name, out, meta)
    return out


# -- declarations -----------------------------------------------------------------------------------------------------
def build(cls: type[Options], given: typing.Mapping[str, Any], owner: str, limits: dict | None = None) -> Options:
    """The checked options ``cls`` from ``given`` (keyword values; unknown names are an error that says what
    ``owner`` takes); ``limits`` (name -> bounds) narrows fields for one model."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1) if len(str(key)) <= 100 else []
            hint = f"; did you mean `{close[0]}`?" if close else (
                f" (it takes {', '.join(f'`{n}`' for n in names)})" if names else " (it takes no options)")
            text = str(key) if len(str(key)) <= 60 else f"{str(key)[:60]}..."
            raise ConvgenError(f"{owner} does not take `{text}`{hint}")
    declared = {f.name: f.metadata for f in dataclasses.fields(cls)}
    for name, narrower in (limits or {}).items():
        value = given.get(name)
        if name in declared and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            check_bounds(name, value, {**declared[name], **{k: v for k, v in narrower.items() if v is not None}})
    return cls(**given)


def kind_of(tp: Any) -> str:
    """The type name a form or a flag shows: int, float, bool, str, choice, or list of one of those."""
    item, _, is_list = split_type(tp)
    base = "choice" if typing.get_origin(item) is Literal else getattr(item, "__name__", str(item))
    return f"list[{base}]" if is_list else base


def fields_of(cls: type[Options]) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def describe(cls: type[Options], limits: dict | None = None, defaults: dict | None = None) -> list[dict[str, Any]]:
    """Each option of ``cls`` as plain data for a form: name, type, default, bounds, choices, help, nullable.

    ``limits`` and ``defaults`` (name -> value) are one model's narrower bounds and the value an empty field
    stands for (e.g. the model's default number of diffusion steps)."""
    out = []
    for f, tp in fields_of(cls):
        item, nullable, _ = split_type(tp)
        meta = {k: f.metadata.get(k) for k in _BOUNDS}
        meta.update({k: v for k, v in (limits or {}).get(f.name, {}).items() if v is not None})
        row = {"name": f.name, "type": kind_of(tp), "default": f.default, "nullable": nullable,
               "help": f.metadata.get("help", ""), **meta,
               "choices": list(typing.get_args(item)) if typing.get_origin(item) is Literal else None}  # fmt: skip
        if isinstance(row["default"], tuple):
            row["default"] = list(row["default"])
        if defaults and f.name in defaults:
            row["model_default"] = defaults[f.name]
        out.append(row)
    return out


def parse_text(name: str, tp: Any, raw: str) -> Any:
    """A value typed as text (a command-line word, a form field) as the declared type; "" is None (the default)
    for a nullable option. The checks of :func:`check_value` still follow."""
    item, nullable, is_list = split_type(tp)
    raw = raw.strip()
    if raw == "" or (nullable and raw.lower() in ("none", "null")):
        return None
    if is_list:
        return [parse_text(name, item, part) for part in raw.replace(",", " ").split()]
    if item is bool:
        low = raw.lower()
        if low in ("1", "true", "on", "yes"):
            return True
        if low in ("0", "false", "off", "no"):
            return False
        raise ConvgenError(f"`{name}` must be true or false, got {shown(raw)}")
    if typing.get_origin(item) is Literal:
        for choice in typing.get_args(item):
            if str(choice) == raw:
                return choice
        return raw  # refused with the list of choices by check_value
    try:
        if item is int:
            return int(raw)
        if item is float:
            return float(raw)
    except ValueError:
        raise ConvgenError(f"`{name}` {shown(raw)}: not {'an integer' if item is int else 'a number'}") from None
    return raw


__all__ = ["Options", "option", "build", "describe", "parse_text", "check_value", "check_bounds"]
