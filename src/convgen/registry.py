"""Name-keyed registries: a config's ``type:`` field picks the class.

Adding a model or dataset means decorating it with ``@MODELS.register("name")`` in one file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from convgen.errors import ConvgenError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        _import_builtins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConvgenError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        _import_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        _import_builtins()
        return name in self._items


MODELS: Registry[Any] = Registry("model type")
DATASETS: Registry[Any] = Registry("dataset type")
TASKS: Registry[Any] = Registry("task")


def _import_builtins() -> None:
    """Import the modules that register convgen's own entries (lazily, so `import convgen` stays light)."""
    import convgen.data.datasets  # noqa: F401
    import convgen.data.patches  # noqa: F401
    import convgen.models.classifier  # noqa: F401
    import convgen.models.gan  # noqa: F401
    import convgen.models.restoration  # noqa: F401
    import convgen.tasks.classification  # noqa: F401
    import convgen.tasks.gan  # noqa: F401
    import convgen.tasks.restoration  # noqa: F401
