"""Name-keyed registries: a config's ``type:`` (or ``kind:``) field picks the class.

Adding a model, dataset, task, loss, degradation, pipeline or feature extractor means decorating it with
``@MODELS.register("name")`` (etc.) in its own file. This module imports none of them: each registry names the
package that holds convgen's own members (``home``); on the first lookup every module of that package is imported
by name (:func:`import_package`, ``pkgutil`` over the package), so a family module registers by being there; no
hand-kept list names it. Third-party plugins register the same way from their own modules, loaded on the
first lookup too (:func:`load_plugins`): a Python entry point in the ``convgen.plugins`` group, or a module named in
``$CONVGEN_PLUGINS`` (comma-separated).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from convgen.errors import ConvgenError

T = TypeVar("T")

PLUGIN_GROUP = "convgen.plugins"
PLUGIN_ENV = "CONVGEN_PLUGINS"
_loaded_plugins: set[str] = set()


def load_plugins() -> list[str]:
    """Import every plugin module (``$CONVGEN_PLUGINS``, then entry points of group ``convgen.plugins``) once.

    A plugin named in the environment that fails to import is an error; a broken installed entry point is a
    warning, so one bad package does not stop every command."""
    names = [(m.strip(), m.strip(), True) for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    names += [(ep.value.split(":")[0], ep.name, False) for ep in metadata.entry_points(group=PLUGIN_GROUP)]
    for module, label, explicit in names:
        if module in _loaded_plugins:
            continue
        _loaded_plugins.add(module)
        try:
            importlib.import_module(module)
        except Exception as e:  # a plugin's own bug must not look like a convgen traceback
            if explicit:
                raise ConvgenError(f"plugin {label!r} ({PLUGIN_ENV}) failed to import: {e}") from None
            print(f"convgen: warning: plugin {label!r} failed to import and is ignored: {e}", file=sys.stderr)
    return sorted(_loaded_plugins)


def import_package(name: str) -> list[str]:
    """Import module ``name`` and, when it is a package, every module and sub-package in it; returns their names."""
    module = importlib.import_module(name)
    found = [name]
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)
        found.append(info.name)
    return found


class Registry(Generic[T]):
    def __init__(self, kind: str, home: str) -> None:
        self.kind = kind
        self.home = home  # the package whose import registers convgen's own members
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True
            import_package(self.home)
            load_plugins()

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConvgenError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._discover()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def subset(self, kind: str, keep: Callable[[T], bool]) -> RegistryView[T]:
        """The members for which ``keep`` holds, looked up like a registry of their own (e.g. the pixel losses)."""
        return RegistryView(self, kind, keep)


class RegistryView(Generic[T]):
    """A filtered view of a registry with the same lookups (what :func:`convgen.schema.build_typed` needs)."""

    def __init__(self, registry: Registry[T], kind: str, keep: Callable[[T], bool]) -> None:
        self.registry, self.kind, self.keep = registry, kind, keep

    def names(self) -> list[str]:
        return [name for name, obj in self.registry.items() if self.keep(obj)]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def get(self, name: str) -> T:
        if name not in self:
            raise ConvgenError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})")
        return self.registry.get(name)


MODELS: Registry[Any] = Registry("model type", "convgen.models")
DATASETS: Registry[Any] = Registry("dataset type", "convgen.data")
TASKS: Registry[Any] = Registry("task", "convgen.tasks")
LOSSES: Registry[Any] = Registry("loss", "convgen.losses")
DEGRADATIONS: Registry[Any] = Registry("degradation kind", "convgen.data.degradations")
PIPELINES: Registry[Any] = Registry("pipeline for task", "convgen.pipelines")
EXTRACTORS: Registry[Any] = Registry("feature extractor", "convgen.metrics.extractors")
