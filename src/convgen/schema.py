"""Typed dataclass <- dict conversion with strict checking: the ground floor of every config in convgen.

Every config section is a dataclass. :func:`from_dict` builds one from plain data (YAML / JSON), refusing unknown
keys (with a did-you-mean hint) and wrongly typed values; ``__post_init__`` range checks call :func:`check`.
Registry-typed sections (``model``, ``data``, ``task``, ``task.degradation``) take their schema from the class that
their ``type`` (or ``kind``) names (:func:`build_typed`). Imports nothing of convgen but its errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal

from convgen.errors import ConfigError

_YAML11_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError for ``key`` unless ``condition`` holds (used in ``__post_init__`` range checks)."""
    if not condition:
        raise ConfigError(f"config value {key}: {message}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads "3e-4" (no dot) as a string; every user means a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # a bug in a config class, not user input


def from_dict(cls: type, raw: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys and wrongly typed values."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {where or '<root>'!r}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else f" (valid keys: {', '.join(fields)})"
            raise ConfigError(f"unknown config key {prefix + str(key)!r}{hint}")
    kwargs = {name: convert(raw[name], hints[name], prefix + name) for name in fields if name in raw}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        type_name = getattr(obj, "registry_name", None)
        return {getattr(obj, "registry_key", "type"): type_name, **out} if type_name else out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def build_typed(section: str, raw: Any, registry: Any, key: str = "type", default: str | None = None) -> Any:
    """Build a registry-typed section: ``raw[key]`` names the registered class whose ``Config`` validates the rest.

    The config remembers its name and key (``registry_name``, ``registry_key``), so :func:`to_dict` writes it back.
    """
    if raw is None and default is not None:
        raw = {key: default}
    if isinstance(raw, dict) and key not in raw and default is not None:
        raw = {key: default, **raw}
    if not isinstance(raw, dict) or key not in raw:
        raise ConfigError(f"config section {section!r} needs a {key!r} key (one of: {', '.join(registry.names())})")
    raw = dict(raw)
    type_name = raw.pop(key)
    if not isinstance(type_name, str) or type_name not in registry:
        known = ", ".join(registry.names()) or "none"
        raise ConfigError(f"config key '{section}.{key}': unknown {registry.kind} {type_name!r} (known: {known})")
    entry = registry.get(type_name)
    cfg = from_dict(entry.Config, entry.accept(raw) if hasattr(entry, "accept") else raw, section)
    cfg.registry_name = type_name  # type: ignore[attr-defined]
    cfg.registry_key = key  # type: ignore[attr-defined]
    return cfg
