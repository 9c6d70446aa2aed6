"""What survives what (docs/DESIGN.md, "Durability"), and the sync points that make it so.

A volume mounted as usual commits without syncing: ``close`` writes a file's frames and commits its
LMDB transaction, and the page cache keeps both through a ``kill -9`` of the daemon. A **sync point**
makes everything committed durable against a power loss: with LMDB's write lock held (no commit can
be half on disk), the segments are synced, then LMDB's data file; the newest meta page, the state
just synced, is saved in ``meta.lmdb/synced`` and a read transaction is pinned on it, so LMDB reuses
none of its pages until the next sync point. Sync points come every ``commit`` seconds (a daemon
thread), at ``fsync``/``fdatasync``, on ``thermofs sync``, at mount and at unmount.

After a power loss (the boot id changed since the last sync point) the data file may hold a newer
meta page whose pages never reached the disk: before LMDB opens it, ``restore`` writes the saved
meta page back, and the volume opens at its last sync point, whole (LMDB's documentation: a commit
without sync "can corrupt the database" after a system crash). After a crash of the daemon alone the
page cache was never lost: nothing is restored, and the frames the dead daemon wrote since its last
sync point are synced before the volume serves.

Space follows the same rule: frames freed by a commit are punched only once a sync point covers that
commit, and the reclaimer deletes a segment only if neither the current state nor the last synced
one points into it; otherwise a power loss could bring back an entry whose frame is gone.

With ``sync_close`` every commit is durable on its own (segments synced before it, LMDB synced with
its meta page): the record says so, nothing is ever restored, freed frames are punched at once.
Punching runs on the background thread (inline when there is none, offline), off the request's path.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from thermofs.fs import lmdbcheck
from thermofs.fs.errors import NoSpace, StoreError
from thermofs.fs.meta import MetaStore, Snapshot, Txn
from thermofs.fs.reclaim import reclaim
from thermofs.fs.segments import SegmentStore, segment_id_of

log = logging.getLogger("thermofs.durability")

SYNCED_FILE = "synced"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# Every five seconds, as ext4 commits its journal by default (its mount option is called commit too):
# at most that much of what was closed can be lost to a power loss.
DEFAULT_COMMIT_SECONDS = 5.0
# A sync point also comes after this many commits: LMDB reuses no page freed since the last one (the
# pinned state may need it), so the data file grows by what the commits between two sync points
# write, about 44 KiB per small file created (2,000 commits, pinned: 88 MiB; unpinned: 0.6 MiB).
# 512 commits bound that growth to about 22 MiB, for one sync point per 512 closes.
MAX_UNSYNCED_COMMITS = 512
# The record's two slots (written in turn, so a torn write leaves the other): magic, version, mode,
# sequence number, the synced transaction id, the first segment that may hold unsynced frames, the
# boot id, the meta page's length; then the meta page and a CRC-32 of all that.
RECORD = struct.Struct(">8sBBQQI36sI")
RECORD_MAGIC = b"TFSYNCED"
RECORD_VERSION = 1
SLOT_BYTES = 1 << 17  # a meta page is at most 64 KiB (LMDB's largest page size)
BATCHED, DURABLE = 0, 1  # modes: commits synced at sync points only, or each on its own


def current_boot_id() -> str:
    """This boot's id: a different one in the record means the machine restarted since."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class SyncRecord:
    """The last sync point, as ``meta.lmdb/synced`` keeps it."""

    mode: int
    sequence: int
    txnid: int
    first_unsynced_segment: int
    boot_id: str
    meta_page: bytes

    def pack(self) -> bytes:
        body = RECORD.pack(RECORD_MAGIC, RECORD_VERSION, self.mode, self.sequence, self.txnid,
                           self.first_unsynced_segment, self.boot_id.encode()[:36].ljust(36, b"\0"),
                           len(self.meta_page)) + self.meta_page
        return body + zlib.crc32(body).to_bytes(4, "big")

    @classmethod
    def unpack(cls, slot: bytes) -> SyncRecord | None:
        if len(slot) < RECORD.size:
            return None
        magic, version, mode, sequence, txnid, first, boot, length = RECORD.unpack_from(slot)
        end = RECORD.size + length
        if magic != RECORD_MAGIC or version != RECORD_VERSION or end + 4 > len(slot) \
                or zlib.crc32(slot[:end]) != int.from_bytes(slot[end:end + 4], "big"):
            return None
        return cls(mode, sequence, txnid, first, boot.rstrip(b"\0").decode(errors="replace"), slot[RECORD.size:end])


