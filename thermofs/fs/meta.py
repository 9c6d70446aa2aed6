"""LMDB metadata: inodes, directory entries, the chunk map, xattrs, counters. Knows nothing of FUSE.

Key layout (every integer big-endian, so cursor order is numeric order and prefix scans work). Every
value ends with a 4-byte CRC-32 of (sub-database tag, key, value), so a damaged record, or one whose
key changed, is detected before it is used (docs/DESIGN.md, invariant 6); docs/FORMAT.md has the bytes.

    sub-database  tag key                              value (then the CRC-32)
    inodes        0   ino u64                          INODE struct (mode, uid, gid, nlink, size, times,
                                                       rdev, parent, count: chunk entries of a file,
                                                       directory entries of a directory)
    dirents       1   parent ino u64 + name bytes      child ino u64 + child file type u32 (S_IFMT bits)
    chunks        2   ino u64 + chunk index u64        CHUNK struct (segment, offset, frame length, codec
                                                       id, codec param, raw length, xxh3, tier); an
                                                       inline chunk (segment 0) has its frame appended
    symlinks      3   ino u64                          target bytes
    xattrs        4   ino u64 + name bytes             value bytes
    orphans       5   ino u64                          b"" (nlink 0 but open) or parent u64 + hidden name
                                                       (unlinked while open, renamed to a hidden name);
                                                       either way reclaimed at the next mount
    garbage       6   segment id u32                   garbage bytes u64 (dead frames in that segment)
    counters      7   name (utf-8, surrogateescape)    i128 running total (see COUNTERS, codec/<id>/...,
                                                       xattr/<name>: inodes having that xattr)
    temps         8   ino u64 + chunk index u64        TEMP struct: last access (f64 seconds since the
                                                       epoch) + decayed access count (f32) as of then;
                                                       written in batches by the policy tracker; a
                                                       chunk without one counts as accessed at its
                                                       inode's mtime; dropped with the inode (a
                                                       truncate leaves a few stale ones: harmless hints)
    blobs         9   kind u8 + id u32                 trained dictionary or learned model bytes (kinds:
                                                       BLOB_DICTIONARY, BLOB_MODEL); ids are named by
                                                       frames, so a blob is never changed or reused
    volume        10  b"identity"                      JSON: the volume's uuid, chunk size, format
                                                       version, first segment with a header

One write transaction per logical operation: ``with meta.write() as t: ...`` commits once at the end
(or aborts on an exception). Running totals and the ``count`` of inodes whose chunks or entries
changed are accumulated in the transaction and written once, just before the commit.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import resource
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple, cast

import lmdb

from thermofs.fs import lmdbcheck
from thermofs.fs.errors import MetaError, NoSpace

U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
# mode, uid, gid, nlink, size, atime_ns, mtime_ns, ctime_ns, rdev, parent (directories: their parent),
# count (regular files: chunk entries; directories: directory entries)
INODE = struct.Struct(">IIIIQqqqQQQ")
# segment, offset, frame length, codec id, codec param, raw length, xxh3, tier (0 hot, 1 cold)
CHUNK = struct.Struct(">IQIBIIQB")
DIRENT = struct.Struct(">QI")
COUNTER_BYTES = 16  # i128: no sum of file sizes (each below 2^63) can overflow it
SEAL = struct.Struct(">I")

ROOT_INO = 1
# The sub-databases; a record's tag is the index of its sub-database here (on-disk format: append only).
DBS = ("inodes", "dirents", "chunks", "symlinks", "xattrs", "orphans", "garbage", "counters", "temps",
       "blobs", "volume")
TAG_SEEDS = {name: zlib.crc32(bytes([tag])) for tag, name in enumerate(DBS)}
TEMP = struct.Struct(">df")
BLOB_DICTIONARY = 1
BLOB_MODEL = 2
IDENTITY_KEY = b"identity"
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
# metadata is ~4 billion chunk entries, far beyond any store this design targets. Under a limit on
# the address space (ulimit -v) a quarter of it is reserved instead (map_size()).
MAP_SIZE = 256 << 30
MIN_MAP_SIZE = 64 << 20
# LMDB's meta pages (pages 0 and 1 of data.mdb), read before LMDB maps a file: a file cut short would
# make LMDB fault (SIGBUS) on the first page past its end. Offsets in a 64-bit LMDB 0.9 meta page:
# page header 16 bytes, then magic u32, version u32, address, map size, the free DB (whose first u32
# is the page size) and the main DB (48 bytes each), last used page, transaction id.
LMDB_MAGIC = 0xBEEFC0DE
LMDB_META = struct.Struct("<II8xQI44x48xQQ")  # from byte 16: magic, version, mapsize, psize, last_pg, txnid


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
    # Chunk entries (regular file) or directory entries (directory); kept by Txn. The field hides
    # tuple.count, a method no Inode is asked for; mypy takes it for an override of the wrong type.
    count: int = 0  # type: ignore[assignment]

    def pack(self) -> bytes:
        return INODE.pack(self.mode, self.uid, self.gid, self.nlink, self.size, self.atime, self.mtime,
                          self.ctime, self.rdev, self.parent, self.count)

    @classmethod
    def unpack(cls, ino: int, raw: bytes) -> Inode:
        return cls(ino, *INODE.unpack(raw))

    def evolve(self, **changes: int) -> Inode:
        return self._replace(**changes)


class Tier(IntEnum):
    """Which codec a chunk is in: the hot (fast) one, or the cold (strongest) one the cooler chose."""

    HOT = 0
    COLD = 1


@dataclass(frozen=True)
class ChunkEntry:
    segment: int
    offset: int
    frame_len: int
    codec_id: int
    param: int
    raw_len: int
    checksum: int
    tier: Tier = Tier.HOT

    def pack(self) -> bytes:
        return CHUNK.pack(self.segment, self.offset, self.frame_len, self.codec_id, self.param,
                          self.raw_len, self.checksum, self.tier)

    @classmethod
    def unpack(cls, raw: bytes) -> ChunkEntry:
        segment, offset, frame_len, codec_id, param, raw_len, checksum, tier = CHUNK.unpack_from(raw)
        # ValueError for a tier no chunk has: see _chunk
        return cls(segment, offset, frame_len, codec_id, param, raw_len, checksum, Tier(tier))


def chunk_totals(entry: ChunkEntry) -> dict[str, int]:
    """The running totals one chunk adds to (and takes from when it goes): the one rule the chunk map,
    fsck's recount and the tests share."""
    return {"chunks": 1, "stored_bytes": entry.frame_len,
            "cold_chunks" if entry.tier == Tier.COLD else "hot_chunks": 1,
            _codec_counter(entry.codec_id, "chunks"): 1,
            _codec_counter(entry.codec_id, "raw_bytes"): entry.raw_len,
            _codec_counter(entry.codec_id, "stored_bytes"): entry.frame_len}


