"""Chunks in and out of segments, through the codecs: compression sits here, between cache and store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from thermofs.codecs import CodecSpec, CodecTable, CorruptFrame, decode_frame, encode_frame
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import ChunkEntry
from thermofs.fs.segments import SegmentStore


class ChunkStore:
    def __init__(self, segments: SegmentStore, table: CodecTable, hot: CodecSpec, chunk_size: int,
                 pool: ThreadPoolExecutor) -> None:
        self.segments = segments
        self.table = table
        self.hot = hot
        self.chunk_size = chunk_size
        self._pool = pool

    def write(self, raws: list[bytes], spec: CodecSpec | None = None, tier: int = 0) -> list[ChunkEntry]:
        """Encode (in parallel: zstandard releases the GIL), append and sync; return the map entries.

        When this returns, the frames are durable, so a transaction may now point at them.
        """
        spec = spec or self.hot
        if len(raws) == 1:
            encoded = [encode_frame(raws[0], spec)]
        else:
            encoded = list(self._pool.map(lambda raw: encode_frame(raw, spec), raws))
        places = self.segments.append([frame for frame, _ in encoded])
        self.segments.sync()
        return [ChunkEntry(seg, off, info.frame_len, info.codec_id, info.param, info.raw_len, info.checksum,
                           tier)
                for (seg, off), (_, info) in zip(places, encoded)]

    def encode_append(self, raw: bytes) -> ChunkEntry | None:
        """Encode one chunk with the hot codec and append it (not yet synced); None for all zeros,
        which is stored as a hole."""
        if not raw or (raw[0] == 0 and raw[-1] == 0 and raw.count(0) == len(raw)):
            return None
        frame, info = encode_frame(raw, self.hot)
        [(seg, off)] = self.segments.append([frame])
        return ChunkEntry(seg, off, info.frame_len, info.codec_id, info.param, info.raw_len, info.checksum, 0)

    def sync(self) -> None:
        self.segments.sync()

    def dead_segments(self, garbage: dict[int, int]) -> list[int]:
        """Segments (not the active one) whose every byte is accounted as garbage."""
        active = self.segments.active_id
        return [seg for seg, dead in garbage.items() if seg != active and dead >= self.segments.size_of(seg)]

    def remove_segment(self, seg_id: int) -> None:
        self.segments.remove(seg_id)

    def read(self, entry: ChunkEntry) -> bytes:
        """Read and verify one chunk; any mismatch with its map entry is CorruptChunk (EIO)."""
        if entry.frame_len > self.chunk_size + 4096 or entry.raw_len > self.chunk_size:
            raise CorruptChunk(f"chunk entry has impossible lengths ({entry.frame_len}, {entry.raw_len})")
        frame = self.segments.read(entry.segment, entry.offset, entry.frame_len)
        try:
            raw = decode_frame(frame, self.table, self.chunk_size)
        except CorruptFrame as e:
            raise CorruptChunk(f"segment {entry.segment} offset {entry.offset}: {e}") from e
        if (len(raw) != entry.raw_len or frame[3] != entry.codec_id
                or int.from_bytes(frame[16:24], "big") != entry.checksum):
            raise CorruptChunk(f"segment {entry.segment} offset {entry.offset}: frame does not match its "
                               f"chunk map entry")
        return raw
