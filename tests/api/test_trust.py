"""Damage and misuse, through the volume API (tests/mount/test_trust.py has the cases that need a mount):
the space of dead frames is reclaimed while one open file is overwritten, and a sealed but wrong
next inode number never makes a new file reuse a live inode."""

from __future__ import annotations

import os
import random
from pathlib import Path

# -- nothing is deleted on the word of one record ------------------------------------------------------

def test_space_is_reclaimed_while_one_open_file_is_overwritten(tmp_path: Path) -> None:
    """fsx's pattern: one file kept open and overwritten over and over. Segments that only hold dead
    frames are deleted while it stays open, in the background, without an unlink or a remount."""
    from thermofs.daemon.assembly import open_volume
    from thermofs.daemon.options import MountOptions
    from thermofs.fs.reclaim import reclaim
    from thermofs.fs.store import StoreConfig, mkfs

    store = tmp_path / "store"
    mkfs(store, StoreConfig(chunk_size=4096, hot_codec="raw"))
    parts = open_volume(store, options=MountOptions(cooler=False))
    parts.segments.segment_bytes = 64 << 10  # small segments, so the test rolls many
    v = parts.volume
    rng = random.Random(3)
    try:
        fh, _inode = v.create("/churn", 0o644, os.getuid(), os.getgid())
        for _round in range(60):
            data = rng.randbytes(48 << 10)
            v.write(fh, 0, data)
            v.fsync(fh)
        seen = len(parts.segments.segment_ids())
        report = reclaim(parts.meta, parts.segments)
        left = parts.segments.segment_ids()
        assert seen >= 40 and report.removed and len(left) <= 3, (seen, report, left)
        assert v.read(fh, 0, 48 << 10) == data  # the open file reads its last content
        v.release(fh)
    finally:
        parts.close()


# -- a sealed but wrong counter ------------------------------------------------------------------------

def test_a_low_next_inode_number_never_reuses_a_live_inode(tmp_path: Path) -> None:
    """next_ino below a live inode (a sealed but wrong counter): new files still get fresh numbers,
    so no old file reads another's bytes."""
    from thermofs.daemon.assembly import open_volume
    from thermofs.daemon.options import MountOptions
    from thermofs.fs.meta import MetaStore
    from thermofs.fs.store import StoreConfig, mkfs

    store = tmp_path / "store"
    mkfs(store, StoreConfig())
    parts = open_volume(store, options=MountOptions(cooler=False))
    old = {}
    for i in range(5):
        fh, inode = parts.volume.create(f"/old{i}", 0o644, 0, 0)
        parts.volume.write(fh, 0, f"old file {i}".encode())
        parts.volume.release(fh)
        old[inode.ino] = f"old file {i}".encode()
    parts.close()
    meta = MetaStore(store / "meta.lmdb")
    with meta.write() as t:
        t.set_counter("next_ino", min(old))
    meta.close()
    parts = open_volume(store, options=MountOptions(cooler=False))
    try:
        v = parts.volume
        fh, inode = v.create("/new", 0o644, 0, 0)
        v.write(fh, 0, b"new file")
        v.release(fh)
        assert inode.ino not in old
        for ino, data in old.items():
            fh = v.open(ino, writable=False)
            assert v.read(fh, 0, 100) == data
            v.release(fh)
    finally:
        parts.close()
