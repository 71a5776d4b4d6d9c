"""The package's layout is its architecture: each folder owns one stage, imports run one way
(a module imports only from its own layer or those below it), and no module grows past
``MAX_LINES``.

Layers, bottom first:
1. ``core``: what a detection may use (errors, object refs, the allowlist, the spec, SQL and
   request-JSON building blocks);
2. ``detections``: the specs;
3. ``lake``: reading Security Lake (notifications, the Parquet footer, the two schema versions,
   the reader, example objects);
4. ``analysis``: findings from objects (the engine, findings, SQL statements, output, tests of
   examples, allowlist suggestions);
5. ``report``: alerts and what people read (alerts, the digest email, ASFF, mutes);
6. ``aws``: one adapter per AWS service;
7. ``app``: wiring (settings, the pipeline, sinks, the CLI) and ``handler`` on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
LAYERS = ("core", "detections", "lake", "analysis", "report", "aws", "app", "handler")
MAX_LINES = 500
# The stable entry points at the top of the package.
TOP = {
    "__init__": "core",
    "__version__": "core",
    "__main__": "app",
    "handler": "handler",
    "detection": "detections",
}


def _layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "detector", module
    if len(parts) == 1:
        return "core"
    head = parts[1]
    if head in LAYERS:
        return head
    return TOP[head]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "detector":
                found |= {f"detector.{a.name}" for a in node.names}
            elif node.module.startswith("detector."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("detector")}
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    mine = LAYERS.index(_layer(_name(path)))
    above = sorted(m for m in _imports(path) if LAYERS.index(_layer(m)) > mine)
    assert not above, f"{_name(path)} ({LAYERS[mine]}) imports from above: {above}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines (split it by what it owns)"


def test_each_layer_folder_says_what_it_owns() -> None:
    for layer in LAYERS[:-1]:
        init = PACKAGE / layer / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, f"{layer}/__init__.py needs a docstring"
