"""Moving chunks to new frames: the one rule that cooling, promotion and compaction share (invariants
1, 3 and 5 of docs/DESIGN.md).

For a batch of chunks, each given with the map entry it had when it was chosen:

1. read and verify its frame (a damaged one is never spread: it is left where it is, and counted);
2. make its new frame: re-encoded with a codec spec (cooling, promotion), or the same bytes
   (compaction). A re-encoded frame is decoded once and compared with the chunk first
   (``ChunkStore.encode``); one that does not decode back, or would not be smaller, is not written:
   the chunk only changes tier;
3. store the new frames (small ones inline, the others appended with one writev) and sync the
   segment before anything points at them;
4. in one transaction, swap each chunk's pointer only if it still has the entry it was chosen with;
   a chunk rewritten or moved meanwhile keeps its new content and its new frame becomes garbage.

Interrupting it anywhere loses nothing: an uncommitted new frame is garbage that compaction reclaims.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

from thermofs.codecs import CodecSpec
from thermofs.fs.chunkstore import ChunkStore, Encoded
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import INLINE_SEGMENT, ChunkEntry, MetaStore, Tier
from thermofs.fs.segments import segment_name

log = logging.getLogger("thermofs.relocate")


@dataclass(frozen=True)
class Chunk:
    """A chunk chosen to move: where it is in the map and the entry it had when chosen."""

    ino: int
    index: int
    entry: ChunkEntry


@dataclass
class RelocationReport:
    """What one relocate() call did."""

    moved: int = 0  # chunks now pointing at their new frame (or only at their new tier)
    bytes_saved: int = 0  # frame bytes the re-encoded chunks lost
    bytes_moved: int = 0  # frame bytes of the chunks moved
    raced: int = 0  # rewritten or moved meanwhile: left as they are
    damaged: list[str] = field(default_factory=list)  # failed verification: left where they are


def relocate(meta: MetaStore, chunks: ChunkStore, batch: list[Chunk], recode: CodecSpec | None,
             tier: Tier | None = None, pool: Executor | None = None) -> RelocationReport:
    """Move ``batch`` to new frames: re-encoded with ``recode`` and marked ``tier`` (cooling: the cold
    spec, Tier.COLD; promotion: the hot spec, Tier.HOT), or with ``recode`` None copied as they are
    into the active segment (compaction, which only moves frames out of segments). ``pool``: the
    re-encodes run on its threads (the cold codecs release the GIL: one chunk per core)."""
    report = RelocationReport()
    chosen: list[Chunk] = []
    new: list[Encoded | bytes] = []
    raws: list[bytes] = []
    for item in batch:
        with meta.read() as t:
            current, inline = t.get_chunk_frame(item.ino, item.index)
        if current != item.entry:
            report.raced += 1
            continue
        try:
            frame, raw = chunks.read_frame(item.entry, inline)
        except CorruptChunk as e:
            # Possibly only stale: the chunk may have been rewritten and its old frame punched out
            # since it was read above; the swap would skip it anyway. A real corruption stays put.
            with meta.read() as t:
                if t.get_chunk(item.ino, item.index) != item.entry:
                    report.raced += 1
                    continue
            where = "inline" if item.entry.segment == INLINE_SEGMENT else \
                f"{segment_name(item.entry.segment)} at {item.entry.offset}"
            report.damaged.append(f"inode {item.ino} chunk {item.index} ({where}): {e}")
            log.warning("not moving damaged chunk %d of inode %d: %s", item.index, item.ino, e)
            continue
        chosen.append(item)
        if recode is None:
            new.append(frame)
        else:
            raws.append(raw)
    if recode is not None:
        def encode(raw: bytes) -> Encoded:
            return chunks.encode(raw, recode)

        new = list(pool.map(encode, raws) if pool is not None else map(encode, raws))
    placed = _place(chunks, chosen, new, tier)
    with meta.write() as t:
        for item, (entry, inline_frame) in zip(chosen, placed, strict=True):
            if t.swap_chunk(item.ino, item.index, item.entry, entry, inline_frame):
                report.moved += 1
                report.bytes_moved += item.entry.frame_len
                report.bytes_saved += item.entry.frame_len - entry.frame_len
            else:
                report.raced += 1
        if recode is not None and tier is not None:
            t.bump("cooled_chunks" if tier == Tier.COLD else "promoted_chunks", report.moved)
            if tier == Tier.COLD:
                t.bump("cooled_bytes_saved", report.bytes_saved)
    return report


def _place(chunks: ChunkStore, chosen: list[Chunk], new: list[Encoded | bytes],
           tier: Tier | None) -> list[tuple[ChunkEntry, bytes | None]]:
    """Store the new frames and sync them (data before pointer); the entry each chunk gets."""
    out: list[tuple[ChunkEntry, bytes | None]] = []
    if all(isinstance(frame, bytes) for frame in new):  # copies: into the active segment, as they are
        places = chunks.segments.append([frame for frame in new if isinstance(frame, bytes)]) if new else []
        out = [(dataclasses.replace(item.entry, segment=seg, offset=off), None)
               for item, (seg, off) in zip(chosen, places, strict=True)]
    else:
        assert tier is not None
        encoded = [e for e in new if not isinstance(e, bytes)]
        smaller = [i for i, (_h, _b, info) in enumerate(encoded) if info.frame_len < chosen[i].entry.frame_len]
        stored = dict(zip(smaller, chunks.place([encoded[i] for i in smaller], tier), strict=True))
        # A frame that would not be smaller is not written: the chunk only changes tier.
        out = [stored.get(i, (dataclasses.replace(item.entry, tier=tier), None)) for i, item in enumerate(chosen)]
    if any(entry.segment != INLINE_SEGMENT and (entry.segment, entry.offset) != (item.entry.segment, item.entry.offset)
           for item, (entry, _frame) in zip(chosen, out, strict=True)):
        chunks.prepare_commit()
    return out
