"""Real mount: copy real trees in with ``cp -a``, compare with ``diff -r``, remount, compare again."""

from __future__ import annotations

import os
import stat
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mount.conftest import Mount, RequireTool

STDLIB = Path(sysconfig.get_paths()["stdlib"])
STDLIB_PACKAGES = ("json", "email", "http", "xml", "asyncio", "unittest", "logging", "concurrent",
                   "importlib", "urllib")


def _sources(corpora: Path) -> list[Path]:
    if not corpora.is_dir():
        pytest.skip(f"shared corpora not found at {corpora}")
    pkgs = [STDLIB / p for p in STDLIB_PACKAGES if (STDLIB / p).is_dir()]
    if len(pkgs) < len(STDLIB_PACKAGES):
        pytest.skip("some standard library packages are missing")
    return [corpora, *pkgs]


def _diff(src: Path, dst: Path) -> None:
    r = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(dst)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"diff -r {src} {dst} (exit {r.returncode}):\n{r.stdout[-4000:]}{r.stderr[-2000:]}"


def _stats(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """relative path -> (mode, mtime_ns, size, uid, gid) of every entry below ``root``."""
    out: dict[str, tuple[int, int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size, st.st_uid, st.st_gid)
    return out


def _check_metadata(src: Path, dst: Path) -> None:
    """Mode, mtime (to the nanosecond: cp -a copies it with utimensat), size and owner match."""
    want, got = _stats(src), _stats(dst)
    assert sorted(got) == sorted(want)
    bad = []
    for rel, (mode, mtime, size, uid, gid) in want.items():
        g = got[rel]
        if stat.S_ISLNK(mode):
            if g[0] != mode or os.readlink(src / rel) != os.readlink(dst / rel):
                bad.append((rel, "symlink", oct(mode), oct(g[0])))
            continue
        if g[0] != mode:
            bad.append((rel, "mode", oct(mode), oct(g[0])))
        if stat.S_ISREG(mode) and g[2] != size:
            bad.append((rel, "size", size, g[2]))
        if g[1] != mtime:
            bad.append((rel, "mtime_ns", mtime, g[1]))
        if (g[3], g[4]) != (uid, gid):
            bad.append((rel, "owner", (uid, gid), (g[3], g[4])))
    assert not bad, f"{len(bad)} metadata mismatches, first: {bad[:10]}"


def _extras(root: Path) -> Path:
    """A small tree with what real trees lack: symlinks, hard links, empty files and directories, odd
    modes, old and nanosecond mtimes, user xattrs, a file with a hole."""
    root.mkdir()
    (root / "empty-dir" / "nested").mkdir(parents=True)
    (root / "empty-file").write_bytes(b"")
    (root / "private").write_bytes(b"secret\n")
    os.chmod(root / "private", 0o600)
    (root / "setuid-tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid-tool", 0o4755)
    (root / "a").write_bytes(b"hard linked\n" * 1000)
    os.link(root / "a", root / "a-link")
    os.symlink("a", root / "rel-link")
    os.symlink("/nonexistent/target", root / "dangling-link")
    os.symlink("empty-dir/nested", root / "dir-link")
    with open(root / "sparse", "wb") as fh:
        fh.write(b"start")
        fh.seek(5 << 20)
        fh.write(b"end")
    (root / "old").write_bytes(b"old file\n")
    os.utime(root / "old", ns=(978_307_200_123_456_789, 978_307_200_987_654_321))
    (root / "xattr-file").write_bytes(b"with attributes\n")
    try:
        os.setxattr(root / "xattr-file", "user.comment", b"hello from the source")
    except OSError:
        pass
    os.utime(root / "empty-dir" / "nested", ns=(1_000_000_000_000_000_001, 1_000_000_000_000_000_001))
    return root


def test_cp_a_diff_remount(make_mount: Callable[..., Mount], tmp_path: Path, corpora: Path,
                           require_tool: RequireTool) -> None:
    require_tool("cp")
    require_tool("diff")
    sources = [*_sources(corpora), _extras(tmp_path / "extras")]
    m = make_mount()
    targets = []
    for src in sources:
        dst = m.mountpoint / ("corpora" if src == corpora else "extras" if src.name == "extras"
                              else f"stdlib-{src.name}")
        r = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"cp -a {src} failed: {r.stderr[-3000:]}"
        targets.append((src, dst))

    for src, dst in targets:
        _diff(src, dst)
        _check_metadata(src, dst)

    _check_extras(tmp_path / "extras", m.mountpoint / "extras")

    # A few files, checked through os.stat explicitly (what ls -l shows).
    picked = [corpora / "canterbury", STDLIB / "json" / "__init__.py", STDLIB / "email" / "message.py",
              STDLIB / "unittest" / "mock.py"]
    picked = [p for p in picked if p.exists()]
    before = {}
    for p in picked:
        rel = ("corpora" / p.relative_to(corpora)) if p.is_relative_to(corpora) \
            else Path(f"stdlib-{p.relative_to(STDLIB).parts[0]}", *p.relative_to(STDLIB).parts[1:])
        st = os.stat(m.mountpoint / rel)
        sst = os.stat(p)
        assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(sst.st_mode)
        assert st.st_mtime_ns == sst.st_mtime_ns
        before[rel] = (st.st_mode, st.st_mtime_ns, st.st_size, st.st_ino)

    m.remount()

    for src, dst in targets:
        _diff(src, dst)
        _check_metadata(src, dst)
    _check_extras(tmp_path / "extras", m.mountpoint / "extras")
    for rel, (mode, mtime, size, ino) in before.items():
        st = os.stat(m.mountpoint / rel)
        assert (st.st_mode, st.st_mtime_ns, st.st_size, st.st_ino) == (mode, mtime, size, ino)

    # ls -l itself sees the same modes and sizes as on the source.
    r = subprocess.run(["ls", "-ln", "--time-style=+%s", str(m.mountpoint / "stdlib-json")],
                       capture_output=True, text=True, check=True)
    r0 = subprocess.run(["ls", "-ln", "--time-style=+%s", str(STDLIB / "json")],
                        capture_output=True, text=True, check=True)
    assert _ls_fields(r.stdout) == _ls_fields(r0.stdout)


def _check_extras(src: Path, dst: Path) -> None:
    a, b = os.stat(dst / "a"), os.stat(dst / "a-link")
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2, "cp -a must keep the hard link"
    assert os.readlink(dst / "dangling-link") == "/nonexistent/target"
    assert stat.S_IMODE(os.stat(dst / "setuid-tool").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dst / "private").st_mode) == 0o600
    assert os.stat(dst / "old").st_mtime_ns == 978_307_200_987_654_321
    assert os.stat(dst / "sparse").st_size == (5 << 20) + 3
    try:
        want = os.getxattr(src / "xattr-file", "user.comment")
    except OSError:
        return
    assert os.getxattr(dst / "xattr-file", "user.comment") == want


def _ls_fields(text: str) -> list[tuple[str, ...]]:
    """mode, links, owner, group, size (files only: directory sizes are filesystem-specific), mtime, name."""
    rows = []
    for line in text.splitlines()[1:]:
        mode, links, uid, gid, size, mtime, name = line.split(None, 6)
        rows.append((mode, links, uid, gid, "-" if mode.startswith("d") else size, mtime, name))
    return rows
