"""The volume API: files and directories over the chunk map. Knows nothing of FUSE or errno.

The data path of an open file is fs/openfile.py: a chunk is encoded once, when it is full or at
close/fsync, never once per 4 KiB write. This module is the namespace and the open-file table.

Locks: one lock per open file guards its buffers and size and every cache entry of that inode (so a
reader can never put stale bytes back into the cache); namespace changes run in one LMDB write
transaction each, which LMDB serializes. A file lock may be held while a transaction runs, never the
other way round.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from thermofs.fs.cache import ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import (
    Exists,
    FileTooBig,
    FsError,
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
from thermofs.fs.meta import ROOT_INO, U64, CorruptRecord, Inode, MetaStore, Txn
from thermofs.fs.namespace import destroy, drop_link, link_new_inode
from thermofs.fs.openfile import AccessObserver, CreateCommits, OpenFile, PendingCreate, WriteBudget

log = logging.getLogger("thermofs.volume")

NAME_MAX = 255
# Largest file size: 1 EiB, more than any disk holds, so no file is refused that could be stored,
# while sizes and their running total stay far from the signed 64-bit limit (a truncate to 2**63 -
# 4096 overflowed it) and chunk indices stay small (2**44 at 64 KiB chunks).
MAX_FILE_SIZE = 1 << 60
XATTR_CREATE = 1
XATTR_REPLACE = 2
# Bound on buffered, not yet encoded data across all open files; past it a writer waits for the
# encoder and then commits its file. 64 MiB: 1,024 chunks of 64 KiB, far more than two cores can
# have in flight, so the bound only bites when the disk is slower than the encoder.
DEFAULT_DIRTY_BYTES = 64 << 20
# Inode numbers reserved per LMDB commit.
INO_BLOCK = 1024

T = TypeVar("T")


@dataclass(frozen=True)
class VolumeStats:
    """Live figures of a mounted volume, as shown by ``thermofs stats`` next to the LMDB totals."""

    open_files: int
    dirty_bytes: int
    cache_bytes: int
    cache_hits: int
    cache_misses: int
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


def _name(name: str) -> bytes:
    raw = os.fsencode(name)
    if len(raw) > NAME_MAX:
        raise NameTooLong(name)
    if not raw or b"/" in raw or raw in (b".", b".."):
        raise InvalidArgument(f"bad file name {name!r}")
    return raw


def _xattr_key(name: str) -> bytes:
    """An xattr name as stored: its bytes (mfusepy decodes names with surrogateescape, so any bytes
    come back as they were), checked like the kernel's names."""
    raw = os.fsencode(name)
    if not raw or b"\0" in raw:
        raise InvalidArgument(f"bad xattr name {name!r}")
    if len(raw) > NAME_MAX:
        raise NameTooLong(name)
    return raw


class Syncer(Protocol):
    """Sync points (fs/durability.py): what is committed made durable (``fsync``), and the space that
    commits freed made free at once (a full disk)."""

    def make_durable(self) -> None: ...

    def make_room(self) -> bool: ...


class SpaceWatcher(Protocol):
    """Told when frames died (the reclaimer, which may then delete segments holding only garbage)."""

    def freed(self) -> None: ...


