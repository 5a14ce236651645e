"""The shape of the code base: short single-job files and no import circle between asrkit's modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "asrkit"
MAX_LINES = 300  # beyond this a file usually does two jobs
ASSET_BUILDERS = {"assets/build_whisper_tokenizer.py", "assets/build_demo_speech.py"}


def _modules() -> dict[str, Path]:
    return {
        ".".join(("asrkit", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }


def _imports(path: Path, known: set[str]) -> set[str]:
    """The asrkit modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def test_no_import_circle_between_asrkit_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(name) :] + [name]))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_files_stay_short() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in ASSET_BUILDERS}
    assert not long, f"over {MAX_LINES} lines: {long}"
    assert lengths["data/datamodule.py"] < 200  # Lightning's hooks only
