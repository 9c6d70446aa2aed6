"""fsck on stores built through the volume API and then damaged on purpose: what it reports (kinds, counts,
paths), its exit codes, what --repair fixes, and that a second run is clean except for what it said it
could not fix. Also the command line: misuse gives clear errors and exit 2 (tests/mount/test_fsck.py:
a mounted store)."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.assembly import open_volume
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import INLINE_SEGMENT, MetaStore
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.tools.fsck import EXIT_CLEAN, EXIT_DAMAGE, FsckReport, fsck

if TYPE_CHECKING:
    from tests.conftest import ChunkMap, Run

CS = 4096
UID, GID = os.getuid(), os.getgid()
# As root without the capabilities that let root ignore file permissions (so that a permission test
# means something when the tests run as root).
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def build(store: Path, seed: int = 1) -> dict[str, bytes]:
    """A small volume: directories, multi-chunk files in segments, small inline files, a hard link,
    a symlink and an xattr. Returns path -> content of every regular file."""
    mkfs(store, StoreConfig(chunk_size=CS))
    rng = random.Random(seed)
    parts = open_volume(store)
    v = parts.volume
    files: dict[str, bytes] = {}
    try:
        v.mkdir("/docs", 0o755, UID, GID)
        v.mkdir("/docs/deep", 0o755, UID, GID)
        v.mkdir("/bin", 0o755, UID, GID)
        for path, data in [("/docs/a.txt", b"alpha beta gamma\n" * 1500),
                           ("/docs/deep/b.bin", rng.randbytes(5 * CS + 100)),
                           ("/bin/c.bin", rng.randbytes(3 * CS)),
                           ("/small.txt", b"tiny file\n"),
                           ("/docs/deep/d.txt", b"delta\n" * 3000)]:
            fh, _inode = v.create(path, 0o644, UID, GID)
            v.write(fh, 0, data)
            v.release(fh)
            files[path] = data
        v.link(v.resolve("/bin/c.bin"), "/docs/c-link.bin")
        files["/docs/c-link.bin"] = files["/bin/c.bin"]
        v.symlink("/sym", "docs/a.txt", UID, GID)
        v.setxattr(v.resolve("/docs/a.txt"), "user.tag", b"x")
    finally:
        parts.close()
    return files


def read_back(store: Path, files: dict[str, bytes]) -> dict[str, bytes | str]:
    """Every file's content through the volume API, or the error it gives."""
    parts = open_volume(store)
    out: dict[str, bytes | str] = {}
    try:
        v = parts.volume
        for path in files:
            fh = v.open(v.resolve(path))
            try:
                out[path] = v.read(fh, 0, 1 << 20)
            except CorruptChunk as e:
                out[path] = f"CorruptChunk: {e}"
            finally:
                v.release(fh)
    finally:
        parts.close()
    return out


def ino_of(store: Path, path: str) -> int:
    meta = MetaStore(store / "meta.lmdb", readonly=True)
    try:
        with meta.read() as t:
            ino = 1
            for part in path.strip("/").split("/"):
                found = t.lookup(ino, part.encode())
                assert found is not None, path
                ino = found
            return ino
    finally:
        meta.close()


def kinds(report: FsckReport, remaining: bool = False) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in report.remaining if remaining else report.problems:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out


def seg_path(store: Path, seg: int) -> Path:
    return store / "segments" / f"{seg:08d}.seg"


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    s = tmp_path / "store"
    return s, build(s)


def test_clean_store_is_clean(store: tuple[Path, dict[str, bytes]]) -> None:
    path, files = store
    report = fsck(path)
    assert report.problems == [] and report.notes == [] and report.exit_code == EXIT_CLEAN
    assert report.checked["inodes"] == 10 and report.checked["chunks"] == report.checked["frames_verified"]
    # A repair of a clean store changes nothing.
    assert fsck(path, repair=True).problems == []
    assert read_back(path, files) == files


