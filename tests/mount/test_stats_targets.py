"""What the admin commands accept as TARGET and PATH: a mountpoint, a store (also one that is itself
a mount point of another filesystem), or files and directories on a thermofs mount, never a path
on another filesystem (tests/api/test_stats_targets.py: the paths of a store that is not mounted)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount, StatsJson

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 4000


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


def test_stats_of_a_file_inside_the_mount(mount: Mount, run: Run, stats_json: StatsJson) -> None:
    (mount.mountpoint / "sub").mkdir()
    (mount.mountpoint / "sub" / "a.txt").write_bytes(TEXT)
    s = stats_json(mount.mountpoint / "sub" / "a.txt")
    row = s["files"][str(mount.mountpoint / "sub" / "a.txt")]
    assert row["logical_bytes"] == len(TEXT) and 0 < row["stored_bytes"] < len(TEXT) // 10
    assert s["logical_bytes"] == len(TEXT)
    r = run("stats", mount.mountpoint / "sub" / "a.txt")
    assert r.returncode == 0 and "a.txt" in r.stdout and "total" in r.stdout, r.stderr


def test_directories_are_walked_like_compsize(mount: Mount, run: Run, stats_json: StatsJson) -> None:
    tree = mount.mountpoint / "tree"
    (tree / "deep" / "deeper").mkdir(parents=True)
    sizes = {tree / "one": 1000, tree / "deep" / "two": 70_000, tree / "deep" / "deeper" / "three": 200_000}
    for path, size in sizes.items():
        path.write_bytes(TEXT[:size] if size <= len(TEXT) else os.urandom(size))
    os.link(tree / "one", tree / "zz_hardlink")  # the same data twice: counted once
    (tree / "deep" / "link").symlink_to("/etc/passwd")  # not followed
    (mount.mountpoint / "outside").write_bytes(TEXT)
    for target, paths in ((mount.mountpoint, [tree]), (tree, [])):
        s = stats_json(target, *paths)
        assert s["logical_bytes"] == sum(sizes.values()), s
        assert set(s["files"]) == {str(p) for p in sizes}
        assert s["paths"][str(tree)]["file_count"] == 3 and s["file_count"] == 3
    rows = [line.split() for line in run("stats", mount.mountpoint, tree).stdout.splitlines()]
    assert rows[0][:3] == ["path", "files", "chunks"]
    assert rows[1][:2] == [str(tree), "3"] and rows[2][:2] == ["total", "3"]


def test_paths_must_be_on_the_same_mount(make_mount: Callable[..., Mount], tmp_path: Path, run: Run,
                                         stats_json: StatsJson) -> None:
    a, b = make_mount(), make_mount()
    (a.mountpoint / "a").write_bytes(os.urandom(100_000))
    (b.mountpoint / "b").write_bytes(TEXT)  # likely the same inode number as a's file
    assert os.stat(a.mountpoint / "a").st_ino == os.stat(b.mountpoint / "b").st_ino
    r = run("stats", a.mountpoint, b.mountpoint / "b")
    assert r.returncode == 2 and str(b.mountpoint / "b") in r.stderr and "not on" in r.stderr, r.stderr
    assert r.stdout == ""
    r = run("stats", a.mountpoint, "/etc/passwd")
    assert r.returncode == 2 and "/etc/passwd" in r.stderr, r.stderr
    r = run("stats", a.mountpoint / "a", b.mountpoint / "b")
    assert r.returncode == 2 and str(b.mountpoint / "b") in r.stderr
    r = run("stats", a.mountpoint, a.mountpoint / "missing")
    assert r.returncode == 2 and "missing" in r.stderr
    # A store target reports the paths of its own mount, and refuses them when it is not mounted.
    assert stats_json(a.store, a.mountpoint / "a")["logical_bytes"] == 100_000
    r = run("stats", b.store, a.mountpoint / "a")
    assert r.returncode == 2 and str(a.mountpoint / "a") in r.stderr
    r = run("stats", "/etc/passwd")
    assert r.returncode == 2 and "/etc/passwd" in r.stderr


def test_a_store_on_a_mount_point_of_another_filesystem_is_a_store(tmpfs: Path, tmp_path: Path, run: Run,
                                                                   stats_json: StatsJson) -> None:
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
