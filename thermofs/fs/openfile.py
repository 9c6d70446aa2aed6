"""The data path of one open file: write buffers, the encoding pipeline, staged frames, one commit.

A chunk lives in one of four places, searched in this order by a read:

    dirty      bytearray being written (partial chunks, or full ones not yet handed on)
    inflight   a full chunk handed to the encoder pool: encoded and appended to a segment in the
               background while the writer goes on (the raw bytes serve reads meanwhile)
    staged     encoded and appended, not yet committed: its map entry waits for the commit
    committed  the chunk map in LMDB (through the decoded-chunk cache)

A commit (close, fsync, truncate, or too much staged) waits for the encoder, then writes every staged
entry, the size and times in one LMDB transaction, after the frames (invariant 1): committed at close,
durable once a sync point covers it (fsync makes one; invariant 2). Frames staged and then replaced before a commit
are accounted as garbage in that commit.
"""

from __future__ import annotations

import stat
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from thermofs.fs.cache import ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import INLINE_SEGMENT, U64, ChunkEntry, Inode, MetaStore
from thermofs.fs.namespace import link_new_inode

# Staged entries committed at the latest after this many chunks (1 GiB at 64 KiB chunks): bounds the
# memory of the staged map and the work a crash can undo for a file written without fsync.
MAX_STAGED_CHUNKS = 16384


class AccessObserver(Protocol):
    """Told of every read and write of chunks ``first..last`` of a file (the policy's tracker)."""

    def touch(self, ino: int, first: int, last: int) -> None: ...


class WriteBudget:
    """Bytes buffered (dirty or in flight) across all open files, against one bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.used += n

    def over(self, extra: int) -> bool:
        return self.used + extra > self.limit


Buffer = bytes | bytearray | memoryview


class CreateCommits:
    """How many created files have reached LMDB with their first commit.

    Until then a new file is known only to the volume's table of pending creates; afterwards only
    to LMDB. A lookup whose snapshot predates the commit, and which looks at the table once the file
    has left it, sees the file in neither: it reads again if this count moved meanwhile. Advanced
    after the commit and before the file counts as in LMDB or leaves the table, so such a lookup
    always sees it move."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        with self._lock:
            self.value += 1


@dataclass(frozen=True)
class PendingCreate:
    """A file created by this mount and not in LMDB yet: where its first commit links it."""

    parent: int
    name: bytes
    inode: Inode


def _in_segments(entries: Iterable[ChunkEntry | None]) -> list[ChunkEntry]:
    """The entries whose frames live in segment files (not holes, not inline in LMDB)."""
    return [e for e in entries if e is not None and e.segment != INLINE_SEGMENT]


@dataclass
class Inflight:
    """A chunk in the encoder: its bytes, and its place in the batch the future encodes."""

    raw: Buffer
    future: Future[list[ChunkEntry | None]]
    slot: int


