"""The volume API: files and directories over the chunk map. Knows nothing of FUSE or errno.

Data path: a write lands in a per-chunk write buffer of the open file; a chunk is encoded once, when its
buffer is flushed (a batch of full chunks, memory pressure, flush/fsync/close), never once per 4 KiB
write. Reads come from the write buffer, then the decoded-chunk cache, then the chunk store.

Locks: one lock per open file guards its buffers and size and every cache entry of that inode (so a
reader can never put stale bytes back into the cache); namespace changes run in one LMDB write
transaction each, which LMDB serializes. A file lock may be held while a transaction runs, never the
other way round.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from thermofs.fs.cache import ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import (Exists, InvalidArgument, IsADir, NameTooLong, NoAttr, NotADir, NotEmpty,
                                NotFound, NotPermitted, NotSupported)
from thermofs.fs.meta import ROOT_INO, Inode, MetaStore, Txn

NAME_MAX = 255
XATTR_CREATE = 1
XATTR_REPLACE = 2
# Full chunks are encoded in batches of this many bytes: large enough that both cores compress in
# parallel and one segment sync plus one commit covers 64 chunks, small enough to stay off the
# memory bound.
FLUSH_BATCH_BYTES = 4 << 20
# Bound on buffered, not yet encoded data across all open files; past it a writer flushes its file.
DEFAULT_DIRTY_BYTES = 64 << 20


@dataclass
class OpenFile:
    """State of an inode while it is open (or briefly, during a path-based truncate)."""

    ino: int
    size: int
    mtime: int
    ctime: int
    opens: int = 0
    dirty: dict[int, bytearray] = field(default_factory=dict)
    attr_dirty: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)


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


def _name(name: str) -> bytes:
    raw = os.fsencode(name)
    if len(raw) > NAME_MAX:
        raise NameTooLong(name)
    if not raw or b"/" in raw or raw in (b".", b".."):
        raise InvalidArgument(f"bad file name {name!r}")
    return raw


class Volume:
    def __init__(self, meta: MetaStore, chunks: ChunkStore, cache: ChunkCache,
                 dirty_limit: int = DEFAULT_DIRTY_BYTES) -> None:
        self.meta = meta
        self.chunks = chunks
        self.cache = cache
        self.chunk_size = chunks.chunk_size
        self.dirty_limit = dirty_limit
        self._files: dict[int, OpenFile] = {}
        self._files_lock = threading.Lock()
        self._dirty_bytes = 0
        self._counts_lock = threading.Lock()
        self._read_bytes = 0
        self._write_bytes = 0
        self._purge_orphans()

    # -- paths --------------------------------------------------------------------------------------
    def resolve(self, path: str) -> int:
        with self.meta.read() as t:
            return self._resolve(t, path)

    def _resolve(self, t: Txn, path: str) -> int:
        ino = ROOT_INO
        for part in os.fsencode(path).split(b"/"):
            if not part:
                continue
            inode = t.get_inode(ino)
            if inode is None or not stat.S_ISDIR(inode.mode):
                raise NotADir(path)
            child = t.lookup(ino, part)
            if child is None:
                raise NotFound(path)
            ino = child
        return ino

    def _resolve_parent(self, t: Txn, path: str) -> tuple[Inode, bytes]:
        head, _, tail = path.rstrip("/").rpartition("/")
        parent = self._get(t, self._resolve(t, head))
        if not stat.S_ISDIR(parent.mode):
            raise NotADir(path)
        return parent, _name(tail)

    @staticmethod
    def _get(t: Txn, ino: int) -> Inode:
        inode = t.get_inode(ino)
        if inode is None:
            raise NotFound(f"inode {ino}")
        return inode

    # -- attributes ---------------------------------------------------------------------------------
    def getattr(self, ino: int) -> Inode:
        with self.meta.read() as t:
            inode = self._get(t, ino)
        f = self._files.get(ino)
        if f is not None:
            inode = inode.evolve(size=f.size, mtime=f.mtime, ctime=f.ctime)
        return inode

    def lookup_attr(self, path: str) -> Inode:
        return self.getattr(self.resolve(path))

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                atime: int | None = None, mtime: int | None = None) -> None:
        """chmod/chown/utimens (a uid or gid of -1 means unchanged); ctime is set to now."""
        now = time.time_ns()
        f = self._files.get(ino)
        if f is not None:
            with f.lock:
                self._setattr(ino, mode, uid, gid, atime, mtime, now, f)
        else:
            self._setattr(ino, mode, uid, gid, atime, mtime, now, None)

    def _setattr(self, ino: int, mode: int | None, uid: int | None, gid: int | None, atime: int | None,
                 mtime: int | None, now: int, f: OpenFile | None) -> None:
        with self.meta.write() as t:
            inode = self._get(t, ino)
            changes: dict[str, int] = {"ctime": now}
            if mode is not None:
                changes["mode"] = stat.S_IFMT(inode.mode) | stat.S_IMODE(mode)
            if uid is not None and uid != -1:
                changes["uid"] = uid
            if gid is not None and gid != -1:
                changes["gid"] = gid
            if atime is not None:
                changes["atime"] = atime
            if mtime is not None:
                changes["mtime"] = mtime
            if f is not None:
                f.mtime = mtime if mtime is not None else f.mtime
                f.ctime = now
                changes["mtime"] = f.mtime
            t.put_inode(inode.evolve(**changes))

    # -- directories --------------------------------------------------------------------------------
    def readdir(self, ino: int) -> list[tuple[str, int, int]]:
        """(name, inode, file type bits) of every entry, with "." and ".." first."""
        with self.meta.read() as t:
            inode = self._get(t, ino)
            if not stat.S_ISDIR(inode.mode):
                raise NotADir(f"inode {ino}")
            out = [(".", ino, stat.S_IFDIR), ("..", inode.parent or ino, stat.S_IFDIR)]
            out.extend((os.fsdecode(name), child, kind) for name, child, kind in t.list_dir(ino))
            return out

    def _new_inode(self, t: Txn, parent: Inode, name: bytes, mode: int, uid: int, gid: int,
                   rdev: int = 0) -> Inode:
        if t.lookup(parent.ino, name) is not None:
            raise Exists(os.fsdecode(name))
        now = time.time_ns()
        if parent.mode & stat.S_ISGID:
            # BSD group semantics of a setgid directory, as ext4 does: inherit its group (and, for
            # directories, the setgid bit itself).
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        is_dir = stat.S_ISDIR(mode)
        inode = Inode(t.alloc_ino(), mode, uid, gid, 2 if is_dir else 1, 0, now, now, now, rdev,
                      parent.ino if is_dir else 0)
        t.put_inode(inode)
        t.put_dirent(parent.ino, name, inode.ino, mode)
        t.put_inode(parent.evolve(mtime=now, ctime=now, nlink=parent.nlink + (1 if is_dir else 0)))
        if not is_dir:
            t.bump("files", 1)
        return inode

    def mknod(self, path: str, mode: int, uid: int, gid: int, rdev: int = 0) -> Inode:
        if stat.S_ISDIR(mode):
            raise InvalidArgument("mknod cannot make a directory")
        if not stat.S_IFMT(mode):
            mode |= stat.S_IFREG
        with self.meta.write() as t:
            parent, name = self._resolve_parent(t, path)
            return self._new_inode(t, parent, name, mode, uid, gid, rdev)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> Inode:
        with self.meta.write() as t:
            parent, name = self._resolve_parent(t, path)
            return self._new_inode(t, parent, name, stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> Inode:
        raw = os.fsencode(target)
        if len(raw) > 4095:
            raise NameTooLong(target)
        with self.meta.write() as t:
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
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return os.fsdecode(target)

    def link(self, ino: int, new_path: str) -> Inode:
        with self.meta.write() as t:
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
        with self.meta.write() as t:
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
            t.del_orphan(ino)  # the last close of a hidden file unlinks it: no longer an orphan
            self._drop_link(t, inode, now)

    def rmdir(self, path: str) -> None:
        with self.meta.write() as t:
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
        """One name of a non-directory is gone: drop the inode with its last link unless it is open."""
        if inode.nlink > 1:
            t.put_inode(inode.evolve(nlink=inode.nlink - 1, ctime=now))
            return
        if inode.ino in self._files:
            # Still open: readable and writable until the last close (POSIX); purged then, or at the
            # next mount after a crash.
            self._uncount(t, inode)
            t.put_inode(inode.evolve(nlink=0, ctime=now))
            t.add_orphan(inode.ino)
            return
        self._destroy(t, inode)

    @staticmethod
    def _uncount(t: Txn, inode: Inode) -> None:
        """The inode leaves the namespace: it no longer counts among the volume's files."""
        if stat.S_ISREG(inode.mode):
            t.bump("logical_bytes", -inode.size)
        if not stat.S_ISDIR(inode.mode):
            t.bump("files", -1)

    def _destroy(self, t: Txn, inode: Inode) -> None:
        if inode.nlink > 0:
            self._uncount(t, inode)
        t.delete_inode(inode.ino)
        self.cache.discard_inode(inode.ino)

    def rename(self, old: str, new: str, noreplace: bool = False, hide: bool = False) -> None:
        """Rename; ``hide`` marks the new name as a file unlinked while open (libfuse renames such a
        file to a hidden name and unlinks that at the last close), so a crash cannot leak it."""
        with self.meta.write() as t:
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

    # -- open files ---------------------------------------------------------------------------------
    def open(self, ino: int) -> int:
        """Open an inode; the returned handle is the inode number (stable, never reused)."""
        with self.meta.read() as t:
            inode = self._get(t, ino)
        if stat.S_ISDIR(inode.mode):
            raise IsADir(f"inode {ino}")
        with self._files_lock:
            f = self._files.get(ino)
            if f is None:
                f = self._files[ino] = OpenFile(ino, inode.size, inode.mtime, inode.ctime)
            f.opens += 1
        return ino

    def create(self, path: str, mode: int, uid: int, gid: int) -> tuple[int, Inode]:
        inode = self.mknod(path, stat.S_IFREG | stat.S_IMODE(mode), uid, gid)
        return self.open(inode.ino), inode

    def _open_file(self, fh: int) -> OpenFile:
        f = self._files.get(fh)
        if f is None:
            raise InvalidArgument(f"file handle {fh} is not open")
        return f

    def release(self, fh: int) -> None:
        f = self._open_file(fh)
        with f.lock:
            self._flush(f)
            with self._files_lock:
                f.opens -= 1
                last = f.opens == 0
                if last:
                    del self._files[fh]
        if last:
            with self.meta.write() as t:
                inode = t.get_inode(fh)
                if inode is not None and inode.nlink == 0:
                    self._destroy(t, inode)

    def flush(self, fh: int) -> None:
        """close()/fsync(): encode every buffered chunk, sync the segment, commit (invariant 2)."""
        f = self._open_file(fh)
        with f.lock:
            self._flush(f)

    fsync = flush

    def read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._open_file(fh)
        cs = self.chunk_size
        with f.lock:
            end = min(offset + size, f.size)
            if offset >= end:
                return b""
            parts: list[bytes] = []
            pos = offset
            while pos < end:
                index, within = divmod(pos, cs)
                n = min(cs - within, end - pos)
                chunk = self._chunk(f, index)
                piece = chunk[within:within + n]
                if len(piece) < n:
                    piece = bytes(piece) + bytes(n - len(piece))  # hole or short last chunk
                parts.append(piece)
                pos += n
        out = b"".join(parts)
        with self._counts_lock:
            self._read_bytes += len(out)
        return out

    def _chunk(self, f: OpenFile, index: int) -> bytes | bytearray:
        """Current content of one chunk (possibly shorter than the chunk size; b"" for a hole)."""
        buf = f.dirty.get(index)
        if buf is not None:
            return buf
        key = (f.ino, index)
        data = self.cache.get(key)
        if data is None:
            with self.meta.read() as t:
                entry = t.get_chunk(f.ino, index)
            if entry is None:
                return b""
            data = self.chunks.read(entry)
            self.cache.put(key, data)
        return data

    def write(self, fh: int, offset: int, data: bytes) -> int:
        f = self._open_file(fh)
        cs = self.chunk_size
        with f.lock:
            pos, src = offset, 0
            added = 0
            while src < len(data):
                index, within = divmod(pos, cs)
                n = min(cs - within, len(data) - src)
                buf = f.dirty.get(index)
                if buf is None:
                    if within == 0 and n == cs:
                        buf = bytearray()
                    else:
                        buf = bytearray(self._chunk(f, index))
                    f.dirty[index] = buf
                    self.cache.discard((f.ino, index))
                    added += len(buf)
                if len(buf) < within:
                    added += within - len(buf)
                    buf.extend(bytes(within - len(buf)))
                before = len(buf)
                buf[within:within + n] = data[src:src + n]
                added += len(buf) - before
                pos += n
                src += n
            f.size = max(f.size, offset + len(data))
            f.mtime = f.ctime = time.time_ns()
            f.attr_dirty = True
            with self._counts_lock:
                self._dirty_bytes += added
                self._write_bytes += len(data)
                over = self._dirty_bytes > self.dirty_limit
            full = [i for i, b in f.dirty.items() if len(b) == cs]
            if over:
                self._flush(f)
            elif len(full) * cs >= FLUSH_BATCH_BYTES:
                self._flush(f, full)
        return len(data)

    def truncate(self, ino: int, size: int) -> None:
        with self._files_lock:
            f = self._files.get(ino)
            temporary = f is None
            if f is None:
                with self.meta.read() as t:
                    inode = self._get(t, ino)
                if stat.S_ISDIR(inode.mode):
                    raise IsADir(f"inode {ino}")
                f = self._files[ino] = OpenFile(ino, inode.size, inode.mtime, inode.ctime)
            f.opens += 1
        try:
            with f.lock:
                cs = self.chunk_size
                if size < f.size:
                    keep = -(-size // cs)  # chunks [0, keep) survive
                    for index in [i for i in f.dirty if i >= keep]:
                        self._undirty(f, index)
                    self.cache.discard_inode(ino, keep)
                    within = size % cs
                    if within:
                        last = size // cs
                        buf = bytearray(self._chunk(f, last)[:within])
                        if last not in f.dirty:
                            f.dirty[last] = buf
                            with self._counts_lock:
                                self._dirty_bytes += len(buf)
                        else:
                            self._shrink(f, last, within)
                        self.cache.discard((ino, last))
                    f.size = size
                    f.mtime = f.ctime = time.time_ns()
                    f.attr_dirty = True
                    self._flush(f, drop_from=keep)
                elif size > f.size:
                    f.size = size
                    f.mtime = f.ctime = time.time_ns()
                    f.attr_dirty = True
                    self._flush(f)
        finally:
            with self._files_lock:
                f.opens -= 1
                if f.opens == 0 and temporary:
                    del self._files[ino]

    def _undirty(self, f: OpenFile, index: int) -> None:
        buf = f.dirty.pop(index)
        with self._counts_lock:
            self._dirty_bytes -= len(buf)

    def _shrink(self, f: OpenFile, index: int, length: int) -> None:
        buf = f.dirty[index]
        with self._counts_lock:
            self._dirty_bytes -= len(buf) - length
        del buf[length:]

    def _flush(self, f: OpenFile, indexes: list[int] | None = None, drop_from: int | None = None) -> None:
        """Encode and commit dirty chunks (all, or ``indexes``) plus the file's size and times."""
        if indexes is None:
            indexes = sorted(f.dirty)
        if not indexes and not f.attr_dirty and drop_from is None:
            return
        # All-zero chunks are stored as holes: no frame, no entry (sparse files, zeroed regions).
        stored: list[tuple[int, bytearray]] = []
        holes: list[int] = []
        for i in indexes:
            raw = f.dirty[i]
            zero = not raw or (raw[0] == 0 and raw[-1] == 0 and raw.count(0) == len(raw))
            if zero:
                holes.append(i)
            else:
                stored.append((i, raw))
        entries = self.chunks.write([bytes(raw) for _, raw in stored]) if stored else []
        with self.meta.write() as t:
            inode = t.get_inode(f.ino)
            if inode is None:
                return  # destroyed meanwhile; nothing to keep
            if drop_from is not None:
                t.delete_chunks_from(f.ino, drop_from)
            for (index, _raw), entry in zip(stored, entries):
                t.put_chunk(f.ino, index, entry)
            for index in holes:
                t.delete_chunk(f.ino, index)
            if stat.S_ISREG(inode.mode) and inode.nlink > 0:
                t.bump("logical_bytes", f.size - inode.size)
            t.put_inode(inode.evolve(size=f.size, mtime=f.mtime, ctime=f.ctime))
        for index in indexes:
            self._undirty(f, index)
        f.attr_dirty = False

    def flush_all(self) -> None:
        for f in list(self._files.values()):
            with f.lock:
                self._flush(f)

    # -- xattrs -------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: str) -> bytes:
        with self.meta.read() as t:
            self._get(t, ino)
            value = t.get_xattr(ino, os.fsencode(name))
        if value is None:
            raise NoAttr(name)
        return value

    def listxattr(self, ino: int) -> list[str]:
        with self.meta.read() as t:
            self._get(t, ino)
            return [os.fsdecode(n) for n in t.xattr_names(ino)]

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        raw = os.fsencode(name)
        if raw.startswith(b"system.posix_acl_"):
            # POSIX ACLs would have to change the mode bits the kernel checks; without ACL support
            # (as on a filesystem mounted noacl) programs such as cp -a fall back to chmod.
            raise NotSupported(name)
        if not raw or len(raw) > NAME_MAX:
            raise NameTooLong(name) if raw else InvalidArgument("empty xattr name")
        with self.meta.write() as t:
            inode = self._get(t, ino)
            exists = t.get_xattr(ino, raw) is not None
            if flags & XATTR_CREATE and exists:
                raise Exists(name)
            if flags & XATTR_REPLACE and not exists:
                raise NoAttr(name)
            t.put_xattr(ino, raw, value)
            t.put_inode(inode.evolve(ctime=time.time_ns()))

    def removexattr(self, ino: int, name: str) -> None:
        with self.meta.write() as t:
            inode = self._get(t, ino)
            if not t.del_xattr(ino, os.fsencode(name)):
                raise NoAttr(name)
            t.put_inode(inode.evolve(ctime=time.time_ns()))

    # -- volume -------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        with self.meta.read() as t:
            return t.counters()

    def live_stats(self) -> VolumeStats:
        return VolumeStats(len(self._files), self._dirty_bytes, self.cache.size, self.cache.hits,
                           self.cache.misses, self._read_bytes, self._write_bytes)

    def _purge_orphans(self) -> None:
        """Files unlinked while open when the daemon died: nothing can reach them any more."""
        now = time.time_ns()
        with self.meta.write() as t:
            for ino, parent, name in t.orphans():
                t.del_orphan(ino)
                inode = t.get_inode(ino)
                if inode is None:
                    continue
                if not parent:
                    self._destroy(t, inode)
                elif t.lookup(parent, name) == ino:
                    t.del_dirent(parent, name)
                    self._drop_link(t, inode, now)

    def iter_inodes(self) -> Iterator[Inode]:
        with self.meta.read() as t:
            yield from t.inodes()

    def close(self) -> None:
        self.flush_all()
