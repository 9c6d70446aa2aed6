"""What the text output says without a mount: mkfs gives its chunk size in binary units
(tests/mount/test_stats_output.py: units, rates and labels of the commands on a mount, the policy in force)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run


def test_mkfs_says_its_chunk_size_in_units(tmp_path: Path, run: Run) -> None:
    r = run("mkfs", tmp_path / "store", "--chunk-size", "128K")
    assert r.returncode == 0 and "chunk size 128.0 KiB" in r.stdout, r.stdout
