"""LMDB metadata: inodes, directory entries, the chunk map, xattrs, counters. Knows nothing of FUSE.

Key layout (every integer big-endian, so cursor order is numeric order and prefix scans work):

    sub-database  key                              value
    inodes        ino u64                          INODE struct (mode, uid, gid, nlink, size, times, ...)
    dirents       parent ino u64 + name bytes      child ino u64 + child file type u32 (S_IFMT bits)
    chunks        ino u64 + chunk index u64        CHUNK struct (segment, offset, frame length, codec
                                                   id, codec param, raw length, xxh3, tier); an
                                                   inline chunk (segment 0) has its frame appended
    symlinks      ino u64                          target bytes
    xattrs        ino u64 + name bytes             value bytes
    orphans       ino u64                          b"" (nlink 0 but open) or parent u64 + hidden name
                                                   (unlinked while open, renamed to a hidden name);
                                                   either way reclaimed at the next mount
    garbage       segment id u32                   garbage bytes u64 (dead frames in that segment)
    temps         ino u64 + chunk index u64        TEMP struct: last access (f64 seconds since the
                                                   epoch) + decayed access count (f32) as of then;
                                                   written in batches by the policy tracker; a
                                                   chunk without one counts as accessed at its
                                                   inode's mtime; dropped with the inode (a
                                                   truncate leaves a few stale ones: harmless hints)
    blobs         kind u8 + id u32                 trained dictionary or learned model bytes (kinds:
                                                   BLOB_DICTIONARY, BLOB_MODEL); ids are named by
                                                   frames, so a blob is never changed or reused
    counters      name (utf-8)                     i64 running total (see COUNTERS, codec/<id>/...,
                                                   xattr/<name>: inodes having that xattr)

One write transaction per logical operation: ``with meta.write() as t: ...`` commits once at the end
(or aborts on an exception). Running totals are accumulated in the transaction and written once.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import lmdb

from thermofs.fs.errors import MetaError, NoSpace

U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
I64 = struct.Struct(">q")
# mode, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent (directories: their parent)
INODE = struct.Struct(">IIIIQqqqQQ")
# segment, offset, frame length, codec id, codec param, raw length, xxh3, tier (0 hot, 1 cold)
CHUNK = struct.Struct(">IQIBIIQB")
DIRENT = struct.Struct(">QI")

ROOT_INO = 1
DBS = ("inodes", "dirents", "chunks", "symlinks", "xattrs", "orphans", "garbage", "counters", "temps",
       "blobs")
TEMP = struct.Struct(">df")
BLOB_DICTIONARY = 1
BLOB_MODEL = 2
# Segment id of chunks stored inline, their frame in the chunk map value right after the entry
# (segment files are numbered from 1). Small frames live in LMDB: a small file's close needs no
# segment sync. In the entry's own value rather than a sub-database of their own because the cost of
# a synced commit grows with the sub-databases it touches (prefilled LMDB, 1,500 commits: 0.28 ms
# for 1, 0.43 ms for 3, 0.69 ms for 6).
INLINE_SEGMENT = 0
COUNTERS = ("next_ino", "files", "logical_bytes", "stored_bytes", "garbage_bytes", "chunks",
            "hot_chunks", "cold_chunks", "cooled_chunks", "cooled_bytes_saved", "promoted_chunks", "open")
# Counters that record history or state rather than a total of what is stored: fsck cannot recompute
# them from the store. ``open`` is 1 while a volume is open: still 1 at the next open means a crash.
HISTORY_COUNTERS = frozenset({"next_ino", "cooled_chunks", "cooled_bytes_saved", "promoted_chunks", "open"})
# Virtual address space reserved for the LMDB map; the file only grows as pages are used. 256 GiB of
# metadata is ~4 billion chunk entries, far beyond any store this design targets.
MAP_SIZE = 256 << 30


class Inode(NamedTuple):
    """An inode record. A NamedTuple, not a dataclass: getattr runs several times per file
    created, and building and changing a tuple costs a fifth of a frozen dataclass."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    atime: int
    mtime: int
    ctime: int
    rdev: int = 0
    parent: int = 0

    def pack(self) -> bytes:
        return INODE.pack(self.mode, self.uid, self.gid, self.nlink, self.size, self.atime, self.mtime,
                          self.ctime, self.rdev, self.parent)

    @classmethod
    def unpack(cls, ino: int, raw: bytes) -> Inode:
        return cls(ino, *INODE.unpack(raw))

    def evolve(self, **changes: int) -> Inode:
        return self._replace(**changes)


