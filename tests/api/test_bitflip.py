"""Bit flips in data.mdb: 200 random flips of one to three bits, each on a fresh copy of a populated
store. For each: every read through the volume is exact or fails with EIO (never wrong bytes, never a
missing name or a hole where data was), fsck reports every flip that changed a record, and
``fsck --repair`` never loses a chunk that read correctly before it.

Each flip is checked in a forked child, so that a flip that made LMDB fault would fail this test
instead of killing the test run; two children run at once. THERMOFS_TEST_FLIPS=2000 runs a longer
campaign (it passed 3 runs of 2,000).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from thermofs.codecs import CodecError
from thermofs.daemon.assembly import open_volume
from thermofs.daemon.errnos import errno_of
from thermofs.daemon.options import MountOptions
from thermofs.fs.errors import FsError, StoreError
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.tools.fsck import fsck

CS = 4096
FLIPS = int(os.environ.get("THERMOFS_TEST_FLIPS", "200"))
SEED = 20261130
UID, GID = os.getuid(), os.getgid()


def build(store: Path) -> dict[str, Any]:
    """A populated volume: nested directories, inline files, multi-chunk files with holes, a hard link,
    symlinks, xattrs, a file unlinked nowhere. Returns what it holds: path -> content and kind."""
    mkfs(store, StoreConfig(chunk_size=CS))
    rng = random.Random(5)
    # Durable commits: no state pinned between sync points, so the data file stays compact and a
    # random flip lands on a page in use as often as it would in a store that lived a while.
    parts = open_volume(store, options=MountOptions(cooler=False, sync_close=True))
    v = parts.volume
    files: dict[str, bytes] = {}
    dirs = ["/", "/a", "/a/b", "/c", "/c/d", "/c/d/e"]
    try:
        for d in dirs[1:]:
            v.mkdir(d, 0o755, UID, GID)
        for i in range(48):
            d = dirs[i % len(dirs)].rstrip("/")
            path = f"{d}/file{i:02d}"
            kind = i % 4
            if kind == 0:
                data = f"small {i}\n".encode() * (1 + i)  # inline
            elif kind == 1:
                data = rng.randbytes(CS * (1 + i % 5) + i)  # raw frames in a segment
            elif kind == 2:
                data = (f"text line {i} " * 40 + "\n").encode() * (3 + i % 9)
            else:
                data = b"\0" * CS * 2 + rng.randbytes(CS // 2)  # starts with holes
            fh, _inode = v.create(path, 0o644, UID, GID)
            v.write(fh, 0, data)
            v.release(fh)
            files[path] = data
        v.link(v.resolve("/a/file01"), "/c/linked")
        files["/c/linked"] = files["/a/file01"]
        v.symlink("/c/d/sym", "../../a/file02", UID, GID)
        v.setxattr(v.resolve("/a/b/file02"), "user.tag", b"some value")
    finally:
        parts.close()
    return {"files": files, "dirs": dirs, "symlinks": {"/c/d/sym": "../../a/file02"},
            "xattrs": {"/a/b/file02": {"user.tag": b"some value"}}}


def records(path: Path) -> set[tuple[bytes, bytes, bytes]] | None:
    """Every (sub-database, key, value) of an LMDB environment, read raw; None if unreadable."""
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=32, subdir=True)
    except lmdb.Error:
        return None
    try:
        out = set()
        with env.begin() as txn:
            names = [bytes(k) for k, _v in txn.cursor()]
            for name in names:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.Error:
                    out.add((b"<main>", name, b""))
                    continue
                for k, v in txn.cursor(db=db):
                    out.add((name, bytes(k), bytes(v)))
        return out
    except lmdb.Error:
        return None
    finally:
        env.close()


def outcome(fn: Any) -> tuple[str, Any]:
    """("ok", value) or ("errno", code) of a volume call."""
    try:
        return "ok", fn()
    except (FsError, CodecError) as e:
        return "errno", errno_of(e)


def survey(store: Path, content: dict[str, Any]) -> tuple[list[str], dict[tuple[int, int], bytes]]:
    """Read everything through the volume: the wrong answers found, and the chunks that read right
    (by inode and chunk index). A volume that refuses to open is no wrong answer."""
    wrong: list[str] = []
    good: dict[tuple[int, int], bytes] = {}
    try:
        parts = open_volume(store, options=MountOptions(cooler=False))
    except (StoreError, FsError):
        return [], {}
    v = parts.volume

    def check(what: str, result: tuple[str, Any], want: Any) -> bool:
        kind, value = result
        if kind == "ok" and value != want:
            wrong.append(f"{what}: wrong value")
        elif kind == "errno" and value != errno.EIO:
            wrong.append(f"{what}: {errno.errorcode.get(value, value)} instead of the value or EIO")
        return kind == "ok" and value == want

    try:
        for d in content["dirs"]:
            want_names = {p.rsplit("/", 1)[1] for p in [*content["files"], *content["symlinks"]]
                          if p.rsplit("/", 1)[0] == d.rstrip("/")}
            want_names |= {sub.rsplit("/", 1)[1] for sub in content["dirs"][1:]
                           if sub.rsplit("/", 1)[0] == d.rstrip("/")}
            check(f"readdir {d}", outcome(lambda d=d: sorted(n for n, _i, _k in v.readdir(v.resolve(d))
                                                           if n not in (".", ".."))), sorted(want_names))
        for path, target in content["symlinks"].items():
            check(f"readlink {path}", outcome(lambda path=path: v.readlink(v.resolve(path))), target)
        for path, attrs in content["xattrs"].items():
            for name, value in attrs.items():
                check(f"getxattr {path}", outcome(lambda path=path, name=name: v.getxattr(v.resolve(path), name)),
                      value)
        for path, data in content["files"].items():
            kind, ino = outcome(lambda path=path: v.resolve(path))
            if kind != "ok":
                check(f"lookup {path}", (kind, ino), None)
                continue
            if not check(f"size {path}", outcome(lambda ino=ino: v.getattr(ino).size), len(data)):
                continue
            opened = outcome(lambda ino=ino: v.open(ino, writable=False))
            if opened[0] != "ok":
                check(f"open {path}", opened, None)
                continue
            fh = opened[1]
            try:
                for index in range(-(-len(data) // CS)):
                    want = data[index * CS:(index + 1) * CS]
                    result = outcome(lambda fh=fh, index=index: v.read(fh, index * CS, CS))
                    if check(f"read {path} chunk {index}", result, want):
                        good[(ino, index)] = want
            finally:
                v.release(fh)
    finally:
        try:
            parts.close()
        except (FsError, CodecError):
            pass
    return wrong, good


def reread(store: Path, good: dict[tuple[int, int], bytes]) -> list[str]:
    """The chunks that read right before a repair and do not now."""
    lost: list[str] = []
    if not good:
        return lost
    try:
        parts = open_volume(store, options=MountOptions(cooler=False))
    except (StoreError, FsError) as e:
        return [f"the volume no longer opens after the repair: {e}"]
    v = parts.volume
    try:
        for (ino, index), want in sorted(good.items()):
            opened = outcome(lambda ino=ino: v.open(ino, writable=False))
            if opened[0] != "ok":
                lost.append(f"inode {ino}: {opened}")
                continue
            got = outcome(lambda fh=opened[1], index=index: v.read(fh, index * CS, CS))
            v.release(opened[1])
            if got != ("ok", want):
                lost.append(f"inode {ino} chunk {index}: {got[0]} {got[1] if got[0] == 'errno' else ''}")
    finally:
        try:
            parts.close()
        except (FsError, CodecError):
            pass  # hints the tracker could not write into damaged metadata
    return lost


def check_flip(pristine: Path, work: Path, content: dict[str, Any], seed: int) -> dict[str, Any]:
    """Flip 1-3 bits of a copy's data.mdb and check everything; returns a JSON-able verdict."""
    rng = random.Random(seed)
    shutil.copytree(pristine, work)
    data = work / "meta.lmdb" / "data.mdb"
    size = data.stat().st_size
    flips = [(rng.randrange(size), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
    with open(data, "r+b") as fh:
        for pos, bit in flips:
            fh.seek(pos)
            byte = fh.read(1)[0]
            fh.seek(pos)
            fh.write(bytes([byte ^ (1 << bit)]))
    verdict: dict[str, Any] = {"seed": seed, "flips": flips, "problems": []}
    try:
        report = fsck(work)
        found = bool(report.problems)
    except StoreError as e:
        found, report = True, None
        verdict["refused"] = str(e)
    # LMDB itself may fault reading a structure fsck found damaged: compare records only otherwise.
    structure = report is None or any(p.kind == "metadata-damaged" for p in report.problems)
    changed = structure or records(work / "meta.lmdb") != records(pristine / "meta.lmdb")
    verdict["changed"] = changed
    if changed and not found:
        verdict["problems"].append("fsck found nothing, but a record changed")
    wrong, good = survey(work, content)
    verdict["problems"] += wrong
    verdict["good_chunks"] = len(good)
    if report is not None and report.problems:
        try:
            fsck(work, repair=True)
        except StoreError as e:
            verdict["repair_refused"] = str(e)
        verdict["problems"] += [f"repair lost a chunk that read right: {x}" for x in reread(work, good)]
    return verdict


def run_child(pristine: Path, work: Path, content: dict[str, Any], seed: int) -> tuple[int, int]:
    """Fork a child that checks one flip and writes its verdict to ``work``.json."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            verdict = check_flip(pristine, work, content, seed)
        except BaseException:
            verdict = {"seed": seed, "problems": ["unexpected exception: " + traceback.format_exc()]}
        try:
            Path(f"{work}.json").write_text(json.dumps(verdict))
        except BaseException:
            code = 1
        os._exit(code)
    return pid, seed


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    store = tmp_path / "pristine"
    yield store, build(store)


def test_bit_flips_in_data_mdb_are_exact_or_eio(tmp_path: Path, populated: tuple[Path, dict[str, Any]]) -> None:
    pristine, content = populated
    wrong, good = survey(pristine, content)
    assert wrong == [] and good
    total_chunks = len(good)
    seeds = [SEED + i for i in range(FLIPS)]
    running: dict[int, int] = {}
    failures: list[str] = []
    done = changed = degraded = 0
    while seeds or running:
        while seeds and len(running) < 2:
            seed = seeds.pop(0)
            pid, _ = run_child(pristine, tmp_path / f"flip{seed}", content, seed)
            running[pid] = seed
        pid, status = os.waitpid(-1, 0)
        seed = running.pop(pid)
        done += 1
        result = tmp_path / f"flip{seed}.json"
        if os.WIFSIGNALED(status) or not result.exists():
            failures.append(f"seed {seed}: the check died ({status})")
            continue
        verdict = json.loads(result.read_text())
        changed += bool(verdict.get("changed"))
        degraded += verdict.get("good_chunks", 0) < total_chunks
        if verdict["problems"]:
            failures.append(f"seed {seed}, flips {verdict.get('flips')}: " + "; ".join(verdict["problems"][:5]))
        shutil.rmtree(tmp_path / f"flip{seed}", ignore_errors=True)
    assert done == FLIPS
    assert not failures, f"{len(failures)} of {FLIPS} flips:\n" + "\n".join(failures)
    # Not vacuous: many flips changed a record, and many made some chunk unreadable (EIO).
    print(f"{changed} of {FLIPS} flips changed a record; {degraded} made some chunk read EIO")
    assert changed >= FLIPS // 10 and degraded >= FLIPS // 20


def test_the_flip_check_catches_a_wrong_answer(tmp_path: Path, populated: tuple[Path, dict[str, Any]]) -> None:
    """The harness itself: a store changed behind the checksums' back (a record re-sealed with a wrong
    size) must be caught as a wrong answer, so the fuzz test above can fail."""
    pristine, content = populated
    from thermofs.fs.meta import MetaStore

    work = tmp_path / "resealed"
    shutil.copytree(pristine, work)
    meta = MetaStore(work / "meta.lmdb")
    with meta.write() as t:
        ino = t.lookup(1, b"file00")
        assert ino is not None
        inode = t.get_inode(ino)
        assert inode is not None and stat.S_ISREG(inode.mode)
        t.put_inode(inode.evolve(size=inode.size + 1))
    meta.close()
    wrong, _good = survey(work, content)
    assert wrong == ["size /file00: wrong value"]