class OpenFile:
    """One inode while it is open. Every method takes the file's lock."""

    def __init__(self, inode: Inode, chunks: ChunkStore, meta: MetaStore, cache: ChunkCache,
                 budget: WriteBudget, pool: ThreadPoolExecutor, created: PendingCreate | None = None,
                 observer: AccessObserver | None = None, commits: CreateCommits | None = None) -> None:
        self.ino = inode.ino
        self.created = created  # how this mount created the file, if it did (never changes)
        self._in_lmdb = created is None  # until its first commit, a created file is in LMDB nowhere
        self._commits = commits
        self.kind = stat.S_IFMT(inode.mode)
        self.size = inode.size
        self.mtime = inode.mtime
        self.ctime = inode.ctime
        self._handles = 0
        self._unlinked = False  # its last name went while open: destroyed at the last release
        self._hidden = False  # libfuse renamed it to a hidden name: the volume drops that at the last release
        # chmod/chown/utimens of an open file: committed with its data (cp -a sets them on the open
        # file just before close: one synchronous commit instead of four).
        self.attrs: dict[str, int] = {}
        self.attr_dirty = False
        self.lock = threading.RLock()
        self._chunks = chunks
        self._meta = meta
        self._cache = cache
        self._budget = budget
        self._pool = pool
        self._cs = chunks.chunk_size
        self._dirty: dict[int, bytearray] = {}
        self._inflight: dict[int, Inflight] = {}
        # The encoder's batches in submission order, with the chunk indices each one encodes.
        self._batches: deque[tuple[Future[list[ChunkEntry | None]], list[int]]] = deque()
        self._staged: dict[int, ChunkEntry | None] = {}
        self._inline: dict[int, bytes] = {}  # frames of staged inline entries
        self._superseded: list[ChunkEntry] = []
        # Chunks from this index on are cut off (an O_TRUNC open) but still in LMDB: they read as
        # holes here and are deleted by the next commit, so an overwrite costs one commit, not two.
        self._drop_from: int | None = None
        # Bumped by every change of content (under the lock): a read that decoded committed chunks
        # without the lock caches them only if it did not move meanwhile.
        self._generation = 0
        self._observer = observer
        self._holes_verified = False  # see _read_committed
        # The last chunks read from LMDB included frames of a slow decoder (the learned codec, ~40 ms
        # per chunk): the next request decodes its chunks on the pool, one per core. Fast frames
        # (0.06-0.4 ms) are decoded in the reading thread: a hand-off would cost as much.
        self._slow_reads = False

    # -- its handles and its names (the volume's open-file table asks) -------------------------------
    def add_handle(self) -> None:
        self._handles += 1

    def drop_handle(self) -> bool:
        """One handle fewer; True if it was the last."""
        self._handles -= 1
        return self._handles == 0

    @property
    def handles(self) -> int:
        return self._handles

    def mark_unlinked(self) -> None:
        """Its last name went while it is open: the volume destroys it at the last release."""
        self._unlinked = True

    @property
    def unlinked(self) -> bool:
        return self._unlinked

    def mark_hidden(self) -> None:
        """libfuse renamed it to a hidden name: the volume drops that name at the last release."""
        self._hidden = True

    @property
    def hidden(self) -> bool:
        return self._hidden

    @property
    def in_lmdb(self) -> bool:
        """Has the file reached LMDB (a created one: with its first commit)?"""
        return self._in_lmdb

    # -- attributes ---------------------------------------------------------------------------------
    def overlay(self, inode: Inode) -> Inode:
        """The inode as the application sees it: with this file's uncommitted size, times, attrs."""
        return inode.evolve(size=self.size, mtime=self.mtime, ctime=self.ctime, **self.attrs)

    def set_attrs(self, changes: dict[str, int], mode: int | None, mtime: int | None, now: int) -> None:
        with self.lock:
            if mode is not None:
                changes = {**changes, "mode": self.kind | stat.S_IMODE(mode)}
            self.attrs.update(changes)
            if mtime is not None:
                self.mtime = mtime
            self.ctime = now
            self.attr_dirty = True

    def _touch(self) -> None:
        """The content changed: mtime and ctime are now."""
        self.mtime = self.ctime = time.time_ns()
        self.attr_dirty = True

    @property
    def buffered(self) -> bool:
        return bool(self._dirty or self._inflight or self._staged or self.attr_dirty
                    or self._drop_from is not None)

    # -- reading ------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Chunks this file holds (buffered, cached, staged) are copied under the lock; committed
        ones are read and decoded outside it, so the kernel's concurrent read-ahead requests decode
        on both cores (a cold 256 MiB dd: 461 -> 535-589 MiB/s). If the file changed meanwhile
        (its generation moved), the read starts over and nothing it decoded is cached."""
        cs = self._cs
        touched = False
        while True:
            with self.lock:
                end = min(offset + size, self.size)
                if offset >= end:
                    return b""
                if self._observer is not None and not touched:
                    self._observer.touch(self.ino, offset // cs, (end - 1) // cs)
                    touched = True
                # (index, start, length, piece): piece is None for a chunk still to read from LMDB
                plan: list[tuple[int, int, int, Buffer | None]] = []
                pos = offset
                while pos < end:
                    index, within = divmod(pos, cs)
                    n = min(cs - within, end - pos)
                    held = self._chunk_at_hand(index)
                    plan.append((index, within, n, None if held is None else held[within:within + n]))
                    pos += n
                generation = self._generation
            fetched = self._fetch([index for index, _, _, piece in plan if piece is None])
            if fetched:
                with self.lock:
                    if self._generation != generation:
                        continue
                    for index, data in fetched.items():
                        if data:
                            self._cache.put((self.ino, index), data)
            parts: list[Buffer] = []
            for index, within, n, piece in plan:
                if piece is None:
                    piece = fetched[index][within:within + n]
                if len(piece) < n:
                    piece = bytes(piece) + bytes(n - len(piece))  # hole or short last chunk
                parts.append(piece)
            return b"".join(parts)

    def _chunk(self, index: int) -> Buffer:
        """Current content of one chunk (possibly shorter than the chunk size; b"" for a hole)."""
        data = self._chunk_at_hand(index)
        if data is None:
            data = self._read_committed(index)[0]
            if data:
                self._cache.put((self.ino, index), data)
        return data

    def _chunk_at_hand(self, index: int) -> Buffer | None:
        """One chunk's content if this file or the cache holds it (caller holds the lock); None
        if it must be read from LMDB."""
        buf = self._dirty.get(index)
        if buf is not None:
            return buf
        flight = self._inflight.get(index)
        if flight is not None:
            return flight.raw
        key = (self.ino, index)
        data = self._cache.get(key)
        if data is not None:
            return data
        if index in self._staged:
            entry, inline = self._staged[index], self._inline.get(index)
            data = self._chunks.read(entry, inline) if entry is not None else b""
            if data:
                self._cache.put(key, data)
            return data
        if self._drop_from is not None and index >= self._drop_from:
            return b""
        return None

    def _fetch(self, indices: list[int]) -> dict[int, bytes]:
        """Committed chunks, decoded in this thread; or, while this file's reads meet slow-decoding
        frames, the first here and the others on the pool (two learned chunks at once on 2 cores)."""
        if len(indices) < 2 or not self._slow_reads:
            got = {index: self._read_committed(index) for index in indices}
        else:
            futures = [self._pool.submit(self._read_committed, index) for index in indices[1:]]
            got = {indices[0]: self._read_committed(indices[0])}
            got.update((index, future.result()) for index, future in zip(indices[1:], futures, strict=True))
        if got:
            self._slow_reads = any(slow for _data, slow in got.values())
        return {index: data for index, (data, _slow) in got.items()}

    def _read_committed(self, index: int) -> tuple[bytes, bool]:
        """A chunk as LMDB points at it, and whether its frame's codec is slow to decode. The cooler
        and compaction move frames of a file that is open (without its lock) and punch the old copy
        out: a read that lost that race finds the entry changed and reads again; the same entry
        failing twice is real damage."""
        previous = None
        while True:
            with self._meta.read() as t:
                entry, inline = t.get_chunk_frame(self.ino, index)
                if entry is None and not self._holes_verified:
                    # A hole, or a record lost to damage? Once per open file: every chunk record
                    # verifies and there are as many as the inode counts (invariant 6).
                    t.verify_complete(self.ino, U64.pack(self.ino) + U64.pack(index))
                    self._holes_verified = True
            if entry is None:
                return b"", False
            try:
                return self._chunks.read(entry, inline), self._chunks.slow_to_decode(entry)
            except CorruptChunk:
                if entry == previous:
                    raise
                with self._meta.read() as t:
                    if t.get_chunk(self.ino, index) == entry:
                        raise
                previous = entry

    # -- writing ------------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> int:
        cs = self._cs
        with self.lock:
            self._generation += 1
            # Collect the encoder's results and make room before touching anything: if that fails
            # (a full disk), this write has changed nothing and the file keeps its size.
            self._reap(wait=False)
            if self._budget.over(len(data)):
                self._reap(wait=True)
                if self._budget.over(len(data)):
                    self.commit()
            if len(self._staged) >= MAX_STAGED_CHUNKS:
                self.commit()
            pos, src, added = offset, 0, 0
            view = memoryview(data)
            ready: list[tuple[int, Buffer]] = []  # full chunks, straight to the encoder
            while src < len(data):
                index, within = divmod(pos, cs)
                n = min(cs - within, len(data) - src)
                if within == 0 and n == cs:
                    # A whole chunk: no buffer and no copy (the 1 MiB request stays alive until
                    # its chunks are encoded).
                    old = self._dirty.pop(index, None)
                    if old is not None:
                        added -= len(old)
                    ready.append((index, view[src:src + n]))
                    added += n
                else:
                    buf = self._dirty.get(index)
                    if buf is None:
                        buf = self._dirty[index] = bytearray(self._chunk(index))
                        added += len(buf)
                    if len(buf) < within:
                        added += within - len(buf)
                        buf.extend(bytes(within - len(buf)))
                    before = len(buf)
                    buf[within:within + n] = view[src:src + n]
                    added += len(buf) - before
                    if len(buf) == cs:
                        ready.append((index, self._dirty.pop(index)))
                # After loading the old content (which may have cached it): the cache must never
                # hold an older version of a chunk once the chunk moves on to the encoder.
                self._cache.discard((self.ino, index))
                pos += n
                src += n
            self.size = max(self.size, offset + len(data))
            self._touch()
            if self._observer is not None and data:
                self._observer.touch(self.ino, offset // cs, (offset + len(data) - 1) // cs)
            self._budget.add(added)
            if ready:
                self._submit(ready)  # errors surface at the next write, flush or fsync
        return len(data)

    def _submit(self, ready: list[tuple[int, Buffer]]) -> None:
        """Hand full chunks to the encoder pool as one batch: encoded and appended with one
        writev in the background. Their bytes stay readable here until the batch is reaped."""
        for index, _raw in ready:
            self._supersede(index)
        future = self._pool.submit(self._chunks.encode_append, [raw for _index, raw in ready])
        for slot, (index, raw) in enumerate(ready):
            self._inflight[index] = Inflight(raw, future, slot)
        self._batches.append((future, [index for index, _raw in ready]))

    def _supersede(self, index: int) -> None:
        """Chunk ``index`` gets new content: its in-flight or staged frame becomes garbage."""
        old = self._inflight.get(index)
        if old is not None:
            self._reap_one(index, old)
        self._inline.pop(index, None)
        self._superseded += _in_segments([self._staged.pop(index, None)])

    def _keep_buffered(self, index: int, flight: Inflight) -> None:
        """A chunk the encoder could not store (a full disk): its bytes stay buffered, so nothing
        acknowledged is lost; the error reaches the application through a write, flush or fsync."""
        del self._inflight[index]
        if index not in self._dirty:
            self._dirty[index] = bytearray(flight.raw)
        else:
            self._budget.add(-len(flight.raw))

    def _reap_one(self, index: int, flight: Inflight) -> None:
        try:
            entry = flight.future.result()[flight.slot]
        except BaseException:
            self._keep_buffered(index, flight)
            raise
        del self._inflight[index]
        self._budget.add(-len(flight.raw))
        self._staged[index] = entry

    def _reap(self, wait: bool) -> None:
        """Collect the encoder's results batch by batch, in submission order: every batch (wait), or
        the batches done up to the first one still encoding. A write checks one future, not every
        chunk in flight: asking each of up to 1,024 chunks' futures took half the CPU of a 1 MiB
        write request (py-spy, sequential write of text)."""
        failure: BaseException | None = None
        while self._batches:
            future, indices = self._batches[0]
            if not wait and failure is None and not future.done():
                break  # after a failure every batch is waited for: they fail alike, and raise once
            self._batches.popleft()
            error = future.exception()
            for index in indices:
                flight = self._inflight.get(index)
                if flight is None or flight.future is not future:
                    continue  # rewritten meanwhile: its frame was reaped by _supersede
                if error is None:
                    self._reap_one(index, flight)
                else:
                    self._keep_buffered(index, flight)
            failure = failure or error
        if failure is not None:
            # Every failed batch is buffered again, and the error raised once: the write, flush or
            # fsync that sees it changed nothing and can be tried again (a full disk, room made).
            raise failure

    # -- truncating and committing ------------------------------------------------------------------
    def truncate(self, size: int, defer: bool = False) -> None:
        """Cut or extend the file; ``defer`` (an O_TRUNC open) leaves the commit to the next one."""
        cs = self._cs
        with self.lock:
            self._generation += 1
            if size < self.size:
                self._reap(wait=True)
                keep = -(-size // cs)  # chunks [0, keep) survive
                for index in [i for i in self._dirty if i >= keep]:
                    self._budget.add(-len(self._dirty.pop(index)))
                for index in [i for i in self._staged if i >= keep]:
                    self._supersede(index)
                self._cache.discard_range(self.ino, keep, -(-self.size // cs))
                within = size % cs
                if within:
                    last = size // cs
                    buf = self._dirty.get(last)
                    if buf is None:
                        self._dirty[last] = bytearray(self._chunk(last)[:within])
                        self._budget.add(len(self._dirty[last]))
                        self._supersede(last)
                    elif len(buf) > within:
                        self._budget.add(within - len(buf))
                        del buf[within:]
                    self._cache.discard((self.ino, last))
                self.size = size
                self._touch()
                if defer:
                    self._drop_from = keep if self._drop_from is None else min(self._drop_from, keep)
                else:
                    self.commit(drop_from=keep)
            elif size > self.size:
                self.size = size
                self._touch()
                self.commit()

    def commit(self, drop_from: int | None = None) -> None:
        """Encode every buffered chunk, sync the segments, commit entries and attributes at once."""
        with self.lock:
            if not self.buffered and drop_from is None and self._in_lmdb:
                return
            self._generation += 1
            if self._drop_from is not None:
                drop_from = self._drop_from if drop_from is None else min(drop_from, self._drop_from)
            pending = sorted(self._dirty)
            if len(pending) == 1 and not self._inflight:
                index = pending[0]
                self._supersede(index)
                # No thread hand-off for the common case of a small file's close; a small frame
                # is stored inline in LMDB.
                entry, frame = self._chunks.store_small(self._dirty[index])
                self._staged[index] = entry
                if frame is not None:
                    self._inline[index] = frame
                self._budget.add(-len(self._dirty.pop(index)))
            elif pending:
                self._submit([(index, self._dirty.pop(index)) for index in pending])
            self._reap(wait=True)
            if _in_segments(self._staged.values()):
                self._chunks.prepare_commit()
            linked = False
            with self._meta.write() as t:
                inode = t.get_inode(self.ino)
                if inode is None and self.created is not None and not self._in_lmdb:
                    link_new_inode(t, self.created.parent, self.created.name, self.created.inode)
                    inode = self.created.inode
                    linked = True
                if inode is None:
                    for entry in _in_segments([*self._staged.values(), *self._superseded]):
                        t.add_garbage(entry)
                else:
                    if drop_from is not None:
                        t.delete_chunks_from(self.ino, drop_from)
                    for index, entry in self._staged.items():
                        if entry is None:
                            t.delete_chunk(self.ino, index)
                        else:
                            t.put_chunk(self.ino, index, entry, self._inline.get(index))
                    for entry in self._superseded:
                        t.add_garbage(entry)
                    if stat.S_ISREG(inode.mode) and inode.nlink > 0:
                        t.bump("logical_bytes", self.size - inode.size)
                    t.put_inode(self.overlay(inode))
            if linked and self._commits is not None:
                self._commits.advance()
            self._staged.clear()
            self._inline.clear()
            self._superseded.clear()
            self._drop_from = None
            self.attrs.clear()
            self.attr_dirty = False
            self._in_lmdb = True

    def discard(self) -> None:
        """Drop whatever could not be committed (the last close after a failed flush); the frames
        already written for it are accounted as garbage, so dead segments can be deleted."""
        with self.lock:
            self._generation += 1
            dead = _in_segments([*self._staged.values(), *self._superseded])
            for flight in self._inflight.values():
                if flight.future.exception() is None:
                    dead += _in_segments([flight.future.result()[flight.slot]])
                self._budget.add(-len(flight.raw))
            self._inflight.clear()
            self._batches.clear()
            for buf in self._dirty.values():
                self._budget.add(-len(buf))
            self._dirty.clear()
            self._staged.clear()
            self._inline.clear()
            self._superseded.clear()
            self._drop_from = None
            self.attr_dirty = False
            if dead:
                with self._meta.write() as t:
                    for entry in dead:
                        t.add_garbage(entry)
