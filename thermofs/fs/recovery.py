"""Bringing a store back after a crash: the explicit, logged step the assembly takes before a volume
serves (a volume's constructor writes nothing), and its counterpart at a clean close.

The counter ``open`` is 1 while a volume is open; still 1 at the next open means the daemon died.
Then frames appended but never committed (a kill -9 between a writer's or the cooler's append and its
commit) are garbage no record knows: each segment's garbage is recounted from the chunk map. Files
unlinked while open when the daemon died are purged at every open: nothing can reach them any more.
"""

from __future__ import annotations

import logging
import time

from thermofs.fs.meta import CorruptRecord, Damaged, MetaStore
from thermofs.fs.namespace import destroy, drop_link
from thermofs.fs.reclaim import recount_garbage
from thermofs.fs.segments import SegmentStore

log = logging.getLogger("thermofs.recovery")


def recover(meta: MetaStore, segments: SegmentStore) -> bool:
    """Mark the volume open and recover what a crash left; True if the last close was not clean."""
    with meta.write() as t:
        crashed = t.counter("open") > 0
        if not crashed:
            t.bump("open", 1)
    if crashed:
        try:
            recount_garbage(meta, segments, segments.segment_ids(), lower=True)
            log.info("the volume was not closed cleanly: garbage recounted from the chunk map")
        except CorruptRecord as e:
            log.error("the volume was not closed cleanly and its garbage was not recounted: %s", e)
    purge_orphans(meta)
    return crashed


def purge_orphans(meta: MetaStore) -> None:
    """Destroy the files unlinked while open (nameless, or under a hidden name) when the daemon died.
    A damaged orphan record is left for fsck."""
    now = time.time_ns()
    damaged: Damaged = []
    with meta.write() as t:
        for ino, parent, name in t.orphans(damaged=damaged):
            t.del_orphan(ino)
            inode = t.get_inode(ino)
            if inode is None:
                continue
            if not parent:
                destroy(t, inode)
            elif t.lookup(parent, name) == ino:
                t.del_dirent(parent, name)
                drop_link(t, inode, now, still_open=False)
    for record in damaged:
        log.error("a damaged orphan record is left for fsck: %s", record.why)


def mark_closed(meta: MetaStore) -> None:
    """The volume closed cleanly (every file committed): the next open need not recover."""
    with meta.write() as t:
        t.bump("open", -t.counter("open"))
