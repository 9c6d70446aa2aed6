"""Chunks in and out of segments, through the codecs: compression sits here, between cache and store."""

from __future__ import annotations

from collections.abc import Sequence

from thermofs.codecs import CodecSpec, CodecTable, CorruptFrame, FrameInfo, decode_frame, encode_parts
from thermofs.codecs.base import MODEL
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import INLINE_SEGMENT, ChunkEntry, Tier
from thermofs.fs.segments import SegmentStore

Buffer = bytes | bytearray | memoryview
# Frames up to this size are stored in LMDB, committed with the file's metadata: a small file's
# close then costs one fdatasync instead of two (segment, then LMDB). Up to ~2 KiB a value sits on a
# leaf page; up to 4,000 bytes it takes one 4 KiB overflow page (at most ~2 KiB of slack, on files
# this small). Measured creating 2,000 files of 1-4 KiB through a mount: 270 -> 310 files/s.
INLINE_MAX = 4000


def _all_zero(raw: Buffer) -> bool:
    return not len(raw) or (raw[0] == 0 and raw[-1] == 0 and bytes(raw).count(0) == len(raw))


def _entry(segment: int, offset: int, info: FrameInfo, tier: Tier = Tier.HOT) -> ChunkEntry:
    """The chunk map entry of a new frame at ``segment``/``offset``."""
    return ChunkEntry(segment, offset, info.frame_len, info.codec_id, info.param, info.raw_len,
                      info.checksum, tier)


Encoded = tuple[bytes, Buffer, FrameInfo]


class ChunkStore:
    def __init__(self, segments: SegmentStore, table: CodecTable, hot: CodecSpec, chunk_size: int,
                 durable_commits: bool = True) -> None:
        """``durable_commits``: each commit is synced on its own (sync_close, offline tools), so the
        frames it points at are synced before it; otherwise sync points do that (fs/durability.py)."""
        self.segments = segments
        self.table = table
        self.hot = hot
        self.chunk_size = chunk_size
        self.durable_commits = durable_commits

    def encode_append(self, raws: Sequence[Buffer]) -> list[ChunkEntry | None]:
        """Encode chunks with the hot codec and append them with one writev (not yet synced);
        None for an all-zero chunk, which is stored as a hole."""
        encoded = [None if _all_zero(raw) else encode_parts(raw, self.hot) for raw in raws]
        frames = [(head, body) for head, body, _info in filter(None, encoded)]
        places = iter(self.segments.append(frames)) if frames else iter(())
        out: list[ChunkEntry | None] = []
        for item in encoded:
            if item is None:
                out.append(None)
                continue
            out.append(_entry(*next(places), item[2]))
        return out

    def prepare_commit(self) -> None:
        """Before a commit that points at newly appended frames: with durable commits, sync them first
        (invariant 1: data before pointer); otherwise the next sync point syncs them before LMDB."""
        if self.durable_commits:
            self.segments.sync()

    def dead_segments(self, garbage: dict[int, int]) -> list[int]:
        """Segments (not the active one) whose every byte is accounted as garbage."""
        active = self.segments.active_id
        return [seg for seg, dead in garbage.items() if seg != active and dead >= self.segments.frame_bytes(seg)]

    def remove_segment(self, seg_id: int) -> None:
        self.segments.remove(seg_id)

    def store_small(self, raw: Buffer) -> tuple[ChunkEntry | None, bytes | None]:
        """Encode one chunk; a frame of at most INLINE_MAX bytes is returned to be stored inline
        in LMDB (entry on segment 0), a larger one is appended to a segment. (None, None) for an
        all-zero chunk."""
        if _all_zero(raw):
            return None, None
        return self.place([encode_parts(raw, self.hot)], Tier.HOT)[0]

    @staticmethod
    def encode(raw: Buffer, spec: CodecSpec) -> Encoded:
        """Encode one chunk with ``spec`` (the cooler's cold codec, or the hot one to promote) into a
        frame that replaces its current one: decoded once and compared before it is used."""
        return encode_parts(raw, spec, verify=True)

    def place(self, encoded: Sequence[Encoded], tier: Tier) -> list[tuple[ChunkEntry, bytes | None]]:
        """Store encoded chunks: small frames inline (returned with their frame), the others
        appended with one writev (not yet synced)."""
        big = [(head, body) for head, body, info in encoded if info.frame_len > INLINE_MAX]
        places = iter(self.segments.append(big)) if big else iter(())
        out: list[tuple[ChunkEntry, bytes | None]] = []
        for head, body, info in encoded:
            if info.frame_len <= INLINE_MAX:
                out.append((_entry(INLINE_SEGMENT, 0, info, tier), head + bytes(body)))
            else:
                out.append((_entry(*next(places), info, tier), None))
        return out

    def slow_to_decode(self, entry: ChunkEntry) -> bool:
        """Is this chunk's codec one that decodes slowly (the learned codec: ~40 ms per 64 KiB)?"""
        codec = self.table.by_id.get(entry.codec_id)
        return codec is not None and codec.cold_role == MODEL

    def read(self, entry: ChunkEntry, inline: bytes | None = None) -> bytes:
        """Read and verify one chunk (an inline one from its ``inline`` frame); any mismatch with
        its map entry is CorruptChunk (EIO)."""
        return self.read_frame(entry, inline)[1]

    def read_frame(self, entry: ChunkEntry, inline: bytes | None = None) -> tuple[bytes, bytes]:
        """(frame, raw bytes) of one chunk, the frame read from its segment (or ``inline``) and
        verified against its map entry (invariant 5): the one way every reader, fsck and compaction
        read a frame. CorruptChunk for any mismatch."""
        check_lengths(entry, self.chunk_size)
        if entry.segment == INLINE_SEGMENT:
            if inline is None or len(inline) != entry.frame_len:
                raise CorruptChunk("inline chunk frame is missing or has the wrong length")
            frame = inline
        else:
            frame = self.segments.read(entry.segment, entry.offset, entry.frame_len)
        return frame, verify_frame(entry, frame, self.table, self.chunk_size)


def check_lengths(entry: ChunkEntry, chunk_size: int) -> None:
    """Refuse an entry whose lengths no frame of this volume can have, before reading anything."""
    if entry.frame_len > chunk_size + 4096 or entry.raw_len > chunk_size:
        raise CorruptChunk(f"chunk entry has impossible lengths ({entry.frame_len}, {entry.raw_len})")


def verify_frame(entry: ChunkEntry, frame: bytes, table: CodecTable, chunk_size: int) -> bytes:
    """Decode ``frame`` and check it against its chunk map ``entry`` (invariant 5); the raw bytes,
    or CorruptChunk. Shared by reads, fsck and compaction, so all verify alike."""
    try:
        raw = decode_frame(frame, table, chunk_size)
    except CorruptFrame as e:
        raise CorruptChunk(f"segment {entry.segment} offset {entry.offset}: {e}") from e
    if (len(raw) != entry.raw_len or frame[3] != entry.codec_id
            or int.from_bytes(frame[16:24], "big") != entry.checksum):
        raise CorruptChunk(f"segment {entry.segment} offset {entry.offset}: frame does not match its "
                           f"chunk map entry")
    return raw
