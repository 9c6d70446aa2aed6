"""The volume API over a real store (mkfs + open_volume), without FUSE: data, namespace, counters."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from thermofs.codecs.frame import HEADER_SIZE
from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.fs.errors import (
    CorruptChunk,
    Exists,
    FileTooBig,
    InvalidArgument,
    IsADir,
    NameTooLong,
    NoAttr,
    NotADir,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
)
from thermofs.fs.meta import INLINE_SEGMENT, ROOT_INO, ChunkEntry, Txn, chunk_totals
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.fs.volume import MAX_FILE_SIZE, XATTR_CREATE, XATTR_REPLACE, Volume

UID, GID = os.getuid(), os.getgid()
K4, K64 = 4 << 10, 64 << 10
CODECS = ["raw", "zstd:1", "zstd:19", "auto"]


# -- harness --------------------------------------------------------------------------------------------

@dataclass
class Vol:
    """A store opened through open_volume, which a test may close and reopen."""

    store: Path
    parts: OpenVolume
    open_kwargs: dict[str, int] = field(default_factory=dict)
    closed: bool = False

    @property
    def v(self) -> Volume:
        return self.parts.volume

    @property
    def chunk_size(self) -> int:
        return self.parts.config.chunk_size

    def reopen(self) -> None:
        """Close every part (flushing buffered data) and build them again from the store."""
        self.parts.close()
        self.parts = open_volume(self.store, **self.open_kwargs)

    def close(self) -> None:
        if not self.closed:
            self.parts.close()
            self.closed = True

    def counters(self) -> dict[str, int]:
        return self.v.counters()

    def chunk_map(self, ino: int) -> dict[int, ChunkEntry]:
        with self.parts.meta.read() as t:
            return dict(t.chunks_of(ino))

    def create(self, path: str, data: bytes = b"", mode: int = 0o644) -> int:
        """Create ``path`` holding ``data``, closed again; return its inode number."""
        fh, inode = self.v.create(path, mode, UID, GID)
        if data:
            assert self.v.write(fh, 0, data) == len(data)
        self.v.release(fh)
        return inode.ino

    def read_all(self, ino: int) -> bytes:
        fh = self.v.open(ino)
        try:
            return self.v.read(fh, 0, self.v.getattr(ino).size + 4096)
        finally:
            self.v.release(fh)

    def read_path(self, path: str) -> bytes:
        return self.read_all(self.v.resolve(path))


MakeVol = Callable[..., Vol]


@pytest.fixture
def make_vol(tmp_path: Path) -> Iterator[MakeVol]:
    vols: list[Vol] = []

    def factory(chunk_size: int = K4, hot_codec: str = "auto", **open_kwargs: int) -> Vol:
        store = tmp_path / f"store{len(vols)}"
        mkfs(store, StoreConfig(chunk_size=chunk_size, hot_codec=hot_codec))
        vol = Vol(store, open_volume(store, **open_kwargs), open_kwargs)
        vols.append(vol)
        return vol

    yield factory
    for vol in vols:
        vol.close()


@pytest.fixture
def vol(make_vol: MakeVol) -> Vol:
    return make_vol()


def text_data(size: int, rng: random.Random) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b"chunk", b"frame", b"thermofs", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def some_data(size: int, rng: random.Random) -> bytes:
    """Random, compressible, zero or single-byte data: every kind the volume treats differently."""
    kind = rng.choice(["random", "text", "text", "zeros", "byte"])
    if kind == "random":
        return rng.randbytes(size)
    if kind == "text":
        return text_data(size, rng)
    if kind == "zeros":
        return bytes(size)
    return bytes([rng.randrange(1, 256)]) * size


def segment_bytes(vol: Vol) -> int:
    """Frame bytes of the segment files (punched-out holes included, headers not): all frames ever
    appended."""
    segments = vol.parts.segments
    return sum(segments.frame_bytes(seg) for seg in segments.segment_ids())


def assert_consistent(vol: Vol) -> dict[str, int]:
    """The running totals equal what they total, and no chunk holds data past its file's end."""
    cs = vol.chunk_size
    expected = {"chunks": 0, "stored_bytes": 0, "hot_chunks": 0, "cold_chunks": 0, "logical_bytes": 0,
                "files": 0}
    codecs: dict[str, int] = {}
    inline_bytes = 0
    with vol.parts.meta.read() as t:
        counters = t.counters()
        garbage = t.garbage_by_segment()
        inodes = {i.ino: i for i in t.inodes()}
        for inode in inodes.values():
            if inode.nlink > 0 and not stat.S_ISDIR(inode.mode):
                expected["files"] += 1
                if stat.S_ISREG(inode.mode):
                    expected["logical_bytes"] += inode.size
            for index, e in t.chunks_of(inode.ino):
                assert stat.S_ISREG(inode.mode)
                # A chunk entry never holds bytes past the end of the file, nor more than a chunk.
                assert 0 < e.raw_len <= min(cs, inode.size - index * cs), (inode, index, e)
                if e.segment == INLINE_SEGMENT:  # small frames live in LMDB, next to their entry
                    frame = t.get_inline(inode.ino, index)
                    assert frame is not None and len(frame) == e.frame_len
                    inline_bytes += e.frame_len
                for name, value in chunk_totals(e).items():
                    totals = codecs if name.startswith("codec/") else expected
                    totals[name] = totals.get(name, 0) + value
        # No chunk map entry belongs to an inode that does not exist.
        with vol.parts.meta.env.begin() as raw_txn:
            owners = {int.from_bytes(k[:8], "big") for k, _ in raw_txn.cursor(db=vol.parts.meta.dbs["chunks"])}
        assert owners <= set(inodes)
    assert {k: counters.get(k, 0) for k in expected} == expected
    assert {k: v for k, v in counters.items() if k.startswith("codec/") and v} == {
        k: v for k, v in codecs.items() if v}
    assert counters.get("garbage_bytes", 0) == sum(garbage.values())
    # Every byte appended to a segment is either a live frame or accounted garbage.
    assert segment_bytes(vol) == (counters.get("stored_bytes", 0) - inline_bytes
                                  + counters.get("garbage_bytes", 0))
    return counters


