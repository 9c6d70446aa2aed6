"""Append-only segment files: placement, rolling, reopening, damaged and missing segments."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from thermofs.fs.errors import CorruptChunk
from thermofs.fs.segments import MAX_READ_FDS, SEGMENT_HEADER_SIZE, SegmentStore, segment_name

VOLUME = bytes(range(16))  # the volume id the segments' headers name


@pytest.fixture
def seg_dir(tmp_path: Path) -> Path:
    d = tmp_path / "segments"
    d.mkdir()
    return d


@pytest.fixture
def segs(seg_dir: Path) -> Iterator[SegmentStore]:
    store = SegmentStore(seg_dir, VOLUME)
    yield store
    store.close()


def segment_bytes(store: SegmentStore) -> int:
    """Frame bytes of all segment files (their sizes without the headers): every frame ever appended."""
    return sum(store.frame_bytes(seg) for seg in store.segment_ids())


def frames_of(sizes: list[int], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


def test_append_and_read_back(segs: SegmentStore) -> None:
    frames = frames_of([1, 28, 4096, 70000, 5])
    places = segs.append(frames)
    assert len(places) == len(frames)
    # One segment, frames back to back in order.
    assert [seg for seg, _ in places] == [1] * len(frames)
    h = SEGMENT_HEADER_SIZE  # frames follow the segment's header
    assert [off for _, off in places] == [h, h + 1, h + 29, h + 4125, h + 74125]
    for (seg, off), frame in zip(places, frames, strict=True):
        assert segs.read(seg, off, len(frame)) == frame
    assert segment_bytes(segs) == sum(map(len, frames))
    assert segs.segment_ids() == [1]
    assert (segs.dir / segment_name(1)).read_bytes()[h:] == b"".join(frames)
    assert segs.check_header(1) is None


def test_successive_appends_continue_the_segment(segs: SegmentStore) -> None:
    first = frames_of([100, 200], seed=1)
    second = frames_of([300], seed=2)
    p1 = segs.append(first)
    segs.sync()
    p2 = segs.append(second)
    assert p2 == [(1, SEGMENT_HEADER_SIZE + 300)]
    for (seg, off), frame in zip(p1 + p2, first + second, strict=True):
        assert segs.read(seg, off, len(frame)) == frame


def test_empty_append_is_a_no_op(segs: SegmentStore) -> None:
    assert segs.append([]) == []
    assert segment_bytes(segs) == 0 and segs.segment_ids() == []


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-by-one"])
def test_rolls_to_a_new_segment_at_the_size_limit(seg_dir: Path, batched: bool) -> None:
    limit = 1000
    store = SegmentStore(seg_dir, VOLUME, segment_bytes=limit)
    rng = random.Random(3)
    frames = frames_of([rng.randrange(1, 400) for _ in range(60)], seed=4)
    places = store.append(frames) if batched else [p for f in frames for p in store.append([f])]
    store.close()
    ids = store.segment_ids()
    assert len(ids) >= sum(map(len, frames)) // (limit + 400)
    assert ids == list(range(1, len(ids) + 1))
    # Frames fill segments in order; no frame starts past the limit, and a segment takes no more
    # frames once it has reached the limit (it may end with one frame that crosses it).
    assert places == sorted(places)
    largest = max(map(len, frames))
    for seg in ids:
        size = store.path(seg).stat().st_size
        assert size < limit + largest
        if seg != ids[-1]:
            assert size >= limit - largest
    for (seg, off), frame in zip(places, frames, strict=True):
        assert off < limit
        assert store.read(seg, off, len(frame)) == frame
    assert segment_bytes(store) == sum(map(len, frames))


def test_frame_larger_than_a_segment_still_fits(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME, segment_bytes=100)
    frames = frames_of([50, 500, 10, 500])
    places = store.append(frames)
    for (seg, off), frame in zip(places, frames, strict=True):
        assert store.read(seg, off, len(frame)) == frame
    assert len({seg for seg, _ in places}) >= 2
    store.close()


def test_new_store_on_same_dir_starts_a_new_segment(seg_dir: Path) -> None:
    first = SegmentStore(seg_dir, VOLUME)
    old = frames_of([100, 200], seed=5)
    old_places = first.append(old)
    first.close()

    second = SegmentStore(seg_dir, VOLUME)
    new = frames_of([300], seed=6)
    new_places = second.append(new)
    # The tail of an older segment is never written after.
    assert new_places == [(2, SEGMENT_HEADER_SIZE)]
    assert first.path(1).stat().st_size == SEGMENT_HEADER_SIZE + 300
    for (seg, off), frame in zip(old_places + new_places, old + new, strict=True):
        assert second.read(seg, off, len(frame)) == frame
    second.close()

    third = SegmentStore(seg_dir, VOLUME)
    assert third.append(frames_of([1]))[0] == (3, SEGMENT_HEADER_SIZE)
    third.close()
    assert third.segment_ids() == [1, 2, 3]


def test_store_that_never_appended_creates_no_segment(seg_dir: Path) -> None:
    SegmentStore(seg_dir, VOLUME).close()
    assert SegmentStore(seg_dir, VOLUME).segment_ids() == []


def test_segment_ids_ignore_other_files(seg_dir: Path, segs: SegmentStore) -> None:
    (seg_dir / "notes.txt").write_text("x")
    (seg_dir / "abc.seg").write_text("x")
    segs.append(frames_of([10]))
    assert segs.segment_ids() == [1]


def test_reading_a_missing_segment_is_corrupt_chunk(segs: SegmentStore) -> None:
    with pytest.raises(CorruptChunk):
        segs.read(7, 0, 10)


def test_reading_a_deleted_segment_is_corrupt_chunk(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME)
    store.append(frames_of([10]))
    store.close()
    reopened = SegmentStore(seg_dir, VOLUME)
    reopened.path(1).unlink()
    with pytest.raises(CorruptChunk):
        reopened.read(1, 0, 10)
    reopened.close()


@pytest.mark.parametrize(("offset", "length"), [(100, 1), (95, 10), (0, 101), (10**9, 1), (-32, 10)])
def test_reading_past_the_end_or_into_the_header_is_corrupt_chunk(segs: SegmentStore, offset: int,
                                                                  length: int) -> None:
    segs.append(frames_of([100]))
    with pytest.raises(CorruptChunk):
        segs.read(1, SEGMENT_HEADER_SIZE + offset, length)


def test_truncated_segment_is_corrupt_chunk(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME)
    frames = frames_of([100, 100])
    places = store.append(frames)
    store.close()
    with open(store.path(1), "r+b") as fh:
        fh.truncate(SEGMENT_HEADER_SIZE + 150)
    reopened = SegmentStore(seg_dir, VOLUME)
    assert reopened.read(*places[0], 100) == frames[0]
    with pytest.raises(CorruptChunk):
        reopened.read(*places[1], 100)
    reopened.close()


def test_concurrent_appends_place_every_frame_once(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME, segment_bytes=5000)
    results: dict[int, list[tuple[tuple[int, int], bytes]]] = {}

    def writer(n: int) -> None:
        rng = random.Random(n)
        out: list[tuple[tuple[int, int], bytes]] = []
        for _ in range(40):
            batch = [rng.randbytes(rng.randrange(1, 300)) for _ in range(rng.randrange(1, 4))]
            out.extend(zip(store.append(batch), batch, strict=True))
        results[n] = out

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = [item for out in results.values() for item in out]
    # No two frames overlap, and each reads back as written.
    spans = sorted((seg, off, off + len(frame)) for (seg, off), frame in placed)
    for (s1, _, end1), (s2, start2, _) in pairwise(spans):
        assert s1 != s2 or end1 <= start2
    for (seg, off), frame in placed:
        assert store.read(seg, off, len(frame)) == frame
    assert segment_bytes(store) == sum(len(f) for _, f in placed)
    store.close()


def test_concurrent_reads_across_many_segments_return_the_right_bytes(seg_dir: Path) -> None:
    """More segments than cached read descriptors, read from several threads.

    Regression (found in d36a002): opening one descriptor too many closed all cached ones while other
    threads were still reading through them: EBADF, or bytes of another segment (a reused number).
    """
    store = SegmentStore(seg_dir, VOLUME, segment_bytes=64)
    count = MAX_READ_FDS + 144
    frames = [bytes([i % 251]) * 64 for i in range(count)]  # one frame per segment, each distinct
    places = store.append(frames)
    assert len(store.segment_ids()) == count
    problems: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(5000):
            if problems:
                return
            i = rng.randrange(len(frames))
            try:
                if store.read(*places[i], 64) != frames[i]:
                    problems.append(f"frame {i}: wrong bytes")
            except Exception as e:
                problems.append(f"frame {i}: {e!r}")

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
        store.close()
    assert problems == []


class CountingLibc:
    """The libc handle of a segment store, counting the hole punches it passes on."""

    def __init__(self, libc: object) -> None:
        self._libc = libc
        self.punches: list[tuple[int, int]] = []

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> int:
        self.punches.append((offset, length))
        return self._libc.fallocate(fd, mode, offset, length)  # type: ignore[attr-defined]


def test_punch_zeroes_dead_frames_in_one_range_and_keeps_live_neighbours(segs: SegmentStore) -> None:
    frames = frames_of([70000, 5000, 65536, 9000, 70000, 300, 12000])
    places = segs.append(frames)
    libc = CountingLibc(segs._libc)
    segs._libc = libc  # type: ignore[assignment]
    dead = [1, 3, 2, 5]  # frames 1-3 touch each other, 5 stands alone; given out of order
    segs.punch([(places[i][0], places[i][1], len(frames[i])) for i in dead])
    # One punch for the three adjacent frames, one for the lone one.
    assert libc.punches == [(places[1][1], sum(map(len, frames[1:4]))), (places[5][1], len(frames[5]))]
    for i, ((seg, off), frame) in enumerate(zip(places, frames, strict=True)):
        expect = bytes(len(frame)) if i in dead else frame
        assert segs.read(seg, off, len(frame)) == expect, i
    assert segment_bytes(segs) == sum(map(len, frames))  # the segment keeps its size


def test_segment_of_another_volume_or_under_another_name_is_refused(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME)
    frame = frames_of([100])[0]
    (place,) = store.append([frame])
    store.close()
    stranger = SegmentStore(seg_dir, bytes(16))
    with pytest.raises(CorruptChunk, match="another volume"):
        stranger.read(*place, 100)
    assert stranger.check_header(1) is not None
    stranger.close()
    store.path(1).rename(store.path(7))
    renamed = SegmentStore(seg_dir, VOLUME)
    with pytest.raises(CorruptChunk, match="says it is segment 1"):
        renamed.read(7, place[1], 100)
    renamed.close()


def test_damaged_header_is_refused(seg_dir: Path) -> None:
    store = SegmentStore(seg_dir, VOLUME)
    frame = frames_of([100])[0]
    (place,) = store.append([frame])
    store.close()
    with open(store.path(1), "r+b") as fh:
        fh.seek(20)
        fh.write(b"\xff")
    reopened = SegmentStore(seg_dir, VOLUME)
    with pytest.raises(CorruptChunk, match="header is damaged"):
        reopened.read(*place, 100)
    reopened.close()


def test_segments_before_headers_from_have_no_header(seg_dir: Path) -> None:
    """A store upgraded from format 1: its older segments start with their first frame."""
    frame = frames_of([100])[0]
    (seg_dir / segment_name(1)).write_bytes(frame)
    store = SegmentStore(seg_dir, VOLUME, headers_from=2)
    assert store.read(1, 0, 100) == frame and store.frame_bytes(1) == 100
    (place,) = store.append([frame])
    assert place == (2, SEGMENT_HEADER_SIZE) and store.read(*place, 100) == frame
    store.close()


def test_segment_store_first_id(tmp_path: Path) -> None:
    (tmp_path / "segs").mkdir()
    s = SegmentStore(tmp_path / "segs", bytes(16))
    s.append([b"a"])
    s.close()
    s = SegmentStore(tmp_path / "segs", bytes(16))
    assert s.first_id == s.active_id == 2
    s.close()