@dataclass(frozen=True)
class ChunkEntry:
    segment: int
    offset: int
    frame_len: int
    codec_id: int
    param: int
    raw_len: int
    checksum: int
    tier: int = 0

    def pack(self) -> bytes:
        return CHUNK.pack(self.segment, self.offset, self.frame_len, self.codec_id, self.param,
                          self.raw_len, self.checksum, self.tier)

    @classmethod
    def unpack(cls, raw: bytes) -> ChunkEntry:
        return cls(*CHUNK.unpack_from(raw))


def _chunk_key(ino: int, index: int) -> bytes:
    return U64.pack(ino) + U64.pack(index)


def _codec_counter(codec_id: int, field: str) -> str:
    return f"codec/{codec_id}/{field}"


def _xattr_counter(name: bytes) -> str:
    return "xattr/" + os.fsdecode(name)


def _items(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    """A cursor's (key, value) pairs as bytes (transactions are opened without buffers)."""
    return cast(Iterator[tuple[bytes, bytes]], iter(cursor))


class Txn:
    """Typed access to the sub-databases inside one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._db = dbs
        self.deltas: dict[str, int] = {}
        # (segment, offset, length) of frames this transaction made garbage
        self.freed: list[tuple[int, int, int]] = []

    def _get(self, key: bytes, db: lmdb._Database) -> bytes | None:
        return cast("bytes | None", self._txn.get(key, db=db))

    # -- counters -------------------------------------------------------------------------------------
    def bump(self, name: str, delta: int) -> None:
        if delta:
            self.deltas[name] = self.deltas.get(name, 0) + delta

    def counter(self, name: str) -> int:
        raw = self._get(name.encode(), self._db["counters"])
        return (I64.unpack(raw)[0] if raw else 0) + self.deltas.get(name, 0)

    def counters(self) -> dict[str, int]:
        out = {k.decode(): I64.unpack(v)[0] for k, v in _items(self._txn.cursor(db=self._db["counters"]))}
        for k, d in self.deltas.items():
            out[k] = out.get(k, 0) + d
        return out

    def _apply_deltas(self) -> None:
        for name, delta in self.deltas.items():
            key = name.encode()
            raw = self._get(key, self._db["counters"])
            self._txn.put(key, I64.pack((I64.unpack(raw)[0] if raw else 0) + delta), db=self._db["counters"])
        self.deltas.clear()

    def alloc_ino(self) -> int:
        ino = self.counter("next_ino")
        self.bump("next_ino", 1)
        return ino

    # -- inodes ---------------------------------------------------------------------------------------
    def get_inode(self, ino: int) -> Inode | None:
        raw = self._get(U64.pack(ino), self._db["inodes"])
        return Inode.unpack(ino, raw) if raw is not None else None

    def put_inode(self, inode: Inode) -> None:
        self._txn.put(U64.pack(inode.ino), inode.pack(), db=self._db["inodes"])

    def delete_inode(self, ino: int) -> None:
        """Remove an inode and everything it owns; account its frames as garbage."""
        key = U64.pack(ino)
        self._txn.delete(key, db=self._db["inodes"])
        self._txn.delete(key, db=self._db["symlinks"])
        self._txn.delete(key, db=self._db["orphans"])
        self.delete_chunks_from(ino, 0)
        for name in list(self.xattr_names(ino)):
            self.del_xattr(ino, name)
        self._delete_prefix(key, "temps")

    def _delete_prefix(self, prefix: bytes, db: str) -> None:
        cur = self._txn.cursor(db=self._db[db])
        while cur.set_range(prefix) and bytes(cur.key()).startswith(prefix):
            cur.delete()

    def inodes(self) -> Iterator[Inode]:
        for k, v in _items(self._txn.cursor(db=self._db["inodes"])):
            yield Inode.unpack(U64.unpack(k)[0], v)

    # -- directory entries ----------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> int | None:
        raw = self._get(U64.pack(parent) + name, self._db["dirents"])
        return DIRENT.unpack(raw)[0] if raw is not None else None

    def put_dirent(self, parent: int, name: bytes, ino: int, mode: int) -> None:
        self._txn.put(U64.pack(parent) + name, DIRENT.pack(ino, stat.S_IFMT(mode)), db=self._db["dirents"])

    def del_dirent(self, parent: int, name: bytes) -> None:
        self._txn.delete(U64.pack(parent) + name, db=self._db["dirents"])

    def list_dir(self, parent: int) -> Iterator[tuple[bytes, int, int]]:
        prefix = U64.pack(parent)
        cur = self._txn.cursor(db=self._db["dirents"])
        if not cur.set_range(prefix):
            return
        for k, v in _items(cur):
            if not k.startswith(prefix):
                break
            yield (k[8:], *DIRENT.unpack(v))

    def dir_is_empty(self, parent: int) -> bool:
        return next(self.list_dir(parent), None) is None

    # -- symlinks -------------------------------------------------------------------------------------
    def get_symlink(self, ino: int) -> bytes | None:
        return self._get(U64.pack(ino), self._db["symlinks"])

    def put_symlink(self, ino: int, target: bytes) -> None:
        self._txn.put(U64.pack(ino), target, db=self._db["symlinks"])

    # -- chunk map ------------------------------------------------------------------------------------
    def get_chunk(self, ino: int, index: int) -> ChunkEntry | None:
        return self.get_chunk_frame(ino, index)[0]

    def get_chunk_frame(self, ino: int, index: int) -> tuple[ChunkEntry | None, bytes | None]:
        """A chunk's entry and, for an inline chunk, its frame: one read of one value."""
        raw = self._get(_chunk_key(ino, index), self._db["chunks"])
        if raw is None:
            return None, None
        return ChunkEntry.unpack(raw), (raw[CHUNK.size:] if len(raw) > CHUNK.size else None)

    def put_chunk(self, ino: int, index: int, entry: ChunkEntry, frame: bytes | None = None) -> None:
        """Point chunk ``index`` of ``ino`` at ``entry``; the frame it replaces becomes garbage.

        An inline entry (segment INLINE_SEGMENT) comes with its ``frame``, stored here.
        """
        key = _chunk_key(ino, index)
        old = self._get(key, self._db["chunks"])
        if old is not None:
            self._forget_chunk(ChunkEntry.unpack(old))
        value = entry.pack()
        if entry.segment == INLINE_SEGMENT:
            if frame is None or len(frame) != entry.frame_len:
                raise MetaError("an inline chunk entry needs its frame")
            value += frame
        self._txn.put(key, value, db=self._db["chunks"])
        self.bump("chunks", 1)
        self.bump("stored_bytes", entry.frame_len)
        self.bump("cold_chunks" if entry.tier else "hot_chunks", 1)
        self.bump(_codec_counter(entry.codec_id, "chunks"), 1)
        self.bump(_codec_counter(entry.codec_id, "raw_bytes"), entry.raw_len)
        self.bump(_codec_counter(entry.codec_id, "stored_bytes"), entry.frame_len)

    def delete_chunk(self, ino: int, index: int) -> None:
        key = _chunk_key(ino, index)
        old = self._get(key, self._db["chunks"])
        if old is not None:
            self._forget_chunk(ChunkEntry.unpack(old))
            self._txn.delete(key, db=self._db["chunks"])

    def get_inline(self, ino: int, index: int) -> bytes | None:
        """The frame of an inline chunk (None for a chunk in a segment, or no chunk)."""
        return self.get_chunk_frame(ino, index)[1]

    def _forget_chunk(self, entry: ChunkEntry) -> None:
        self.bump("chunks", -1)
        self.bump("stored_bytes", -entry.frame_len)
        self.bump("cold_chunks" if entry.tier else "hot_chunks", -1)
        self.bump(_codec_counter(entry.codec_id, "chunks"), -1)
        self.bump(_codec_counter(entry.codec_id, "raw_bytes"), -entry.raw_len)
        self.bump(_codec_counter(entry.codec_id, "stored_bytes"), -entry.frame_len)
        if entry.segment != INLINE_SEGMENT:  # an inline frame goes with its LMDB value
            self.add_garbage(entry)

    def add_garbage(self, entry: ChunkEntry) -> None:
        """The frame of ``entry`` is dead: account it to its segment."""
        key = U32.pack(entry.segment)
        raw = self._get(key, self._db["garbage"])
        self._txn.put(key, U64.pack((U64.unpack(raw)[0] if raw else 0) + entry.frame_len),
                      db=self._db["garbage"])
        self.bump("garbage_bytes", entry.frame_len)
        self.freed.append((entry.segment, entry.offset, entry.frame_len))

    def chunks_of(self, ino: int, start: int = 0) -> Iterator[tuple[int, ChunkEntry]]:
        prefix = U64.pack(ino)
        cur = self._txn.cursor(db=self._db["chunks"])
        if not cur.set_range(_chunk_key(ino, start)):
            return
        for k, v in _items(cur):
            if not k.startswith(prefix):
                break
            yield U64.unpack(k[8:])[0], ChunkEntry.unpack(v)

    def delete_chunks_from(self, ino: int, start: int) -> None:
        for index, _entry in list(self.chunks_of(ino, start)):
            self.delete_chunk(ino, index)

    # -- xattrs ---------------------------------------------------------------------------------------
    def get_xattr(self, ino: int, name: bytes) -> bytes | None:
        return self._get(U64.pack(ino) + name, self._db["xattrs"])

    def put_xattr(self, ino: int, name: bytes, value: bytes) -> None:
        key = U64.pack(ino) + name
        if self._get(key, self._db["xattrs"]) is None:
            self.bump(_xattr_counter(name), 1)
        self._txn.put(key, value, db=self._db["xattrs"])

    def del_xattr(self, ino: int, name: bytes) -> bool:
        deleted = bool(self._txn.delete(U64.pack(ino) + name, db=self._db["xattrs"]))
        if deleted:
            self.bump(_xattr_counter(name), -1)
        return deleted

    def xattr_in_use(self, name: bytes) -> bool:
        """Does any inode have an xattr of this name? (The kernel asks every write for
        security.capability; almost always the answer is no, without a path lookup.)"""
        return self.counter(_xattr_counter(name)) > 0

    def xattr_names(self, ino: int) -> Iterator[bytes]:
        prefix = U64.pack(ino)
        cur = self._txn.cursor(db=self._db["xattrs"])
        if not cur.set_range(prefix):
            return
        for k in cast(Iterator[bytes], cur.iternext(keys=True, values=False)):
            if not k.startswith(prefix):
                break
            yield k[8:]

    # -- orphans --------------------------------------------------------------------------------------
    def add_orphan(self, ino: int, parent: int = 0, name: bytes = b"") -> None:
        self._txn.put(U64.pack(ino), U64.pack(parent) + name if parent else b"", db=self._db["orphans"])

    def del_orphan(self, ino: int, parent: int | None = None, name: bytes = b"") -> None:
        """Forget an orphan; with ``parent``, only if the record is for that hidden name."""
        key = U64.pack(ino)
        if parent is not None and self._get(key, self._db["orphans"]) != U64.pack(parent) + name:
            return
        self._txn.delete(key, db=self._db["orphans"])

    def has_hidden_name(self, ino: int) -> bool:
        """Does one of this inode's names only hide it while it is open (libfuse's .fuse_hidden)?"""
        return bool(self._get(U64.pack(ino), self._db["orphans"]))

    def orphans(self) -> list[tuple[int, int, bytes]]:
        """(ino, parent, hidden name) of every orphan; parent 0 for an inode with no name left."""
        out = []
        for k, v in _items(self._txn.cursor(db=self._db["orphans"])):
            out.append((U64.unpack(k)[0], U64.unpack(v[:8])[0] if v else 0, v[8:]))
        return out

    def garbage_by_segment(self) -> dict[int, int]:
        return {U32.unpack(k)[0]: U64.unpack(v)[0] for k, v in _items(self._txn.cursor(db=self._db["garbage"]))}

    def forget_segment(self, segment: int) -> None:
        """A dead segment was deleted: its garbage is gone from the store."""
        key = U32.pack(segment)
        raw = self._get(key, self._db["garbage"])
        if raw is not None:
            self.bump("garbage_bytes", -U64.unpack(raw)[0])
            self._txn.delete(key, db=self._db["garbage"])

    # -- policy state -----------------------------------------------------------------------------------
    def get_temp(self, ino: int, index: int) -> tuple[float, float] | None:
        """(decayed count, last access) of a chunk, or None if it has no record."""
        raw = self._get(_chunk_key(ino, index), self._db["temps"])
        if raw is None:
            return None
        last, count = TEMP.unpack(raw)
        return count, last

    def put_temp(self, ino: int, index: int, count: float, last: float) -> None:
        self._txn.put(_chunk_key(ino, index), TEMP.pack(last, count), db=self._db["temps"])

    def chunks_after(self, ino: int, index: int, limit: int) -> list[tuple[int, int, ChunkEntry]]:
        """Up to ``limit`` chunk entries from (ino, index) on, in key order: a scan in slices."""
        cur = self._txn.cursor(db=self._db["chunks"])
        out: list[tuple[int, int, ChunkEntry]] = []
        if not cur.set_range(_chunk_key(ino, index)):
            return out
        for k, v in _items(cur):
            out.append((U64.unpack(k[:8])[0], U64.unpack(k[8:])[0], ChunkEntry.unpack(v)))
            if len(out) >= limit:
                break
        return out

    def swap_chunk(self, ino: int, index: int, old: ChunkEntry, new: ChunkEntry,
                   frame: bytes | None = None) -> bool:
        """Invariants 3 and 4: point the chunk at ``new`` (a recompressed or compacted copy) only if
        it still is ``old``; then ``old`` becomes garbage, else the copy ``new`` does. ``new`` may
        be ``old`` with another tier only (its frame stays where it is). True if swapped."""
        key = _chunk_key(ino, index)
        raw = self._get(key, self._db["chunks"])
        if raw is None or ChunkEntry.unpack(raw) != old:
            if new.segment != INLINE_SEGMENT and (new.segment, new.offset) != (old.segment, old.offset):
                self.add_garbage(new)  # the copy nobody will point at
            return False
        if dataclasses.replace(new, tier=old.tier) == old:
            self._txn.put(key, new.pack() + raw[CHUNK.size:], db=self._db["chunks"])
            self.bump("cold_chunks" if old.tier else "hot_chunks", -1)
            self.bump("cold_chunks" if new.tier else "hot_chunks", 1)
        else:
            self.put_chunk(ino, index, new, frame)
        return True

    # -- blobs (trained dictionaries, learned models) ---------------------------------------------------
    def put_blob(self, kind: int, data: bytes) -> int:
        """Store a new blob and return its id (ids of one kind count up from 1)."""
        # A volume holds a handful of blobs: a scan of one kind is cheap.
        last = max((blob_id for blob_id, _data in self.blobs(kind)), default=0)
        blob_id = last + 1
        self._txn.put(bytes([kind]) + U32.pack(blob_id), data, db=self._db["blobs"])
        return blob_id

    def blobs(self, kind: int) -> Iterator[tuple[int, bytes]]:
        cur = self._txn.cursor(db=self._db["blobs"])
        prefix = bytes([kind])
        if not cur.set_range(prefix):
            return
        for k, v in _items(cur):
            if k[:1] != prefix:
                break
            yield U32.unpack(k[1:5])[0], v

    # -- admin: whole-store scans and repairs for fsck and compact (tools/) ----------------------------
    # Kept in one block: the tools read every sub-database and fix what they find, the volume never
    # needs these. Scans are generators over one transaction's snapshot.
    def entry_count(self, db: str) -> int:
        """Number of keys in sub-database ``db`` (from LMDB's own statistics, no scan)."""
        return int(self._txn.stat(self._db[db])["entries"])

    def all_chunks(self) -> Iterator[tuple[int, int, ChunkEntry, bytes | None]]:
        """(ino, chunk index, entry, inline frame or None) of every chunk map entry, in key order."""
        for k, v in _items(self._txn.cursor(db=self._db["chunks"])):
            yield (U64.unpack(k[:8])[0], U64.unpack(k[8:16])[0], ChunkEntry.unpack(v),
                   v[CHUNK.size:] if len(v) > CHUNK.size else None)

    def all_dirents(self) -> Iterator[tuple[int, bytes, int, int]]:
        """(parent, name, child ino, child file type bits) of every directory entry."""
        for k, v in _items(self._txn.cursor(db=self._db["dirents"])):
            yield (U64.unpack(k[:8])[0], k[8:], *DIRENT.unpack(v))

    def live_bytes_by_segment(self) -> dict[int, int]:
        """Bytes of the frames the chunk map points at, per segment (inline frames excluded)."""
        live: dict[int, int] = {}
        for _ino, _index, entry, _inline in self.all_chunks():
            if entry.segment != INLINE_SEGMENT:
                live[entry.segment] = live.get(entry.segment, 0) + entry.frame_len
        return live

    def owners(self, db: str) -> set[int]:
        """Inode numbers that own at least one key of a sub-database keyed by ino (+ suffix)."""
        cur = self._txn.cursor(db=self._db[db])
        return {U64.unpack(k[:8])[0] for k in cast(Iterator[bytes], cur.iternext(keys=True, values=False))}

    def set_counter(self, name: str, value: int) -> None:
        """Set a running total to a recomputed value (fsck --repair)."""
        self.bump(name, value - self.counter(name))

    def adjust_garbage(self, segment: int, delta: int) -> None:
        """Correct a segment's garbage record by ``delta`` bytes without punching anything: frames a
        crash left between append and commit, which no record knew, or a record that drifted."""
        if not delta:
            return
        key = U32.pack(segment)
        raw = self._get(key, self._db["garbage"])
        value = (U64.unpack(raw)[0] if raw else 0) + delta
        if value < 0:
            raise MetaError(f"segment {segment} would have negative garbage ({value} bytes)")
        if value:
            self._txn.put(key, U64.pack(value), db=self._db["garbage"])
        else:
            self._txn.delete(key, db=self._db["garbage"])
        self.bump("garbage_bytes", delta)


def _map_lmdb_error(e: lmdb.Error) -> Exception:
    if isinstance(e, lmdb.MapFullError) or getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) \
            or "No space left" in str(e):
        return NoSpace(f"metadata store full: {e}")
    return MetaError(f"LMDB: {e}")