def test_flipped_byte_is_reported_with_path_and_range_and_kept(store: tuple[Path, dict[str, bytes]],
                                                               chunk_map: ChunkMap) -> None:
    path, files = store
    entries = chunk_map(path, ino_of(path, "/docs/deep/b.bin"))
    e = entries[2]
    assert e.segment != INLINE_SEGMENT
    with open(seg_path(path, e.segment), "r+b") as fh:
        fh.seek(e.offset + e.frame_len // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    report = fsck(path)
    assert kinds(report) == {"chunk-corrupt": 1} and report.exit_code == EXIT_DAMAGE
    [p] = report.problems
    assert p.path == "/docs/deep/b.bin" and f"chunk 2 (bytes {2 * CS}-{3 * CS - 1})" in p.message
    assert "checksum" in p.message
    # Not repairable without guessing: the entry is kept, the bytes keep giving EIO.
    report = fsck(path, repair=True)
    assert kinds(report, remaining=True) == {"chunk-corrupt": 1} and report.exit_code == EXIT_DAMAGE
    assert chunk_map(path, ino_of(path, "/docs/deep/b.bin")) == entries
    back = read_back(path, files)
    assert str(back.pop("/docs/deep/b.bin")).startswith("CorruptChunk")
    assert back == {k: v for k, v in files.items() if k != "/docs/deep/b.bin"}


def test_deleted_segment_dangling_entry_and_crash_leftovers(store: tuple[Path, dict[str, bytes]]) -> None:
    """Three kinds of damage to the data at once: a deleted segment, an entry pointing past the end of
    its segment, and frames a crash left (not damage: accounted by --repair)."""
    path, files = store
    # A second segment (every open starts one) holding one more file, then deleted.
    parts = open_volume(path)
    fh, _inode = parts.volume.create("/docs/gone.bin", 0o644, UID, GID)
    parts.volume.write(fh, 0, random.Random(2).randbytes(3 * CS))
    parts.volume.release(fh)
    gone_seg = parts.segments.active_id
    parts.close()
    # Frames appended but never committed (a kill -9 between append and commit).
    parts = open_volume(path)
    parts.segments.append([b"F" * 5000, b"G" * 3000])
    parts.close()
    seg_path(path, gone_seg).unlink()
    # An entry pointing past the end of its segment.
    c_ino = ino_of(path, "/bin/c.bin")
    meta = MetaStore(path / "meta.lmdb")
    with meta.write() as t:
        old = t.get_chunk(c_ino, 1)
        assert old is not None
        t.put_chunk(c_ino, 1, replace(old, offset=seg_path(path, old.segment).stat().st_size + 10))
    meta.close()

    report = fsck(path)
    k = kinds(report)
    assert k["chunk-dangling"] == 3 + 1 and k["segment-missing"] == 1
    # A file with two names is shown by one of them.
    dangling = sorted((p.path.replace("/docs/c-link.bin", "/bin/c.bin"), p.message.split(":")[0])
                      for p in report.problems if p.kind == "chunk-dangling")
    assert dangling == [("/bin/c.bin", f"chunk 1 (bytes {CS}-{2 * CS - 1})"),
                        ("/docs/gone.bin", f"chunk 0 (bytes 0-{CS - 1})"),
                        ("/docs/gone.bin", f"chunk 1 (bytes {CS}-{2 * CS - 1})"),
                        ("/docs/gone.bin", f"chunk 2 (bytes {2 * CS}-{3 * CS - 1})")]
    assert k == {"chunk-dangling": 4, "segment-missing": 1}
    # The crash's frames are no damage (invariant 1 allows them): a note, accounted by --repair.
    assert [n for n in report.notes if "8000 bytes" in n and "left by a crash" in n]
    assert report.exit_code == EXIT_DAMAGE

    repaired = fsck(path, repair=True)
    assert kinds(repaired, remaining=True) == {"chunk-dangling": 4, "segment-missing": 1}
    again = fsck(path)
    assert kinds(again) == {"chunk-dangling": 4, "segment-missing": 1} and again.notes == []
    back = read_back(path, files)
    assert str(back.pop("/bin/c.bin")).startswith("CorruptChunk")
    assert str(back.pop("/docs/c-link.bin")).startswith("CorruptChunk")
    assert back == {k: v for k, v in files.items() if k not in ("/bin/c.bin", "/docs/c-link.bin")}


def test_namespace_damage_is_repaired(store: tuple[Path, dict[str, bytes]]) -> None:
    """A dirent to a missing inode, an unreachable file, an unreachable directory with files in it,
    a wrong link count, a wrong directory parent, wrong totals, leftovers of a missing inode."""
    path, files = store
    small, deep, a = ino_of(path, "/small.txt"), ino_of(path, "/docs/deep"), ino_of(path, "/docs/a.txt")
    docs = ino_of(path, "/docs")
    meta = MetaStore(path / "meta.lmdb")
    with meta.write() as t:
        t.put_dirent(docs, b"ghost", 999_999, stat.S_IFREG)  # names a missing inode
        t.del_dirent(1, b"small.txt")  # the file is lost
        t.del_dirent(docs, b"deep")  # the directory and its two files are lost
        inode = t.get_inode(a)
        assert inode is not None
        t.put_inode(inode.evolve(nlink=5))
        docs_inode = t.get_inode(docs)
        assert docs_inode is not None
        t.put_inode(docs_inode.evolve(parent=docs))
        t.bump("files", 7)
        t.bump("logical_bytes", -100)
        t.put_xattr(888_888, b"user.leftover", b"v")  # belongs to no inode
    meta.close()

    report = fsck(path)
    k = kinds(report)
    assert k["dirent-dangling"] == 1 and k["lost-inode"] == 2 + 2 and k["nlink"] >= 1
    assert k["dir-parent"] == 1 and k["leftover"] == 1 and k["counter"] >= 2
    assert {p.path for p in report.problems if p.kind == "dirent-dangling"} == {"/docs/ghost"}
    assert {p.path for p in report.problems if p.kind == "nlink" and "5" in p.message} == {"/docs/a.txt"}
    lost_paths = {p.path for p in report.problems if p.kind == "lost-inode"}
    assert f"<inode {small}, unreachable>" in lost_paths and f"<inode {deep}, unreachable>" in lost_paths
    assert f"<inode {deep}, unreachable>/b.bin" in lost_paths
    assert report.exit_code == EXIT_DAMAGE

    repaired = fsck(path, repair=True)
    assert repaired.remaining == [] and repaired.exit_code == EXIT_CLEAN
    assert all(p.repaired for p in repaired.problems)
    again = fsck(path)
    assert again.problems == [] and again.notes == []
    # The lost files are in /lost+found under their inode numbers, byte for byte.
    moved = {"/small.txt": f"/lost+found/#{small}", "/docs/deep/b.bin": f"/lost+found/#{deep}/b.bin",
             "/docs/deep/d.txt": f"/lost+found/#{deep}/d.txt"}
    back = read_back(path, {moved.get(p, p): b"" for p in files})
    assert back == {moved.get(p, p): data for p, data in files.items()}
    parts = open_volume(path)
    try:
        v = parts.volume
        assert v.getattr(a).nlink == 1
        assert v.counters()["files"] == 6  # 5 regular files (one with two names) + 1 symlink
        assert {name for name, _ino, _kind in v.readdir(v.resolve("/docs"))} == {
            ".", "..", "a.txt", "c-link.bin"}
        assert v.readdir(deep)[1] == ("..", v.resolve("/lost+found"), stat.S_IFDIR)
    finally:
        parts.close()


def test_directory_cycle_is_broken_into_lost_found(store: tuple[Path, dict[str, bytes]]) -> None:
    path, files = store
    docs, deep = ino_of(path, "/docs"), ino_of(path, "/docs/deep")
    meta = MetaStore(path / "meta.lmdb")
    with meta.write() as t:  # /docs moves into its own subdirectory: a cycle nothing reaches
        t.del_dirent(1, b"docs")
        t.put_dirent(deep, b"loop", docs, stat.S_IFDIR)
    meta.close()
    report = fsck(path)
    assert kinds(report)["lost-inode"] >= 2
    assert fsck(path, repair=True).exit_code == EXIT_CLEAN
    assert fsck(path).problems == []
    back = read_back(path, {f"/lost+found/#{docs}/a.txt": b"", f"/lost+found/#{docs}/deep/d.txt": b""})
    assert list(back.values()) == [files["/docs/a.txt"], files["/docs/deep/d.txt"]]


# -- command line ---------------------------------------------------------------------------------------

def test_cli_exit_codes_and_json(store: tuple[Path, dict[str, bytes]], run: Run) -> None:
    path, _files = store
    r = run("fsck", "--help")
    assert r.returncode == 0 and "Exit status: 0 clean" in r.stdout and "--repair" in r.stdout
    r = run("fsck", path)
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr
    meta = MetaStore(path / "meta.lmdb")
    with meta.write() as t:
        t.bump("chunks", 3)
    meta.close()
    r = run("fsck", path, "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["counts"] == {"counter": 1} and out["remaining"] == 1 and out["exit_code"] == 1
    assert out["problems"][0]["path"] == "chunks"
    r = run("fsck", path, "--repair")
    assert r.returncode == 0 and "REPAIRED" in r.stdout and "1 repaired, 0 remain" in r.stdout
    assert run("fsck", path).returncode == 0


def test_cli_misuse(tmp_path: Path, store: tuple[Path, dict[str, bytes]], run: Run) -> None:
    path, _files = store
    r = run("fsck", tmp_path / "nowhere")
    assert r.returncode == 2 and "no such store" in r.stderr
    (tmp_path / "plain").mkdir()
    r = run("fsck", tmp_path / "plain")
    assert r.returncode == 2 and "not a thermofs store" in r.stderr
    r = run("fsck")
    assert r.returncode == 2 and "Missing argument" in r.stderr
    record = json.loads((path / "thermofs.json").read_text())
    (path / "thermofs.json").write_text(json.dumps({**record, "version": 99}))
    r = run("fsck", path)
    assert r.returncode == 2 and "format version 99" in r.stderr
    (path / "thermofs.json").write_text(json.dumps(record))


def test_store_directory_without_write_permission_is_checked(store: tuple[Path, dict[str, bytes]],
                                                             run: Run) -> None:
    """The lock is a flock on the directory: it needs no write permission, so neither does fsck."""
    path, _files = store
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    (path / "lock").unlink(missing_ok=True)
    os.chmod(path, 0o555)  # readable, not writable
    try:
        r = run("fsck", path, prefix=UNPRIVILEGED)
        assert r.returncode == 0 and "clean" in r.stdout, (r.stdout, r.stderr)
        assert not (path / "lock").exists()  # nothing was written
    finally:
        os.chmod(path, 0o700)
