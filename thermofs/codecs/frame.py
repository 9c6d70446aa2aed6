"""The chunk frame: a self-describing, verified container for one chunk.

Layout (big-endian), 28-byte header then payload::

    offset size field
    0      2    magic b"TF"
    2      1    frame format version (FRAME_VERSION)
    3      1    codec id (codec table, on-disk stable)
    4      4    codec parameter, packed per codec (below)
    8      4    raw length (bytes the payload decodes to; <= the volume's chunk size)
    12     4    payload length
    16     8    xxh3-64 of the raw bytes
    24     4    xxh32 of header bytes 0..23, so a damaged length is caught before it is used

Codec ids (table.py; on-disk, never renumbered) and how each packs its u32 parameter:

    0 raw     0
    1 zstd    level + 1000 (levels -7..22 stay unsigned)
    2 dict    bits 0-7 zstd level, bits 8-31 dictionary id (Resources; unknown id -> CorruptFrame)
    3 planes  bits 0-7 zstd level of the planes, 8-11 float width in bytes (2, 4), 12-15 phase
    4 learned bits 8-31 model id (Resources); bits 0-7 the learned codec's own
    5 brotli  bits 0-7 quality

A frame can be decoded and verified without the chunk map, so segments can be scanned (fsck, compact).
Decoding checks the header (magic, version, its own xxh32), bounds raw and payload lengths by the
chunk size before any allocation, lets the codec decode into at most raw_len bytes, and checks the
xxh3 of the result: it returns verified bytes or raises CorruptFrame.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import xxhash

from thermofs.codecs.base import RawCodec
from thermofs.codecs.coldpath import decodes_back, encode_cold
from thermofs.codecs.errors import CorruptFrame
from thermofs.codecs.table import CodecSpec, CodecTable

log = logging.getLogger("thermofs.frame")

MAGIC = b"TF"
FRAME_VERSION = 1
HEADER = struct.Struct(">2sBBIIIQI")
HEADER_SIZE = HEADER.size  # 28

# A compressed frame is kept only if it saves at least 1/8 of the raw size: below that the CPU spent
# decoding it on every read buys too little space.
MIN_SAVING_DIVISOR = 8
# No compressibility probe ahead of the hot codec: zstd level 1 itself passes over incompressible
# 64 KiB chunks at 3.1 GB/s (random data, zstd output), while compressing a 4 KiB sample first cost
# 10% of the encode speed of compressible text (encode_parts: 319 against 355 MB/s).
# The cold path (``best``, ``exhaustive``: coldpath.py) keeps frames saving 1/32.


@dataclass(frozen=True)
class FrameInfo:
    """The fields of a frame header, as recorded in the chunk map."""

    codec_id: int
    param: int
    raw_len: int
    checksum: int
    frame_len: int


def checksum(raw: bytes | bytearray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(raw)


def _pack(codec_id: int, param: int, raw_len: int, payload_len: int, digest: int) -> bytes:
    head = struct.pack(">2sBBIIIQ", MAGIC, FRAME_VERSION, codec_id, param, raw_len, payload_len, digest)
    return head + struct.pack(">I", xxhash.xxh32_intdigest(head))


Buffer = bytes | bytearray | memoryview


def encode_frame(raw: Buffer, spec: CodecSpec) -> tuple[bytes, FrameInfo]:
    """Encode ``raw`` with ``spec``; fall back to a raw frame when compression does not pay."""
    header, payload, info = encode_parts(raw, spec)
    return header + payload, info


def encode_parts(raw: Buffer, spec: CodecSpec, verify: bool = False) -> tuple[bytes, Buffer, FrameInfo]:
    """Like encode_frame, but header and payload apart, so a writer can hand both to writev()
    without copying the payload (a raw frame's payload is ``raw`` itself). ``verify``: the frame
    replaces another one (cooling, promotion): it is decoded once and compared first, and stored raw
    if it does not decode back (the cold path's specs always check)."""
    digest = checksum(raw)
    if spec.best:
        codec_id, param, body = encode_cold(raw, spec.candidates, spec.exhaustive)
    else:
        codec_id, param, body = _single(raw, spec, digest if verify else None)
    header = _pack(codec_id, param, len(raw), len(body), digest)
    return header, body, FrameInfo(codec_id, param, len(raw), digest, HEADER_SIZE + len(body))


def _single(raw: Buffer, spec: CodecSpec, want: int | None) -> tuple[int, int, Buffer]:
    if spec.codec.ID == RawCodec.ID or not len(raw):
        return RawCodec.ID, 0, raw
    codec, param = spec.codec.resolve(raw, spec.param)
    packed = codec.compress(raw, param)
    if len(packed) > len(raw) - len(raw) // MIN_SAVING_DIVISOR:
        return RawCodec.ID, 0, raw
    if want is not None and not decodes_back(packed, codec, param, len(raw), want):
        log.error("a %s frame did not decode back to its chunk: the chunk is stored raw (a codec fault)",
                  codec.name)
        return RawCodec.ID, 0, raw
    return codec.ID, param, packed


def parse_header(head: bytes, max_raw: int) -> FrameInfo:
    """Validate a header (magic, version, header checksum, bounds) and return its fields."""
    if len(head) < HEADER_SIZE:
        raise CorruptFrame(f"frame header truncated ({len(head)} of {HEADER_SIZE} bytes)")
    magic, version, codec_id, param, raw_len, payload_len, digest, hcheck = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise CorruptFrame("bad frame magic")
    if xxhash.xxh32_intdigest(head[:HEADER_SIZE - 4]) != hcheck:
        raise CorruptFrame("frame header checksum mismatch")
    if version != FRAME_VERSION:
        raise CorruptFrame(f"unknown frame version {version}")
    if raw_len > max_raw:
        raise CorruptFrame(f"frame raw length {raw_len} exceeds chunk size {max_raw}")
    # A frame is never larger than a raw frame of the same chunk.
    if payload_len > max_raw:
        raise CorruptFrame(f"frame payload length {payload_len} exceeds chunk size {max_raw}")
    return FrameInfo(codec_id, param, raw_len, digest, HEADER_SIZE + payload_len)


def decode_frame(frame: bytes, table: CodecTable, max_raw: int) -> bytes:
    """Decode and verify one whole frame; raise CorruptFrame on any inconsistency."""
    info = parse_header(frame, max_raw)
    if len(frame) != info.frame_len:
        raise CorruptFrame(f"frame is {len(frame)} bytes, header says {info.frame_len}")
    codec = table.get(info.codec_id)
    raw = codec.decompress(memoryview(frame)[HEADER_SIZE:].tobytes(), info.raw_len, info.param)
    if checksum(raw) != info.checksum:
        raise CorruptFrame("chunk checksum mismatch")
    return raw
