"""The shape of the package: no import circle, small modules, classes and functions (the layers
themselves are checked by ``lint-imports``, configured in ``.importlinter``)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[2] / "tracking"
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 300, 150, 60


def _sources(package: Path = PACKAGE) -> list[Path]:
    return sorted(package.rglob("*.py"))


def _too_long(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in _sources(package):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(package.parent)
        if (lines := len(text.splitlines())) > MAX_MODULE:
            found.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if length > limit:
                found.append(f"{type(node).__name__} {name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_the_package_has_sources_to_check() -> None:
    assert len(_sources()) > 20


def test_no_module_class_or_function_is_too_long() -> None:
    too_long = _too_long()
    assert not too_long, "over the limits (module 300, class 150, function 60):\n" + "\n".join(too_long)


def test_the_check_finds_what_is_too_long(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    (package / "long.py").write_text(f"def f():\n{body}\n" + "\n" * MAX_MODULE)
    (package / "short.py").write_text("def g():\n    return 1\n")
    assert _too_long(package) == [
        f"module pkg/long.py: {MAX_FUNCTION + 1 + MAX_MODULE} lines",
        f"FunctionDef pkg/long.py:1 f: {MAX_FUNCTION + 1} lines",
    ]


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = grimp.build_graph("tracking", cache_dir=None)
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.append(f"{module} -> {' -> '.join(back)}")
    assert len(graph.modules) > 20
    assert circles == []
