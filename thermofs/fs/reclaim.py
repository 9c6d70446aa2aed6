"""Deleting dead segments: the one rule that the daemon, compaction and fsck follow (invariant 4).

A segment is deleted only when

1. its garbage record says every frame in it is dead (garbage >= its frame bytes), it is not the
   segment being appended to, and
2. a scan of the whole chunk map, every record verified, finds no entry pointing into it.

Nothing is deleted on the word of one record: a damaged garbage record or a segment cut short (its
frame bytes then fall under its garbage record) is caught by the scan and the segment kept and
reported; a damaged chunk record stops the pass (it might point into any segment). The garbage
record is dropped before the file is deleted: a crash in between leaves a file nothing points at,
which the next pass's recount or compaction removes.

The daemon runs passes in a background thread: woken when a deletion or truncation freed frames,
and every RECLAIM_SECONDS to catch segments that overwrites emptied. Unlinking a segment whose dead
frames were punched out can take seconds (0.25-2.6 s each under load, seen after fsx), so neither a
FUSE request nor mounting waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from thermofs.fs.errors import MetaError
from thermofs.fs.meta import MetaStore, Txn
from thermofs.fs.segments import SegmentStore, segment_name

log = logging.getLogger("thermofs.reclaim")

# Between passes when nothing woke the reclaimer: overwrites of an open file turn whole segments
# into garbage without an unlink to say so.
RECLAIM_SECONDS = 30.0


@dataclass
class ReclaimReport:
    removed: list[int] = field(default_factory=list)
    bytes_removed: int = 0
    # segments a garbage record called dead but the chunk map still points into
    kept: list[str] = field(default_factory=list)
    error: str | None = None  # why the pass deleted nothing (a damaged chunk record)


class SyncedState(Protocol):
    """The state of the last sync point (fs/durability.py), to check a deletion against."""

    def synced_view(self) -> AbstractContextManager[Txn | None]: ...


def reclaim(meta: MetaStore, segments: SegmentStore, synced: SyncedState | None = None,
            stop: threading.Event | None = None) -> ReclaimReport:
    """One pass: delete every segment the two conditions above allow, in the current state and, with
    ``synced``, in the state of the last sync point too (a power loss goes back to it)."""
    report = ReclaimReport()
    active = segments.active_id
    with meta.read() as t:
        garbage = t.garbage_by_segment(damaged=[])  # a damaged record names no candidate
    present = set(segments.segment_ids())
    candidates = {seg: dead for seg, dead in garbage.items()
                  if seg != active and seg in present and dead >= segments.frame_bytes(seg)}
    gone = [seg for seg in garbage if seg != active and seg not in present]
    if not candidates and not gone:
        return report
    try:
        with meta.read() as t:
            live = t.live_bytes_by_segment()
        waiting: dict[int, int] = {}  # live only in the last synced state: deletable after the next
        if synced is not None:
            with synced.synced_view() as view:
                if view is not None:
                    waiting = view.live_bytes_by_segment()
    except MetaError as e:
        report.error = f"a chunk record is damaged, no segment was deleted (run thermofs fsck): {e}"
        log.error("%s", report.error)
        return report
    for seg in gone:
        if not live.get(seg) and not waiting.get(seg):
            with meta.write() as t:
                t.forget_segment(seg)  # its file went before its record (a crash in between)
    for seg, dead in sorted(candidates.items()):
        if stop is not None and stop.is_set():
            break
        if waiting.get(seg) and not live.get(seg):
            continue  # freed since the last sync point: a power loss would bring its frames back
        if live.get(seg):
            frames = segments.frame_bytes(seg)
            why = (f"{segment_name(seg)}: its garbage record says {dead} of its {frames} frame bytes are dead, "
                   f"but {live[seg]} bytes of live frames are in it"
                   + (" (the file is shorter than its frames: damaged)" if live[seg] > frames else "")
                   + "; kept (run thermofs fsck)")
            log.error("%s", why)
            report.kept.append(why)
            continue
        size = segments.size_of(seg)
        with meta.write() as t:
            t.forget_segment(seg)
        segments.remove(seg)
        report.removed.append(seg)
        report.bytes_removed += size
    if report.removed:
        log.info("deleted %d dead segments (%d bytes)", len(report.removed), report.bytes_removed)
    return report


def recount_garbage(meta: MetaStore, segments: SegmentStore, which: Iterable[int], lower: bool = False) -> int:
    """Account the frames of segments ``which`` that no entry points at and no garbage record knows
    (appended, then lost to a crash before their commit): each segment's garbage becomes its frame
    bytes minus its live frames. The correction is taken from one snapshot and added as a delta, so
    it holds even if writers overwrote chunks since (an overwrite moves a frame's bytes from live to
    garbage, leaving the sum alone); a record above the recount is lowered only with ``lower`` (after
    a crash, before the volume serves). Returns the bytes added; CorruptRecord if a chunk record is
    damaged (nothing is changed then)."""
    with meta.read() as t:
        live, records = t.live_bytes_by_segment(), t.garbage_by_segment()
    deltas = {seg: segments.frame_bytes(seg) - live.get(seg, 0) - records.get(seg, 0) for seg in which}
    deltas = {seg: delta for seg, delta in deltas.items() if delta > 0 or (lower and delta < 0)}
    if deltas:
        with meta.write() as t:
            for seg, delta in deltas.items():
                t.adjust_garbage(seg, max(delta, -records.get(seg, 0)))
    return sum(delta for delta in deltas.values() if delta > 0)


class Reclaimer:
    """The daemon's background reclaimer thread."""

    def __init__(self, meta: MetaStore, segments: SegmentStore, synced: SyncedState | None = None,
                 interval: float = RECLAIM_SECONDS) -> None:
        self._meta = meta
        self._segments = segments
        self._synced = synced
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def freed(self) -> None:
        """Frames died: run a pass soon (fs/volume.py's SpaceWatcher)."""
        self._wake.set()

    def synced(self) -> None:
        """A sync point (fs/durability.py's SyncListener): what it freed may go now."""
        self._wake.set()

    def start(self) -> None:
        self._wake.set()  # a first pass at mount, for what the last session left
        self._thread = threading.Thread(target=self._loop, name="reclaim", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                reclaim(self._meta, self._segments, self._synced, self._stop)
            except Exception:  # a full disk, a damaged store: log it, try again next time
                log.exception("reclaiming dead segments failed")

    def stop(self) -> None:
        """Stop after the segment being deleted, if any; what is left waits for the next mount."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
