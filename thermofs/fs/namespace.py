"""Namespace changes inside one LMDB write transaction: linking a new inode, dropping a link, destroying
an inode with everything it owns. The volume (fs/volume.py) decides when; the open-file data path
(fs/openfile.py) links a created file with its first commit; recovery (fs/recovery.py) purges what a
crash left. These functions keep the totals ``files`` and ``logical_bytes`` right."""

from __future__ import annotations

import stat

from thermofs.fs.errors import NotFound
from thermofs.fs.meta import Inode, Txn


def link_new_inode(t: Txn, parent_ino: int, name: bytes, inode: Inode) -> None:
    """Write a new inode, its directory entry and the parent's new times and link count."""
    parent = t.get_inode(parent_ino)
    if parent is None:
        raise NotFound(f"parent directory {parent_ino} of a new file is gone")
    is_dir = stat.S_ISDIR(inode.mode)
    t.put_inode(inode)
    t.put_dirent(parent_ino, name, inode.ino, inode.mode)
    t.put_inode(parent.evolve(mtime=inode.mtime, ctime=inode.mtime,
                              nlink=parent.nlink + (1 if is_dir else 0)))
    if not is_dir:
        t.bump("files", 1)


def uncount(t: Txn, inode: Inode) -> None:
    """The inode leaves the namespace: it no longer counts among the volume's files."""
    if stat.S_ISREG(inode.mode):
        t.bump("logical_bytes", -inode.size)
    if not stat.S_ISDIR(inode.mode):
        t.bump("files", -1)


def destroy(t: Txn, inode: Inode) -> None:
    """Remove an inode and everything it owns (its frames become garbage)."""
    if inode.nlink > 0:
        uncount(t, inode)
    t.delete_inode(inode.ino)


def drop_link(t: Txn, inode: Inode, now: int, still_open: bool) -> bool:
    """One name of a non-directory is gone: the inode loses a link, and with its last one it is
    destroyed, unless it is still open: then it lives on, nameless, as an orphan (readable and
    writable until its last close, POSIX; purged then, or by recovery after a crash). True if it
    became such an orphan."""
    if inode.nlink > 1:
        t.put_inode(inode.evolve(nlink=inode.nlink - 1, ctime=now))
        return False
    if still_open:
        uncount(t, inode)
        t.put_inode(inode.evolve(nlink=0, ctime=now))
        t.add_orphan(inode.ino)
        return True
    destroy(t, inode)
    return False
