"""The hot/cold policy over the volume API: the cooler over a real store, on a clock the test moves
(tests/unit/test_policy.py: the temperature rules and the tracker)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.daemon.options import MountOptions
from thermofs.fs.meta import ChunkEntry, Tier
from thermofs.fs.relocate import Chunk, relocate
from thermofs.fs.store import StoreConfig, mkfs

if TYPE_CHECKING:
    from tests.conftest import Clock

UID, GID = os.getuid(), os.getgid()
K64 = 64 << 10


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
                assert "learned" in names and ("dict" in names or "brotli" in names), names
        finally:
            parts.close()
    assert stored["best"] < 0.95 * stored["zstd:19"], stored


def test_first_pass_of_best_fine_tunes_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cold path ``best``, the cooler's first pass on a volume with enough chunks stores a
    learned model fine-tuned from the shipped one before any frame names it; learned frames name it
    and read back after a reopen; a second pass trains no other."""
    from thermofs.codecs.learned import train
    from thermofs.policy import training

    calls = []

    def fake_train(samples, base, budget_s, progress):  # type: ignore[no-untyped-def]
        calls.append((len(samples), budget_s))
        return train.TrainedModel(base)  # the shipped model under a new id: fast, and decodes the same

    monkeypatch.setattr(train, "train_model", fake_train)
    monkeypatch.setattr(training, "MODEL_MIN_CHUNKS", 4)
    monkeypatch.setattr(train, "MIN_KIND_PIECES", 4)
    store = tmp_path / "store"
    mkfs(store, StoreConfig())  # the default cold codec: best
    data = _text(6 * K64, 11)
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        ino = _write(parts, "/f", data)
        parts.cooler.cool(older_than=0)
        parts.cooler.cool(older_than=0)
        model_id = parts.volume.chunks.table.resources.current_model("text")
        assert model_id is not None and len(calls) == 1 and calls[0][1] == training.AUTO_MODEL_BUDGET
        assert parts.volume.chunks.table.resources.current_model("binary") is None  # no binary samples
        assert {(e.codec_id, e.param) for e in _entries(parts, ino).values()} == {(4, model_id)}
    finally:
        parts.close()
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        assert _read(parts, ino) == data
    finally:
        parts.close()


def test_a_recoded_frame_that_does_not_decode_back_never_replaces_a_chunk(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Cooling with one codec (``--cold-codec learned``): a new frame is decoded once and compared
    before it replaces the hot one. With a codec fault injected (every learned payload damaged), no
    chunk gets a learned frame (each keeps its hot frame, a raw one would not be smaller), and every
    byte reads back."""
    from thermofs.codecs.learned import LearnedCodec

    store = tmp_path / "store"
    mkfs(store, StoreConfig(cold_codec="learned"))
    data = _text(4 * K64, 13)
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        ino = _write(parts, "/f", data)
        compress = LearnedCodec.compress

        def damaged(self: LearnedCodec, raw: bytes, param: int) -> bytes:
            payload = bytearray(compress(self, raw, param))
            payload[len(payload) // 2] ^= 0x40
            return bytes(payload)

        monkeypatch.setattr(LearnedCodec, "compress", damaged)
        parts.cooler.cool(older_than=0)
        assert {e.codec_id for e in _entries(parts, ino).values()} == {1}  # zstd, as written
        assert _read(parts, ino) == data
    finally:
        parts.close()


def test_a_first_training_that_keeps_nothing_waits_for_the_volume_to_grow(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The cooler asks for the first dictionaries before every pass. On data no dictionary helps
    (random bytes), the try is not repeated at each pass, only once the volume has grown
    RETRY_GROWTH times over."""
    from thermofs.policy import training

    calls: list[int] = []
    train = training.train_dictionaries

    def counting(samples):  # type: ignore[no-untyped-def]
        calls.append(len(samples))
        return train(samples)

    monkeypatch.setattr(training, "train_dictionaries", counting)
    store = tmp_path / "store"
    mkfs(store, StoreConfig())  # best: uses dictionaries
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        _write(parts, "/a", os.urandom(2 << 20))
        for _ in range(3):
            parts.cooler.cool()
        assert len(calls) == 1 and not parts.volume.chunks.table.resources.dictionaries()
        _write(parts, "/b", os.urandom(2 << 20))  # twice the logical size of the try
        parts.cooler.cool()
        parts.cooler.cool()
        assert len(calls) == 2
    finally:
        parts.close()


def test_model_records_by_kind_reload(tmp_path: Path) -> None:
    """A volume's model blobs come back under their ids and kinds after a reopen: a record without a
    kind (one model for all data) serves the kinds with none of their own; a record that is neither
    form is left out as damaged, and the others stay usable."""
    from thermofs.codecs.learned.codec import default_model_blob
    from thermofs.fs.meta import BLOB_MODEL, DamagedRecord, MetaStore
    from thermofs.fs.resources import load_resources, model_record

    store = tmp_path / "store"
    mkfs(store, StoreConfig())
    blob = default_model_blob()
    meta = MetaStore(store / "meta.lmdb")
    try:
        with meta.write() as t:
            ids = [t.put_blob(BLOB_MODEL, model_record(blob, None)),
                   t.put_blob(BLOB_MODEL, model_record(blob, "text")),
                   t.put_blob(BLOB_MODEL, b"text\nnot a model")]
        damaged: list[DamagedRecord] = []
        resources = load_resources(meta, damaged)
    finally:
        meta.close()
    assert resources.current_model("text") == ids[1] and resources.current_model("binary") == ids[0]
    assert resources.model(ids[0]) == resources.model(ids[1]) == blob
    assert len(damaged) == 1 and f"model {ids[2]}" in damaged[0].why


def test_sequential_reads_of_learned_chunks_decode_on_the_pool(tmp_path: Path) -> None:
    """Once a file's reads meet learned frames, a request's chunks are decoded on the encoder pool
    (one per core), and every byte reads back exactly."""
    store = tmp_path / "store"
    mkfs(store, StoreConfig(cold_codec="learned"))
    data = _text(6 * K64 + 1000, 9)
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        ino = _write(parts, "/f", data)
        parts.cooler.cool(older_than=0)
        assert {e.codec_id for i, e in _entries(parts, ino).items() if i < 6} == {4}
    finally:
        parts.close()
    parts = open_volume(store, options=MountOptions(cooler=False))
    submitted = []
    submit = parts.pool.submit

    def counting(fn, *args):  # type: ignore[no-untyped-def]
        submitted.append(args)
        return submit(fn, *args)

    parts.pool.submit = counting  # type: ignore[method-assign]
    try:
        fh = parts.volume.open(ino, writable=False)
        got = b"".join(parts.volume.read(fh, off, 2 * K64) for off in range(0, len(data), 2 * K64))
        parts.volume.release(fh)
        assert got == data
        assert len(submitted) == 2  # requests 2 and 3 (chunks 2-3, 4-5): one chunk each on the pool
    finally:
        parts.close()


def test_temperatures_go_with_their_file(vol: tuple[OpenVolume, Clock]) -> None:
    parts, _clock = vol
    ino = _write(parts, "/f", _text(3 * K64, 5))
    parts.tracker.flush()
    with parts.meta.read() as t:
        assert all(t.get_temp(ino, i) is not None for i in range(3))
    parts.volume.unlink("/f")
    with parts.meta.read() as t:
        assert all(t.get_temp(ino, i) is None for i in range(3))