class MetaStore:
    """The LMDB environment of a volume. Thread-safe: LMDB serializes writers, readers never block."""

    def __init__(self, path: Path, readonly: bool = False,
                 on_freed: Callable[[list[tuple[int, int, int]]], None] | None = None) -> None:
        """``on_freed`` is called after each commit that made frames garbage (the segment store
        punches them out of their files, so deleting data frees disk space at once)."""
        self._on_freed = on_freed
        try:
            self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=len(DBS) + 2, subdir=True,
                                 readonly=readonly, create=not readonly, lock=True,
                                 # one fdatasync per commit, none for the meta page: a system crash may
                                 # undo the last commit but never corrupts (LMDB keeps ACI).
                                 metasync=False, sync=True, readahead=False, max_readers=512)
        except lmdb.Error as e:
            raise MetaError(f"cannot open metadata store {path}: {e}") from e
        try:
            if readonly:
                # py-lmdb opens them in its own read transaction, which it commits (handles opened
                # in an aborted transaction are invalid afterwards).
                self.dbs = {name: self.env.open_db(name.encode(), create=False) for name in DBS}
            else:
                with self.env.begin(write=True) as txn:
                    self.dbs = {name: self.env.open_db(name.encode(), txn=txn) for name in DBS}
        except lmdb.Error as e:
            raise MetaError(f"metadata store {path} lacks its sub-databases: {e}") from e

    @contextmanager
    def read(self) -> Iterator[Txn]:
        with self.env.begin(buffers=False) as txn:
            yield Txn(txn, self.dbs)

    @contextmanager
    def write(self) -> Iterator[Txn]:
        try:
            txn = self.env.begin(write=True)
        except lmdb.Error as e:
            raise _map_lmdb_error(e) from e
        t = Txn(txn, self.dbs)
        try:
            yield t
            t._apply_deltas()
            txn.commit()
        except lmdb.Error as e:
            txn.abort()
            raise _map_lmdb_error(e) from e
        except BaseException:
            txn.abort()
            raise
        if t.freed and self._on_freed is not None:
            self._on_freed(t.freed)

    def close(self) -> None:
        self.env.close()