# -- data: a random sequence of writes, truncates and reads against a bytearray -------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk_size", [K4, K64], ids=["4K", "64K"])
@pytest.mark.parametrize("codec", CODECS)
def test_random_io_matches_model(make_vol: MakeVol, codec: str, chunk_size: int, seed: int) -> None:
    vol = make_vol(chunk_size=chunk_size, hot_codec=codec)
    rng = random.Random(f"{codec}-{chunk_size}-{seed}")
    limit = 5 * chunk_size + 123
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    ino = inode.ino
    model = bytearray()
    ops = ["write", "write", "write", "read", "read", "truncate", "truncate_closed", "flush", "reopen",
           "open_trunc"]
    for _ in range(60):
        op = rng.choice(ops)
        if op == "write":
            offset = rng.randrange(0, limit)
            size = rng.choice([1, rng.randrange(1, 200), rng.randrange(1, 2 * chunk_size + 7), chunk_size])
            data = some_data(size, rng)
            assert vol.v.write(fh, offset, data) == size
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset:offset + size] = data
        elif op == "read":
            offset = rng.randrange(0, limit)
            size = rng.randrange(0, 3 * chunk_size)
            assert vol.v.read(fh, offset, size) == bytes(model[offset:offset + size])
        elif op in ("truncate", "truncate_closed"):
            size = rng.choice([0, rng.randrange(0, limit), len(model) // 2, len(model) + 1000])
            if op == "truncate_closed":
                vol.v.release(fh)
            vol.v.truncate(ino, size)
            if op == "truncate_closed":
                fh = vol.v.open(ino)
            if size < len(model):
                del model[size:]
            else:
                model.extend(bytes(size - len(model)))
        elif op == "flush":
            vol.v.flush(fh)
            assert_consistent(vol)
        elif op == "open_trunc":  # O_TRUNC on a second handle while the first stays open
            fh2 = vol.v.open(ino, truncate=True)
            del model[:]
            if rng.random() < 0.5:
                vol.v.release(fh2)
            else:
                vol.v.release(fh)
                fh = fh2
        else:
            vol.v.release(fh)
            vol.reopen()
            fh = vol.v.open(ino)
        assert vol.v.getattr(ino).size == len(model)
    assert vol.v.read(fh, 0, len(model) + 1) == bytes(model)
    vol.v.release(fh)
    counters = assert_consistent(vol)
    assert counters["logical_bytes"] == len(model) and counters["files"] == 1
    vol.reopen()
    assert vol.read_all(ino) == bytes(model)
    # All-zero chunks are holes: exactly the chunks holding a non-zero byte have an entry.
    cs = chunk_size
    nonzero = {i for i in range(-(-len(model) // cs)) if any(model[i * cs:(i + 1) * cs])}
    assert set(vol.chunk_map(ino)) == nonzero


# -- data: specific cases ---------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [K4, K64], ids=["4K", "64K"])
def test_write_past_end_leaves_a_hole_of_zeros(make_vol: MakeVol, chunk_size: int) -> None:
    vol = make_vol(chunk_size=chunk_size)
    fh, inode = vol.v.create("/sparse", 0o644, UID, GID)
    vol.v.write(fh, 0, b"head")
    offset = 3 * chunk_size + 5
    vol.v.write(fh, offset, b"tail")
    expected = b"head" + bytes(offset - 4) + b"tail"
    assert vol.v.getattr(inode.ino).size == offset + 4
    assert vol.v.read(fh, 0, 10 * chunk_size) == expected  # from the write buffers
    vol.v.release(fh)
    assert set(vol.chunk_map(inode.ino)) == {0, 3}
    assert vol.read_all(inode.ino) == expected  # from the chunk store
    assert vol.counters()["logical_bytes"] == offset + 4
    assert_consistent(vol)


def test_read_past_end_and_at_end(vol: Vol) -> None:
    ino = vol.create("/f", b"0123456789")
    fh = vol.v.open(ino)
    assert vol.v.read(fh, 10, 5) == b""
    assert vol.v.read(fh, 1000, 5) == b""
    assert vol.v.read(fh, 8, 100) == b"89"
    assert vol.v.read(fh, 3, 0) == b""
    vol.v.release(fh)


@pytest.mark.parametrize("chunk_size", [K4, K64], ids=["4K", "64K"])
@pytest.mark.parametrize("keep_open", [True, False], ids=["open", "closed"])
def test_truncate_down_then_up_reads_zeros(make_vol: MakeVol, chunk_size: int, keep_open: bool) -> None:
    vol = make_vol(chunk_size=chunk_size)
    rng = random.Random(1)
    data = text_data(2 * chunk_size + chunk_size // 2, rng)
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    ino = inode.ino
    vol.v.write(fh, 0, data)
    vol.v.flush(fh)
    if not keep_open:
        vol.v.release(fh)
    cut = chunk_size + 100
    vol.v.truncate(ino, cut)
    assert set(vol.chunk_map(ino)) == {0, 1}
    assert vol.chunk_map(ino)[1].raw_len == 100
    vol.v.truncate(ino, 3 * chunk_size)
    expected = data[:cut] + bytes(3 * chunk_size - cut)
    if keep_open:
        assert vol.v.read(fh, 0, 4 * chunk_size) == expected
        vol.v.release(fh)
    assert vol.read_all(ino) == expected
    vol.reopen()
    assert vol.read_all(ino) == expected
    assert vol.v.getattr(ino).size == 3 * chunk_size
    assert_consistent(vol)


def test_truncate_of_unflushed_data_then_extend_by_write(vol: Vol) -> None:
    cs = vol.chunk_size
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    vol.v.write(fh, 0, b"\xaa" * (3 * cs))  # only in write buffers
    vol.v.truncate(inode.ino, 10)
    vol.v.write(fh, 2 * cs, b"\xbb")
    expected = b"\xaa" * 10 + bytes(2 * cs - 10) + b"\xbb"
    assert vol.v.read(fh, 0, 4 * cs) == expected
    vol.v.release(fh)
    assert vol.read_all(inode.ino) == expected
    assert set(vol.chunk_map(inode.ino)) == {0, 2}
    assert_consistent(vol)


@pytest.mark.parametrize("extend", ["truncate", "write"])
def test_truncate_inside_an_unflushed_partial_chunk_then_extend(vol: Vol, extend: str) -> None:
    """Bytes cut off by a truncate never come back, also when they were only buffered."""
    cs = vol.chunk_size
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    vol.v.write(fh, 0, b"\xaa" * (cs + 300))  # chunk 1 holds 300 buffered bytes
    vol.v.truncate(inode.ino, cs + 100)
    if extend == "truncate":
        vol.v.truncate(inode.ino, cs + 1000)
    else:
        vol.v.write(fh, cs + 999, b"\xbb")
    expected = b"\xaa" * (cs + 100) + bytes(899) + (b"\x00" if extend == "truncate" else b"\xbb")
    assert vol.v.read(fh, 0, 3 * cs) == expected
    vol.v.release(fh)
    assert vol.read_all(inode.ino) == expected
    assert_consistent(vol)


def test_truncate_inside_a_short_dirty_buffer_keeps_dirty_accounting(vol: Vol) -> None:
    """Regression (found in d36a002): shrinking a buffer shorter than the new size added to the total."""
    cs = vol.chunk_size
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    vol.v.write(fh, 0, b"x" * 10)   # chunk 0 buffered: 10 bytes
    vol.v.write(fh, 2 * cs, b"y")   # the file now ends in chunk 2
    vol.v.truncate(inode.ino, 100)  # the new end lies in chunk 0, past its 10 buffered bytes
    vol.v.release(fh)
    assert vol.read_all(inode.ino) == b"x" * 10 + bytes(90)
    # Nothing is buffered any more, so the live total of buffered bytes must be back at zero (it is
    # what decides when writers are forced to flush).
    assert vol.v.live_stats().dirty_bytes == 0


@pytest.mark.parametrize("keep_open", [True, False], ids=["open", "closed"])
def test_no_file_grows_past_max_file_size(vol: Vol, keep_open: bool) -> None:
    """Regression: truncate -s $((2**63-4096)) was accepted and overflowed the signed 64-bit total of
    file bytes. Past MAX_FILE_SIZE a truncate or write is EFBIG and changes nothing; a write across
    it is cut short there, as the kernel does at a filesystem's maximum."""
    data = b"hello"
    ino = vol.create("/f", data)
    before = assert_consistent(vol)
    fh = vol.v.open(ino) if keep_open else None
    for size in (MAX_FILE_SIZE + 1, 2**63 - 4096, 2**64):
        with pytest.raises(FileTooBig):
            vol.v.truncate(ino, size)
    fh = fh or vol.v.open(ino)
    for offset in (MAX_FILE_SIZE, 2**63 - 4096):
        with pytest.raises(FileTooBig):
            vol.v.write(fh, offset, b"x")
    assert vol.v.getattr(ino).size == len(data)
    assert vol.v.read(fh, 0, 100) == data
    vol.v.release(fh)
    assert assert_consistent(vol) == before
    # Up to the limit itself is fine, and a write across it is short.
    fh = vol.v.open(ino)
    assert vol.v.write(fh, MAX_FILE_SIZE - 2, b"tail") == 2
    assert vol.v.getattr(ino).size == MAX_FILE_SIZE
    assert vol.v.read(fh, MAX_FILE_SIZE - 3, 10) == b"\0ta"
    vol.v.release(fh)
    vol.v.truncate(ino, len(data))
    vol.create("/g", b"other")
    vol.reopen()
    assert vol.read_path("/f") == data and vol.read_path("/g") == b"other"
    assert assert_consistent(vol)["logical_bytes"] == len(data) + len(b"other")


def test_truncate_to_zero_frees_every_chunk(vol: Vol) -> None:
    ino = vol.create("/f", text_data(5 * vol.chunk_size, random.Random(2)))
    stored = vol.counters()["stored_bytes"]
    assert vol.counters()["chunks"] == 5 and stored > 0
    vol.v.truncate(ino, 0)
    counters = assert_consistent(vol)
    assert counters["chunks"] == 0 and counters["stored_bytes"] == 0 and counters["logical_bytes"] == 0
    assert counters["garbage_bytes"] == stored
    assert vol.read_all(ino) == b""


@pytest.mark.parametrize("codec", ["zstd:1", "auto"])
def test_large_multi_chunk_write(make_vol: MakeVol, codec: str) -> None:
    """~6 MiB in 1 MiB writes and in one write: many chunks encoded (in parallel) and committed."""
    vol = make_vol(chunk_size=K64, hot_codec=codec)
    rng = random.Random(3)
    data = b"".join(some_data(K64 // 2, rng) for _ in range(2 * 6 * 16 + 1))  # ~6 MiB, odd tail
    fh, inode = vol.v.create("/big", 0o644, UID, GID)
    step = 1 << 20
    for offset in range(0, len(data), step):
        vol.v.write(fh, offset, data[offset:offset + step])
    assert vol.v.read(fh, 0, len(data) + 1) == data
    vol.v.release(fh)
    fh, other = vol.v.create("/big2", 0o644, UID, GID)
    vol.v.write(fh, 0, data)
    vol.v.release(fh)
    assert vol.read_all(other.ino) == data
    assert vol.read_all(inode.ino) == data
    assert_consistent(vol)
    vol.reopen()
    assert vol.read_all(inode.ino) == data


def test_dirty_limit_bounds_buffered_bytes_and_data_stays_right(make_vol: MakeVol) -> None:
    vol = make_vol(chunk_size=K4, dirty_bytes=32 << 10)
    rng = random.Random(4)
    model = bytearray()
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    for _ in range(200):
        piece = some_data(rng.randrange(1, 1500), rng)
        vol.v.write(fh, len(model), piece)
        model += piece
        # Buffered, not yet encoded bytes stay within the bound (plus the write in progress).
        assert vol.v.live_stats().dirty_bytes <= (32 << 10) + 1500
    assert vol.v.read(fh, 0, len(model)) == bytes(model)
    vol.v.release(fh)
    assert vol.v.live_stats().dirty_bytes == 0
    assert vol.read_all(inode.ino) == bytes(model)
    assert_consistent(vol)


def test_partial_overwrite_rewrites_only_touched_chunks(vol: Vol) -> None:
    cs = vol.chunk_size
    rng = random.Random(5)
    data = bytearray(text_data(4 * cs, rng))
    ino = vol.create("/f", bytes(data))
    before = vol.chunk_map(ino)
    garbage_before = vol.counters().get("garbage_bytes", 0)
    fh = vol.v.open(ino)
    patch = b"PATCHED!" * 20
    offset = 2 * cs - 40  # straddles chunks 1 and 2
    vol.v.write(fh, offset, patch)
    data[offset:offset + len(patch)] = patch
    vol.v.write(fh, 3 * cs + 7, b"x")  # one byte in chunk 3
    data[3 * cs + 7] = ord("x")
    vol.v.release(fh)
    after = vol.chunk_map(ino)
    assert after[0] == before[0]
    assert all(after[i] != before[i] for i in (1, 2, 3))
    assert vol.counters()["garbage_bytes"] == garbage_before + sum(before[i].frame_len for i in (1, 2, 3))
    assert vol.read_all(ino) == bytes(data)
    assert_consistent(vol)


def test_all_zero_chunks_are_stored_as_holes(vol: Vol) -> None:
    cs = vol.chunk_size
    data = bytes(cs) + b"\x01" * cs + bytes(cs) + bytes(cs // 2)
    ino = vol.create("/f", data)
    assert set(vol.chunk_map(ino)) == {1}
    assert vol.counters()["chunks"] == 1
    # Zeroing the one stored chunk turns it into a hole too: its frame becomes garbage.
    fh = vol.v.open(ino)
    vol.v.write(fh, cs, bytes(cs))
    vol.v.release(fh)
    assert vol.chunk_map(ino) == {}
    counters = assert_consistent(vol)
    assert counters["chunks"] == 0 and counters["stored_bytes"] == 0
    assert counters["logical_bytes"] == len(data)
    assert vol.read_all(ino) == bytes(len(data))


@pytest.mark.parametrize("codec", CODECS)
def test_stored_codec_follows_the_data(make_vol: MakeVol, codec: str) -> None:
    vol = make_vol(chunk_size=K64, hot_codec=codec)
    rng = random.Random(6)
    text_ino = vol.create("/text", text_data(K64, rng))
    random_ino = vol.create("/random", rng.randbytes(K64))
    assert vol.chunk_map(random_ino)[0].codec_id == 0
    text_entry = vol.chunk_map(text_ino)[0]
    if codec == "raw":
        assert text_entry.codec_id == 0 and text_entry.frame_len == HEADER_SIZE + K64
    else:
        assert text_entry.codec_id == 1 and text_entry.frame_len < K64 // 2
    counters = assert_consistent(vol)
    assert counters["codec/0/raw_bytes"] == K64 * (2 if codec == "raw" else 1)


def test_data_and_namespace_survive_close_and_reopen(vol: Vol) -> None:
    rng = random.Random(7)
    files = {f"/d{i}/f{j}": some_data(rng.randrange(0, 3 * vol.chunk_size), rng)
             for i in range(3) for j in range(4)}
    for i in range(3):
        vol.v.mkdir(f"/d{i}", 0o755, UID, GID)
    for path, data in files.items():
        vol.create(path, data)
    vol.v.symlink("/link", "d0/f0", UID, GID)
    vol.v.setxattr(vol.v.resolve("/d1/f1"), "user.tag", b"kept")
    # One file is still open, with unflushed data, when the volume closes.
    fh, inode = vol.v.create("/open", 0o600, UID, GID)
    vol.v.write(fh, 0, b"buffered")
    counters = vol.counters()
    vol.reopen()
    for path, data in files.items():
        assert vol.read_path(path) == data, path
    assert vol.read_all(inode.ino) == b"buffered"
    assert vol.v.readlink(vol.v.resolve("/link")) == "d0/f0"
    assert vol.v.getxattr(vol.v.resolve("/d1/f1"), "user.tag") == b"kept"
    assert sorted(n for n, _, _ in vol.v.readdir(ROOT_INO)) == [".", "..", "d0", "d1", "d2", "link", "open"]
    assert vol.v.getattr(inode.ino).mode == stat.S_IFREG | 0o600
    after = assert_consistent(vol)
    # A created file reaches LMDB (and the running totals) with its first commit: here, the close.
    assert counters["files"] == 13
    assert after["files"] == 14
    assert after["logical_bytes"] == sum(map(len, files.values())) + len(b"buffered")


def test_open_file_size_is_visible_before_flush(vol: Vol) -> None:
    fh, inode = vol.v.create("/f", 0o644, UID, GID)
    vol.v.write(fh, 100, b"abc")
    assert vol.v.getattr(inode.ino).size == 103
    assert vol.v.lookup_attr("/f").size == 103
    # Committed totals move only when data is flushed.
    assert vol.counters().get("logical_bytes", 0) == 0
    vol.v.flush(fh)
    assert vol.counters()["logical_bytes"] == 103
    vol.v.release(fh)


def test_two_handles_share_one_open_file(vol: Vol) -> None:
    ino = vol.create("/f", b"hello")
    a, b = vol.v.open(ino), vol.v.open(ino)
    vol.v.write(a, 5, b" world")
    assert vol.v.read(b, 0, 100) == b"hello world"
    vol.v.release(a)
    assert vol.v.read(b, 0, 100) == b"hello world"
    vol.v.release(b)
    with pytest.raises(InvalidArgument):
        vol.v.read(b, 0, 1)
    assert vol.read_all(ino) == b"hello world"


# -- corruption: a damaged frame is EIO for that chunk only ---------------------------------------------

def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ mask]))


def three_chunk_file(vol: Vol) -> tuple[int, list[bytes]]:
    rng = random.Random(8)
    chunks = [text_data(vol.chunk_size, rng) for _ in range(3)]
    return vol.create("/f", b"".join(chunks)), chunks


@pytest.mark.parametrize("codec", ["raw", "auto", "zstd:19"])
@pytest.mark.parametrize("where", ["magic", "raw-length", "header-check", "payload-first", "payload-middle",
                                   "last-byte"])
def test_flipped_byte_in_segment_is_corrupt_chunk_for_that_chunk_only(make_vol: MakeVol, codec: str,
                                                                       where: str) -> None:
    vol = make_vol(chunk_size=K4, hot_codec=codec)
    ino, chunks = three_chunk_file(vol)
    e = vol.chunk_map(ino)[1]
    position = {"magic": 0, "raw-length": 10, "header-check": HEADER_SIZE - 1, "payload-first": HEADER_SIZE,
                "payload-middle": (HEADER_SIZE + e.frame_len) // 2, "last-byte": e.frame_len - 1}[where]
    vol.reopen()  # nothing of the file is cached any more
    flip_byte(vol.parts.segments.path(e.segment), e.offset + position)
    fh = vol.v.open(ino)
    cs = vol.chunk_size
    assert vol.v.read(fh, 0, cs) == chunks[0]
    assert vol.v.read(fh, 2 * cs, cs) == chunks[2]
    with pytest.raises(CorruptChunk):
        vol.v.read(fh, cs, cs)
    with pytest.raises(CorruptChunk):
        vol.v.read(fh, 0, 3 * cs)  # a read spanning it fails as a whole, never with wrong bytes
    with pytest.raises(CorruptChunk):
        vol.v.read(fh, cs + 100, 1)
    # Rewriting the whole damaged chunk heals the file.
    vol.v.write(fh, cs, chunks[1])
    vol.v.release(fh)
    assert vol.read_all(ino) == b"".join(chunks)


def test_damaged_zstd_frame_header_is_corrupt_chunk(make_vol: MakeVol) -> None:
    """Regression (found in d36a002): a huge content size in the zstd header gave MemoryError, not EIO."""
    vol = make_vol(chunk_size=K4, hot_codec="zstd:1")
    ino, _chunks = three_chunk_file(vol)
    e = vol.chunk_map(ino)[1]
    assert e.codec_id == 1
    vol.reopen()
    # Byte 4 of the zstd payload is its frame header descriptor; 0xE0 declares an 8-byte content size.
    flip_byte(vol.parts.segments.path(e.segment), e.offset + HEADER_SIZE + 4, 0x80)
    fh = vol.v.open(ino)
    try:
        with pytest.raises(CorruptChunk):
            vol.v.read(fh, vol.chunk_size, 1)
    finally:
        vol.v.release(fh)


def test_entry_pointing_at_another_chunks_frame_is_corrupt_chunk(vol: Vol) -> None:
    """A misdirected pointer (a valid frame, but not the one the entry describes) is caught too."""
    ino, chunks = three_chunk_file(vol)
    entries = vol.chunk_map(ino)
    other = entries[2]
    with vol.parts.meta.write() as t:
        t.put_chunk(ino, 1, replace(entries[1], segment=other.segment, offset=other.offset,
                                    frame_len=other.frame_len))
    vol.reopen()
    fh = vol.v.open(ino)
    assert vol.v.read(fh, 2 * vol.chunk_size, vol.chunk_size) == chunks[2]
    with pytest.raises(CorruptChunk):
        vol.v.read(fh, vol.chunk_size, 1)
    vol.v.release(fh)


def test_missing_or_truncated_segment_is_corrupt_chunk(vol: Vol) -> None:
    ino, chunks = three_chunk_file(vol)
    cs = vol.chunk_size
    entries = vol.chunk_map(ino)
    segs = {e.segment for e in entries.values()}
    assert len(segs) == 1
    seg_path = vol.parts.segments.path(segs.pop())
    # The frames may have been appended in any order: cut one byte off whichever is last.
    last = max(entries, key=lambda i: entries[i].offset)
    vol.reopen()
    os.truncate(seg_path, entries[last].offset + entries[last].frame_len - 1)
    fh = vol.v.open(ino)
    for index in entries:
        if index == last:
            with pytest.raises(CorruptChunk):
                vol.v.read(fh, index * cs, 1)
        else:
            assert vol.v.read(fh, index * cs, cs) == chunks[index]
    vol.v.release(fh)
    vol.reopen()
    seg_path.unlink()
    fh = vol.v.open(ino)
    with pytest.raises(CorruptChunk):
        vol.v.read(fh, 0, 1)
    vol.v.release(fh)


# -- namespace --------------------------------------------------------------------------------------------

def test_mkdir_rmdir_and_link_counts(vol: Vol) -> None:
    root_nlink = vol.v.getattr(ROOT_INO).nlink
    d = vol.v.mkdir("/d", 0o755, UID, GID)
    assert stat.S_ISDIR(d.mode) and d.nlink == 2
    assert vol.v.getattr(ROOT_INO).nlink == root_nlink + 1
    sub = vol.v.mkdir("/d/sub", 0o700, UID, GID)
    assert vol.v.getattr(d.ino).nlink == 3
    assert vol.v.readdir(sub.ino)[:2] == [(".", sub.ino, stat.S_IFDIR), ("..", d.ino, stat.S_IFDIR)]
    vol.create("/d/file", b"x")
    with pytest.raises(Exists):
        vol.v.mkdir("/d", 0o755, UID, GID)
    with pytest.raises(NotEmpty):
        vol.v.rmdir("/d")
    with pytest.raises(NotADir):
        vol.v.rmdir("/d/file")
    with pytest.raises(IsADir):
        vol.v.unlink("/d/sub")
    with pytest.raises(NotFound):
        vol.v.rmdir("/d/none")
    with pytest.raises(NotFound):
        vol.v.mkdir("/none/x", 0o755, UID, GID)
    with pytest.raises(NotADir):
        vol.v.mkdir("/d/file/x", 0o755, UID, GID)
    vol.v.rmdir("/d/sub")
    assert vol.v.getattr(d.ino).nlink == 2
    vol.v.unlink("/d/file")
    vol.v.rmdir("/d")
    assert vol.v.getattr(ROOT_INO).nlink == root_nlink
    assert [n for n, _, _ in vol.v.readdir(ROOT_INO)] == [".", ".."]
    with pytest.raises(NotFound):
        vol.v.getattr(d.ino)
    counters = assert_consistent(vol)
    assert counters["files"] == 0


def test_names_are_checked(vol: Vol) -> None:
    with pytest.raises(NameTooLong):
        vol.v.create("/" + "n" * 256, 0o644, UID, GID)
    vol.create("/" + "n" * 255)
    with pytest.raises(Exists):
        vol.v.create("/" + "n" * 255, 0o644, UID, GID)
    with pytest.raises(InvalidArgument):
        vol.v.mkdir("/..", 0o755, UID, GID)
    with pytest.raises(NotFound):
        vol.v.resolve("/missing")
    with pytest.raises(IsADir):
        vol.v.open(ROOT_INO)


def test_every_lookup_of_a_name_over_name_max_is_name_too_long(vol: Vol) -> None:
    """A component over NAME_MAX is ENAMETOOLONG wherever it is looked up (pjdfstest */02.t), as on
    ext4: also in the middle of a path, but only once the walk reaches it."""
    long_name = "n" * 256
    ino = vol.create("/f", b"x")
    vol.v.mkdir("/d", 0o755, UID, GID)
    lookups: list[Callable[[str], object]] = [
        vol.v.resolve, vol.v.lookup_attr, vol.v.unlink, vol.v.rmdir,
        lambda p: vol.v.rename(p, "/g"), lambda p: vol.v.rename("/f", p), lambda p: vol.v.link(ino, p),
        lambda p: vol.v.getxattr_path(p, "user.a"), lambda p: vol.v.mkdir(p, 0o755, UID, GID),
        lambda p: vol.v.create(p, 0o644, UID, GID), lambda p: vol.v.symlink(p, "t", UID, GID),
        lambda p: vol.v.mknod(p, stat.S_IFIFO | 0o644, UID, GID),
    ]
    vol.v.setxattr(ino, "user.a", b"1")  # so that getxattr_path resolves the path
    for lookup in lookups:
        for path in (f"/{long_name}", f"/d/{long_name}", f"/{long_name}/x", f"/d/{long_name}/x"):
            with pytest.raises(NameTooLong):
                lookup(path)
        with pytest.raises(NotFound):
            lookup(f"/missing/{long_name}")  # ENOENT comes first, as on ext4
    assert vol.read_path("/f") == b"x"
    assert sorted(n for n, _, _ in vol.v.readdir(ROOT_INO)) == [".", "..", "d", "f"]


def test_rename_replaces_a_file_and_frees_its_chunks(vol: Vol) -> None:
    a = vol.create("/a", b"A" * (2 * vol.chunk_size))
    b = vol.create("/b", text_data(3 * vol.chunk_size, random.Random(9)))
    assert vol.counters()["files"] == 2
    vol.v.rename("/a", "/b")
    assert vol.v.resolve("/b") == a
    with pytest.raises(NotFound):
        vol.v.resolve("/a")
    with pytest.raises(NotFound):
        vol.v.getattr(b)
    assert vol.read_path("/b") == b"A" * (2 * vol.chunk_size)
    assert vol.chunk_map(b) == {}
    counters = assert_consistent(vol)
    assert counters["files"] == 1 and counters["chunks"] == 2
    assert counters["logical_bytes"] == 2 * vol.chunk_size


def test_rename_directory_across_parents(vol: Vol) -> None:
    p1 = vol.v.mkdir("/p1", 0o755, UID, GID)
    p2 = vol.v.mkdir("/p2", 0o755, UID, GID)
    d = vol.v.mkdir("/p1/d", 0o755, UID, GID)
    vol.create("/p1/d/f", b"content")
    vol.v.rename("/p1/d", "/p2/moved")
    assert vol.v.getattr(p1.ino).nlink == 2
    assert vol.v.getattr(p2.ino).nlink == 3
    assert vol.v.getattr(d.ino).parent == p2.ino
    assert vol.v.readdir(d.ino)[1] == ("..", p2.ino, stat.S_IFDIR)
    assert vol.read_path("/p2/moved/f") == b"content"
    assert [n for n, _, _ in vol.v.readdir(p1.ino)] == [".", ".."]
    # Replacing an empty directory in another parent.
    empty = vol.v.mkdir("/p1/empty", 0o755, UID, GID)
    vol.v.rename("/p2/moved", "/p1/empty")
    with pytest.raises(NotFound):
        vol.v.getattr(empty.ino)
    assert vol.v.resolve("/p1/empty") == d.ino
    assert vol.v.getattr(p1.ino).nlink == 3 and vol.v.getattr(p2.ino).nlink == 2
    vol.reopen()
    assert vol.read_path("/p1/empty/f") == b"content"
    assert_consistent(vol)


def test_rename_errors(vol: Vol) -> None:
    vol.v.mkdir("/a", 0o755, UID, GID)
    vol.v.mkdir("/a/b", 0o755, UID, GID)
    vol.v.mkdir("/full", 0o755, UID, GID)
    vol.create("/full/x")
    vol.create("/file", b"f")
    vol.create("/other", b"o")
    with pytest.raises(InvalidArgument):
        vol.v.rename("/a", "/a/b/inside")
    with pytest.raises(InvalidArgument):
        vol.v.rename("/a", "/a/inside")
    with pytest.raises(Exists):
        vol.v.rename("/file", "/other", noreplace=True)
    with pytest.raises(NotEmpty):
        vol.v.rename("/a", "/full")
    with pytest.raises(NotADir):
        vol.v.rename("/a", "/file")
    with pytest.raises(IsADir):
        vol.v.rename("/file", "/a")
    with pytest.raises(NotFound):
        vol.v.rename("/missing", "/x")
    with pytest.raises(NotADir):
        vol.v.rename("/file", "/other/x")
    # Nothing moved.
    assert vol.read_path("/file") == b"f" and vol.read_path("/other") == b"o"
    assert [n for n, _, _ in vol.v.readdir(vol.v.resolve("/a"))] == [".", "..", "b"]
    vol.v.rename("/file", "/new", noreplace=True)
    assert vol.read_path("/new") == b"f"
    assert_consistent(vol)


# Errno of each domain error, to compare the volume with the local filesystem as an oracle.
ERRNO_OF: dict[type[Exception], int] = {NotFound: errno.ENOENT, Exists: errno.EEXIST, NotEmpty: errno.ENOTEMPTY,
                                        NotADir: errno.ENOTDIR, IsADir: errno.EISDIR,
                                        InvalidArgument: errno.EINVAL, NotPermitted: errno.EPERM}
# When several errors apply, which one is reported first is not specified; through FUSE the kernel
# resolves both paths and checks these cases itself before the volume is asked.
EITHER_ERROR = {
    ("link", errno.EEXIST, errno.EPERM), ("link", errno.ENOENT, errno.EPERM), ("link", errno.ENOTDIR, errno.EPERM),
    ("rename", errno.ENOTDIR, errno.ENOENT), ("rename", errno.ENOTEMPTY, errno.EISDIR),
}


def local_tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (file type, nlink, size of regular files) of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            out["/" + os.path.relpath(full, root)] = (stat.S_IFMT(st.st_mode), st.st_nlink,
                                                      st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return out


def volume_tree(v: Volume, ino: int = ROOT_INO, prefix: str = "") -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, child, kind in v.readdir(ino)[2:]:
        inode = v.getattr(child)
        assert stat.S_IFMT(inode.mode) == kind
        path = f"{prefix}/{name}"
        out[path] = (kind, inode.nlink, inode.size if stat.S_ISREG(inode.mode) else 0)
        if stat.S_ISDIR(kind):
            assert v.readdir(child)[1] == ("..", ino, stat.S_IFDIR)
            out.update(volume_tree(v, child, path))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_namespace_operations_agree_with_the_local_filesystem(vol: Vol, tmp_path: Path, seed: int) -> None:
    """Random mkdir/create/unlink/rmdir/rename/link on both: same outcome, same tree, same link counts."""
    rng = random.Random(seed)
    local = tmp_path / "local"
    local.mkdir()

    def random_path() -> str:
        return "/" + "/".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))

    for _ in range(200):
        op = rng.choice(["mkdir", "create", "create", "unlink", "rmdir", "rename", "rename", "link"])
        p, q = random_path(), random_path()
        data = rng.randbytes(rng.randrange(0, 3 * vol.chunk_size))
        lp, lq = str(local) + p, str(local) + q
        local_errno = volume_errno = 0
        try:
            if op == "mkdir":
                os.mkdir(lp)
            elif op == "create":
                fd = os.open(lp, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, data)
                os.close(fd)
            elif op == "unlink":
                os.unlink(lp)
            elif op == "rmdir":
                os.rmdir(lp)
            elif op == "rename":
                os.rename(lp, lq)
            else:
                os.link(lp, lq)
        except OSError as e:
            local_errno = e.errno or -1
        try:
            if op == "mkdir":
                vol.v.mkdir(p, 0o755, UID, GID)
            elif op == "create":
                vol.create(p, data)
            elif op == "unlink":
                vol.v.unlink(p)
            elif op == "rmdir":
                vol.v.rmdir(p)
            elif op == "rename":
                vol.v.rename(p, q)
            else:
                vol.v.link(vol.v.resolve(p), q)
        except tuple(ERRNO_OF) as e:
            volume_errno = ERRNO_OF[type(e)]
        step = f"{op} {p} {q}"
        if (op, local_errno, volume_errno) not in EITHER_ERROR:
            assert errno.errorcode.get(volume_errno) == errno.errorcode.get(local_errno), step
        assert volume_tree(vol.v) == local_tree(local), step
    for path, (kind, _nlink, _size) in local_tree(local).items():
        if stat.S_ISREG(kind):
            assert vol.read_path(path) == (local / path.lstrip("/")).read_bytes(), path
    assert_consistent(vol)


def test_hard_links_and_nlink(vol: Vol) -> None:
    ino = vol.create("/a", b"shared")
    vol.v.mkdir("/d", 0o755, UID, GID)
    assert vol.v.link(ino, "/d/b").nlink == 2
    assert vol.v.resolve("/d/b") == ino
    with pytest.raises(Exists):
        vol.v.link(ino, "/a")
    with pytest.raises(NotPermitted):
        vol.v.link(vol.v.resolve("/d"), "/dlink")
    fh = vol.v.open(vol.v.resolve("/d/b"))
    vol.v.write(fh, 6, b" data")
    vol.v.release(fh)
    assert vol.read_path("/a") == b"shared data"
    assert vol.counters()["files"] == 1  # one inode, two names
    # Renaming a name onto another name of the same inode does nothing (POSIX).
    vol.v.rename("/a", "/d/b")
    assert vol.v.resolve("/a") == vol.v.resolve("/d/b") == ino
    vol.v.unlink("/a")
    assert vol.v.getattr(ino).nlink == 1
    assert vol.read_path("/d/b") == b"shared data"
    assert assert_consistent(vol)["files"] == 1
    vol.v.unlink("/d/b")
    with pytest.raises(NotFound):
        vol.v.getattr(ino)
    counters = assert_consistent(vol)
    assert counters["files"] == 0 and counters["chunks"] == 0 and counters["logical_bytes"] == 0


@pytest.mark.parametrize("flushed", [True, False], ids=["flushed", "buffered"])
def test_unlinked_open_file_stays_readable_until_release(vol: Vol, flushed: bool) -> None:
    keep = vol.create("/keep", b"k" * 100)
    before = vol.counters()
    cs = vol.chunk_size
    data = text_data(3 * cs, random.Random(10))
    fh, inode = vol.v.create("/victim", 0o644, UID, GID)
    vol.v.write(fh, 0, data)
    if flushed:
        vol.v.flush(fh)
    during = vol.counters()
    assert during["chunks"] == before["chunks"] + (3 if flushed else 0)
    vol.v.unlink("/victim")
    with pytest.raises(NotFound):
        vol.v.resolve("/victim")
    assert vol.v.getattr(inode.ino).nlink == 0
    # The name is gone from the totals at once; the data stays until the last close.
    unlinked = vol.counters()
    assert unlinked["files"] == before["files"]
    assert unlinked["logical_bytes"] == before["logical_bytes"]
    # unlink settles the new file first (commits it with its data), so its chunks are counted
    # now in both cases, until the last close frees them.
    assert unlinked["chunks"] == before["chunks"] + 3
    assert vol.v.read(fh, 0, 4 * cs) == data
    vol.v.write(fh, 3 * cs, b"more")
    assert vol.v.read(fh, 3 * cs - 2, 10) == data[-2:] + b"more"
    vol.v.release(fh)
    with pytest.raises(NotFound):
        vol.v.getattr(inode.ino)
    after = assert_consistent(vol)
    assert after["chunks"] == before["chunks"]
    assert after["stored_bytes"] == before["stored_bytes"]
    assert after["files"] == before["files"] and after["logical_bytes"] == before["logical_bytes"]
    assert vol.read_all(keep) == b"k" * 100


def test_unlinked_open_file_is_reclaimed_after_a_crash(vol: Vol) -> None:
    fh, inode = vol.v.create("/victim", 0o644, UID, GID)
    vol.v.write(fh, 0, text_data(2 * vol.chunk_size, random.Random(11)))
    vol.v.flush(fh)
    vol.v.unlink("/victim")
    vol.reopen()  # the handle is never released: as if the daemon had died
    with pytest.raises(NotFound):
        vol.v.getattr(inode.ino)
    counters = assert_consistent(vol)
    assert counters["chunks"] == 0 and counters["files"] == 0


@pytest.mark.parametrize("second_link", [False, True], ids=["one-name", "hard-linked"])
def test_hidden_rename_is_reclaimed_after_a_crash(vol: Vol, second_link: bool) -> None:
    """libfuse renames a file unlinked while open to .fuse_hidden*; after a crash the volume drops it."""
    data = text_data(2 * vol.chunk_size, random.Random(12))
    fh, inode = vol.v.create("/a", 0o644, UID, GID)
    vol.v.write(fh, 0, data)
    vol.v.flush(fh)
    if second_link:
        vol.v.link(inode.ino, "/b")
    vol.v.rename("/a", "/.fuse_hidden0001", hide=True)
    vol.reopen()
    with pytest.raises(NotFound):
        vol.v.resolve("/.fuse_hidden0001")
    counters = assert_consistent(vol)
    if second_link:
        assert vol.read_path("/b") == data and vol.v.getattr(inode.ino).nlink == 1
        assert counters["files"] == 1 and counters["chunks"] == 2
    else:
        with pytest.raises(NotFound):
            vol.v.getattr(inode.ino)
        assert counters["files"] == 0 and counters["chunks"] == 0
    with vol.parts.meta.read() as t:
        assert t.orphans() == []


def test_hidden_name_is_reclaimed_after_a_crash_when_another_name_was_unlinked(vol: Vol) -> None:
    """Regression (found in d36a002): unlink() of any name dropped the orphan record of the hidden one."""
    fh, inode = vol.v.create("/a", 0o644, UID, GID)
    vol.v.write(fh, 0, b"data")
    vol.v.flush(fh)
    vol.v.link(inode.ino, "/b")
    vol.v.rename("/a", "/.fuse_hidden0003", hide=True)  # /a unlinked while open: libfuse hides it
    vol.v.unlink("/b")                                  # the other name goes too
    vol.reopen()                                        # crash before the last close
    with pytest.raises(NotFound):
        vol.v.resolve("/.fuse_hidden0003")
    counters = assert_consistent(vol)
    assert counters["files"] == 0 and counters["chunks"] == 0


def test_hidden_file_unlinked_at_last_close_is_no_orphan(vol: Vol) -> None:
    fh, _inode = vol.v.create("/a", 0o644, UID, GID)
    vol.v.write(fh, 0, b"data")
    vol.v.rename("/a", "/.fuse_hidden0002", hide=True)
    vol.v.unlink("/.fuse_hidden0002")
    vol.v.release(fh)
    with vol.parts.meta.read() as t:
        assert t.orphans() == []
    # A new file that later takes the hidden name is not purged by a stale orphan record.
    vol.create("/.fuse_hidden0002", b"new file")
    vol.reopen()
    assert vol.read_path("/.fuse_hidden0002") == b"new file"
    assert_consistent(vol)


def assert_gone_for_good(vol: Vol, hidden: str, ino: int, before: dict[str, int]) -> None:
    """The hidden name and (with its last link) the file are gone; libfuse's own unlink of the
    hidden name, which may still come, finds nothing (it ignores that ENOENT)."""
    with pytest.raises(NotFound):
        vol.v.resolve(hidden)
    with pytest.raises(NotFound):
        vol.v.getattr(ino)
    with pytest.raises(NotFound):
        vol.v.unlink(hidden)
    with vol.parts.meta.read() as t:
        assert t.orphans() == []
    counters = assert_consistent(vol)
    assert {k: counters.get(k, 0) for k in ("files", "chunks", "logical_bytes")} == {
        k: before.get(k, 0) for k in ("files", "chunks", "logical_bytes")}


def test_a_file_libfuse_hides_after_its_last_release_is_unlinked_at_once(vol: Vol) -> None:
    """Regression (.fuse_hidden* left behind by git and by open/unlink/close churn): libfuse hides a
    file it saw open, but its own open count may reach zero (after our release returned) before it
    marks the new name hidden; then nobody unlinks the hidden name. A hiding rename of a file that
    is no longer open in the volume is therefore an unlink."""
    before = vol.counters()
    fh, inode = vol.v.create("/a", 0o644, UID, GID)
    vol.v.write(fh, 0, text_data(3 * vol.chunk_size, random.Random(14)))
    vol.v.release(fh)                                      # the last close, as libfuse's unlink checks is_open
    vol.v.rename("/a", "/.fuse_hidden0001", hide=True)      # ... and hides the file
    with pytest.raises(NotFound):
        vol.v.getattr(inode.ino)
    assert [n for n, _, _ in vol.v.readdir(ROOT_INO)] == [".", ".."]
    assert_gone_for_good(vol, "/.fuse_hidden0001", inode.ino, before)


@pytest.mark.parametrize("handles", [1, 2])
def test_the_last_release_of_a_hidden_file_unlinks_its_hidden_name(vol: Vol, handles: int) -> None:
    """libfuse unlinks the hidden name after the last release, unless its unlink raced that release
    (then its open count went to zero before the name was marked hidden): the volume does it."""
    before = vol.counters()
    fh, inode = vol.v.create("/a", 0o644, UID, GID)
    data = text_data(2 * vol.chunk_size, random.Random(15))
    vol.v.write(fh, 0, data)
    more = [vol.v.open(inode.ino) for _ in range(handles - 1)]
    vol.v.rename("/a", "/.fuse_hidden0002", hide=True)
    assert vol.v.getattr(inode.ino).nlink == 0
    for other in more:
        vol.v.release(other)
        assert vol.v.resolve("/.fuse_hidden0002") == inode.ino  # still open: still there
    assert vol.v.read(fh, 0, len(data) + 1) == data
    vol.v.release(fh)
    assert_gone_for_good(vol, "/.fuse_hidden0002", inode.ino, before)


def test_the_last_release_of_a_hidden_hard_linked_file_keeps_its_other_name(vol: Vol) -> None:
    ino = vol.create("/a", b"data")
    vol.v.link(ino, "/b")
    before = vol.counters()
    fh = vol.v.open(ino)
    vol.v.rename("/a", "/.fuse_hidden0003", hide=True)
    vol.v.release(fh)
    with pytest.raises(NotFound):
        vol.v.resolve("/.fuse_hidden0003")
    assert vol.v.getattr(ino).nlink == 1 and vol.read_path("/b") == b"data"
    # A later hiding rename of the other name, the file no longer open: an unlink.
    vol.v.rename("/b", "/.fuse_hidden0004", hide=True)
    assert_gone_for_good(vol, "/.fuse_hidden0004", ino, {**before, "files": 0, "chunks": 0, "logical_bytes": 0})


def test_symlink_and_readlink(vol: Vol) -> None:
    target = "../some where/ü" + "x" * 200
    link = vol.v.symlink("/l", target, UID, GID)
    assert stat.S_ISLNK(link.mode)
    assert vol.v.readlink(link.ino) == target
    assert vol.v.getattr(link.ino).size == len(os.fsencode(target))
    file_ino = vol.create("/f")
    with pytest.raises(InvalidArgument):
        vol.v.readlink(file_ino)
    with pytest.raises(Exists):
        vol.v.symlink("/l", "x", UID, GID)
    with pytest.raises(NameTooLong):
        vol.v.symlink("/long", "t" * 4096, UID, GID)
    assert vol.counters()["files"] == 2
    assert vol.counters().get("logical_bytes", 0) == 0  # a symlink is not file data
    vol.reopen()
    assert vol.v.readlink(vol.v.resolve("/l")) == target
    vol.v.unlink("/l")
    assert assert_consistent(vol)["files"] == 1


def test_xattrs_create_replace_semantics(vol: Vol) -> None:
    ino = vol.create("/f")
    with pytest.raises(NoAttr):
        vol.v.getxattr(ino, "user.a")
    with pytest.raises(NoAttr):
        vol.v.setxattr(ino, "user.a", b"1", XATTR_REPLACE)
    vol.v.setxattr(ino, "user.a", b"1", XATTR_CREATE)
    with pytest.raises(Exists):
        vol.v.setxattr(ino, "user.a", b"2", XATTR_CREATE)
    assert vol.v.getxattr(ino, "user.a") == b"1"
    vol.v.setxattr(ino, "user.a", b"2", XATTR_REPLACE)
    vol.v.setxattr(ino, "user.a", b"3")
    vol.v.setxattr(ino, "user.b", b"")
    vol.v.setxattr(ino, "user.big", bytes(range(256)) * 256)
    assert vol.v.getxattr(ino, "user.a") == b"3"
    assert vol.v.getxattr(ino, "user.b") == b""
    assert sorted(vol.v.listxattr(ino)) == ["user.a", "user.b", "user.big"]
    with pytest.raises(NotSupported):
        vol.v.setxattr(ino, "system.posix_acl_access", b"\x02\x00\x00\x00")
    with pytest.raises(NameTooLong):
        vol.v.setxattr(ino, "user." + "n" * 300, b"")
    vol.v.removexattr(ino, "user.b")
    with pytest.raises(NoAttr):
        vol.v.removexattr(ino, "user.b")
    dir_ino = vol.v.mkdir("/d", 0o755, UID, GID).ino
    vol.v.setxattr(dir_ino, "user.dir", b"d")
    vol.reopen()
    assert sorted(vol.v.listxattr(ino)) == ["user.a", "user.big"]
    assert vol.v.getxattr(ino, "user.big") == bytes(range(256)) * 256
    assert vol.v.listxattr(dir_ino) == ["user.dir"]
    # An inode's xattrs go with it.
    vol.v.unlink("/f")
    with vol.parts.meta.read() as t:
        assert list(t.xattr_names(ino)) == []
    with pytest.raises(NotFound):
        vol.v.listxattr(ino)


# Names as mfusepy hands them over: the kernel's bytes decoded as UTF-8 with surrogateescape.
ODD_XATTR_NAMES = [
    os.fsdecode(b"user.\xff"), os.fsdecode(b"user.caf\xe9"), os.fsdecode(b"user.\xed\xa0\x80"),  # a UTF-16 surrogate
    "user.\u00fc\u4e2d", os.fsdecode(b"user." + bytes(range(128, 256)) + bytes(range(1, 128))[:122]),  # 255 bytes
]


def test_xattr_names_of_any_bytes_work(vol: Vol) -> None:
    """Regression: a name that is not valid UTF-8 (setfattr -n $'user.\\xff') failed with EINVAL and a
    traceback (its per-name counter key could not be encoded). Every byte string is a name, as on ext4."""
    ino = vol.create("/f")
    assert len(os.fsencode(ODD_XATTR_NAMES[-1])) == 255
    for i, name in enumerate(ODD_XATTR_NAMES):
        vol.v.setxattr(ino, name, bytes([i]) * 3, XATTR_CREATE)
        with pytest.raises(Exists):
            vol.v.setxattr(ino, name, b"", XATTR_CREATE)
    vol.v.setxattr(ino, "user.plain", b"p")
    assert sorted(vol.v.listxattr(ino)) == sorted([*ODD_XATTR_NAMES, "user.plain"])
    for i, name in enumerate(ODD_XATTR_NAMES):
        assert vol.v.getxattr(ino, name) == bytes([i]) * 3
        assert vol.v.getxattr_path("/f", name) == bytes([i]) * 3
    with pytest.raises(NoAttr):
        vol.v.getxattr_path("/f", os.fsdecode(b"user.\xfe"))
    with pytest.raises(InvalidArgument):
        vol.v.setxattr(ino, "user.a\x00b", b"")  # the kernel passes C strings: NUL ends a name
    with pytest.raises(NameTooLong):
        vol.v.setxattr(ino, os.fsdecode(b"user." + b"\xff" * 251), b"")
    vol.reopen()
    assert sorted(vol.v.listxattr(ino)) == sorted([*ODD_XATTR_NAMES, "user.plain"])
    vol.v.removexattr(ino, ODD_XATTR_NAMES[0])
    with pytest.raises(NoAttr):
        vol.v.removexattr(ino, ODD_XATTR_NAMES[0])
    with pytest.raises(NoAttr):
        vol.v.getxattr(ino, ODD_XATTR_NAMES[0])
    assert sorted(vol.v.listxattr(ino)) == sorted([*ODD_XATTR_NAMES[1:], "user.plain"])
    other = vol.create("/g")
    vol.v.setxattr(other, ODD_XATTR_NAMES[1], b"other")
    vol.v.unlink("/f")  # its xattrs go with it, counters too
    with pytest.raises(NoAttr):
        vol.v.getxattr_path("/g", ODD_XATTR_NAMES[2])
    assert vol.v.getxattr_path("/g", ODD_XATTR_NAMES[1]) == b"other"
    with vol.parts.meta.read() as t:  # each stored name counts the inodes that have it (as fsck recounts)
        stored = [name for inode in t.inodes() for name in t.xattr_names(inode.ino)]
        counters = t.counters()
    assert len(stored) == 1
    assert {k: v for k, v in counters.items() if k.startswith("xattr/") and v} == {
        "xattr/" + os.fsdecode(stored[0]): 1}


def test_setattr_changes_mode_owner_and_times(vol: Vol) -> None:
    ino = vol.create("/f", b"x")
    vol.v.setattr(ino, mode=0o4711, uid=-1, gid=-1, atime=10**9, mtime=2 * 10**9)
    inode = vol.v.getattr(ino)
    assert inode.mode == stat.S_IFREG | 0o4711
    assert (inode.uid, inode.gid) == (UID, GID)
    assert (inode.atime, inode.mtime) == (10**9, 2 * 10**9)
    fh = vol.v.open(ino)
    vol.v.setattr(ino, mtime=5 * 10**9)
    vol.v.release(fh)
    assert vol.v.getattr(ino).mtime == 5 * 10**9
    vol.reopen()
    assert vol.v.getattr(ino).mode == stat.S_IFREG | 0o4711


def test_counters_after_a_sequence_of_operations(vol: Vol) -> None:
    cs = vol.chunk_size
    rng = random.Random(13)
    vol.v.mkdir("/d", 0o755, UID, GID)
    a = vol.create("/a", text_data(cs + 10, rng))              # 2 chunks
    vol.create("/d/b", rng.randbytes(3 * cs))                    # 3 raw chunks
    vol.create("/empty")
    vol.v.symlink("/s", "a", UID, GID)
    vol.v.link(a, "/d/a2")
    c = assert_consistent(vol)
    assert (c["files"], c["logical_bytes"], c["chunks"]) == (4, 4 * cs + 10, 5)
    vol.v.truncate(a, 5)
    vol.v.rename("/d/b", "/empty")
    c = assert_consistent(vol)
    assert (c["files"], c["logical_bytes"], c["chunks"]) == (3, 5 + 3 * cs, 4)
    vol.v.unlink("/a")
    vol.v.unlink("/s")
    c = assert_consistent(vol)
    assert (c["files"], c["logical_bytes"], c["chunks"]) == (2, 5 + 3 * cs, 4)
    vol.v.unlink("/d/a2")
    vol.v.unlink("/empty")
    vol.v.rmdir("/d")
    c = assert_consistent(vol)
    assert (c["files"], c["logical_bytes"], c["chunks"], c["stored_bytes"]) == (0, 0, 0, 0)
    assert c["garbage_bytes"] == segment_bytes(vol)


# -- concurrency ------------------------------------------------------------------------------------------

def _listed_in_root(v: Volume, ino: int) -> None:
    assert ("new", ino, stat.S_IFREG) in v.readdir(ROOT_INO)


LOOKUPS_OF_A_NEW_FILE: dict[str, Callable[[Volume, int], object]] = {
    "getattr by handle": lambda v, ino: v.getattr(ino),  # libfuse's GETATTR right after CREATE
    "getattr by path": lambda v, ino: v.lookup_attr("/new"),
    "resolve": lambda v, ino: v.resolve("/new"),
    "open": lambda v, ino: v.release(v.open(ino)),
    "getxattr": lambda v, ino: v.getxattr(ino, "user.none"),
    "readdir": _listed_in_root,
}


@pytest.mark.parametrize("lookup", LOOKUPS_OF_A_NEW_FILE)
@pytest.mark.parametrize("cause", ["settled by a chmod", "committed by its release"])
def test_a_lookup_racing_the_commit_of_a_new_file_still_finds_it(vol: Vol, lookup: str, cause: str) -> None:
    """Regression: a created file lives in the volume's table of deferred creates until its first
    commit puts it into LMDB. A lookup whose read transaction began before that commit, and which
    looked at the table after the file had left it, answered ENOENT for a file that exists (open
    with O_CREAT failed while another process chmodded an unrelated file). The commit is forced into
    that window here: the lookup's snapshot is taken, then another thread commits the file."""
    other = vol.create("/other", b"o")
    fh, inode = vol.v.create("/new", 0o644, UID, GID)
    vol.v.write(fh, 0, b"data")
    real_read = vol.parts.meta.read
    interleaved: list[str] = []

    def commit_meanwhile() -> None:
        if cause == "settled by a chmod":
            vol.v.setattr(other, mode=0o600)  # any namespace change commits every deferred create
        else:
            vol.v.release(fh)

    @contextmanager
    def read_then_commit() -> Iterator[Txn]:
        with real_read() as t:
            if not interleaved:
                interleaved.append(cause)
                # Another thread: LMDB allows one transaction per thread.
                worker = threading.Thread(target=commit_meanwhile)
                worker.start()
                worker.join()
            yield t

    vol.parts.meta.read = read_then_commit  # type: ignore[method-assign]
    try:
        try:
            LOOKUPS_OF_A_NEW_FILE[lookup](vol.v, inode.ino)
        except NoAttr:
            pass  # getxattr found the file
    finally:
        vol.parts.meta.read = real_read  # type: ignore[method-assign]
    assert interleaved == [cause]
    if cause == "settled by a chmod":
        vol.v.release(fh)
    assert vol.read_path("/new") == b"data"
    assert_consistent(vol)


def test_threads_writing_and_reading_different_files(make_vol: MakeVol) -> None:
    vol = make_vol(chunk_size=K4, hot_codec="auto", dirty_bytes=128 << 10)
    vol.v.mkdir("/spin", 0o755, UID, GID)
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            rng = random.Random(n)
            path = f"/t{n}"
            model = bytearray()
            fh, inode = vol.v.create(path, 0o644, UID, GID)
            for step in range(120):
                offset = rng.randrange(0, 40 * K4)
                data = some_data(rng.randrange(1, 3 * K4), rng)
                vol.v.write(fh, offset, data)
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + len(data)] = data
                if step % 10 == 0:
                    vol.v.flush(fh)
                start = rng.randrange(0, len(model))
                assert vol.v.read(fh, start, 2 * K4) == bytes(model[start:start + 2 * K4])
            vol.v.release(fh)
            assert vol.read_all(inode.ino) == bytes(model)
            results[path] = bytes(model)
        except BaseException as e:
            errors.append(e)

    def namespace_churn() -> None:
        try:
            i = 0
            while not stop.is_set():
                vol.v.mkdir(f"/spin/d{i}", 0o755, UID, GID)
                vol.create(f"/spin/d{i}/f", b"x" * 100)
                vol.v.rename(f"/spin/d{i}/f", f"/spin/f{i}")
                vol.v.rmdir(f"/spin/d{i}")
                vol.v.unlink(f"/spin/f{i}")
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    churn = threading.Thread(target=namespace_churn)
    churn.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    churn.join(60)
    if errors:
        raise errors[0]
    assert len(results) == 6
    assert vol.v.live_stats().dirty_bytes == 0
    counters = assert_consistent(vol)
    assert counters["files"] == 6
    assert counters["logical_bytes"] == sum(map(len, results.values()))
    vol.reopen()
    for path, data in results.items():
        assert vol.read_path(path) == data


def test_o_trunc_open_defers_the_cut_to_one_commit(make_vol: MakeVol) -> None:
    """An O_TRUNC open of an existing file cuts it at once for every reader, but the cut reaches
    LMDB with the close's commit (one synced commit per overwrite instead of two); the old bytes
    never come back, not even under a partial write of a cut chunk."""
    vol = make_vol(chunk_size=K64)
    old = os.urandom(3 * K64 + 123)
    ino = vol.create("/f", old)
    commits = []
    real_write = vol.parts.meta.write

    def counting_write():  # type: ignore[no-untyped-def]
        commits.append(1)
        return real_write()

    vol.parts.meta.write = counting_write  # type: ignore[method-assign]
    try:
        fh = vol.v.open(ino, truncate=True)
        assert vol.v.getattr(ino).size == 0
        assert vol.v.read(fh, 0, 10) == b""
        assert commits == []  # nothing committed by the open
        vol.v.write(fh, K64 + 100, b"new")  # a partial write into a cut chunk
        assert vol.v.read(fh, 0, 2 * K64) == bytes(K64 + 100) + b"new"
        vol.v.release(fh)
        assert len(commits) == 1
    finally:
        vol.parts.meta.write = real_write  # type: ignore[method-assign]
    assert set(vol.chunk_map(ino)) == {1}
    vol.reopen()
    assert vol.read_all(ino) == bytes(K64 + 100) + b"new"
    fh = vol.v.open(ino, truncate=True)
    vol.v.release(fh)
    vol.reopen()
    assert vol.read_all(ino) == b"" and vol.chunk_map(ino) == {}
    c = vol.counters()
    assert c.get("chunks", 0) == 0 and c.get("logical_bytes", 0) == 0