@dataclass(frozen=True)
class Identity:
    """Who a volume is: recorded at mkfs in LMDB and in thermofs.json, and in every segment header."""

    uuid: str  # 32 hex digits
    chunk_size: int
    format: int
    # Segments from this id on start with a header naming the volume (a store made with format 1
    # and upgraded has older segments without one).
    headers_from: int = 1

    def pack(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def unpack(cls, raw: bytes) -> Identity:
        try:
            fields = json.loads(raw)
            return cls(str(fields["uuid"]), int(fields["chunk_size"]), int(fields["format"]),
                       int(fields["headers_from"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRecord("volume", IDENTITY_KEY, f"unreadable identity record: {e}") from None


class MetaDamaged(MetaError):
    """The LMDB data file is missing, empty, truncated or structurally damaged: it is not opened."""


class CorruptRecord(MetaError):
    """A metadata record failed its checksum, or cannot be decoded: reads that depend on it give EIO."""

    def __init__(self, db: str, key: bytes, why: str = "checksum mismatch") -> None:
        super().__init__(f"damaged metadata record in {db} (key {key.hex()}): {why}")
        self.db = db
        self.key = key


@dataclass(frozen=True)
class DamagedRecord:
    """A record a scan skipped because it failed verification (collected for fsck)."""

    db: str
    key: bytes
    why: str


Damaged = list[DamagedRecord]


def seal(db: str, key: bytes, payload: bytes) -> bytes:
    """A record's stored value: the payload and its CRC-32 over (tag, key, payload). CRC-32 detects
    every error of up to three bits in a record shorter than 11 KiB (Hamming distance 4 up to
    91,607 bits), which covers every record but a large blob."""
    return payload + SEAL.pack(zlib.crc32(payload, zlib.crc32(key, TAG_SEEDS[db])))


def unseal(db: str, key: bytes, stored: bytes) -> bytes:
    """The payload of a stored value; CorruptRecord if its checksum does not match (invariant 6)."""
    if len(stored) < SEAL.size:
        raise CorruptRecord(db, key, "value too short")
    payload = stored[:-SEAL.size]
    if zlib.crc32(payload, zlib.crc32(key, TAG_SEEDS[db])) != SEAL.unpack_from(stored, len(payload))[0]:
        raise CorruptRecord(db, key)
    return payload


def _chunk_key(ino: int, index: int) -> bytes:
    return U64.pack(ino) + U64.pack(index)


def _codec_counter(codec_id: int, field: str) -> str:
    return f"codec/{codec_id}/{field}"


def _xattr_counter(name: bytes) -> str:
    return "xattr/" + os.fsdecode(name)


def _counter_key(name: str) -> bytes:
    return os.fsencode(name)


def _unpack_counter(key: bytes, raw: bytes) -> int:
    if len(raw) != COUNTER_BYTES:
        raise CorruptRecord("counters", key, f"counter of {len(raw)} bytes")
    return int.from_bytes(raw, "big", signed=True)


def _pack_counter(key: bytes, value: int) -> bytes:
    try:
        return value.to_bytes(COUNTER_BYTES, "big", signed=True)
    except OverflowError:
        raise MetaError(f"running total {os.fsdecode(key)} out of range: {value}") from None


class Txn:
    """Typed, verified access to the sub-databases inside one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._db = dbs
        self.deltas: dict[str, int] = {}
        # Chunk or directory entries added (+) or removed (-) per inode, applied to the inodes'
        # ``count`` at commit: a reader can then tell a missing record from a hole (invariant 6).
        self._count_deltas: dict[int, int] = {}
        # (segment, offset, length) of frames this transaction made garbage
        self.freed: list[tuple[int, int, int]] = []

    # -- verified records -----------------------------------------------------------------------------
    def _get(self, key: bytes, db: str) -> bytes | None:
        stored = cast("bytes | None", self._txn.get(key, db=self._db[db]))
        return None if stored is None else unseal(db, key, stored)

    def _put(self, key: bytes, payload: bytes, db: str) -> None:
        self._txn.put(key, seal(db, key, payload), db=self._db[db])

    def _replace(self, key: bytes, payload: bytes, db: str) -> bytes | None:
        """Put and return the stored value it replaced (unverified: the caller decides), or None."""
        return cast("bytes | None", self._txn.replace(key, seal(db, key, payload), db=self._db[db]))

    def _scan(self, db: str, prefix: bytes = b"", start: bytes | None = None,
              damaged: Damaged | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Verified (key, payload) pairs of ``db`` from ``start`` (default ``prefix``) while keys
        begin with ``prefix``. A damaged record raises CorruptRecord, or with ``damaged`` is
        listed there and skipped (fsck)."""
        cur = self._txn.cursor(db=self._db[db])
        if not cur.set_range(start if start is not None else prefix):
            return
        for key, stored in cast(Iterator[tuple[bytes, bytes]], iter(cur)):
            if not key.startswith(prefix):
                break
            try:
                yield key, unseal(db, key, stored)
            except CorruptRecord as e:
                if damaged is None:
                    raise
                damaged.append(DamagedRecord(db, key, str(e)))

    def _keys(self, db: str, prefix: bytes) -> list[bytes]:
        """The keys (unverified) of ``db`` beginning with ``prefix``: what a deletion must remove."""
        cur = self._txn.cursor(db=self._db[db])
        out: list[bytes] = []
        if not cur.set_range(prefix):
            return out
        for key in cast(Iterator[bytes], cur.iternext(keys=True, values=False)):
            if not key.startswith(prefix):
                break
            out.append(key)
        return out

    # -- counters -------------------------------------------------------------------------------------
    def bump(self, name: str, delta: int) -> None:
        if delta:
            self.deltas[name] = self.deltas.get(name, 0) + delta

    def counter(self, name: str) -> int:
        key = _counter_key(name)
        raw = self._get(key, "counters")
        return (_unpack_counter(key, raw) if raw else 0) + self.deltas.get(name, 0)

    def counters(self, damaged: Damaged | None = None) -> dict[str, int]:
        out = {os.fsdecode(k): _unpack_counter(k, v) for k, v in self._scan("counters", damaged=damaged)}
        for k, d in self.deltas.items():
            out[k] = out.get(k, 0) + d
        return out

    def _apply_deltas(self) -> None:
        for ino, delta in self._count_deltas.items():
            inode = self.get_inode(ino) if delta else None
            if inode is not None:
                self.put_inode(inode.evolve(count=inode.count + delta))
        self._count_deltas.clear()
        for name, delta in self.deltas.items():
            key = _counter_key(name)
            raw = self._get(key, "counters")
            self._put(key, _pack_counter(key, (_unpack_counter(key, raw) if raw else 0) + delta), "counters")
        self.deltas.clear()

    def _count(self, ino: int, delta: int) -> None:
        self._count_deltas[ino] = self._count_deltas.get(ino, 0) + delta

    def alloc_ino(self) -> int:
        ino = self.counter("next_ino")
        self.bump("next_ino", 1)
        return ino

    def highest_ino(self) -> int:
        """The highest inode number in use (0 if none): next_ino must stay above it."""
        cur = self._txn.cursor(db=self._db["inodes"])
        return U64.unpack(cur.key())[0] if cur.last() and len(cur.key()) == U64.size else 0

    # -- inodes ---------------------------------------------------------------------------------------
    def get_inode(self, ino: int) -> Inode | None:
        key = U64.pack(ino)
        raw = self._get(key, "inodes")
        if raw is None:
            return None
        if len(raw) != INODE.size:
            raise CorruptRecord("inodes", key, f"inode of {len(raw)} bytes")
        return Inode.unpack(ino, raw)

    def put_inode(self, inode: Inode) -> None:
        self._put(U64.pack(inode.ino), inode.pack(), "inodes")

    def delete_inode(self, ino: int) -> None:
        """Remove an inode and everything it owns; account its frames as garbage."""
        key = U64.pack(ino)
        self._txn.delete(key, db=self._db["inodes"])
        self._txn.delete(key, db=self._db["symlinks"])
        self._txn.delete(key, db=self._db["orphans"])
        self.delete_chunks_from(ino, 0)
        for name in [k[8:] for k in self._keys("xattrs", key)]:
            self.del_xattr(ino, name)
        for temp in self._keys("temps", key):
            self._txn.delete(temp, db=self._db["temps"])
        self._count_deltas.pop(ino, None)

    def inodes(self, damaged: Damaged | None = None) -> Iterator[Inode]:
        for k, v in self._scan("inodes", damaged=damaged):
            if len(k) != U64.size or len(v) != INODE.size:
                if damaged is None:
                    raise CorruptRecord("inodes", k, "wrong key or value length")
                damaged.append(DamagedRecord("inodes", k, "wrong key or value length"))
                continue
            yield Inode.unpack(U64.unpack(k)[0], v)

    # -- directory entries ----------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> int | None:
        key = U64.pack(parent) + name
        raw = self._get(key, "dirents")
        return None if raw is None else _dirent(key, raw)[0]

    def put_dirent(self, parent: int, name: bytes, ino: int, mode: int) -> None:
        if self._replace(U64.pack(parent) + name, DIRENT.pack(ino, stat.S_IFMT(mode)), "dirents") is None:
            self._count(parent, 1)

    def del_dirent(self, parent: int, name: bytes) -> None:
        if self._txn.delete(U64.pack(parent) + name, db=self._db["dirents"]):
            self._count(parent, -1)

    def list_dir(self, parent: int, damaged: Damaged | None = None) -> Iterator[tuple[bytes, int, int]]:
        for k, v in self._scan("dirents", U64.pack(parent), damaged=damaged):
            yield (k[8:], *_dirent(k, v))

    def dir_is_empty(self, parent: int) -> bool:
        return not self._keys_exist("dirents", U64.pack(parent))

    def _keys_exist(self, db: str, prefix: bytes) -> bool:
        cur = self._txn.cursor(db=self._db[db])
        return bool(cur.set_range(prefix) and bytes(cur.key()).startswith(prefix))

    def verify_complete(self, ino: int, missed: bytes | None = None) -> None:
        """Check that every chunk or directory entry of ``ino`` is present and sound: all its records
        verify and there are as many as its inode counts (invariant 6). A hole read or a name not
        found is then truly a hole or truly absent, never a record lost to damage. ``missed``: the
        key a lookup just did not find; a scan that finds it means LMDB's index is damaged.
        CorruptRecord if anything is wrong."""
        inode = self.get_inode(ino)
        if inode is None or not (stat.S_ISDIR(inode.mode) or stat.S_ISREG(inode.mode)):
            return
        db = "dirents" if stat.S_ISDIR(inode.mode) else "chunks"
        found = 0
        for key, _payload in self._scan(db, U64.pack(ino)):
            if key == missed:
                raise CorruptRecord(db, key, "a lookup misses a record a scan finds: LMDB's index is damaged")
            found += 1
        if found != inode.count:
            raise CorruptRecord(db, U64.pack(ino), f"inode {ino} has {found} {db} records, its inode "
                                                   f"counts {inode.count}")

    # -- symlinks -------------------------------------------------------------------------------------
    def get_symlink(self, ino: int) -> bytes | None:
        return self._get(U64.pack(ino), "symlinks")

    def put_symlink(self, ino: int, target: bytes) -> None:
        self._put(U64.pack(ino), target, "symlinks")

    # -- chunk map ------------------------------------------------------------------------------------
    def get_chunk(self, ino: int, index: int) -> ChunkEntry | None:
        return self.get_chunk_frame(ino, index)[0]

    def get_chunk_frame(self, ino: int, index: int) -> tuple[ChunkEntry | None, bytes | None]:
        """A chunk's entry and, for an inline chunk, its frame: one read of one value."""
        key = _chunk_key(ino, index)
        raw = self._get(key, "chunks")
        if raw is None:
            return None, None
        return _chunk(key, raw)

    def put_chunk(self, ino: int, index: int, entry: ChunkEntry, frame: bytes | None = None) -> None:
        """Point chunk ``index`` of ``ino`` at ``entry``; the frame it replaces becomes garbage.

        An inline entry (segment INLINE_SEGMENT) comes with its ``frame``, stored here.
        """
        value = entry.pack()
        if entry.segment == INLINE_SEGMENT:
            if frame is None or len(frame) != entry.frame_len:
                raise MetaError("an inline chunk entry needs its frame")
            value += frame
        key = _chunk_key(ino, index)
        old = self._replace(key, value, "chunks")
        if old is None:
            self._count(ino, 1)
        else:
            self._forget_stored(key, old)
        for name, amount in chunk_totals(entry).items():
            self.bump(name, amount)

    def delete_chunk(self, ino: int, index: int) -> None:
        key = _chunk_key(ino, index)
        old = cast("bytes | None", self._txn.pop(key, db=self._db["chunks"]))
        if old is not None:
            self._count(ino, -1)
            self._forget_stored(key, old)

    def get_inline(self, ino: int, index: int) -> bytes | None:
        """The frame of an inline chunk (None for a chunk in a segment, or no chunk)."""
        return self.get_chunk_frame(ino, index)[1]

    def _forget_stored(self, key: bytes, stored: bytes) -> None:
        """A chunk record was replaced or deleted: take it out of the totals. A damaged one cannot
        be trusted to say which frame died: its frame is left for fsck's recount (nothing is freed
        on the word of a damaged record)."""
        try:
            entry, _inline = _chunk(key, unseal("chunks", key, stored))
        except CorruptRecord:
            return
        self._forget_chunk(entry)

    def _forget_chunk(self, entry: ChunkEntry) -> None:
        for name, value in chunk_totals(entry).items():
            self.bump(name, -value)
        if entry.segment != INLINE_SEGMENT:  # an inline frame goes with its LMDB value
            self.add_garbage(entry)

    def add_garbage(self, entry: ChunkEntry) -> None:
        """The frame of ``entry`` is dead: account it to its segment."""
        self._add_garbage(entry.segment, entry.frame_len)
        self.bump("garbage_bytes", entry.frame_len)
        self.freed.append((entry.segment, entry.offset, entry.frame_len))

    def _add_garbage(self, segment: int, delta: int) -> None:
        key = U32.pack(segment)
        raw = self._get(key, "garbage")
        value = (U64.unpack(raw)[0] if raw else 0) + delta
        if value < 0:
            raise MetaError(f"segment {segment} would have negative garbage ({value} bytes)")
        if value:
            self._put(key, U64.pack(value), "garbage")
        else:
            self._txn.delete(key, db=self._db["garbage"])

    def chunks_of(self, ino: int, start: int = 0, damaged: Damaged | None = None) -> Iterator[tuple[int, ChunkEntry]]:
        for k, v in self._scan("chunks", U64.pack(ino), start=_chunk_key(ino, start), damaged=damaged):
            yield U64.unpack(k[8:])[0], _chunk(k, v)[0]

    def delete_chunks_from(self, ino: int, start: int) -> None:
        for key in self._keys("chunks", U64.pack(ino)):
            if U64.unpack(key[8:16])[0] >= start:
                self.delete_chunk(ino, U64.unpack(key[8:16])[0])

    # -- xattrs ---------------------------------------------------------------------------------------
    def get_xattr(self, ino: int, name: bytes) -> bytes | None:
        return self._get(U64.pack(ino) + name, "xattrs")

    def put_xattr(self, ino: int, name: bytes, value: bytes) -> None:
        if self._replace(U64.pack(ino) + name, value, "xattrs") is None:
            self.bump(_xattr_counter(name), 1)

    def del_xattr(self, ino: int, name: bytes) -> bool:
        deleted = bool(self._txn.delete(U64.pack(ino) + name, db=self._db["xattrs"]))
        if deleted:
            self.bump(_xattr_counter(name), -1)
        return deleted

    def xattr_in_use(self, name: bytes) -> bool:
        """Does any inode have an xattr of this name? (The kernel asks every write for
        security.capability; almost always the answer is no, without a path lookup.)"""
        return self.counter(_xattr_counter(name)) > 0

    def xattr_names(self, ino: int, damaged: Damaged | None = None) -> Iterator[bytes]:
        for k, _v in self._scan("xattrs", U64.pack(ino), damaged=damaged):
            yield k[8:]

    # -- orphans --------------------------------------------------------------------------------------
    def add_orphan(self, ino: int, parent: int = 0, name: bytes = b"") -> None:
        self._put(U64.pack(ino), U64.pack(parent) + name if parent else b"", "orphans")

    def del_orphan(self, ino: int, parent: int | None = None, name: bytes = b"") -> None:
        """Forget an orphan; with ``parent``, only if the record is for that hidden name."""
        key = U64.pack(ino)
        if parent is not None and self._get(key, "orphans") != U64.pack(parent) + name:
            return
        self._txn.delete(key, db=self._db["orphans"])

    def has_hidden_name(self, ino: int) -> bool:
        """Does one of this inode's names only hide it while it is open (libfuse's .fuse_hidden)?"""
        return bool(self._get(U64.pack(ino), "orphans"))

    def orphans(self, damaged: Damaged | None = None) -> list[tuple[int, int, bytes]]:
        """(ino, parent, hidden name) of every orphan; parent 0 for an inode with no name left."""
        return [(U64.unpack(k)[0], U64.unpack(v[:8])[0] if v else 0, v[8:])
                for k, v in self._scan("orphans", damaged=damaged)]

    def garbage_by_segment(self, damaged: Damaged | None = None) -> dict[int, int]:
        return {U32.unpack(k)[0]: U64.unpack(v)[0] for k, v in self._scan("garbage", damaged=damaged)}

    def forget_segment(self, segment: int) -> None:
        """A dead segment was deleted: its garbage is gone from the store."""
        key = U32.pack(segment)
        raw = self._get(key, "garbage")
        if raw is not None:
            self.bump("garbage_bytes", -U64.unpack(raw)[0])
            self._txn.delete(key, db=self._db["garbage"])

    # -- policy state -----------------------------------------------------------------------------------
    def get_temp(self, ino: int, index: int) -> tuple[float, float] | None:
        """(decayed count, last access) of a chunk, or None if it has no sound record (a damaged
        one is only a lost hint)."""
        try:
            raw = self._get(_chunk_key(ino, index), "temps")
        except CorruptRecord:
            return None
        if raw is None or len(raw) != TEMP.size:
            return None
        last, count = TEMP.unpack(raw)
        return count, last

    def put_temp(self, ino: int, index: int, count: float, last: float) -> None:
        self._put(_chunk_key(ino, index), TEMP.pack(last, count), "temps")

    def chunks_after(self, ino: int, index: int, limit: int) -> list[tuple[int, int, ChunkEntry]]:
        """Up to ``limit`` sound chunk entries from (ino, index) on, in key order: a scan in slices
        (damaged records are skipped: they are fsck's to report)."""
        out: list[tuple[int, int, ChunkEntry]] = []
        for k, v in self._scan("chunks", start=_chunk_key(ino, index), damaged=[]):
            out.append((U64.unpack(k[:8])[0], U64.unpack(k[8:])[0], _chunk(k, v)[0]))
            if len(out) >= limit:
                break
        return out

    def swap_chunk(self, ino: int, index: int, old: ChunkEntry, new: ChunkEntry,
                   frame: bytes | None = None) -> bool:
        """Invariants 3 and 4: point the chunk at ``new`` (a recompressed or compacted copy) only if
        it still is ``old``; then ``old`` becomes garbage, else the copy ``new`` does. ``new`` may
        be ``old`` with another tier only (its frame stays where it is). True if swapped."""
        key = _chunk_key(ino, index)
        try:
            current, inline = self.get_chunk_frame(ino, index)
        except CorruptRecord:
            current = inline = None
        if current != old:
            if new.segment != INLINE_SEGMENT and (new.segment, new.offset) != (old.segment, old.offset):
                self.add_garbage(new)  # the copy nobody will point at
            return False
        if dataclasses.replace(new, tier=old.tier) == old:
            self._put(key, new.pack() + (inline or b""), "chunks")
            self.bump("cold_chunks" if old.tier == Tier.COLD else "hot_chunks", -1)
            self.bump("cold_chunks" if new.tier == Tier.COLD else "hot_chunks", 1)
        else:
            self.put_chunk(ino, index, new, frame)
        return True

    # -- blobs (trained dictionaries, learned models) ---------------------------------------------------
    def put_blob(self, kind: int, data: bytes) -> int:
        """Store a new blob and return its id (ids of one kind count up from 1, never reused, also
        past a damaged one)."""
        prefix = bytes([kind])
        last = max((U32.unpack(k[1:5])[0] for k in self._keys("blobs", prefix) if len(k) == 5), default=0)
        blob_id = last + 1
        self._put(prefix + U32.pack(blob_id), data, "blobs")
        return blob_id

    def blobs(self, kind: int, damaged: Damaged | None = None) -> Iterator[tuple[int, bytes]]:
        for k, v in self._scan("blobs", bytes([kind]), damaged=damaged):
            yield U32.unpack(k[1:5])[0], v

    # -- the volume's identity --------------------------------------------------------------------------
    def identity(self) -> Identity | None:
        raw = self._get(IDENTITY_KEY, "volume")
        return None if raw is None else Identity.unpack(raw)

    def put_identity(self, identity: Identity) -> None:
        self._put(IDENTITY_KEY, identity.pack(), "volume")

    # -- admin: whole-store scans and repairs for fsck and compact (tools/) ----------------------------
    # Kept in one block: the tools read every sub-database and fix what they find, the volume never
    # needs these. Scans are generators over one transaction's snapshot.
    def entry_count(self, db: str) -> int:
        """Number of keys in sub-database ``db`` (from LMDB's own statistics, no scan)."""
        return int(self._txn.stat(self._db[db])["entries"])

    def all_chunks(self, damaged: Damaged | None = None) -> Iterator[tuple[int, int, ChunkEntry, bytes | None]]:
        """(ino, chunk index, entry, inline frame or None) of every chunk map entry, in key order."""
        for k, v in self._scan("chunks", damaged=damaged):
            entry, inline = _chunk(k, v)
            yield U64.unpack(k[:8])[0], U64.unpack(k[8:16])[0], entry, inline

    def all_dirents(self, damaged: Damaged | None = None) -> Iterator[tuple[int, bytes, int, int]]:
        """(parent, name, child ino, child file type bits) of every directory entry."""
        for k, v in self._scan("dirents", damaged=damaged):
            yield (U64.unpack(k[:8])[0], k[8:], *_dirent(k, v))

    def live_bytes_by_segment(self) -> dict[int, int]:
        """Bytes of the frames the chunk map points at, per segment (inline frames excluded).
        CorruptRecord if any chunk record is damaged: who frees space on this word must not
        mistake a damaged record for a dead frame."""
        live: dict[int, int] = {}
        for _ino, _index, entry, _inline in self.all_chunks():
            if entry.segment != INLINE_SEGMENT:
                live[entry.segment] = live.get(entry.segment, 0) + entry.frame_len
        return live

    def sound_keys(self, db: str) -> list[bytes]:
        """The keys of ``db`` whose records verify."""
        return [key for key, _payload in self._scan(db, damaged=[])]

    def owners(self, db: str) -> set[int]:
        """Inode numbers that own at least one key of a sub-database keyed by ino (+ suffix)."""
        cur = self._txn.cursor(db=self._db[db])
        return {U64.unpack(k[:8])[0] for k in cast(Iterator[bytes], cur.iternext(keys=True, values=False))
                if len(k) >= 8}

    def set_counter(self, name: str, value: int) -> None:
        """Set a running total to a recomputed value (fsck --repair)."""
        key = _counter_key(name)
        self.deltas.pop(name, None)
        self._put(key, _pack_counter(key, value), "counters")

    def adjust_garbage(self, segment: int, delta: int) -> None:
        """Correct a segment's garbage record by ``delta`` bytes without punching anything: frames a
        crash left between append and commit, which no record knew, or a record that drifted."""
        if delta:
            self._add_garbage(segment, delta)
            self.bump("garbage_bytes", delta)

    def damaged_records(self, db: str) -> list[DamagedRecord]:
        """Every record of ``db`` that fails verification (fsck)."""
        return [DamagedRecord(db, key, why) for key, _stored, why in self._take_damaged(db, take=False)]

    def drop_damaged(self, db: str) -> int:
        """Delete every damaged record of ``db``, without accounting (fsck --repair, for records it
        rebuilds or that only held hints)."""
        return len(self._take_damaged(db, take=True))

    def rehome_damaged(self, db: str) -> int:
        """Put every damaged record of ``db`` back at its place in key order, unchanged: still
        damaged (EIO, fsck reports it), but a key damaged out of order no longer misleads LMDB's
        searches for the records around it (fsck --repair, before it changes anything else)."""
        taken = self._take_damaged(db, take=True)
        for key, stored, _why in taken:
            # Not over a record that holds the key in its place: a damaged key may have become the
            # key of another record (then the damaged copy goes; its own key is missing either way).
            if key and len(key) <= 511:
                self._txn.put(key, stored, db=self._db[db], overwrite=False)
        return len(taken)

    def _take_damaged(self, db: str, take: bool) -> list[tuple[bytes, bytes, str]]:
        """(key, stored value, why) of every damaged record, through the cursor (a record whose key
        was damaged may sit out of key order, where a lookup by key cannot find it); ``take``:
        delete them as they are found."""
        found: list[tuple[bytes, bytes, str]] = []
        cur = self._txn.cursor(db=self._db[db])
        more = cur.first()
        while more:
            key, stored = cast(tuple[bytes, bytes], cur.item())
            try:
                unseal(db, key, stored)
            except CorruptRecord as e:
                found.append((key, stored, str(e)))
                if take:
                    cur.delete()  # moves to the next record, if any
                    more = bool(cur.key())
                    continue
            more = cur.next()
        return found

    def records_of(self, inode: Inode) -> int:
        """The records an inode's ``count`` counts, damaged ones included: its chunk entries (a
        regular file), its directory entries (a directory), none (anything else)."""
        if stat.S_ISDIR(inode.mode):
            return len(self._keys("dirents", U64.pack(inode.ino)))
        if stat.S_ISREG(inode.mode):
            return len(self._keys("chunks", U64.pack(inode.ino)))
        return 0


def _chunk(key: bytes, raw: bytes) -> tuple[ChunkEntry, bytes | None]:
    if len(key) != 16 or len(raw) < CHUNK.size:
        raise CorruptRecord("chunks", key, "wrong key or value length")
    try:
        entry = ChunkEntry.unpack(raw)
    except ValueError:
        raise CorruptRecord("chunks", key, "unknown tier") from None
    inline = raw[CHUNK.size:] if len(raw) > CHUNK.size else None
    if (entry.segment == INLINE_SEGMENT) != (inline is not None):
        raise CorruptRecord("chunks", key, "inline frame without an inline entry, or the reverse")
    return entry, inline


def _dirent(key: bytes, raw: bytes) -> tuple[int, int]:
    if len(raw) != DIRENT.size or len(key) <= 8:
        raise CorruptRecord("dirents", key, "wrong key or value length")
    return cast(tuple[int, int], DIRENT.unpack(raw))


def _map_lmdb_error(e: lmdb.Error) -> Exception:
    if isinstance(e, lmdb.MapFullError) or getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) \
            or "No space left" in str(e):
        return NoSpace(f"metadata store full: {e}")
    return MetaError(f"LMDB: {e}")


def check_lmdb_file(path: Path) -> None:
    """Refuse a data.mdb that LMDB would map past its end (SIGBUS) or silently replace: missing,
    empty, truncated, or without a valid meta page. MetaError with what is wrong."""
    data = path / "data.mdb"
    try:
        with open(data, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(2 * 65536)
    except FileNotFoundError:
        raise MetaDamaged(f"the metadata file {data} is missing") from None
    except OSError as e:
        raise MetaError(f"cannot read the metadata file {data}: {e.strerror}") from None
    if size == 0:
        raise MetaDamaged(f"the metadata file {data} is empty")
    metas = []
    psize = 0
    for page in range(2):
        off = page * (psize or 4096)
        if len(head) < off + 16 + LMDB_META.size:
            continue
        magic, version, _mapsize, page_size, last_pg, txnid = LMDB_META.unpack_from(head, off + 16)
        if magic == LMDB_MAGIC and version == 1 and page_size in (4096, 8192, 16384, 32768, 65536):
            psize = psize or page_size
            metas.append((txnid, last_pg, page_size))
    if not metas:
        raise MetaDamaged(f"the metadata file {data} has no valid LMDB meta page (damaged or not LMDB)")
    _txnid, last_pg, page_size = max(metas)
    if (last_pg + 1) * page_size > size:
        raise MetaDamaged(f"the metadata file {data} is truncated: {size} bytes, its meta page says "
                        f"{(last_pg + 1) * page_size}")


def map_size(path: Path) -> int:
    """Address space to reserve for the map: MAP_SIZE, or under ``ulimit -v`` a quarter of what the
    limit allows, never less than the file itself."""
    try:
        current = (path / "data.mdb").stat().st_size
    except OSError:
        current = 0
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    want = MAP_SIZE if soft == resource.RLIM_INFINITY else max(MIN_MAP_SIZE, min(MAP_SIZE, soft // 4))
    return max(want, current)


class Snapshot:
    """A read transaction held on one state (the last sync point), shared by reference count: LMDB
    reuses none of that state's pages until it is released."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._dbs = dbs
        self._refs = 1
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            done = self._refs == 0
        if done:
            self._txn.abort()

    def txn(self) -> Txn:
        """Typed access to the state (between acquire and release, from one thread at a time)."""
        return Txn(self._txn, self._dbs)


class MetaStore:
    """The LMDB environment of a volume. Thread-safe: LMDB serializes writers, readers never block."""

    def __init__(self, path: Path, readonly: bool = False, create: bool = False,
                 on_commit: Callable[[int, list[tuple[int, int, int]]], None] | None = None,
                 check_structure: bool = True, durable_commits: bool = True) -> None:
        """Open the environment at ``path`` (``create``: make it, for mkfs; otherwise it must exist
        and be sound: its structure is checked unless ``check_structure`` is off, for a read-only
        look at an environment another process has open). ``on_commit(txnid, freed)`` is called after
        each commit with its transaction id and the frames it made garbage; the assembly sets it once
        the segment store exists. ``durable_commits``: every commit synced with its meta page
        (LMDB's sync and metasync); off, commits are synced only at sync points (fs/durability.py).
        Writes nothing unless ``create``, but a writable open forgets the clean-close fingerprint."""
        self.on_commit = on_commit
        self.readonly = readonly
        self.path = path
        if not create:
            check_lmdb_file(path)
            if check_structure:
                problems = lmdbcheck.verify(path)
                if problems:
                    raise MetaDamaged(f"the metadata file {path / 'data.mdb'} is damaged: "
                                      + "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)"
                                                                   if len(problems) > 3 else ""))
            if not readonly:
                lmdbcheck.forget_clean(path)
        elif path.exists() and any(path.iterdir()):
            raise MetaError(f"cannot create a metadata store in {path}: not empty")
        else:
            path.mkdir(mode=0o700, exist_ok=True)  # py-lmdb would give it the files' mode, 0600
        lock = not readonly or os.access(path, os.W_OK)  # a read-only store on read-only media
        try:
            self.env = lmdb.open(str(path), map_size=map_size(path), max_dbs=len(DBS) + 2, subdir=True,
                                 readonly=readonly, create=create, lock=lock, mode=0o600,
                                 sync=durable_commits, metasync=durable_commits, readahead=False,
                                 max_readers=512)
        except lmdb.Error as e:
            raise MetaError(f"cannot open metadata store {path}: {e}") from e
        try:
            if create:
                with self.env.begin(write=True) as txn:
                    self.dbs = {name: self.env.open_db(name.encode(), txn=txn) for name in DBS}
            else:
                # py-lmdb opens them in a read transaction of its own, which it commits (handles
                # opened in an aborted transaction are invalid afterwards).
                self.dbs = {name: self.env.open_db(name.encode(), create=False) for name in DBS}
        except lmdb.Error as e:
            self.env.close()
            raise MetaError(f"metadata store {path} lacks its sub-databases ({e}): not a thermofs "
                            f"format 2 store, or damaged") from e

    def _begin(self, write: bool = False) -> lmdb.Transaction:
        try:
            return self.env.begin(write=write, buffers=False)
        except lmdb.Error as e:
            raise _map_lmdb_error(e) from e

    @contextmanager
    def read(self) -> Iterator[Txn]:
        txn = self._begin()
        try:
            yield Txn(txn, self.dbs)
        except lmdb.Error as e:
            raise _map_lmdb_error(e) from e
        finally:
            txn.abort()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        txn = self._begin(write=True)
        t = Txn(txn, self.dbs)
        try:
            yield t
            t._apply_deltas()
            txnid = txn.id()
            txn.commit()
        except lmdb.Error as e:
            txn.abort()
            raise _map_lmdb_error(e) from e
        except SystemError as e:  # py-lmdb's Cursor.delete on a damaged page
            txn.abort()
            raise MetaError(f"LMDB: {e.__cause__ or e}") from e
        except BaseException:
            txn.abort()
            raise
        if self.on_commit is not None:
            self.on_commit(txnid, t.freed)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold LMDB's write lock without writing: no commit runs, none is half written (a sync point)."""
        txn = self._begin(write=True)
        try:
            yield
        finally:
            txn.abort()

    def flush(self) -> None:
        """Sync the data file: every commit so far, with its meta page, on disk."""
        try:
            self.env.sync(True)
        except lmdb.Error as e:
            raise _map_lmdb_error(e) from e

    def pin(self) -> Snapshot:
        """A read transaction on the current state, held until released: LMDB reuses none of its pages."""
        return Snapshot(self.env.begin(buffers=False), self.dbs)

    def compact_copy(self, directory: Path) -> None:
        """A consistent, compacted copy of the environment into the empty ``directory`` (one read
        transaction: commits go on meanwhile): the metadata backup's snapshot."""
        self.env.copy(str(directory), compact=True)

    def last_txnid(self) -> int:
        return int(self.env.info()["last_txnid"])

    def close(self) -> None:
        self.env.close()
        if not self.readonly:
            try:
                lmdbcheck.record_clean(self.path)  # the next open needs one hash, not a walk
            except OSError:
                pass  # it will walk instead
