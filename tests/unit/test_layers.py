"""Imports point one way: codecs <- fs <- policy <- daemon <- tools <- cli (docs/DESIGN.md, "Layers").
Every import of every module (those inside functions too) is read from its source; an arrow that runs
back up fails, and so does FUSE below the daemon (fs/ is a FUSE-free core)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "thermofs"
# Lower numbers sit lower; a module may import its own layer and the ones below.
LAYERS = {"progress": 0, "codecs": 1, "fs": 2, "policy": 3, "daemon": 4, "tools": 5, "cli": 6, "__main__": 6}


def layer_of(module: str) -> int:
    """The layer of a module named ``thermofs.X...`` (thermofs itself: the bottom)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every thermofs or mfusepy module ``path`` imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return [(line, name) for line, name in out if name.split(".")[0] in ("thermofs", "mfusepy")]


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        assert name == "thermofs" or name.split(".")[1] in LAYERS, f"{name}: which layer is it in?"


def test_imports_point_down() -> None:
    arrows_up = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for line, imported in imports(path):
            if imported == "mfusepy":
                if layer_of(name) < LAYERS["daemon"]:
                    arrows_up.append(f"{path.relative_to(REPO)}:{line}: {name} imports mfusepy (FUSE below the daemon)")
            elif layer_of(imported) > layer_of(name):
                arrows_up.append(f"{path.relative_to(REPO)}:{line}: {name} imports {imported}")
    assert not arrows_up, "imports that run back up:\n" + "\n".join(arrows_up)


def test_the_check_sees_an_arrow_up(tmp_path: Path) -> None:
    """The walk itself: an fs module importing the daemon is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from thermofs.daemon.assembly import open_volume\n")
    assert imports(bad) == [(2, "thermofs.daemon.assembly")]
    assert layer_of("thermofs.daemon.assembly") > layer_of("thermofs.fs.volume")
