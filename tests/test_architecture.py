"""The layout of docs/architecture.md holds: no import circles in src/, no import from a lower layer to a higher
one (module-level and function-level imports alike), registries that import none of their members, no function
longer than 80 lines. Read from the source with ``ast``: nothing is imported or run."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: the layers, bottom first; a module belongs to the last prefix that matches it
LAYERS: list[tuple[str, ...]] = [
    ("convgen.errors", "convgen.schema", "convgen.options", "convgen.classical"),
    ("convgen.registry", "convgen.device", "convgen.io"),
    ("convgen.config", "convgen.zoo", "convgen.entropy", "convgen.diffusion", "convgen.models", "convgen.losses"),
    ("convgen.data",),
    ("convgen.modeldir", "convgen.viz"),
    ("convgen.engine", "convgen.metrics"),
    ("convgen.tasks", "convgen.pipelines"),
    ("convgen.cli", "convgen.app", "convgen.__main__", "convgen"),
]
#: siblings on one layer that must not lean on each other
APART = [("convgen.tasks", "convgen.pipelines"), ("convgen.pipelines", "convgen.tasks"), ("convgen.app", "convgen.cli")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "convgen").rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """convgen modules that ``path`` imports anywhere (``from a.b import c`` is module a.b.c when that exists)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def layer(module: str) -> int:
    best, found = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found >= 0, f"{module} is on no layer: add it to LAYERS and docs/architecture.md"
    return found


def test_import_graph_has_no_circles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_no_import_runs_up_a_layer():
    upward = []
    for m, targets in graph().items():
        for t in targets:
            if layer(t) > layer(m):
                upward.append(f"{m} (layer {layer(m)}) -> {t} (layer {layer(t)})")
            for a, b in APART:
                if (m == a or m.startswith(a + ".")) and (t == b or t.startswith(b + ".")):
                    upward.append(f"{m} -> {t} (siblings kept apart)")
    assert not upward, "\n".join(upward)


def test_nothing_but_the_cli_imports_the_web_app():
    """The optional web layer stays optional: core modules never import ``convgen.app``."""
    for name, deps in graph().items():
        if not name.startswith(("convgen.app", "convgen.cli")):
            assert not [d for d in deps if d.startswith("convgen.app")], name


def test_registry_imports_no_members():
    assert graph()["convgen.registry"] <= {"convgen.errors"}


def test_no_function_longer_than_80_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def test_the_checker_sees_circles_and_upward_imports(tmp_path, monkeypatch):
    """The checks above can fail: a planted circle and an upward import are found."""
    pkg = tmp_path / "convgen"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("from convgen.models import b\n")
    lazy = "def f():\n    from convgen.models.a import g\n    from convgen.cli import x\n"
    (pkg / "models" / "b.py").write_text(lazy)
    (pkg / "cli.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    g = graph()
    assert g["convgen.models.a"] == {"convgen.models.b"}
    assert g["convgen.models.b"] == {"convgen.models.a", "convgen.cli"}
    try:
        test_import_graph_has_no_circles()
    except AssertionError as e:
        assert "convgen.models.a -> convgen.models.b -> convgen.models.a" in str(e)
    else:
        raise AssertionError("the planted circle was not found")
    try:
        test_no_import_runs_up_a_layer()
    except AssertionError as e:
        assert "convgen.models.b (layer 2) -> convgen.cli (layer 7)" in str(e)
    else:
        raise AssertionError("the planted upward import was not found")