def read_record(env_dir: Path) -> SyncRecord | None:
    """The newest sound slot of the record (None: no sync point was ever recorded)."""
    try:
        data = (env_dir / SYNCED_FILE).read_bytes()
    except FileNotFoundError:
        return None
    slots = [SyncRecord.unpack(data[i:i + SLOT_BYTES]) for i in (0, SLOT_BYTES)]
    sound = [r for r in slots if r is not None]
    return max(sound, key=lambda r: r.sequence) if sound else None


def write_record(env_dir: Path, record: SyncRecord) -> None:
    """Write the record into its slot (sequence % 2) and sync it: the sync point's durable mark."""
    path = env_dir / SYNCED_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, record.pack(), (record.sequence % 2) * SLOT_BYTES)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def needs_restore(env_dir: Path, boot_id: str | None = None) -> SyncRecord | None:
    """The record to restore, if the machine restarted since the last sync point of a batched mount
    and the data file's newest state is not that sync point."""
    record = read_record(env_dir)
    boot = current_boot_id() if boot_id is None else boot_id
    if record is None or record.mode != BATCHED or record.boot_id == boot:
        return None
    newest = lmdbcheck.newest_txnid((env_dir / "data.mdb").read_bytes()[:2 * 65536])
    return None if newest == record.txnid else record


def restore(store: Path, segments_dir: Path, readonly: bool = False, boot_id: str | None = None) -> bool:
    """Before LMDB opens the store: after a power loss, go back to the last sync point; after a crash
    of the daemon, sync what it wrote since its last sync point. True if the volume went back."""
    env_dir = store / "meta.lmdb"
    record = needs_restore(env_dir, boot_id)
    if record is not None:
        if readonly:
            raise StoreError(f"{store} needs recovery after a restart of the machine (its last sync point "
                             f"is transaction {record.txnid}): mount it read-write once, or run "
                             f"'thermofs fsck --repair'")
        lmdbcheck.put_meta_page(env_dir / "data.mdb", record.meta_page)
        log.warning("the machine restarted since the last sync point of %s: the volume went back to it "
                    "(transaction %d); what was closed after it was not synced and is gone", store,
                    record.txnid)
        return True
    previous = read_record(env_dir)
    if previous is not None and not readonly:
        # A daemon that died left frames in the page cache that no sync point covered yet.
        for path in sorted(segments_dir.glob("*.seg")):
            seg = segment_id_of(path.name)
            if seg is not None and seg >= previous.first_unsynced_segment:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
    return False


class SyncListener(Protocol):
    """Told after each sync point (and each durable commit that freed frames)."""

    def synced(self) -> None: ...


