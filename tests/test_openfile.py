"""The open-file data path: buffers, chunks in flight to the encoder, staged frames and the cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from thermofs.fs.mount import Parts, open_volume
from thermofs.fs.store import StoreConfig, mkfs

CS = 4096


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    mkfs(tmp_path / "store", StoreConfig(chunk_size=CS, hot_codec="zstd:1"))
    p = open_volume(tmp_path / "store")
    yield p
    p.close()


def test_cache_never_serves_an_older_version_after_a_chunk_is_completed(parts: Parts) -> None:
    v = parts.volume
    fh, inode = v.create("/f", 0o644, 0, 0)
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


def test_reads_see_chunks_in_flight_and_staged(parts: Parts) -> None:
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
