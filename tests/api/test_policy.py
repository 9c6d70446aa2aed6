"""The hot/cold policy: temperature rules, the access tracker, and the cooler over the volume API."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.fs.meta import ChunkEntry, MetaStore, Tier
from thermofs.daemon.options import MountOptions
from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.fs.relocate import Chunk, relocate
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.policy.temperature import (DEDUP_SECONDS, PolicyParams, Temp, accessed, decayed, is_cold,
                                         is_reheated, merged, parse_age)
from thermofs.policy.tracker import Tracker

if TYPE_CHECKING:
    from tests.conftest import Clock

UID, GID = os.getuid(), os.getgid()
K64 = 64 << 10
P = PolicyParams(cold_age=300, cold_count=2.5, hot_count=3.5, half_life=600)


# -- temperature rules ---------------------------------------------------------------------------------

def test_decay_halves_per_half_life() -> None:
    assert decayed(Temp(4.0, 100.0), 100.0 + 600, 600) == pytest.approx(2.0)
    assert decayed(Temp(4.0, 100.0), 100.0, 600) == 4.0


def test_accesses_within_a_second_count_once() -> None:
    t = accessed(None, 10.0, 600)
    t = accessed(t, 10.0 + DEDUP_SECONDS / 2, 600)
    assert t.weight == 1.0
    t = accessed(t, 20.0, 600)
    assert t.weight == pytest.approx(1.0 * 2 ** (-9.5 / 600) + 1.0)


def test_merged_equals_sequential_accesses() -> None:
    times = [0.0, 50.0, 700.0, 705.0, 2000.0]
    whole: Temp | None = None
    for now in times:
        whole = accessed(whole, now, 600)
    first: Temp | None = None
    for now in times[:2]:
        first = accessed(first, now, 600)
    rest: Temp | None = None
    for now in times[2:]:
        rest = accessed(rest, now, 600)
    assert whole is not None and first is not None and rest is not None
    both = merged(first, rest, 600)
    assert both.last == whole.last and both.weight == pytest.approx(whole.weight)


def test_hysteresis_one_scan_does_not_reheat() -> None:
    idle = Temp(1.0, 0.0)
    assert not is_cold(idle, 299, P) and is_cold(idle, 300, P)
    busy = Temp(4.0, 0.0)  # 2.8 after 300 s: still above cold_count
    assert not is_cold(busy, 300, P)
    scanned = accessed(idle, 1000.0, P.half_life)  # one read of a cold chunk (backup, grep)
    assert not is_reheated(scanned, 1000.0, P)
    heat = scanned
    for k in range(1, 4):
        heat = accessed(heat, 1000.0 + 10 * k, P.half_life)
    assert is_reheated(heat, 1030.0, P)


def test_params_are_validated() -> None:
    assert PolicyParams().with_options({"cold_age": "2h", "hot_count": "5"}).cold_age == 7200
    with pytest.raises(ValueError, match="unknown policy parameter"):
        PolicyParams().with_options({"cold": "1"})
    with pytest.raises(ValueError, match="hysteresis"):
        PolicyParams(cold_count=3, hot_count=2)
    with pytest.raises(ValueError, match="bad age"):
        parse_age("soon")
    with pytest.raises(ValueError, match="non-negative"):
        PolicyParams(cold_age=-1)


# -- the tracker -----------------------------------------------------------------------------------------

def test_tracker_batches_and_survives_reopen(tmp_path: Path, clock: Clock) -> None:
    meta = MetaStore(tmp_path / "m", create=True)
    tr = Tracker(meta, P, clock)
    tr.touch(7, 0, 3)
    clock.now += 100
    tr.touch(7, 2, 2)
    with meta.read() as t:
        assert t.get_temp(7, 2) is None  # nothing written per access
        assert tr.temp(t, 7, 2, 0.0).weight == pytest.approx(2 ** (-100 / 600) + 1)
    assert tr.flush() == 4
    meta.close()
    meta = MetaStore(tmp_path / "m")
    tr = Tracker(meta, P, clock)
    clock.now += 5
    tr.touch(7, 2, 2)
    tr.flush()
    with meta.read() as t:
        count, last = t.get_temp(7, 2)  # type: ignore[misc]
        assert last == clock.now
        assert count == pytest.approx((2 ** (-100 / 600) + 1) * 2 ** (-5 / 600) + 1, rel=1e-6)
        # no record: accessed once at the file's mtime
        assert tr.temp(t, 9, 0, 123.0) == Temp(1.0, 123.0)
    meta.close()


# -- the cooler over a real store --------------------------------------------------------------------------

@pytest.fixture
def vol(tmp_path: Path, clock: Clock) -> Iterator[tuple[OpenVolume, Clock]]:
    store = tmp_path / "store"
    mkfs(store, StoreConfig(cold_codec="zstd:19"))
    parts = open_volume(store, options=MountOptions(cooler=False), clock=clock)
    yield parts, clock
    parts.close()


def _text(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghij") for _ in range(rnd.randint(2, 9))) for _ in range(300)]
    return b" ".join(rnd.choice(words) for _ in range(n // 5))[:n]


def _write(parts: OpenVolume, path: str, data: bytes) -> int:
    fh, inode = parts.volume.create(path, 0o644, UID, GID)
    parts.volume.write(fh, 0, data)
    parts.volume.release(fh)
    return inode.ino


def _read(parts: OpenVolume, ino: int) -> bytes:
    fh = parts.volume.open(ino, writable=False)
    try:
        return parts.volume.read(fh, 0, parts.volume.getattr(ino).size)
    finally:
        parts.volume.release(fh)


def _entries(parts: OpenVolume, ino: int) -> dict[int, ChunkEntry]:
    with parts.meta.read() as t:
        return dict(t.chunks_of(ino))


def test_forced_cooling_recompresses_everything_and_reads_back(vol: tuple[OpenVolume, Clock]) -> None:
    parts, _clock = vol
    data = {f"/f{i}": _text(5 * K64 + 1000 * i, i) for i in range(4)}
    inos = {p: _write(parts, p, d) for p, d in data.items()}
    before = parts.volume.counters()
    report = parts.cooler.cool(older_than=0)
    after = parts.volume.counters()
    assert report.cooled == before["chunks"] == after["cold_chunks"] and after["hot_chunks"] == 0
    assert after["stored_bytes"] < before["stored_bytes"]
    assert report.bytes_saved == before["stored_bytes"] - after["stored_bytes"]
    assert after.get("garbage_bytes", 0) - before.get("garbage_bytes", 0) >= report.bytes_saved
    parts.volume.cache.clear()
    for p, ino in inos.items():
        assert _read(parts, ino) == data[p]
        assert all(e.tier == 1 for e in _entries(parts, ino).values())
    # a second pass has nothing left to do
    assert parts.cooler.cool(older_than=0).cooled == 0


def test_policy_cools_only_old_unused_chunks(vol: tuple[OpenVolume, Clock]) -> None:
    parts, clock = vol
    old = _write(parts, "/old", _text(3 * K64, 1))
    clock.now += 400  # past cold_age (300 s)
    new = _write(parts, "/new", _text(3 * K64, 2))
    busy = _write(parts, "/busy", _text(K64, 3))
    clock.now += 10
    for _ in range(5):  # read often: a high count keeps it hot past cold_age
        clock.now += 30
        _read(parts, busy)
    clock.now += 310
    report = parts.cooler.cool()
    tiers = {name: {e.tier for e in _entries(parts, ino).values()} for name, ino in
             (("old", old), ("new", new), ("busy", busy))}
    assert tiers == {"old": {1}, "new": {1}, "busy": {0}}, tiers
    assert report.cooled == 6


def test_recently_accessed_chunks_stay_hot_with_older_than(vol: tuple[OpenVolume, Clock]) -> None:
    parts, clock = vol
    a = _write(parts, "/a", _text(2 * K64, 1))
    clock.now += 3600
    b = _write(parts, "/b", _text(2 * K64, 2))
    clock.now += 60
    parts.cooler.cool(older_than=1800)
    assert {e.tier for e in _entries(parts, a).values()} == {1}
    assert {e.tier for e in _entries(parts, b).values()} == {0}


def test_a_rewritten_chunk_keeps_its_new_content(vol: tuple[OpenVolume, Clock]) -> None:
    """Invariant 3: the swap happens only if the entry is still the one that was recompressed."""
    parts, _clock = vol
    ino = _write(parts, "/f", _text(2 * K64, 1))
    stale = _entries(parts, ino)
    fh = parts.volume.open(ino)
    parts.volume.write(fh, 0, b"N" * K64)
    parts.volume.release(fh)
    garbage = parts.volume.counters().get("garbage_bytes", 0)
    cold = parts.volume.chunks.table.parse(parts.config.cold_codec)
    done = relocate(parts.meta, parts.volume.chunks, [Chunk(ino, i, e) for i, e in stale.items()], cold, Tier.COLD)
    assert done.raced == 1 and done.moved == 1
    assert _read(parts, ino)[:K64] == b"N" * K64
    assert _entries(parts, ino)[0].tier == 0
    assert parts.volume.counters()["garbage_bytes"] >= garbage


def test_incompressible_chunks_only_change_tier(vol: tuple[OpenVolume, Clock]) -> None:
    parts, _clock = vol
    data = os.urandom(2 * K64)
    ino = _write(parts, "/r", data)
    before = _entries(parts, ino)
    parts.cooler.cool(older_than=0)
    after = _entries(parts, ino)
    assert {i: (e.segment, e.offset, e.frame_len) for i, e in after.items()} == \
        {i: (e.segment, e.offset, e.frame_len) for i, e in before.items()}
    assert all(e.tier == 1 for e in after.values())
    assert parts.volume.counters()["cold_chunks"] == 2
    assert _read(parts, ino) == data


def test_readers_during_cooling_see_exact_bytes(vol: tuple[OpenVolume, Clock]) -> None:
    """The cooler punches out the old frame of a file that is open: readers retry, never EIO."""
    parts, _clock = vol
    data = _text(40 * K64, 9)
    ino = _write(parts, "/big", data)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        fh = parts.volume.open(ino, writable=False)
        rnd = random.Random(1)
        try:
            while not stop.is_set():
                parts.volume.cache.clear()
                off = rnd.randrange(0, len(data) - 8192)
                if parts.volume.read(fh, off, 8192) != data[off:off + 8192]:
                    errors.append(AssertionError(f"wrong bytes at {off}"))
        except BaseException as e:
            errors.append(e)
        finally:
            parts.volume.release(fh)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert parts.cooler.cool(older_than=0).cooled == 40
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]


def test_reheated_slow_codec_chunks_are_promoted(tmp_path: Path, clock: Clock) -> None:
    """Promotion re-encodes re-heated chunks with the hot codec when their codec is slow to decode
    (here zstd is declared slow, standing in for the learned codec)."""
    store = tmp_path / "store"
    mkfs(store, StoreConfig(cold_codec="zstd:19"))
    parts = open_volume(store, options=MountOptions(cooler=False), clock=clock)
    try:
        ino = _write(parts, "/f", _text(2 * K64, 4))
        parts.cooler.cool(older_than=0)
        parts.cooler._promote_ids = frozenset({1})
        for _ in range(4):
            clock.now += 5
            parts.volume.cache.clear()
            _read(parts, ino)
        report = parts.cooler.cool()
        assert report.promoted == 2
        assert {e.tier for e in _entries(parts, ino).values()} == {0}
        assert _read(parts, ino) == _text(2 * K64, 4)
    finally:
        parts.close()


def test_cold_codec_best_trains_dictionaries_and_stores_smaller(tmp_path: Path, corpora: Path) -> None:
    """mkfs --cold-codec best, then cool --now: the first pass trains the volume's dictionaries
    (persisted before any frame names them), chunks land in the codec that wins, and a reopened
    volume reads every byte back; the same data cooled with zstd -19 takes more space."""
    corpus = sorted(p for p in corpora.rglob("*") if p.is_file())
    data = {f"/{i}": p.read_bytes() for i, p in enumerate(corpus)}
    stored = {}
    for cold in ("zstd:19", "best"):
        store = tmp_path / cold.replace(":", "")
        mkfs(store, StoreConfig(cold_codec=cold))
        parts = open_volume(store, options=MountOptions(cooler=False))
        try:
            inos = {p: _write(parts, p, d) for p, d in data.items()}
            parts.cooler.cool(older_than=0)
            stored[cold] = parts.volume.counters()["stored_bytes"]
            names = {parts.volume.chunks.table.by_id[e.codec_id].name
                     for ino in inos.values() for e in _entries(parts, ino).values()}
        finally:
            parts.close()
        parts = open_volume(store, options=MountOptions(cooler=False))
        try:
            for p, ino in inos.items():
                assert _read(parts, ino) == data[p], p
            if cold == "best":
                assert parts.volume.chunks.table.resources.dictionaries(), "no dictionary was trained"
                assert "dict" in names or "brotli" in names, names
        finally:
            parts.close()
    assert stored["best"] < 0.95 * stored["zstd:19"], stored


def test_temperatures_go_with_their_file(vol: tuple[OpenVolume, Clock]) -> None:
    parts, _clock = vol
    ino = _write(parts, "/f", _text(3 * K64, 5))
    parts.tracker.flush()
    with parts.meta.read() as t:
        assert all(t.get_temp(ino, i) is not None for i in range(3))
    parts.volume.unlink("/f")
    with parts.meta.read() as t:
        assert all(t.get_temp(ino, i) is None for i in range(3))
