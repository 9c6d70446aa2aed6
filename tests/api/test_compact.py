"""Compaction: after overwrites and deletes every file reads back byte for byte, the segments shrink and
the garbage goes to zero; interrupted anywhere (stop event, exception, kill -9) nothing is lost and a later
run finishes; frames a crash left are reclaimed; it runs next to writers sharing the same objects
(tests/mount/test_compact.py: the command, on a mount and offline)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.fs import compaction as compact_mod
from thermofs.fs.compaction import CompactReport, compact
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.tools.fsck import fsck

CS = 4096
UID, GID = os.getuid(), os.getgid()


def run_compact(parts: OpenVolume, **kwargs: Any) -> CompactReport:
    chunks = parts.volume.chunks
    return compact(parts.meta, chunks, **kwargs)


def write(parts: OpenVolume, path: str, data: bytes) -> None:
    v = parts.volume
    try:
        ino = v.resolve(path)
        fh = v.open(ino, truncate=True)
    except Exception:
        fh, _inode = v.create(path, 0o644, UID, GID)
    v.write(fh, 0, data)
    v.release(fh)


def read(parts: OpenVolume, path: str) -> bytes:
    v = parts.volume
    fh = v.open(v.resolve(path))
    try:
        return v.read(fh, 0, 1 << 22)
    finally:
        v.release(fh)


def apparent(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "segments").glob("*.seg"))


def churned_store(store: Path, seed: int = 3) -> dict[str, bytes]:
    """Three sessions (three segments) of writes, overwrites and deletes; returns what must be there."""
    mkfs(store, StoreConfig(chunk_size=CS))
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for session in range(3):
        parts = open_volume(store)
        try:
            for i in range(12):
                name = f"/f{i}"
                if session and i % 3 == 0 and name in files:
                    parts.volume.unlink(name)
                    del files[name]
                    continue
                if session and i % 3 == 2:
                    continue  # untouched: its frames stay live in an old segment
                size = rng.randrange(2 * CS, 12 * CS)
                data = rng.randbytes(size) if i % 2 else (f"{name} {session} ".encode() * size)[:size]
                write(parts, name, data)
                files[name] = data
        finally:
            parts.close()
    return files


def assert_files(store: Path, files: dict[str, bytes]) -> None:
    parts = open_volume(store)
    try:
        assert {p: read(parts, p) for p in files} == files
        assert {n for n, _i, _k in parts.volume.readdir(1)} - {".", ".."} == {p[1:] for p in files}
    finally:
        parts.close()


def assert_clean(store: Path) -> None:
    report = fsck(store)
    assert report.problems == [] and report.notes == [], (report.problems, report.notes)


def garbage(store: Path) -> int:
    parts = open_volume(store)
    try:
        return parts.volume.counters().get("garbage_bytes", 0)
    finally:
        parts.close()


def test_compact_reclaims_and_keeps_every_byte(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = churned_store(store)
    assert garbage(store) > 0
    before = apparent(store)
    parts = open_volume(store)
    seen: list[tuple[int, int]] = []
    try:
        report = run_compact(parts, progress=lambda d, t: seen.append((d, t)), min_garbage=0.0)
    finally:
        parts.close()
    # Removed: the rewritten segments and any that were already all dead (offline, nothing else deletes them).
    assert report.frames_moved > 0 and report.segments_removed >= report.segments_rewritten >= 1
    assert not report.interrupted
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0  # progress from 0 to the total
    assert apparent(store) < before
    assert garbage(store) == 0
    assert_files(store, files)
    assert_clean(store)
    # Nothing left to do: a second run moves nothing.
    parts = open_volume(store)
    try:
        again = run_compact(parts, min_garbage=0.0)
    finally:
        parts.close()
    assert again.frames_moved == 0 and again.segments_removed == 0


def test_threshold_leaves_mostly_live_segments(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = churned_store(store)
    parts = open_volume(store)
    try:
        report = run_compact(parts, min_garbage=0.99)
    finally:
        parts.close()
    assert report.frames_moved == 0
    assert_files(store, files)


def test_stop_event_and_injected_failure_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    files = churned_store(store)
    monkeypatch.setattr(compact_mod, "BATCH_BYTES", 2 * CS)
    # 1. Stopped after the first batch.
    stop = threading.Event()
    parts = open_volume(store)
    try:
        report = run_compact(parts, progress=lambda d, t: stop.set() if d else None, stop=stop, min_garbage=0.0)
    finally:
        parts.close()
    assert report.interrupted and report.frames_moved > 0
    assert_files(store, files)
    # 2. An exception after the frames of the third batch were appended, before their commit.
    parts = open_volume(store)
    calls = 0
    real_append = parts.segments.append

    def failing_append(frames: Sequence[Any]) -> list[tuple[int, int]]:
        nonlocal calls
        calls += 1
        out = real_append(frames)
        if calls == 3:
            raise OSError("injected failure after append")
        return out

    monkeypatch.setattr(parts.segments, "append", failing_append)
    try:
        with pytest.raises(OSError, match="injected"):
            run_compact(parts, min_garbage=0.0)
    finally:
        parts.close()
    assert_files(store, files)
    # The uncommitted copies are frames nothing points at: a note for fsck, reclaimed by the next run.
    assert any("left by a crash" in n for n in fsck(store).notes)
    parts = open_volume(store)
    try:
        report = run_compact(parts, min_garbage=0.0)
    finally:
        parts.close()
    assert report.unaccounted_bytes > 0 and not report.interrupted
    assert garbage(store) == 0
    assert_files(store, files)
    assert_clean(store)


def test_frames_left_by_a_crash_are_reclaimed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = churned_store(store)
    parts = open_volume(store)
    crash_seg = parts.segments.active_id
    parts.segments.append([b"x" * 10_000, b"y" * 7_000])  # appended, never committed
    parts.segments.sync()
    parts.close()
    assert garbage(store) >= 0
    parts = open_volume(store)
    try:
        report = run_compact(parts)
    finally:
        parts.close()
    assert report.unaccounted_bytes == 17_000
    assert not (store / "segments" / f"{crash_seg:08d}.seg").exists()
    assert_files(store, files)
    assert fsck(store).notes == []


KILLER = r"""
import os, signal, sys
from pathlib import Path
from thermofs.daemon.assembly import open_volume
from thermofs.fs import compaction as c

