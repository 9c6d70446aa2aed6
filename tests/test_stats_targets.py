"""What the admin commands accept as TARGET: a thermofs mountpoint, or a store (also one that is itself
a mount point of another filesystem)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thermofs.fs.mount import mount_source

THERMOFS = [sys.executable, "-m", "thermofs"]
TEXT = b"the quick brown fox jumps over the lazy dog\n" * 4000


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*THERMOFS, *map(str, args)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def stats_json(*args: str | Path) -> dict[str, Any]:
    r = run("stats", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An empty tmpfs mounted on a directory (unmounted in teardown)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
    assert mount_source(where) is None


def test_a_store_on_a_mount_point_of_another_filesystem_is_a_store(tmpfs: Path, tmp_path: Path) -> None:
    """A store directory that is a tmpfs mount point: every admin command takes it as the store."""
    r = run("mkfs", tmpfs, "--cold-codec", "zstd:3")
    assert r.returncode == 0, r.stderr
    for command in (["stats"], ["stats", "--json"], ["cool", "--now"], ["compact"], ["fsck"]):
        r = run(*command[:1], tmpfs, *command[1:])
        assert r.returncode == 0, (command, r.stderr)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run("mount", tmpfs, mnt)
    try:
        assert r.returncode == 0, r.stderr
        (mnt / "f").write_bytes(TEXT)
        for target in (tmpfs, mnt):
            s = stats_json(target)
            assert s["mounted"] and s["files"] == 1
        assert run("cool", "--now", tmpfs).returncode == 0
    finally:
        r = run("umount", mnt)
        if mount_source(mnt) is not None:
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert stats_json(tmpfs)["cold_chunks"] >= 1
