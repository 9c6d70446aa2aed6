"""Compaction (``thermofs compact``): reclaim the space of dead frames by copying live frames out of mostly-dead
segments and deleting the segments that hold no live frame any more (invariant 4).

The core, ``compact()``, runs offline (the CLI opens the volume) or inside the mounted daemon, in a
thread next to FUSE writers that share the same MetaStore and SegmentStore. It is safe there because:

- it never touches segments from the active one on: writers append there;
- copies are made by fs/relocate.py: appended and synced before the transaction that points at them
  (invariant 1), which swaps a pointer only if the chunk still has the entry that was copied
  (invariant 3); otherwise the copy is garbage;
- frames that nothing points at count as garbage only in segments written before this process opened
  the store: in its own segments such a frame may belong to a file whose commit is still to come, so
  there only the garbage records count;
- a segment is deleted only by the rule of fs/reclaim.py: its garbage record covers all of it and a
  scan of the chunk map finds no entry pointing into it.

Interrupting it anywhere (an exception, the ``stop`` event, kill -9) leaves every file intact: an
uncommitted copy is a frame nothing points at, which the next compaction reclaims.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import MetaStore
from thermofs.fs.reclaim import SyncedState, reclaim, recount_garbage
from thermofs.fs.relocate import Chunk, relocate
from thermofs.fs.segments import SegmentStore
from thermofs.progress import Progress

# A segment is rewritten once at least this share of it is dead. Rewriting costs its live bytes in
# reads and writes; at 25% dead, one byte reclaimed costs three bytes copied, the usual break-even of
# log-structured cleaners. Below it, hole punching already returned most dead frames to the disk.
MIN_GARBAGE_SHARE = 0.25
# Frames copied per transaction: bounds the memory of a batch and the work lost to an interruption.
BATCH_BYTES = 8 << 20
# Segments whose entries are gathered per scan of the chunk map: bounds memory on a huge store.
SEGMENTS_PER_ROUND = 64


class CompactBusy(StoreError):
    """A compaction of this volume is already running."""


@dataclass
class CompactReport:
    segments_seen: int = 0
    segments_rewritten: int = 0
    segments_removed: int = 0
    frames_moved: int = 0
    bytes_moved: int = 0
    # copies made garbage because the chunk changed while being copied (invariant 3)
    frames_superseded: int = 0
    # frames no entry pointed at and no garbage record knew (a crash between append and commit)
    unaccounted_bytes: int = 0
    bytes_reclaimed: int = 0  # apparent size of the deleted segment files
    # frames that failed verification: left where they are (reads give EIO; fsck names the files)
    corrupt: list[str] = field(default_factory=list)
    interrupted: bool = False


def _live_bytes(meta: MetaStore) -> tuple[dict[int, int], dict[int, int]]:
    """(live bytes per segment from the chunk map, garbage records), from one snapshot."""
    with meta.read() as t:
        return t.live_bytes_by_segment(), t.garbage_by_segment()


class SyncPoints(SyncedState, Protocol):
    """Sync points (fs/durability.py): compaction makes one before it deletes what it emptied."""

    def sync(self) -> int: ...


def compact(meta: MetaStore, chunks: ChunkStore, progress: Progress | None = None,
            stop: threading.Event | None = None, min_garbage: float = MIN_GARBAGE_SHARE,
            sync_points: SyncPoints | None = None) -> CompactReport:
    """Rewrite the segments whose dead share is at least ``min_garbage`` and delete those left
    without a live frame. ``progress(done, total)`` is called with bytes copied; a set ``stop``
    ends the run after the current batch (the report says ``interrupted``)."""
    # One compaction per volume at a time (the daemon might be asked twice): two would copy the same
    # frames and one of each pair of copies would only be garbage.
    segments = chunks.segments
    if not segments.compaction.acquire(blocking=False):
        raise CompactBusy("a compaction of this volume is already running")
    try:
        return _compact(meta, chunks, progress, stop, min_garbage, sync_points)
    finally:
        segments.compaction.release()


def _compact(meta: MetaStore, chunks: ChunkStore, progress: Progress | None, stop: threading.Event | None,
             min_garbage: float, sync_points: SyncPoints | None) -> CompactReport:
    report = CompactReport()
    segments = chunks.segments
    # Writers append from the active segment on; frames in segments from first_id on may still
    # wait for their commit, so only older ones are recounted.
    boundary, own_from = segments.active_id, segments.first_id
    sizes = {seg: segments.frame_bytes(seg) for seg in segments.segment_ids() if seg < boundary}
    report.segments_seen = len(sizes)
    report.unaccounted_bytes = recount_garbage(meta, segments, [seg for seg in sizes if seg < own_from])
    live, garbage = _live_bytes(meta)

    chosen = [seg for seg, size in sorted(sizes.items())
              if live.get(seg, 0) and 0 < garbage.get(seg, 0) >= min_garbage * size]
    total = sum(live[seg] for seg in chosen)
    done = 0
    if progress is not None:
        progress(0, total)
    for start in range(0, len(chosen), SEGMENTS_PER_ROUND):
        group = set(chosen[start:start + SEGMENTS_PER_ROUND])
        with meta.read() as t:
            todo = sorted((Chunk(ino, index, e) for ino, index, e, _inline in t.all_chunks()
                           if e.segment in group), key=lambda c: (c.entry.segment, c.entry.offset))
        batch: list[Chunk] = []
        batch_bytes = 0
        for item in todo:
            batch.append(item)
            batch_bytes += item.entry.frame_len
            if batch_bytes >= BATCH_BYTES:
                done += _move(meta, chunks, batch, report)
                batch, batch_bytes = [], 0
                if progress is not None:
                    progress(done, total)
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
        if report.interrupted:
            break
        if batch:
            done += _move(meta, chunks, batch, report)
            if progress is not None:
                progress(done, total)
        report.segments_rewritten += len(group)
        if stop is not None and stop.is_set():
            report.interrupted = True
            break
    _remove_dead(meta, segments, report, sync_points)
    return report


def _move(meta: MetaStore, chunks: ChunkStore, batch: list[Chunk], report: CompactReport) -> int:
    """Copy one batch of live frames to the active segment (fs/relocate.py); bytes done."""
    moved = relocate(meta, chunks, batch, recode=None)
    report.frames_moved += moved.moved
    report.bytes_moved += moved.bytes_moved
    report.frames_superseded += moved.raced
    report.corrupt += moved.damaged
    return sum(item.entry.frame_len for item in batch)


def _remove_dead(meta: MetaStore, segments: SegmentStore, report: CompactReport,
                 sync_points: SyncPoints | None) -> None:
    """Delete the segments left without a live frame (fs/reclaim.py: the one rule for it), after a
    sync point: only what a synced commit freed may go."""
    if sync_points is not None:
        sync_points.sync()
    reclaimed = reclaim(meta, segments, sync_points)
    report.segments_removed += len(reclaimed.removed)
    report.bytes_reclaimed += reclaimed.bytes_removed
    report.corrupt += reclaimed.kept
    if reclaimed.error is not None:
        report.corrupt.append(reclaimed.error)
