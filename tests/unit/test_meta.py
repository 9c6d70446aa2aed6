"""LMDB metadata: round trips of every sub-database, prefix scans, counters, transactions."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from thermofs.fs.errors import MetaError
from thermofs.fs.meta import INLINE_SEGMENT, ROOT_INO, ChunkEntry, Inode, MetaStore, Tier, Txn, chunk_totals


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetaStore]:
    store = MetaStore(tmp_path / "meta.lmdb", create=True)
    yield store
    store.close()


def file_inode(ino: int, size: int = 0, nlink: int = 1) -> Inode:
    return Inode(ino, stat.S_IFREG | 0o644, 1000, 1000, nlink, size, 1, 2, 3)


def entry(segment: int = 1, offset: int = 0, frame_len: int = 100, codec_id: int = 1, raw_len: int = 4096,
          tier: int = 0) -> ChunkEntry:
    return ChunkEntry(segment, offset, frame_len, codec_id, 1001 if codec_id else 0, raw_len,
                      0x0123456789ABCDEF, tier)


def recomputed_chunk_counters(t: Txn) -> dict[str, int]:
    """The chunk counters as they must be: recomputed from the chunk map itself, chunk by chunk."""
    out: dict[str, int] = {"chunks": 0, "stored_bytes": 0, "hot_chunks": 0, "cold_chunks": 0}
    for inode in t.inodes():
        for _index, e in t.chunks_of(inode.ino):
            for name, value in chunk_totals(e).items():
                out[name] = out.get(name, 0) + value
    return out


def test_the_totals_of_one_chunk() -> None:
    """The rule every running total of the chunk map follows (put adds these, a replaced or deleted
    chunk takes them back, fsck recounts with them)."""
    assert chunk_totals(entry(frame_len=100, codec_id=1, raw_len=4096, tier=Tier.COLD)) == {
        "chunks": 1, "stored_bytes": 100, "cold_chunks": 1, "codec/1/chunks": 1, "codec/1/raw_bytes": 4096,
        "codec/1/stored_bytes": 100}
    assert chunk_totals(entry(frame_len=7, codec_id=0, raw_len=7))["hot_chunks"] == 1


def assert_counters_match_map(meta: MetaStore) -> dict[str, int]:
    with meta.read() as t:
        expected = recomputed_chunk_counters(t)
        counters = t.counters()
        garbage = t.garbage_by_segment()
    actual = {k: counters.get(k, 0) for k in expected}
    # Codec counters of codecs with no chunk left must be back at zero.
    actual.update({k: v for k, v in counters.items() if k.startswith("codec/") and k not in expected})
    expected.update({k: 0 for k in actual if k not in expected})
    assert actual == expected
    assert counters.get("garbage_bytes", 0) == sum(garbage.values())
    return counters


# -- round trips ------------------------------------------------------------------------------------------

def test_inode_round_trip_and_evolve(meta: MetaStore) -> None:
    dir_inode = Inode(7, stat.S_IFDIR | 0o750, 0, 0, 2, 0, -5, 2**62, 3, rdev=9, parent=ROOT_INO)
    with meta.write() as t:
        t.put_inode(dir_inode)
        t.put_inode(file_inode(8, size=2**40))
    with meta.read() as t:
        assert t.get_inode(7) == dir_inode
        assert t.get_inode(8) == file_inode(8, size=2**40)
        assert t.get_inode(9) is None
        assert [i.ino for i in t.inodes()] == [7, 8]
    with meta.write() as t:
        t.put_inode(dir_inode.evolve(nlink=3, mtime=99))
    with meta.read() as t:
        assert t.get_inode(7) == Inode(7, stat.S_IFDIR | 0o750, 0, 0, 3, 0, -5, 99, 3, rdev=9, parent=ROOT_INO)


def test_dirents_round_trip(meta: MetaStore) -> None:
    with meta.write() as t:
        t.put_dirent(1, b"b", 20, stat.S_IFREG | 0o644)
        t.put_dirent(1, b"a", 21, stat.S_IFDIR | 0o755)
        t.put_dirent(1, "ü-name".encode(), 22, stat.S_IFLNK | 0o777)
    with meta.read() as t:
        assert t.lookup(1, b"a") == 21
        assert t.lookup(1, b"c") is None
        assert list(t.list_dir(1)) == [(b"a", 21, stat.S_IFDIR), (b"b", 20, stat.S_IFREG),
                                       ("ü-name".encode(), 22, stat.S_IFLNK)]
        assert not t.dir_is_empty(1)
    with meta.write() as t:
        for name, _, _ in list(t.list_dir(1)):
            t.del_dirent(1, name)
    with meta.read() as t:
        assert t.dir_is_empty(1) and t.lookup(1, b"a") is None


def test_symlinks_and_orphans_round_trip(meta: MetaStore) -> None:
    with meta.write() as t:
        t.put_symlink(5, b"../some/target")
        t.add_orphan(300)
        t.add_orphan(4, parent=256, name=b".fuse_hidden0001")
        t.add_orphan(7)
    with meta.read() as t:
        assert t.get_symlink(5) == b"../some/target"
        assert t.get_symlink(6) is None
        assert t.orphans() == [(4, 256, b".fuse_hidden0001"), (7, 0, b""), (300, 0, b"")]
    with meta.write() as t:
        t.del_orphan(7)
        t.del_orphan(8)  # not an orphan: nothing happens
    with meta.read() as t:
        assert t.orphans() == [(4, 256, b".fuse_hidden0001"), (300, 0, b"")]


def test_xattrs_round_trip(meta: MetaStore) -> None:
    value = bytes(range(256)) * 40
    with meta.write() as t:
        t.put_xattr(3, b"user.big", value)
        t.put_xattr(3, b"user.empty", b"")
        t.put_xattr(3, b"trusted.x", b"1")
    with meta.read() as t:
        assert t.get_xattr(3, b"user.big") == value
        assert t.get_xattr(3, b"user.empty") == b""  # an empty value is not a missing one
        assert t.get_xattr(3, b"user.none") is None
        assert list(t.xattr_names(3)) == [b"trusted.x", b"user.big", b"user.empty"]
    with meta.write() as t:
        assert t.del_xattr(3, b"user.big") is True
        assert t.del_xattr(3, b"user.big") is False
    with meta.read() as t:
        assert list(t.xattr_names(3)) == [b"trusted.x", b"user.empty"]


def test_chunk_entry_round_trip(meta: MetaStore) -> None:
    e = ChunkEntry(2**32 - 1, 2**63, 65536 + 28, 255, 2**32 - 1, 65536, 2**64 - 1, 1)
    with meta.write() as t:
        t.put_inode(file_inode(9))
        t.put_chunk(9, 2**63, e)
    with meta.read() as t:
        assert t.get_chunk(9, 2**63) == e
        assert t.get_chunk(9, 0) is None
        assert list(t.chunks_of(9)) == [(2**63, e)]


# -- prefix scans stop at the inode boundary (big-endian keys: cursor order is numeric order) ------------

# Little-endian keys would put 256 (00 01 00 ..) before 2 (02 00 ..) and mix the inodes' entries.
BOUNDARY_INOS = [1, 2, 255, 256, 257, 65536, 2**32, 2**63]


def test_list_dir_stops_at_inode_boundary(meta: MetaStore) -> None:
    with meta.write() as t:
        for parent in BOUNDARY_INOS:
            for name in (b"\x00", b"a", b"\xff" * 10):
                t.put_dirent(parent, name, parent + 1000, stat.S_IFREG)
    with meta.read() as t:
        for parent in BOUNDARY_INOS:
            assert [(n, ino) for n, ino, _ in t.list_dir(parent)] == [
                (b"\x00", parent + 1000), (b"a", parent + 1000), (b"\xff" * 10, parent + 1000)]
        for empty in (0, 3, 254, 258, 2**32 - 1, 2**63 + 1):
            assert list(t.list_dir(empty)) == []
            assert t.dir_is_empty(empty)


def test_chunk_scan_is_numeric_and_stops_at_inode_boundary(meta: MetaStore) -> None:
    indexes = [0, 1, 2, 255, 256, 65535, 65536, 2**40]
    with meta.write() as t:
        for ino in BOUNDARY_INOS:
            t.put_inode(file_inode(ino))
            for index in reversed(indexes):
                t.put_chunk(ino, index, entry(segment=ino % 2**32 or 2**32 - 1, offset=index))
    with meta.read() as t:
        for ino in BOUNDARY_INOS:
            got = list(t.chunks_of(ino))
            assert [i for i, _ in got] == indexes
            assert all(e.offset == i and e.segment == (ino % 2**32 or 2**32 - 1) for i, e in got)
            assert [i for i, _ in t.chunks_of(ino, start=256)] == [256, 65535, 65536, 2**40]
            assert [i for i, _ in t.chunks_of(ino, start=2**40 + 1)] == []
        assert list(t.chunks_of(3)) == []
        assert list(t.chunks_of(2**63 + 1)) == []


def test_xattr_names_stop_at_inode_boundary(meta: MetaStore) -> None:
    with meta.write() as t:
        for ino in BOUNDARY_INOS:
            t.put_xattr(ino, b"user.a", str(ino).encode())
            t.put_xattr(ino, b"user.b", b"")
    with meta.read() as t:
        for ino in BOUNDARY_INOS:
            assert list(t.xattr_names(ino)) == [b"user.a", b"user.b"]
            assert t.get_xattr(ino, b"user.a") == str(ino).encode()
        assert list(t.xattr_names(3)) == []


def test_delete_inode_removes_only_what_it_owns(meta: MetaStore) -> None:
    with meta.write() as t:
        for ino in (1, 256):
            t.put_inode(file_inode(ino))
            t.put_symlink(ino, b"x")
            t.add_orphan(ino)
            t.put_xattr(ino, b"user.k", b"v")
            t.put_chunk(ino, 0, entry(frame_len=10))
            t.put_chunk(ino, 1, entry(frame_len=20))
    with meta.write() as t:
        t.delete_inode(1)
    with meta.read() as t:
        assert t.get_inode(1) is None and t.get_symlink(1) is None
        assert list(t.chunks_of(1)) == [] and list(t.xattr_names(1)) == []
        assert t.orphans() == [(256, 0, b"")]
        assert t.get_inode(256) is not None and t.get_symlink(256) == b"x"
        assert len(list(t.chunks_of(256))) == 2 and list(t.xattr_names(256)) == [b"user.k"]
    counters = assert_counters_match_map(meta)
    assert counters["chunks"] == 2 and counters["stored_bytes"] == 30 and counters["garbage_bytes"] == 30


# -- counters -------------------------------------------------------------------------------------------

def test_counters_follow_put_replace_and_delete(meta: MetaStore) -> None:
    with meta.write() as t:
        t.put_inode(file_inode(10))
        t.put_chunk(10, 0, entry(segment=1, frame_len=100, codec_id=1, raw_len=4096))
        t.put_chunk(10, 1, entry(segment=1, frame_len=4124, codec_id=0, raw_len=4096))
        t.put_chunk(10, 2, entry(segment=2, frame_len=300, codec_id=1, raw_len=1000))
        t.put_chunk(10, 3, entry(segment=2, frame_len=50, codec_id=1, raw_len=4096, tier=1))
        # Inside the transaction, counters already include its own changes.
        assert t.counter("chunks") == 4
    counters = assert_counters_match_map(meta)
    assert counters["chunks"] == 4
    assert counters["stored_bytes"] == 100 + 4124 + 300 + 50
    assert (counters["hot_chunks"], counters["cold_chunks"]) == (3, 1)
    assert counters["codec/0/chunks"] == 1 and counters["codec/1/chunks"] == 3
    assert counters["codec/1/raw_bytes"] == 4096 + 1000 + 4096
    assert counters.get("garbage_bytes", 0) == 0

    # Replace: a raw hot chunk becomes a zstd cold one; the old frame is garbage in its segment.
    with meta.write() as t:
        t.put_chunk(10, 1, entry(segment=3, frame_len=700, codec_id=1, raw_len=4096, tier=1))
    counters = assert_counters_match_map(meta)
    assert counters["chunks"] == 4
    assert counters["stored_bytes"] == 100 + 700 + 300 + 50
    assert (counters["hot_chunks"], counters["cold_chunks"]) == (2, 2)
    assert counters["codec/0/chunks"] == 0 and counters["codec/0/raw_bytes"] == 0
    assert counters["codec/0/stored_bytes"] == 0
    assert counters["garbage_bytes"] == 4124
    with meta.read() as t:
        assert t.garbage_by_segment() == {1: 4124}

    # Truncate: chunks 2 and 3 (both in segment 2) go.
    with meta.write() as t:
        t.delete_chunks_from(10, 2)
    counters = assert_counters_match_map(meta)
    assert counters["chunks"] == 2 and counters["stored_bytes"] == 800
    assert counters["garbage_bytes"] == 4124 + 350
    with meta.read() as t:
        assert t.garbage_by_segment() == {1: 4124, 2: 350}
        assert [i for i, _ in t.chunks_of(10)] == [0, 1]

    # Deleting a chunk that does not exist changes nothing.
    with meta.write() as t:
        t.delete_chunk(10, 99)
        t.delete_chunks_from(10, 50)
    assert assert_counters_match_map(meta) == counters

    with meta.write() as t:
        t.delete_chunks_from(10, 0)
    counters = assert_counters_match_map(meta)
    assert counters["chunks"] == 0 and counters["stored_bytes"] == 0
    assert counters["hot_chunks"] == counters["cold_chunks"] == 0
    assert counters["garbage_bytes"] == 4124 + 350 + 800


def test_alloc_ino_is_monotonic_and_persistent(meta: MetaStore) -> None:
    with meta.write() as t:
        t.bump("next_ino", 2)
        assert [t.alloc_ino() for _ in range(3)] == [2, 3, 4]
    with meta.write() as t:
        assert t.alloc_ino() == 5
    with meta.read() as t:
        assert t.counter("next_ino") == 6


def test_bump_accumulates_and_zero_is_noop(meta: MetaStore) -> None:
    with meta.write() as t:
        t.bump("files", 3)
        t.bump("files", -1)
        t.bump("logical_bytes", 0)
        assert t.counter("files") == 2
    with meta.read() as t:
        assert t.counter("files") == 2
        assert "logical_bytes" not in t.counters()
        assert t.counter("logical_bytes") == 0


# -- transactions ---------------------------------------------------------------------------------------

class Boom(Exception):
    pass


def populate(meta: MetaStore) -> None:
    with meta.write() as t:
        t.put_inode(file_inode(2, size=10))
        t.put_dirent(ROOT_INO, b"f", 2, stat.S_IFREG)
        t.put_chunk(2, 0, entry(frame_len=40))
        t.put_xattr(2, b"user.k", b"old")
        t.bump("files", 1)


def snapshot(meta: MetaStore) -> tuple[object, ...]:
    with meta.read() as t:
        return (list(t.inodes()), list(t.list_dir(ROOT_INO)), list(t.chunks_of(2)), list(t.chunks_of(3)),
                list(t.xattr_names(2)), t.get_xattr(2, b"user.k"), t.orphans(), t.counters(),
                t.garbage_by_segment(), t.get_symlink(3))


def test_transaction_that_raises_is_rolled_back_entirely(meta: MetaStore) -> None:
    populate(meta)
    before = snapshot(meta)
    with pytest.raises(Boom), meta.write() as t:
        t.put_inode(file_inode(3, size=5))
        t.put_dirent(ROOT_INO, b"g", 3, stat.S_IFREG)
        t.put_chunk(2, 0, entry(frame_len=77))  # replaces: garbage + counters
        t.put_chunk(3, 0, entry(frame_len=11))
        t.put_xattr(2, b"user.k", b"new")
        t.put_symlink(3, b"t")
        t.add_orphan(2)
        t.bump("files", 1)
        t.delete_inode(2)
        raise Boom
    assert snapshot(meta) == before
    # The store is still usable afterwards.
    with meta.write() as t:
        t.bump("files", 1)
    with meta.read() as t:
        assert t.counter("files") == 2


def test_lmdb_error_is_meta_error_and_rolled_back(meta: MetaStore) -> None:
    populate(meta)
    before = snapshot(meta)
    with pytest.raises(MetaError), meta.write() as t:
        t.put_inode(file_inode(3))
        t.bump("files", 1)
        t.put_xattr(2, b"user." + b"x" * 600, b"v")  # key longer than LMDB's 511-byte limit
    assert snapshot(meta) == before


def test_readers_see_only_committed_state(meta: MetaStore) -> None:
    populate(meta)
    with meta.read() as reader:
        with meta.write() as t:
            t.put_inode(file_inode(3))
            t.bump("files", 1)
        # A read transaction is a snapshot: the commit above is invisible to it.
        assert reader.get_inode(3) is None and reader.counter("files") == 1
    with meta.read() as t:
        assert t.get_inode(3) is not None and t.counter("files") == 2


def test_readonly_metastore_sees_committed_data(tmp_path: Path) -> None:
    meta = MetaStore(tmp_path / "meta.lmdb", create=True)
    populate(meta)
    meta.close()
    ro = MetaStore(tmp_path / "meta.lmdb", readonly=True)
    try:
        with ro.read() as t:
            assert t.get_inode(2) == file_inode(2, size=10).evolve(count=1)  # its one chunk
            assert t.lookup(ROOT_INO, b"f") == 2
            assert t.counter("files") == 1 and t.counter("chunks") == 1
        with pytest.raises(MetaError), ro.write() as t:
            t.bump("files", 1)
    finally:
        ro.close()


def test_readonly_metastore_in_another_process_sees_commits_of_open_writer(meta: MetaStore,
                                                                           tmp_path: Path) -> None:
    """What ``thermofs stats STORE`` does while the volume is mounted by a daemon."""
    populate(meta)
    script = ("import sys; from pathlib import Path; from thermofs.fs.meta import MetaStore\n"
              "m = MetaStore(Path(sys.argv[1]), readonly=True)\n"
              "with m.read() as t: print(t.counter('files'), t.lookup(1, b'f'), t.lookup(1, b'g'))\n")
    cmd = [sys.executable, "-c", script, str(tmp_path / "meta.lmdb")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["1", "2", "None"]
    with meta.write() as t:
        t.put_dirent(ROOT_INO, b"g", 3, stat.S_IFREG)
        t.bump("files", 1)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["2", "2", "3"]


def test_readonly_open_of_missing_store_is_meta_error(tmp_path: Path) -> None:
    with pytest.raises(MetaError):
        MetaStore(tmp_path / "nothing-here", readonly=True)


def test_inline_chunk_frame_lives_and_dies_with_its_entry(meta: MetaStore) -> None:
    frame = b"F" * 60
    inline = ChunkEntry(INLINE_SEGMENT, 0, len(frame), 1, 1001, 4096, 7, 0)
    with meta.write() as t:
        t.put_inode(file_inode(5))
        t.put_chunk(5, 0, inline, frame)
    with meta.read() as t:
        assert t.get_inline(5, 0) == frame
        assert t.counters()["stored_bytes"] == len(frame)
        assert t.garbage_by_segment() == {}
    with meta.write() as t:
        t.put_chunk(5, 0, entry(segment=3, frame_len=500))  # moves to a segment: inline value goes
    with meta.read() as t:
        assert t.get_inline(5, 0) is None
        assert t.garbage_by_segment() == {}  # an inline frame is no segment garbage
    with meta.write() as t:
        t.put_chunk(5, 0, inline, frame)
        t.delete_chunks_from(5, 0)
    with meta.read() as t:
        assert t.get_inline(5, 0) is None and t.get_chunk(5, 0) is None
        assert t.counters()["stored_bytes"] == 0
    with pytest.raises(MetaError), meta.write() as t:
        t.put_chunk(5, 0, inline)  # no frame
