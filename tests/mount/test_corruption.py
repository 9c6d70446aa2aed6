"""Real mount: a damaged frame in a segment file gives EIO for that chunk's bytes, never wrong bytes;
every other byte of the volume still reads back correctly."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.codecs.frame import HEADER_SIZE

if TYPE_CHECKING:
    from tests.conftest import ChunkMap
    from tests.mount.conftest import Mount

CHUNK = 64 << 10
RAW_ID, ZSTD_ID = 0, 1


def _file_data(rng: random.Random, nchunks: int, tail: int) -> bytes:
    """Alternating compressible and random chunks, so both zstd and raw frames exist; a short tail."""
    parts = []
    for i in range(nchunks):
        if i % 2 == 0:
            line = f"chunk {i} of a text-like file\n".encode()
            parts.append((line * (CHUNK // len(line) + 1))[:CHUNK])
        else:
            parts.append(rng.randbytes(CHUNK))
    parts.append(rng.randbytes(tail))
    return b"".join(parts)


def _segment(store: Path, seg: int) -> Path:
    return store / "segments" / f"{seg:08d}.seg"


def _expect_eio(fn: Callable[[], object], what: str) -> None:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno == errno.EIO, f"{what}: expected EIO, got {info.value!r}"


@pytest.mark.parametrize("damage", ["payload-zstd", "payload-raw", "header", "truncate"])
def test_damaged_frame_reads_eio(make_mount: Callable[..., Mount], chunk_map: ChunkMap, damage: str) -> None:
    rng = random.Random(7)
    m = make_mount(chunk_size=CHUNK, expect_log_errors=True)
    files = {"a": _file_data(rng, 6, 1234), "b": _file_data(rng, 4, 5000), "c": _file_data(rng, 5, 3000)}
    inos = {}
    for name, data in files.items():
        p = m.mountpoint / name
        with open(p, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        inos[name] = os.stat(p).st_ino
        assert p.read_bytes() == data
    m.stop()

    maps = {name: chunk_map(m.store, ino) for name, ino in inos.items()}
    for name, data in files.items():
        assert sorted(maps[name]) == list(range(-(-len(data) // CHUNK))), f"{name}: unexpected chunk map"

    # The chunk to damage.
    if damage == "truncate":
        # The frame at the very end of the last segment: cutting the file there damages it alone.
        name, index = max(((n, i) for n in maps for i in maps[n]),
                          key=lambda ni: (maps[ni[0]][ni[1]].segment, maps[ni[0]][ni[1]].offset))
    else:
        want_codec = RAW_ID if damage == "payload-raw" else ZSTD_ID
        index = next(i for i in sorted(maps["a"]) if i > 0 and maps["a"][i].codec_id == want_codec
                     and i < max(maps["a"]))
        name = "a"
    entry = maps[name][index]
    seg = _segment(m.store, entry.segment)
    assert seg.stat().st_size >= entry.offset + entry.frame_len
    if damage.startswith("payload"):
        assert entry.frame_len > HEADER_SIZE + 16
        pos = entry.offset + HEADER_SIZE + (entry.frame_len - HEADER_SIZE) // 2
    elif damage == "header":
        pos = entry.offset + 10  # inside the raw-length field
    if damage == "truncate":
        cut = entry.offset + entry.frame_len // 2
        os.truncate(seg, cut)
        damaged = {(n, i) for n in maps for i, e in maps[n].items()
                   if e.segment == entry.segment and e.offset + e.frame_len > cut}
        assert damaged == {(name, index)}
    else:
        with open(seg, "r+b") as fh:
            fh.seek(pos)
            byte = fh.read(1)
            fh.seek(pos)
            fh.write(bytes([byte[0] ^ 0xFF]))

    m.start()
    data = files[name]
    lo, hi = index * CHUNK, min(len(data), (index + 1) * CHUNK)
    path = m.mountpoint / name
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(2):  # never cached, never turned into bytes
            _expect_eio(lambda: os.pread(fd, hi - lo, lo), f"read of damaged chunk {index} of {name}")
        _expect_eio(lambda: os.pread(fd, 100, lo + 1000), "a small read inside the damaged chunk")
        # A read straddling into the damaged chunk: EIO, or (as Linux does, page by page) a short read of
        # exactly the good bytes before it; never a byte of the damaged chunk.
        start = lo - CHUNK // 2
        try:
            got = os.pread(fd, 2 * CHUNK, start)
        except OSError as e:
            assert e.errno == errno.EIO, f"straddling read: {e!r}"
        else:
            assert got == data[start:lo], \
                f"straddling read returned {len(got)} bytes, want the {lo - start} good bytes before the damage"
        # Every other chunk of this file, one by one and in ranges that end right before / start right
        # after the damaged one.
        for i in range(-(-len(data) // CHUNK)):
            if i != index:
                got = os.pread(fd, CHUNK, i * CHUNK)
                assert got == data[i * CHUNK:(i + 1) * CHUNK], f"{name} chunk {i} reads wrong bytes"
        assert os.pread(fd, lo, 0) == data[:lo]
        assert os.pread(fd, len(data), hi) == data[hi:]
    finally:
        os.close(fd)
    for other, odata in files.items():
        if other != name:
            assert (m.mountpoint / other).read_bytes() == odata, f"undamaged file {other} reads wrong bytes"
    # The daemon reported the damage in its log.
    assert any("ERROR" in line for line in m.log_problems()), "the corruption was not logged as an error"
    # The size is unaffected, and a read of the whole file fails rather than returning wrong bytes.
    assert os.stat(path).st_size == len(data)
    _expect_eio(path.read_bytes, f"read of the whole of {name}")

    # Still EIO after a remount (nothing "repaired" the chunk into wrong bytes).
    m.remount()
    fd = os.open(path, os.O_RDWR)
    try:
        _expect_eio(lambda: os.pread(fd, hi - lo, lo), "read of the damaged chunk after a remount")
        # A partial write into the damaged chunk needs its old bytes: it must fail, not zero-fill them.
        _expect_eio(lambda: os.pwrite(fd, b"x" * 10, lo + 5), "a partial write into the damaged chunk")
        _expect_eio(lambda: os.pread(fd, hi - lo, lo), "read of the damaged chunk after a failed write")
        # Overwriting the whole chunk replaces it: it reads back, and so does everything else.
        # (A whole chunk's worth: the last chunk of a file may be shorter; this extends the file then.)
        fresh = rng.randbytes(CHUNK)
        assert os.pwrite(fd, fresh, lo) == CHUNK
        os.fsync(fd)
        assert os.pread(fd, CHUNK, lo) == fresh
    finally:
        os.close(fd)
    healed = data[:lo] + fresh + data[lo + CHUNK:]
    assert path.read_bytes() == healed
    m.remount()
    assert path.read_bytes() == healed
    for other, odata in files.items():
        if other != name:
            assert (m.mountpoint / other).read_bytes() == odata