class Volume:
    def __init__(self, meta: MetaStore, chunks: ChunkStore, cache: ChunkCache, pool: ThreadPoolExecutor,
                 dirty_limit: int = DEFAULT_DIRTY_BYTES, observer: AccessObserver | None = None,
                 space: SpaceWatcher | None = None, syncer: Syncer | None = None) -> None:
        """Writes nothing: recovery after a crash is an explicit step of the assembly (fs/recovery.py)."""
        self.meta = meta
        self._space = space
        self._syncer = syncer
        self._observer = observer
        self.chunks = chunks
        self.cache = cache
        self.chunk_size = chunks.chunk_size
        self._pool = pool
        self._budget = WriteBudget(dirty_limit)
        self._files: dict[int, OpenFile] = {}  # inode -> its state while any handle is open
        self._handles: dict[int, tuple[OpenFile, bool]] = {}  # handle -> (file, opened for writing)
        self._next_handle = 1
        self._files_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._read_bytes = self._read_ops = 0
        self._write_bytes = self._write_ops = 0
        # Files created but not yet in LMDB: (parent, name) -> open file. A new file reaches LMDB
        # with its first commit (usually its close), in the same transaction as its data: one
        # synchronous commit per small file instead of two. Every other namespace change first
        # settles these (commits them), under _ns_lock, so LMDB alone decides it.
        self._creating: dict[tuple[int, bytes], OpenFile] = {}
        self._commits = CreateCommits()  # advanced when one of them reaches LMDB (see _read)
        self._ns_lock = threading.RLock()
        # Inode numbers are reserved from LMDB in blocks, so a deferred create needs no commit.
        self._ino_next = self._ino_limit = 0
        # Directories whose entries were all verified and counted this mount (invariant 6): a name
        # not found in them is truly absent. Only grows: every change keeps the counts.
        self._complete_dirs: set[int] = set()

    # -- paths --------------------------------------------------------------------------------------
    def _read(self, lookup: Callable[[Txn], T]) -> T:
        """Run a lookup in a read transaction. A created file leaves the table of deferred creates
        (or counts as in LMDB) only after its first commit, which advances the commit count first: a
        lookup that missed while the count moved may hold a snapshot older than that commit, so it
        reads again (a create answered ENOENT for the file it had just made)."""
        while True:
            commits = self._commits.value
            with self.meta.read() as t:
                try:
                    return lookup(t)
                except (NotFound, NotADir):
                    if self._commits.value == commits:
                        raise

    def resolve(self, path: str) -> int:
        return self._read(lambda t: self._resolve(t, path))

    def _resolve(self, t: Txn, path: str) -> int:
        ino = ROOT_INO
        named = False  # ino came from a directory entry of this snapshot
        for part in os.fsencode(path).split(b"/"):
            if not part:
                continue
            child = t.lookup(ino, part)
            named = child is not None
            if child is None:
                pending = self._creating.get((ino, part))
                if pending is None or pending.in_lmdb:
                    # Only directories have entries: which error is right needs the inode, but
                    # only on this path (getattr, the most frequent request, resolves every call).
                    # No name over NAME_MAX is ever stored, so its check waits for the miss too.
                    inode = t.get_inode(ino)
                    if inode is None and ino not in self._files:
                        raise self._named_but_missing(path, ino)
                    if inode is None or not stat.S_ISDIR(inode.mode):
                        raise NotADir(path)  # (a file being created is no directory either)
                    if len(part) > NAME_MAX:
                        raise NameTooLong(path)
                    self._verify_dir(t, ino, part)
                    raise NotFound(path)
                child = pending.ino
            ino = child
        if named and t.get_inode(ino) is None:
            raise self._named_but_missing(path, ino)
        return ino

    @staticmethod
    def _named_but_missing(path: str, ino: int) -> CorruptRecord:
        """A directory entry of this snapshot names an inode the snapshot lacks: damage (invariant 6)."""
        return CorruptRecord("inodes", U64.pack(ino), f"{path!r} names inode {ino}, which is missing")

    def _verify_dir(self, t: Txn, ino: int, missed: bytes) -> None:
        """A name was not found in directory ``ino``: check once per mount that no entry of it was
        lost to damage (invariant 6), so the answer is ENOENT only if the name is truly absent."""
        if ino not in self._complete_dirs:
            t.verify_complete(ino, U64.pack(ino) + missed)
            self._complete_dirs.add(ino)

    def _resolve_parent(self, t: Txn, path: str) -> tuple[Inode, bytes]:
        head, _, tail = path.rstrip("/").rpartition("/")
        parent = self._get(t, self._resolve(t, head))
        if not stat.S_ISDIR(parent.mode):
            raise NotADir(path)
        return parent, _name(tail)

    def _get(self, t: Txn, ino: int) -> Inode:
        inode = t.get_inode(ino)
        if inode is None:
            f = self._files.get(ino)
            if f is None or f.created is None or f.in_lmdb:
                raise NotFound(f"inode {ino}")
            return f.created.inode
        return inode

    @contextmanager
    def _mutate(self) -> Iterator[Txn]:
        """One namespace change: settle deferred creates, then one LMDB write transaction."""
        with self._ns_lock:
            self._commit_pending_creates()
            with self.meta.write() as t:
                yield t

    def _commit_pending_creates(self) -> None:
        """Commit every created file that is not in LMDB yet (caller holds _ns_lock)."""
        for key, f in list(self._creating.items()):
            if not f.in_lmdb:
                f.commit()
            del self._creating[key]

    def _alloc_ino(self, t: Txn | None = None) -> int:
        """A fresh inode number (caller holds _ns_lock); ``t``, if given, must be a write
        transaction. Numbers reserved and lost in a crash are simply skipped."""
        if self._ino_next >= self._ino_limit:
            if t is None:
                with self.meta.write() as own:
                    return self._alloc_ino(own)
            start = t.counter("next_ino")
            top = t.highest_ino()
            if start <= top:  # never hand out a live inode's number, whatever the counter says
                log.error("the next inode number %d is not above the highest inode %d: continuing "
                          "from %d (run thermofs fsck)", start, top, top + 1)
                t.set_counter("next_ino", top + 1)
                start = top + 1
            self._ino_next = start
            self._ino_limit = start + INO_BLOCK
            t.bump("next_ino", INO_BLOCK)
        ino = self._ino_next
        self._ino_next += 1
        return ino

    # -- attributes ---------------------------------------------------------------------------------
    def getattr(self, ino: int) -> Inode:
        return self._read(lambda t: self._current(t, self._get(t, ino)))

    def lookup_attr(self, path: str) -> Inode:
        """getattr by path in one read transaction (the most frequent request of all)."""
        return self._read(lambda t: self._current(t, self._get(t, self._resolve(t, path))))

    def _current(self, t: Txn, inode: Inode) -> Inode:
        """The inode as the application sees it: with the uncommitted size, times and attributes of
        its open file, if any; a name libfuse only hides the open file under (an unlink that came
        before the kernel's asynchronous RELEASE) is not counted as a link."""
        f = self._files.get(inode.ino)
        if f is not None:
            inode = f.overlay(inode)
        # The hidden name goes with the last RELEASE, which libfuse sends after ours returned.
        if inode.nlink and stat.S_ISREG(inode.mode) and t.has_hidden_name(inode.ino):
            inode = inode.evolve(nlink=inode.nlink - 1)
        return inode

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                atime: int | None = None, mtime: int | None = None) -> None:
        """chmod/chown/utimens (a uid or gid of -1 means unchanged); ctime is set to now."""
        now = time.time_ns()
        changes: dict[str, int] = {}
        if uid is not None and uid != -1:
            changes["uid"] = uid
        if gid is not None and gid != -1:
            changes["gid"] = gid
        if atime is not None:
            changes["atime"] = atime
        f = self._files.get(ino)
        if f is not None:
            with f.lock:
                if self._files.get(ino) is f:  # not released meanwhile
                    f.set_attrs(changes, mode, mtime, now)
                    return
        with self._mutate() as t:
            inode = self._get(t, ino)
            changes["ctime"] = now
            if mode is not None:
                changes["mode"] = stat.S_IFMT(inode.mode) | stat.S_IMODE(mode)
            if mtime is not None:
                changes["mtime"] = mtime
            t.put_inode(inode.evolve(**changes))

    # -- directories --------------------------------------------------------------------------------
    def readdir(self, ino: int) -> list[tuple[str, int, int]]:
        """(name, inode, file type bits) of every entry, with "." and ".." first."""
        # Deferred creates are taken before the snapshot: one that left the table before this copy
        # was committed before it, so the snapshot has it.
        creating = list(self._creating.items())
        with self.meta.read() as t:
            inode = self._get(t, ino)
            if not stat.S_ISDIR(inode.mode):
                raise NotADir(f"inode {ino}")
            out = [(".", ino, stat.S_IFDIR), ("..", inode.parent or ino, stat.S_IFDIR)]
            out.extend((os.fsdecode(name), child, kind) for name, child, kind in t.list_dir(ino))
            if len(out) - 2 != inode.count:  # an entry lost to damage (invariant 6)
                raise CorruptRecord("dirents", U64.pack(ino), f"directory {ino} lists {len(out) - 2} "
                                                              f"entries, its inode counts {inode.count}")
            seen = {name for name, _child, _kind in out}
        for (parent, name), f in creating:
            if parent == ino and os.fsdecode(name) not in seen:
                out.append((os.fsdecode(name), f.ino, stat.S_IFREG))
        return out

    def _fresh_inode(self, t: Txn, parent: Inode, name: bytes, mode: int, uid: int, gid: int, ino: int,
                     rdev: int = 0) -> Inode:
        if t.lookup(parent.ino, name) is not None or (parent.ino, name) in self._creating:
            raise Exists(os.fsdecode(name))
        now = time.time_ns()
        if parent.mode & stat.S_ISGID:
            # BSD group semantics of a setgid directory, as ext4 does: inherit its group (and, for
            # directories, the setgid bit itself).
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        is_dir = stat.S_ISDIR(mode)
        return Inode(ino, mode, uid, gid, 2 if is_dir else 1, 0, now, now, now, rdev,
                     parent.ino if is_dir else 0)

    def _new_inode(self, t: Txn, parent: Inode, name: bytes, mode: int, uid: int, gid: int,
                   rdev: int = 0) -> Inode:
        inode = self._fresh_inode(t, parent, name, mode, uid, gid, self._alloc_ino(t), rdev)
        link_new_inode(t, parent.ino, name, inode)
        return inode

    def mknod(self, path: str, mode: int, uid: int, gid: int, rdev: int = 0) -> Inode:
        if stat.S_ISDIR(mode):
            raise InvalidArgument("mknod cannot make a directory")
        if not stat.S_IFMT(mode):
            mode |= stat.S_IFREG
        with self._mutate() as t:
            parent, name = self._resolve_parent(t, path)
            return self._new_inode(t, parent, name, mode, uid, gid, rdev)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> Inode:
        with self._mutate() as t:
            parent, name = self._resolve_parent(t, path)
            return self._new_inode(t, parent, name, stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> Inode:
        raw = os.fsencode(target)
        if len(raw) > 4095:
            raise NameTooLong(target)
        with self._mutate() as t:
            parent, name = self._resolve_parent(t, path)
            inode = self._new_inode(t, parent, name, stat.S_IFLNK | 0o777, uid, gid)
            inode = inode.evolve(size=len(raw))
            t.put_inode(inode)
            t.put_symlink(inode.ino, raw)
            return inode

    def readlink(self, ino: int) -> str:
        with self.meta.read() as t:
            target = t.get_symlink(ino)
            if target is None:
                inode = t.get_inode(ino)
                if inode is not None and stat.S_ISLNK(inode.mode):  # its target lost to damage
                    raise CorruptRecord("symlinks", U64.pack(ino), f"symlink {ino} has no target")
        if target is None:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return os.fsdecode(target)

    def link(self, ino: int, new_path: str) -> Inode:
        with self._mutate() as t:
            inode = self._get(t, ino)
            if stat.S_ISDIR(inode.mode):
                raise NotPermitted("hard link to a directory")
            parent, name = self._resolve_parent(t, new_path)
            if t.lookup(parent.ino, name) is not None:
                raise Exists(new_path)
            now = time.time_ns()
            t.put_dirent(parent.ino, name, ino, inode.mode)
            inode = inode.evolve(nlink=inode.nlink + 1, ctime=now)
            t.put_inode(inode)
            t.put_inode(parent.evolve(mtime=now, ctime=now))
        return self.getattr(ino)

    def unlink(self, path: str) -> None:
        with self._mutate() as t:
            parent, name = self._resolve_parent(t, path)
            ino = t.lookup(parent.ino, name)
            if ino is None:
                raise NotFound(path)
            inode = self._get(t, ino)
            if stat.S_ISDIR(inode.mode):
                raise IsADir(path)
            now = time.time_ns()
            t.del_dirent(parent.ino, name)
            t.put_inode(parent.evolve(mtime=now, ctime=now))
            t.del_orphan(ino, parent.ino, name)  # last close of a hidden file: no longer an orphan
            self._drop_link(t, inode, now)
        self._reclaim()

    def rmdir(self, path: str) -> None:
        with self._mutate() as t:
            parent, name = self._resolve_parent(t, path)
            ino = t.lookup(parent.ino, name)
            if ino is None:
                raise NotFound(path)
            inode = self._get(t, ino)
            if not stat.S_ISDIR(inode.mode):
                raise NotADir(path)
            if not t.dir_is_empty(ino):
                raise NotEmpty(path)
            now = time.time_ns()
            t.del_dirent(parent.ino, name)
            t.put_inode(parent.evolve(mtime=now, ctime=now, nlink=parent.nlink - 1))
            t.delete_inode(ino)

    def _drop_link(self, t: Txn, inode: Inode, now: int) -> None:
        """One name of a non-directory is gone (fs/namespace.py); an open file it left nameless is
        destroyed at its last release."""
        open_file = self._files.get(inode.ino)
        if drop_link(t, inode, now, still_open=open_file is not None) and open_file is not None:
            open_file.mark_unlinked()

    def rename(self, old: str, new: str, noreplace: bool = False, hide: bool = False) -> None:
        """Rename; ``hide`` marks the new name as a file unlinked while open (libfuse renames such a
        file to a hidden name and unlinks that at the last close), so a crash cannot leak it. The
        volume drops a hidden name itself at the last release: libfuse may not (_drop_hidden_name)."""
        still_open = True
        with self._mutate() as t:
            src_parent, src_name = self._resolve_parent(t, old)
            ino = t.lookup(src_parent.ino, src_name)
            if ino is None:
                raise NotFound(old)
            inode = self._get(t, ino)
            dst_parent, dst_name = self._resolve_parent(t, new)
            is_dir = stat.S_ISDIR(inode.mode)
            if is_dir:
                # A directory cannot move into its own subtree.
                walk = dst_parent.ino
                while True:
                    if walk == ino:
                        raise InvalidArgument(f"cannot move {old} into itself")
                    if walk == ROOT_INO:
                        break
                    walk = self._get(t, walk).parent
            now = time.time_ns()
            replaced = False
            target_ino = t.lookup(dst_parent.ino, dst_name)
            if target_ino is not None:
                if noreplace:
                    raise Exists(new)
                if target_ino == ino:
                    return  # two names of one inode: POSIX says do nothing
                target = self._get(t, target_ino)
                if is_dir:
                    if not stat.S_ISDIR(target.mode):
                        raise NotADir(new)
                    if not t.dir_is_empty(target_ino):
                        raise NotEmpty(new)
                    t.delete_inode(target_ino)
                    dst_parent = dst_parent.evolve(nlink=dst_parent.nlink - 1)
                else:
                    if stat.S_ISDIR(target.mode):
                        raise IsADir(new)
                    self._drop_link(t, target, now)
                    replaced = True
            t.del_dirent(src_parent.ino, src_name)
            t.put_dirent(dst_parent.ino, dst_name, ino, inode.mode)
            if src_parent.ino == dst_parent.ino:
                t.put_inode(dst_parent.evolve(mtime=now, ctime=now))
            else:
                delta = 1 if is_dir else 0
                t.put_inode(src_parent.evolve(mtime=now, ctime=now, nlink=src_parent.nlink - delta))
                t.put_inode(dst_parent.evolve(mtime=now, ctime=now, nlink=dst_parent.nlink + delta))
            inode = self._get(t, ino)  # re-read: a parent update above may have been this inode's
            t.put_inode(inode.evolve(ctime=now, parent=dst_parent.ino if is_dir else 0))
            if hide and not is_dir:
                t.add_orphan(ino, dst_parent.ino, dst_name)
                # Under _files_lock: a release either sees this mark or has closed the file before.
                with self._files_lock:
                    open_file = self._files.get(ino)
                    if open_file is not None:
                        open_file.mark_hidden()
                still_open = open_file is not None
        if not still_open:
            # libfuse hides a file it counted open, but the last release may have come since, and
            # libfuse's own check after it may already be past: nobody else unlinks the name.
            self._drop_hidden_name(ino)
        if replaced:
            self._reclaim()

    def _drop_hidden_name(self, ino: int) -> None:
        """Unlink the hidden name libfuse gave a file that was unlinked while open, now that it is
        closed. libfuse unlinks it after our last release returns, but only if it had marked the
        name hidden by then: an unlink racing that release (it checks the file is open, then renames
        it, while the release counts down) leaves the name for good (.fuse_hidden* files in
        .git/objects). libfuse's unlink after this one finds nothing, and ignores that."""
        with self._mutate() as t:
            if not t.has_hidden_name(ino):
                return  # libfuse unlinked it (its unlink drops the record)
            # Few files are open and unlinked at once: the scan of their records is short.
            parent, name = next((p, n) for orphan, p, n in t.orphans() if orphan == ino)
            t.del_orphan(ino)
            inode = t.get_inode(ino)
            dir_inode = t.get_inode(parent)
            if inode is None or dir_inode is None or t.lookup(parent, name) != ino:
                return  # renamed away from the hidden name: a name like any other
            now = time.time_ns()
            t.del_dirent(parent, name)
            t.put_inode(dir_inode.evolve(mtime=now, ctime=now))
            self._drop_link(t, inode, now)
        self._reclaim()

    # -- open files ---------------------------------------------------------------------------------
    def open(self, ino: int, truncate: bool = False, writable: bool = True) -> int:
        """Open an inode and return a handle for it.

        ``truncate`` (O_TRUNC) empties the file as part of the open.
        """
        inode = self._read(lambda t: self._get(t, ino))
        if stat.S_ISDIR(inode.mode):
            raise IsADir(f"inode {ino}")
        fh = self._acquire(inode, writable)
        if truncate:
            try:
                self._files[ino].truncate(0, defer=True)
            except BaseException:
                self.release(fh)
                raise
        return fh

    def _acquire(self, inode: Inode, writable: bool, created: PendingCreate | None = None) -> int:
        with self._files_lock:
            f = self._files.get(inode.ino)
            if f is None:
                f = self._files[inode.ino] = OpenFile(inode, self.chunks, self.meta, self.cache, self._budget,
                                                      self._pool, created, self._observer, self._commits)
            f.add_handle()
            fh = self._next_handle
            self._next_handle += 1
            self._handles[fh] = (f, writable)
            return fh

    def create(self, path: str, mode: int, uid: int, gid: int) -> tuple[int, Inode]:
        """Create and open a regular file; it reaches LMDB with its first commit."""
        with self._ns_lock:
            ino = self._alloc_ino()
            with self.meta.read() as t:
                parent, name = self._resolve_parent(t, path)
                inode = self._fresh_inode(t, parent, name, stat.S_IFREG | stat.S_IMODE(mode), uid, gid, ino)
            fh = self._acquire(inode, writable=True, created=PendingCreate(parent.ino, name, inode))
            self._creating[(parent.ino, name)] = self._files[inode.ino]
        return fh, inode

    def _open_file(self, fh: int) -> OpenFile:
        try:
            return self._handles[fh][0]
        except KeyError:
            raise InvalidArgument(f"file handle {fh} is not open") from None

    def ino_of(self, fh: int) -> int:
        return self._open_file(fh).ino

    def release(self, fh: int) -> None:
        f = self._open_file(fh)
        writable = self._handles[fh][1]
        with f.lock:
            try:
                if writable or f.handles == 1:
                    f.commit()
            except FsError as e:
                # flush()/close() already reported this error to the application; at the last
                # release nobody can retry, so the unwritable buffers are dropped.
                if f.handles == 1:
                    log.error("inode %d: buffered data lost at release: %s", f.ino, e)
                    f.discard()
            with self._files_lock:
                del self._handles[fh]
                last = f.drop_handle()
                if last:
                    del self._files[f.ino]
        if f.created is not None and f.in_lmdb:
            with self._ns_lock:
                key = (f.created.parent, f.created.name)
                if self._creating.get(key) is f:
                    del self._creating[key]
        if last and f.hidden:  # after the file left _files: see rename
            self._drop_hidden_name(f.ino)
        if last and f.unlinked:
            with self.meta.read() as t:
                inode = t.get_inode(f.ino)
            if inode is not None and inode.nlink == 0:
                with self.meta.write() as t:
                    inode = t.get_inode(f.ino)
                    if inode is not None and inode.nlink == 0:
                        destroy(t, inode)
                self._reclaim()

    def flush(self, fh: int) -> None:
        """close(): a handle that may have written commits the file (invariant 2): it survives a
        crash of the daemon; a power loss only once a sync point covers it (fs/durability.py)."""
        f = self._open_file(fh)
        if self._handles[fh][1]:
            f.commit()

    def make_room(self) -> bool:
        """The disk is full: free what commits freed now, rather than at the next sync point. True if
        there may be room for another try."""
        return self._syncer is not None and self._syncer.make_room()

    def fsync(self, fh: int) -> None:
        """fsync()/fdatasync(): commit the file, then make everything committed durable."""
        self._open_file(fh).commit()
        if self._syncer is not None:
            self._syncer.make_durable()

    def read(self, fh: int, offset: int, size: int) -> bytes:
        out = self._open_file(fh).read(offset, size)
        with self._counts_lock:
            self._read_bytes += len(out)
            self._read_ops += 1
        return out

    def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write at ``offset``; a write across MAX_FILE_SIZE is cut short there (as the kernel cuts
        one at a filesystem's maximum), one at or past it is refused."""
        f = self._open_file(fh)
        if offset + len(data) > MAX_FILE_SIZE:
            if offset >= MAX_FILE_SIZE:
                raise FileTooBig(f"inode {f.ino}: write at {offset}")
            data = data[:MAX_FILE_SIZE - offset]
        n = f.write(offset, data)
        with self._counts_lock:
            self._write_bytes += n
            self._write_ops += 1
        return n

    def truncate(self, ino: int, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"inode {ino}: truncate to {size}")
        f = self._files.get(ino)
        if f is not None:
            f.truncate(size)
            return
        inode = self._read(lambda t: self._get(t, ino))
        if stat.S_ISDIR(inode.mode):
            raise IsADir(f"inode {ino}")
        fh = self._acquire(inode, writable=True)
        try:
            self._files[ino].truncate(size)
        finally:
            self.release(fh)
        if size < inode.size:
            self._reclaim()

    def flush_all(self) -> None:
        """Commit every open file; errors are logged (the files' own flush/close reported them)."""
        for f in list(self._files.values()):
            try:
                f.commit()
            except FsError as e:
                log.error("inode %d: buffered data lost: %s", f.ino, e)
                try:
                    f.discard()
                except FsError as e2:
                    log.error("inode %d: its frames stay unaccounted until compaction: %s", f.ino, e2)

    # -- xattrs -------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: str) -> bytes:
        return self._read(lambda t: self._xattr(t, ino, name))

    def getxattr_path(self, path: str, name: str) -> bytes:
        """getxattr by path; a name no inode has is answered without resolving the path."""
        key = _xattr_key(name)

        def lookup(t: Txn) -> bytes:
            if not t.xattr_in_use(key):
                raise NoAttr(name)
            return self._xattr(t, self._resolve(t, path), name)

        return self._read(lookup)

    def _xattr(self, t: Txn, ino: int, name: str) -> bytes:
        self._get(t, ino)
        raw = _xattr_key(name)
        value = t.get_xattr(ino, raw)
        if value is None:
            # Absent, or its record's key damaged out of order? The inode's xattrs are few: a scan
            # that verifies each and finds the name means LMDB's index is damaged (invariant 6).
            if raw in t.xattr_names(ino):
                raise CorruptRecord("xattrs", U64.pack(ino) + raw, "a lookup misses a record a scan finds")
            raise NoAttr(name)
        return value

    def listxattr(self, ino: int) -> list[str]:
        def lookup(t: Txn) -> list[str]:
            self._get(t, ino)
            return [os.fsdecode(key) for key in t.xattr_names(ino)]

        return self._read(lookup)

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        if name.startswith("system.posix_acl_"):
            # POSIX ACLs would have to change the mode bits the kernel checks; without ACL support
            # (as on a filesystem mounted noacl) programs such as cp -a fall back to chmod.
            raise NotSupported(name)
        key = _xattr_key(name)
        with self._mutate() as t:
            inode = self._get(t, ino)
            exists = t.get_xattr(ino, key) is not None
            if flags & XATTR_CREATE and exists:
                raise Exists(name)
            if flags & XATTR_REPLACE and not exists:
                raise NoAttr(name)
            t.put_xattr(ino, key, value)
            t.put_inode(inode.evolve(ctime=time.time_ns()))

    def removexattr(self, ino: int, name: str) -> None:
        key = _xattr_key(name)
        with self._mutate() as t:
            inode = self._get(t, ino)
            if not t.del_xattr(ino, key):
                raise NoAttr(name)
            t.put_inode(inode.evolve(ctime=time.time_ns()))

    # -- volume -------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        with self.meta.read() as t:
            return t.counters()

    def live_stats(self) -> VolumeStats:
        return VolumeStats(len(self._files), self._budget.used, self.cache.size, self.cache.hits,
                           self.cache.misses, self._read_bytes, self._write_bytes, self._read_ops,
                           self._write_ops)

    def _reclaim(self) -> None:
        """Frames were freed: segments that hold only garbage may go (fs/reclaim.py decides, in the
        background, after a scan of the chunk map)."""
        if self._space is not None:
            self._space.freed()

    def close(self) -> None:
        """Commit every open file (the assembly then marks the store closed: fs/recovery.py)."""
        with self._ns_lock:
            self.flush_all()
            self._creating.clear()
