"""The object store backend without the kernel: the disk cache's bound and LRU order, metadata backups'
format, bad URLs and unreachable or missing buckets as clear errors (never a traceback, never a
credential), and a volume opened offline on a real SeaweedFS server (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.assembly import open_volume
from thermofs.fs.backup import pack, unpack
from thermofs.fs.diskcache import BLOCK_BYTES, DiskCache
from thermofs.fs.errors import StoreError
from thermofs.fs.objectstore import parse_url

if TYPE_CHECKING:
    from tests.conftest import MakeS3Store, Run, Seaweed


def test_disk_cache_is_bounded_and_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache", limit=3 * BLOCK_BYTES)
    cache.load()
    fetched: list[tuple[int, int, int]] = []
    obj = os.urandom(6 * BLOCK_BYTES)

    def fetch(seg: int, offset: int, length: int) -> bytes:
        fetched.append((seg, offset, length))
        return obj[offset:offset + length]

    assert cache.read(1, 10, 100, len(obj), fetch) == obj[10:110]
    assert cache.read(1, 20, 100, len(obj), fetch) == obj[20:120]  # a hit
    assert len(fetched) == 1
    span = cache.read(1, BLOCK_BYTES - 50, 100, len(obj), fetch)  # across two blocks
    assert span == obj[BLOCK_BYTES - 50:BLOCK_BYTES + 50]
    for block in range(6):
        assert cache.read(1, block * BLOCK_BYTES, 64, len(obj), fetch) == obj[block * BLOCK_BYTES:][:64]
    stats = cache.stats()
    assert stats["disk_cache_bytes"] <= 3 * BLOCK_BYTES
    assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) <= 3 * BLOCK_BYTES
    again = DiskCache(tmp_path / "cache", limit=BLOCK_BYTES)  # a smaller bound at the next mount
    again.load()
    assert again.stats()["disk_cache_bytes"] <= BLOCK_BYTES


def test_a_damaged_cache_block_is_fetched_again(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache")
    cache.load()
    obj = os.urandom(2 * BLOCK_BYTES)
    fetched: list[int] = []

    def fetch(seg: int, offset: int, length: int) -> bytes:
        fetched.append(offset)
        return obj[offset:offset + length]

    assert cache.read(7, 100, 50, len(obj), fetch) == obj[100:150]
    assert cache.read(7, BLOCK_BYTES + 9, 50, len(obj), fetch) == obj[BLOCK_BYTES + 9:BLOCK_BYTES + 59]
    first, second = sorted((tmp_path / "cache").iterdir())
    damaged = bytearray(first.read_bytes())
    damaged[120] ^= 0x10  # one flipped bit inside the block
    first.write_bytes(bytes(damaged))
    second.write_bytes(second.read_bytes()[:1000])  # cut short
    assert cache.read(7, 100, 50, len(obj), fetch) == obj[100:150]
    assert cache.read(7, BLOCK_BYTES + 9, 50, len(obj), fetch) == obj[BLOCK_BYTES + 9:BLOCK_BYTES + 59]
    assert len(fetched) == 4  # both fetched again
    assert cache.read(7, 100, 50, len(obj), fetch) == obj[100:150]
    assert len(fetched) == 4  # and kept whole this time


def test_backup_format_round_trip_and_damage() -> None:
    blob = pack({"generation": 3, "data_bytes": 5, "config": {}}, b"hello")
    header, data = unpack(blob)
    assert data == b"hello" and header["generation"] == 3
    with pytest.raises(StoreError):
        unpack(blob[:-3])
    with pytest.raises(StoreError):
        unpack(b"not a backup at all")


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://ab/x", "s3://user:pw@bucket/x", "bucket/x"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        parse_url(url)


def test_mkfs_and_restore_errors_are_clear(run: Run, tmp_path: Path, seaweed: Seaweed,
                                          s3_env: dict[str, str]) -> None:
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    cases = [
        (["mkfs", tmp_path / "a", "--backend", "s3://x/y"], 2, "bucket name"),
        (["mkfs", tmp_path / "b", "--backend", "s3://nobucket-here/v", "--endpoint", seaweed.endpoint], 2,
         "does not exist"),
        (["mkfs", tmp_path / "c", "--backend", "s3://somebucket/v", "--endpoint", "ftp://host"], 2, "endpoint"),
        (["restore", "s3://nobucket-here/v", tmp_path / "d", "--endpoint", seaweed.endpoint], 2, "does not exist"),
        (["mkfs", tmp_path / "e", "--endpoint", seaweed.endpoint], 2, "go with --backend"),
    ]
    for args, status, words in cases:
        r = run(*args, timeout=120)
        assert r.returncode == status, (args, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr and secret not in r.stderr, (args, r.stderr)
    bucket = seaweed.bucket()
    r = run("restore", f"s3://{bucket}/v", tmp_path / "f", "--endpoint", seaweed.endpoint)
    assert r.returncode == 1 and "no metadata backup" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unreachable_endpoint_is_a_clear_error(run: Run, tmp_path: Path, s3_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = run("mkfs", tmp_path / "s", "--backend", "s3://somebucket/v", "--endpoint", f"http://127.0.0.1:{port}",
            timeout=120)
    assert r.returncode == 1, r.stderr
    assert "did not answer" in r.stderr and "Traceback" not in r.stderr
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in r.stderr


def test_second_mkfs_on_a_prefix_is_refused(seaweed: Seaweed, make_s3_store: MakeS3Store, run: Run,
                                            tmp_path: Path) -> None:
    _store, url = make_s3_store(seaweed)
    r = run("mkfs", tmp_path / "again", "--backend", url, "--endpoint", seaweed.endpoint)
    assert r.returncode == 2 and "already holds a thermofs volume" in r.stderr, r.stderr


def test_offline_volume_uploads_at_close_and_reads_back(seaweed: Seaweed, make_s3_store: MakeS3Store) -> None:
    store, _url = make_s3_store(seaweed)
    data = os.urandom(300_000) + b"words " * 100_000
    opened = open_volume(store)
    try:
        v = opened.volume
        fh, inode = v.create("/f", 0o644, 0, 0)
        ino = inode.ino
        v.write(fh, 0, data)
        v.release(fh)
    finally:
        opened.close()
    assert not list((store / "segments").iterdir())
    for p in (store / "cache").iterdir():
        p.unlink()
    opened = open_volume(store)
    try:
        v = opened.volume
        fh = v.open(ino, writable=False)
        assert v.read(fh, 0, len(data) + 10) == data
        v.release(fh)
        assert opened.remote is not None and opened.remote.segments.remote_stats()["gets"] > 0
    finally:
        opened.close()


def test_conditional_write_is_a_compare_and_swap(seaweed: Seaweed) -> None:
    """``put_if`` against a real server: it creates only what is absent, replaces only the version it
    names, and tells a lost race (None) from a write."""
    from thermofs.fs.s3 import S3Store

    store = S3Store(parse_url(f"s3://{seaweed.bucket()}/vol", seaweed.endpoint), timeout=10)
    first = store.put_if("k", b"one", None)
    assert first is not None
    assert store.put_if("k", b"two", None) is None  # it exists now
    assert store.get_tagged("k") == (b"one", first)
    second = store.put_if("k", b"two", first)
    assert second is not None and second != first
    assert store.put_if("k", b"three", first) is None  # the tag it names is gone
    assert store.get_tagged("k") == (b"two", second)


def test_two_mounts_racing_for_the_lock_one_wins(seaweed: Seaweed) -> None:
    """Two mounts read the lock as absent at the same moment and both try to take it: the second
    write does not land and that mount is refused, naming the winner; the winner's renewals go on,
    and a lock taken over by force is noticed at the next renewal."""
    from thermofs.fs.objectstore import LOCK_KEY
    from thermofs.fs.remotelock import BucketLocked, RemoteLock
    from thermofs.fs.s3 import S3Store

    store = S3Store(parse_url(f"s3://{seaweed.bucket()}/vol", seaweed.endpoint), timeout=10)
    first = RemoteLock(store, "s3://b/vol", "/first")
    second = RemoteLock(store, "s3://b/vol", "/second")
    seen_absent = second._current()  # both read "no lock" before either writes
    assert seen_absent == (None, None)
    first.acquire()
    assert second._write(seen_absent[1]) is None  # the stale read's write does not land
    with pytest.raises(BucketLocked, match="store /first"):
        second.acquire()
    assert first._renew()
    third = RemoteLock(store, "s3://b/vol", "/third")
    third.acquire(force=True)
    assert not first._renew()  # taken over: the first mount stops renewing
    assert b'"/third"' in store.get_tagged(LOCK_KEY)[0]
    third.release()
    assert store.head(LOCK_KEY) is None


def test_read_only_open_of_a_remote_volume(seaweed: Seaweed, make_s3_store: MakeS3Store) -> None:
    """``-o ro`` on a store whose segments are in the bucket: every byte reads back (from the bucket,
    the disk cache emptied first), the bucket's lock is neither taken nor needed, and nothing is
    uploaded."""
    from thermofs.daemon.options import MountOptions
    from thermofs.fs.objectstore import LOCK_KEY, parse_url
    from thermofs.fs.s3 import S3Store

    store, url = make_s3_store(seaweed)
    data = os.urandom(200_000) + b"text " * 60_000
    opened = open_volume(store)
    try:
        fh, inode = opened.volume.create("/f", 0o644, 0, 0)
        opened.volume.write(fh, 0, data)
        opened.volume.release(fh)
    finally:
        opened.close()
    for p in (store / "cache").iterdir():
        p.unlink()
    bucket = S3Store(parse_url(url, seaweed.endpoint), timeout=10)
    objects = bucket.list("")
    opened = open_volume(store, options=MountOptions(fuse={"ro": True}))
    try:
        assert bucket.head(LOCK_KEY) is None
        v = opened.volume
        fh = v.open(inode.ino, writable=False)
        assert v.read(fh, 0, len(data) + 1) == data
        v.release(fh)
        assert opened.remote is not None and opened.remote.segments.remote_stats()["gets"] > 0
    finally:
        opened.close()
    assert bucket.list("") == objects
