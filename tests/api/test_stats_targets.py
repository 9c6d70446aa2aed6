"""What the admin commands accept as TARGET and PATH, without a mount: a store that is not mounted takes
no paths (tests/mount/test_stats_targets.py: mountpoints, stores and paths on a mount)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run


def test_paths_of_an_unmounted_store_are_refused(tmp_path: Path, run: Run) -> None:
    assert run("mkfs", tmp_path / "store").returncode == 0
    (tmp_path / "file").write_bytes(b"x")
    r = run("stats", tmp_path / "store", tmp_path / "file")
    assert r.returncode == 2 and "not mounted" in r.stderr, r.stderr
