"""The open-file data path: buffers, chunks in flight to the encoder, staged frames and the cache."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.fs.openfile import OpenFile
from thermofs.fs.store import StoreConfig, mkfs

CS = 4096


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[OpenVolume]:
    mkfs(tmp_path / "store", StoreConfig(chunk_size=CS, hot_codec="zstd:1"))
    p = open_volume(tmp_path / "store")
    yield p
    p.close()


def test_cache_never_serves_an_older_version_after_a_chunk_is_completed(parts: OpenVolume) -> None:
    v = parts.volume
    fh, _inode = v.create("/f", 0o644, 0, 0)
    old = os.urandom(3 * CS)
    v.write(fh, 0, old)
    v.fsync(fh)  # committed: reads now go through the cache
    assert v.read(fh, 0, 3 * CS) == old
    # Rewrite the tail of chunk 1: the write loads (and may cache) the old content, and the chunk,
    # full again, moves on to the encoder at once.
    new = old[CS:CS + 1000] + os.urandom(CS - 1000)
    v.write(fh, CS + 1000, new[1000:])
    for _ in range(3):
        v.write(fh, 10 * CS, b"x")  # later writes reap the encoder's results
        assert v.read(fh, CS, CS) == new
    v.fsync(fh)
    assert v.read(fh, 0, 3 * CS) == old[:CS] + new + old[2 * CS:]
    v.release(fh)


def test_reads_see_chunks_in_flight_and_staged(parts: OpenVolume) -> None:
    v = parts.volume
    fh, _inode = v.create("/g", 0o644, 0, 0)
    data = os.urandom(64 * CS)
    for off in range(0, len(data), 8 * CS):
        v.write(fh, off, data[off:off + 8 * CS])
        assert v.read(fh, 0, off + 8 * CS) == data[:off + 8 * CS]
    v.release(fh)
    fh = v.open(v.resolve("/g"))
    assert v.read(fh, 0, len(data)) == data
    v.release(fh)


def test_reads_decoding_outside_the_lock_never_cache_or_return_a_stale_chunk(
        parts: OpenVolume, monkeypatch: pytest.MonkeyPatch) -> None:
    """Committed chunks are decoded without the file's lock. Slow that decode down so that writes
    and commits land inside it: a reader returns whole versions, never older than the one current
    when it started, and the cache never keeps an old version (the final reads would show it)."""
    slow_read = OpenFile._read_committed

    def read_committed(self: OpenFile, index: int) -> bytes:
        time.sleep(0.002)
        return slow_read(self, index)

    monkeypatch.setattr(OpenFile, "_read_committed", read_committed)
    v = parts.volume
    chunks = 8
    fh, _inode = v.create("/race", 0o644, 0, 0)

    def content(index: int, version: int) -> bytes:
        return bytes([index, version % 256]) * (CS // 2)

    done = [0] * chunks  # the version each chunk's last finished write left
    started = [0] * chunks  # the newest version whose write has begun
    v.write(fh, 0, b"".join(content(i, 0) for i in range(chunks)))
    v.fsync(fh)
    stop = threading.Event()
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            i = rng.randrange(chunks)
            floor = done[i]
            got = v.read(fh, i * CS, CS)
            version = got[1]
            if got != content(i, version) or not floor <= version <= started[i]:
                errors.append(f"chunk {i}: version {version}, expected {floor}..{started[i]}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    rng = random.Random(0)
    try:
        for version in range(1, 120):
            i = rng.randrange(chunks)
            started[i] = version
            v.write(fh, i * CS, content(i, version))
            done[i] = version
            if version % 3 == 0:
                v.fsync(fh)  # committed: later reads decode from LMDB, outside the lock
            time.sleep(0.001)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    for i in range(chunks):
        assert v.read(fh, i * CS, CS) == content(i, done[i]), i
    v.release(fh)
    fh = v.open(v.resolve("/race"))
    assert v.read(fh, 0, chunks * CS) == b"".join(content(i, done[i]) for i in range(chunks))
    v.release(fh)
