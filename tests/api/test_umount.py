"""Admin commands that meet a store locked by another admin command: in use at once, no waiting
(tests/mount/test_umount.py: `thermofs umount`, and commands that meet a daemon still exiting)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from thermofs.fs.store import StoreLock

if TYPE_CHECKING:
    from tests.conftest import Run


def test_a_store_locked_by_an_admin_command_is_in_use_at_once(tmp_path: Path, run: Run) -> None:
    assert run("mkfs", tmp_path / "store").returncode == 0
    lock = StoreLock(tmp_path / "store")
    lock.acquire()  # this process stands for another admin command at work on the store
    try:
        for command in ("fsck", "compact"):
            r = run(command, tmp_path / "store", timeout=30)
            assert r.returncode == 2 and "in use" in r.stderr and "waiting" not in r.stderr, r.stderr
    finally:
        lock.release()