class Durability:
    """The sync points of one mounted volume (see the module docstring). Thread-safe."""

    def __init__(self, meta: MetaStore, segments: SegmentStore, env_dir: Path, sync_close: bool,
                 interval: float = DEFAULT_COMMIT_SECONDS) -> None:
        self._meta = meta
        self._segments = segments
        self._env_dir = env_dir
        self.sync_close = sync_close
        self._interval = interval
        self._listeners: list[SyncListener] = []
        self._sync_lock = threading.Lock()  # one sync point at a time
        self._lock = threading.Lock()  # the fields below
        self._punch_lock = threading.Lock()  # one punching at a time
        self._snapshot: Snapshot | None = None
        self._synced_txnid = -1
        self._sequence = 0
        self._waiting: list[tuple[int, list[tuple[int, int, int]]]] = []  # (txnid, frames) not yet punched
        self._due: list[tuple[int, int, int]] = []  # frames a sync point covers, for the thread to punch
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- freed frames and the synced state ------------------------------------------------------------
    def committed(self, txnid: int, freed: list[tuple[int, int, int]]) -> None:
        """After every commit: the frames it freed are punched once a sync point covers it (at once
        when every commit is durable); after MAX_UNSYNCED_COMMITS commits a sync point comes early."""
        if self.sync_close:
            if freed:
                with self._lock:
                    self._due.extend(freed)
                self._punch_soon()
                self._tell_listeners()
            return
        with self._lock:
            if freed:
                self._waiting.append((txnid, freed))
        if self._overdue(txnid):
            if self._thread is not None:
                self._wake.set()
            else:
                self.sync()

    def _overdue(self, txnid: int) -> bool:
        """Has the state committed up to ``txnid`` gone MAX_UNSYNCED_COMMITS past the last sync point?"""
        return txnid - self._synced_txnid >= MAX_UNSYNCED_COMMITS

    @contextmanager
    def synced_view(self) -> Iterator[Txn | None]:
        """The state of the last sync point, to check a deletion against (None when every commit is
        durable: then the current state is the synced one)."""
        with self._lock:
            snapshot = self._snapshot
            if snapshot is not None:
                snapshot.acquire()
        try:
            yield None if snapshot is None else snapshot.txn()
        finally:
            if snapshot is not None:
                snapshot.release()

    @property
    def synced_txnid(self) -> int:
        return self._synced_txnid

    # -- sync points --------------------------------------------------------------------------------
    def sync(self) -> int:
        """A sync point: everything committed so far becomes durable; returns its transaction id."""
        with self._sync_lock:
            with self._meta.exclusive():  # no commit runs, none is half written
                self._segments.sync()  # data before pointer (invariant 1)
                self._meta.flush()
                txnid, page = lmdbcheck.newest_meta_page(self._env_dir / "data.mdb")
                snapshot = None if self.sync_close else self._meta.pin()
            first = self._segments.active_id
            self._sequence += 1
            write_record(self._env_dir, SyncRecord(DURABLE if self.sync_close else BATCHED, self._sequence,
                                                   txnid, first, current_boot_id(), page))
            with self._lock:
                old, self._snapshot = self._snapshot, snapshot
                self._synced_txnid = txnid
                for t, frames in self._waiting:
                    if t <= txnid:
                        self._due.extend(frames)
                self._waiting = [(t, frames) for t, frames in self._waiting if t > txnid]
            if old is not None:
                old.release()
        self._punch_soon()
        self._tell_listeners()
        return txnid

    def _punch_soon(self) -> None:
        """Frames queued in ``_due`` are punched by the background thread, not in the request that freed
        them or asked for the sync point (punching was 36% of an fsync's time under fsx,
        docs/BENCHMARKS.md); inline when there is no thread (offline)."""
        if self._thread is not None:
            self._wake.set()
        else:
            self._punch_due()

    def _punch_due(self) -> None:
        """Punch what sync points freed; returns once every frame queued before the call is punched
        (a caller on a full disk waits for the thread's punch in progress)."""
        with self._punch_lock:
            with self._lock:
                due, self._due = self._due, []
            if due:
                self._segments.punch(due)

    def listen(self, listener: SyncListener) -> None:
        """Tell ``listener`` after every sync point (the reclaimer: segments may now be deletable)."""
        self._listeners.append(listener)

    def _tell_listeners(self) -> None:
        for listener in self._listeners:
            listener.synced()

    def make_durable(self) -> None:
        """What ``fsync`` asks: everything committed durable now (with sync_close it already is)."""
        if not self.sync_close:
            self.sync()

    def make_room(self) -> bool:
        """A full disk: a sync point now, so what commits freed is punched out, and the segments left
        all dead deleted, here rather than by the reclaimer later. True if anything was freed."""
        with self._lock:
            waiting = bool(self._waiting)
        try:
            self.sync()
            self._punch_due()  # here, not later: the operation that found the disk full tries again
        except (NoSpace, OSError) as e:
            log.warning("no sync point on a full disk: %s", e)
            return False
        removed = reclaim(self._meta, self._segments, self)
        return waiting or bool(removed.removed)

    def sync_if_changed(self) -> None:
        """A sync point if anything was committed or appended since the last one."""
        if self._meta.last_txnid() != self._synced_txnid or self._segments.has_unsynced():
            self.sync()

    def start(self) -> None:
        """The background flush: a sync point every ``interval`` seconds when anything changed."""
        self._thread = threading.Thread(target=self._loop, name="durability", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_sync = time.monotonic() + self._interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_sync - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._punch_due()
                if self._overdue(self._meta.last_txnid()) or time.monotonic() >= next_sync:
                    self.sync_if_changed()
                    next_sync = time.monotonic() + self._interval
            except Exception:  # a full disk: said in the log, tried again next time
                log.exception("sync point failed")

    def stop(self) -> None:
        """Stop the background flush (the caller makes the last sync point)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._punch_due()

    def close(self) -> None:
        """The last sync point, then release the pinned state."""
        self.stop()
        self.sync()
        with self._lock:
            old, self._snapshot = self._snapshot, None
        if old is not None:
            old.release()
