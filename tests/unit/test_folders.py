"""The test folders keep to their layer: every test module is in tests/unit, tests/api or tests/mount;
tests/unit and tests/api run without FUSE (no module there, nor a conftest.py they load, imports mfusepy
or the daemon's FUSE modules, and what they import loads with mfusepy unimportable); no test module
imports another (harnesses are fixtures of a conftest.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
# What needs libfuse, or mounts: the binding, the operations, the daemon's mounting.
FUSE = ("mfusepy", "thermofs.daemon.binding", "thermofs.daemon.operations", "thermofs.daemon.mount")
# Imports every statement given in argv with mfusepy unimportable (as on a machine without libfuse).
WITHOUT_MFUSEPY = ("import sys\n"
                   "sys.modules['mfusepy'] = None\n"
                   "for statement in sys.argv[1:]:\n"
                   "    exec(statement, {})\n")


def without_fuse() -> list[Path]:
    """The modules `pytest tests/unit tests/api` loads: their tests and conftest.py files, and tests/conftest.py."""
    return sorted([TESTS / "conftest.py", *(TESTS / "unit").rglob("*.py"), *(TESTS / "api").rglob("*.py")])


def import_statements(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``path`` that runs (those inside functions too; not those under
    ``if TYPE_CHECKING:``, which only type checkers read)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def modules(statement: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names]
    return [("." * statement.level) + (statement.module or "")]


def is_fuse(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FUSE)


def test_every_test_module_is_in_a_folder_of_its_layer() -> None:
    """pytest's testpaths name the three folders: a test module elsewhere would not run."""
    folders = {path.parent.name for path in TESTS.rglob("test_*.py")}
    assert folders == {"unit", "api", "mount"} and not list(TESTS.glob("test_*.py")), folders


def test_unit_and_api_tests_import_nothing_of_fuse() -> None:
    found = [f"{path.relative_to(REPO)}:{s.lineno}: {module}" for path in without_fuse()
             for s in import_statements(path) for module in modules(s) if is_fuse(module)]
    assert not found, "FUSE in tests that must run without it:\n" + "\n".join(found)


def test_what_unit_and_api_tests_import_loads_without_mfusepy() -> None:
    """Their own imports of thermofs, and those of the thermofs command they run in subprocesses (every
    command but mount), with mfusepy unimportable."""
    statements = {ast.unparse(s) for path in without_fuse() for s in import_statements(path)
                  if any(m.split(".")[0] == "thermofs" for m in modules(s))}
    statements |= {ast.unparse(s) for s in import_statements(REPO / "thermofs" / "cli.py")
                   if not any(is_fuse(m) for m in modules(s))}
    assert any(s.startswith("from thermofs.tools.") for s in statements)  # the commands' own imports
    r = subprocess.run([sys.executable, "-c", WITHOUT_MFUSEPY, *sorted(statements)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    # The check itself: the FUSE operations do not load so.
    r = subprocess.run([sys.executable, "-c", WITHOUT_MFUSEPY, "import thermofs.daemon.operations"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode != 0 and "mfusepy" in r.stderr, r.stderr[-3000:]


def test_no_test_module_imports_another() -> None:
    """Not a test module, not a conftest.py: what tests share is a fixture (type checkers may read
    conftest.py for the types of fixtures, under ``if TYPE_CHECKING:``)."""
    found = [f"{path.relative_to(REPO)}:{s.lineno}: {module}" for path in sorted(TESTS.rglob("*.py"))
             for s in import_statements(path) for module in modules(s)
             if module.split(".")[0] in ("tests", "conftest") or module.startswith(".")]
    assert not found, "imports of test code:\n" + "\n".join(found)
