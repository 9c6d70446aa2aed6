"""Segments in an object store (docs/DESIGN.md, "Object store backend"): the active segment is written
locally as always; a sealed one is uploaded as one immutable object, verified, and its local copy
becomes blocks of the disk cache; a frame of a remote segment is read with a ranged GET through that
cache. The layers above see a SegmentStore.

- Upload (invariant 7): a sealed segment is uploaded in the background, at most UPLOAD_THREADS at a
  time; the object's size is checked with a HEAD before the local file is dropped. A failed upload
  keeps the file and is tried again with backoff; a segment still local when the daemon died is
  found by ``resume`` at the next mount (the explicit, logged step) and uploaded then.
- Remote garbage is reclaimed by compaction only: a segment the reclaimer deletes (fs/reclaim.py,
  invariant 4) loses its local file at once and its object only once a metadata backup taken after
  the deletion is in the bucket (``delete_objects``), so the newest backup never names a deleted object
  (invariant 8).
  Dead frames are never punched: a sealed segment's bytes are its object's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from thermofs.fs.diskcache import DiskCache
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.objectstore import SEGMENTS_PREFIX, ObjectMissing, ObjectStore, Unreachable
from thermofs.fs.segments import SEGMENT_HEADER_SIZE, SegmentStore, check_segment_header, segment_id_of, segment_name

log = logging.getLogger("thermofs.tiered")

# Uploads at once: two saturate a 2-core machine's share of SeaweedFS here (each large one is also
# split into parts, fs/s3.py).
UPLOAD_THREADS = 2
# A failed upload is retried after this long, doubling up to the maximum.
RETRY_FIRST, RETRY_MAX = 1.0, 8.0
# While waiting for uploads (a backup, the unmount), what is left is logged this often.
PROGRESS_SECONDS = 10.0


def segment_key(seg_id: int) -> str:
    return SEGMENTS_PREFIX + segment_name(seg_id)


def remote_segments(listing: dict[str, int]) -> dict[int, int]:
    """Segment id -> object size, from a listing of the segments prefix."""
    out: dict[int, int] = {}
    for key, size in listing.items():
        seg = segment_id_of(key.rpartition("/")[2])
        if seg is not None:
            out[seg] = size
    return out


class TieredSegments(SegmentStore):
    """A SegmentStore whose sealed segments live in ``backend``. ``remote``: the objects the bucket
    holds (id -> size), listed by the caller before this is built (the active segment's id comes
    after all of them)."""

    def __init__(self, directory: Path, volume_id: bytes, headers_from: int, backend: ObjectStore,
                 cache: DiskCache, remote: dict[int, int]) -> None:
        self.backend = backend
        self.cache = cache
        self._remote = dict(remote)  # uploaded and verified: id -> size
        self._tier_lock = threading.Lock()  # the fields below and _remote
        self._queue: list[int] = []  # sealed segments waiting for an upload
        self._uploading: set[int] = set()
        self._failures: dict[int, str] = {}  # segment -> why its last upload failed
        self._doomed: list[tuple[int, int]] = []  # (deletion sequence, segment) whose object may go
        self._deletions = 0
        self._wake = threading.Condition(self._tier_lock)
        self._stopping = False
        self._threads: list[threading.Thread] = []
        super().__init__(directory, volume_id, headers_from, on_sealed=self._sealed)

    # -- what the layers above see ------------------------------------------------------------------
    def segment_ids(self) -> list[int]:
        local = set(super().segment_ids())
        with self._tier_lock:
            return sorted(local | set(self._remote))

    def _is_remote(self, seg_id: int) -> bool:
        with self._tier_lock:
            return seg_id in self._remote

    def size_of(self, seg_id: int) -> int:
        with self._tier_lock:
            remote = self._remote.get(seg_id)
        return remote if remote is not None else super().size_of(seg_id)

    def read(self, seg_id: int, offset: int, length: int) -> bytes:
        if not self._is_remote(seg_id):
            try:
                return super().read(seg_id, offset, length)
            except CorruptChunk:
                if not self._is_remote(seg_id):
                    raise
                # uploaded and dropped between the check and the read: read it remotely
        if offset < self.header_size(seg_id):
            raise CorruptChunk(f"segment {segment_name(seg_id)}: offset {offset} lies in its header")
        size = self.size_of(seg_id)
        if offset + length > size:
            raise CorruptChunk(f"segment {segment_name(seg_id)} is truncated at offset {offset}")
        try:
            return self.cache.read(seg_id, offset, length, size, self._fetch)
        except ObjectMissing:
            raise CorruptChunk(f"segment {segment_name(seg_id)} is missing from the object store") from None

    def _fetch(self, seg_id: int, offset: int, length: int) -> bytes:
        data = self.backend.get_range(segment_key(seg_id), offset, length)
        if len(data) != length:
            raise CorruptChunk(f"segment {segment_name(seg_id)}: the object store returned {len(data)} "
                               f"of {length} bytes at offset {offset}")
        return data

    def check_header(self, seg_id: int) -> str | None:
        if not self._is_remote(seg_id) or not self.header_size(seg_id):
            return super().check_header(seg_id)
        try:
            head = self._fetch(seg_id, 0, SEGMENT_HEADER_SIZE)
        except (ObjectMissing, CorruptChunk):
            return "it is missing from the object store"
        return check_segment_header(head, self.volume_id, seg_id)

    def punch(self, ranges: list[tuple[int, int, int]]) -> None:
        """Never: a sealed segment's bytes are its object's; compaction reclaims remote garbage."""

    def remove(self, seg_id: int) -> None:
        """Delete a dead segment: its local file and cached blocks now, its object after the next
        metadata backup (``delete_objects``, invariant 8)."""
        super().remove(seg_id)
        self.cache.drop(seg_id)
        with self._tier_lock:
            if self._remote.pop(seg_id, None) is not None:
                self._deletions += 1
                self._doomed.append((self._deletions, seg_id))
            if seg_id in self._queue:
                self._queue.remove(seg_id)

    def physical_bytes(self) -> int:
        """Local disk space: segments not yet uploaded (and the active one) plus the disk cache."""
        return super().physical_bytes() + int(self.cache.stats()["disk_cache_bytes"])

    # -- uploads -------------------------------------------------------------------------------------
    def resume(self) -> list[int]:
        """At mount, before serving: queue every sealed local segment the bucket does not hold (a
        crash or a failed upload left it), and turn those it holds whole into cache. Logged."""
        queued: list[int] = []
        for path in sorted(self.dir.glob("*.seg")):
            seg = segment_id_of(path.name)
            if seg is None or seg >= self.active_id:
                continue
            with self._tier_lock:
                remote = self._remote.get(seg)
            if remote is not None and remote == path.stat().st_size:
                self._drop_local(seg, path)
                continue
            if path.stat().st_size <= self.header_size(seg):
                path.unlink()  # a segment started and never written
                continue
            queued.append(seg)
        if queued:
            log.info("%d segments of a previous mount were not uploaded yet: uploading them (%s)", len(queued),
                     ", ".join(segment_name(s) for s in queued))
            with self._tier_lock:
                self._queue.extend(s for s in queued if s not in self._queue)
                self._wake.notify_all()
        return queued

    def _sealed(self, seg_id: int) -> None:
        with self._tier_lock:
            if seg_id not in self._remote and seg_id not in self._queue:
                self._queue.append(seg_id)
                self._wake.notify()

    def start(self) -> None:
        """Start the upload threads."""
        for i in range(UPLOAD_THREADS):
            t = threading.Thread(target=self._upload_loop, name=f"upload-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _upload_loop(self) -> None:
        backoff = RETRY_FIRST
        while True:
            with self._tier_lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._queue:
                    return
                seg = self._queue.pop(0)
                self._uploading.add(seg)
            ok = self._upload(seg)
            with self._tier_lock:
                self._uploading.discard(seg)
                if not ok and seg not in self._remote:
                    self._queue.append(seg)
                self._wake.notify_all()
            if ok:
                backoff = RETRY_FIRST
            else:
                with self._tier_lock:
                    if self._stopping:
                        return
                    self._wake.wait(backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    def _upload(self, seg: int) -> bool:
        """Upload one sealed segment, check the object's size, then keep the local copy as cache."""
        path = self.path(seg)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return True  # deleted by the reclaimer while queued
        key = segment_key(seg)
        try:
            self.backend.put_file(key, path)
            stored = self.backend.head(key)
            if stored != size:
                raise Unreachable(f"the object holds {stored} bytes, the segment {size}")
        except Exception as e:  # the network, the server, a full bucket: the file stays, tried again
            with self._tier_lock:
                self._failures[seg] = str(e)
            log.warning("uploading %s failed, kept locally and retried: %s", segment_name(seg), e)
            return False
        with self._tier_lock:
            self._remote[seg] = size
            self._failures.pop(seg, None)
        self._drop_local(seg, path)
        log.info("uploaded %s (%d bytes)", segment_name(seg), size)
        return True

    def _drop_local(self, seg: int, path: Path) -> None:
        """An uploaded segment's local file: its blocks go into the disk cache, the file goes."""
        try:
            self.cache.put_file(seg, path)
        except OSError as e:
            log.info("not caching uploaded %s: %s", segment_name(seg), e)
        super().remove(seg)

    def pending(self) -> list[int]:
        """Sealed segments not uploaded yet."""
        with self._tier_lock:
            return sorted({*self._queue, *self._uploading})

    def pending_bytes(self) -> int:
        return sum(super(TieredSegments, self).size_of(s) for s in self.pending())

    def wait_uploaded(self, below: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until every sealed segment with an id below ``below`` is uploaded; False on timeout or
        once ``stop`` is set. Logs what is left every PROGRESS_SECONDS."""
        deadline = time.monotonic() + timeout
        said = time.monotonic()
        while True:
            with self._tier_lock:
                left = [s for s in (*self._queue, *self._uploading) if s < below]
                if not left:
                    return True
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    return False
                self._wake.wait(min(deadline - time.monotonic(), 1.0))
            if time.monotonic() - said >= PROGRESS_SECONDS:
                said = time.monotonic()
                log.info("waiting for uploads: %d segments (%d bytes) left", len(left),
                         sum(super(TieredSegments, self).size_of(s) for s in left))

    def stop_uploads(self) -> None:
        """Stop the upload threads after the uploads under way; what is queued stays local."""
        with self._tier_lock:
            self._stopping = True
            self._wake.notify_all()
        for t in self._threads:
            t.join()
        self._threads.clear()

    # -- deleting objects ------------------------------------------------------------------------------
    def deletion_mark(self) -> int:
        """The sequence of the last deletion so far: a backup taken now covers those up to it."""
        with self._tier_lock:
            return self._deletions

    def delete_objects(self, up_to: int) -> int:
        """Delete the objects of segments removed up to deletion ``up_to`` (a metadata backup taken
        after them is in the bucket). Returns how many went; failures are tried after the next backup."""
        with self._tier_lock:
            due = [seg for n, seg in self._doomed if n <= up_to]
        gone = 0
        for seg in due:
            try:
                self.backend.delete(segment_key(seg))
            except Exception as e:
                log.warning("deleting the object of dead segment %s failed, tried again later: %s",
                            segment_name(seg), e)
                continue
            gone += 1
            with self._tier_lock:
                self._doomed = [(n, s) for n, s in self._doomed if s != seg]
        return gone

    def remote_stats(self) -> dict[str, int | float]:
        pending = self.pending()
        with self._tier_lock:
            failures = len(self._failures)
        return {"upload_waiting_segments": len(pending), "upload_waiting_bytes": self.pending_bytes(),
                "upload_failures": failures, "remote_segments": len(self._remote),
                **self.cache.stats(), **self.backend.counters()}

    def leftover_message(self) -> str:
        """What stays local when uploads did not finish, and where."""
        pending = self.pending()
        return (f"{len(pending)} segments ({self.pending_bytes()} bytes) are not uploaded yet and stay in "
                f"{self.dir} ({', '.join(segment_name(s) for s in pending)}); the next mount uploads them")


def local_bytes(directory: Path) -> int:
    """Bytes of the files in ``directory`` (the cache, for offline stats)."""
    try:
        return sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())
    except FileNotFoundError:
        return 0