where = sys.argv[2]
c.BATCH_BYTES = 2 * 4096
parts = open_volume(Path(sys.argv[1]))
segs, meta = parts.segments, parts.meta
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if where == "after-append":  # copies appended (not yet synced: sync points do that), pointers not swapped
    real = segs.append
    segs.append = lambda frames: (real(frames), die())
elif where == "after-swap":  # some pointers swapped, old segments not deleted
    progress = lambda done, total: die() if done else None
elif where == "while-deleting":  # first segment's record forgotten, its file not yet deleted
    segs.remove = lambda seg: die()
kw = {"progress": progress} if where == "after-swap" else {}
ch = parts.volume.chunks
c.compact(meta, ch, min_garbage=0.0, **kw)
print("finished without being killed")
"""


@pytest.mark.parametrize("where", ["after-append", "after-swap", "while-deleting"])
def test_kill_9_mid_compaction(tmp_path: Path, repo: Path, where: str) -> None:
    store = tmp_path / "store"
    files = churned_store(store)
    r = subprocess.run([sys.executable, "-c", KILLER, str(store), where], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(repo)}, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    # The store is consistent (at most frames nothing points at), every byte is there.
    report = fsck(store)
    assert report.problems == [], report.problems
    assert_files(store, files)
    parts = open_volume(store)
    try:
        run_compact(parts, min_garbage=0.0)
    finally:
        parts.close()
    assert garbage(store) == 0
    assert_files(store, files)
    assert_clean(store)


def test_concurrent_writers_and_in_flight_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction inside a live volume: threads overwrite and read files through the same objects while
    it copies their chunks; a file whose frames are appended but not yet committed keeps them."""
    store = tmp_path / "store"
    files = churned_store(store)
    monkeypatch.setattr(compact_mod, "BATCH_BYTES", 3 * CS)
    parts = open_volume(store)
    parts.segments.segment_bytes = 8 * CS  # this session's segments roll quickly
    v = parts.volume
    # An open file with chunks appended to segments of this session but not committed.
    pending = random.Random(9).randbytes(20 * CS)
    fh, _inode = v.create("/pending", 0o644, UID, GID)
    v.write(fh, 0, pending)
    deadline = 500
    while parts.segments.active_id < parts.segments.first_id + 2 and deadline:
        threading.Event().wait(0.01)  # the encoder threads append the frames
        deadline -= 1
    assert parts.segments.active_id >= parts.segments.first_id + 2
    models = dict(files)
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(k: int) -> None:
        rng = random.Random(k)
        try:
            while not done.is_set():
                name = rng.choice([p for p in files if int(p[2:]) % 4 == k])
                data = rng.randbytes(rng.randrange(CS, 6 * CS))
                with lock:
                    write(parts, name, data)
                    models[name] = data
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        rng = random.Random(99)
        try:
            while not done.is_set():
                name = rng.choice(sorted(files))
                with lock:
                    want = models[name]
                    got = read(parts, name)
                assert got == want, name
                got = read(parts, rng.choice([p for p in sorted(files) if int(p[2:]) % 4 == 3]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        reports = [run_compact(parts, min_garbage=0.0) for _ in range(3)]
    finally:
        done.set()
        for t in threads:
            t.join()
    try:
        assert not errors, errors
        assert sum(r.frames_moved for r in reports) > 0
        v.release(fh)  # the pending file commits now: its frames must still be there
        assert read(parts, "/pending") == pending
        assert {p: read(parts, p) for p in files} == models
    finally:
        parts.close()
    models["/pending"] = pending
    assert_files(store, models)
    assert fsck(store).problems == []
