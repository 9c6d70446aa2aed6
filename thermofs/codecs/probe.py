"""A cheap look at a chunk before choosing codecs: what kind of data it is (text, binary, floats).

``best`` runs it once per chunk and hands it to every codec's ``cold_params``, so a codec that cannot
win on that kind of data costs nothing; dictionary training groups samples by the same kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

Buffer = bytes | bytearray | memoryview

TEXT, BINARY, FLOAT32, FLOAT16 = "text", "binary", "float32", "float16"
KINDS = (TEXT, BINARY, FLOAT32, FLOAT16)

# Bytes looked at: the whole of a 64 KiB chunk costs ~0.1 ms of numpy, negligible against any cold codec.
PROBE_LIMIT = 64 << 10
# Text: at least this share of bytes is printable ASCII, whitespace or >= 0x80 (UTF-8). Source code,
# prose, HTML, CSV all pass with > 0.99; ELF binaries and tensors are far below (0.4-0.6).
TEXT_SHARE = 0.95
# Floats, little-endian: the top byte of each element (sign + high exponent bits) has a low entropy,
# the mantissa byte below it a high one. Measured on the MiniLM fp32 weights: top byte 2.6-2.8 bits,
# the byte below 7.96 bits.
FLOAT_TOP_MAX_BITS = 6.0
FLOAT_LOW_MIN_BITS = 7.0
MIN_FLOAT_ELEMENTS = 256
# The incompressibility sample, as the hot path's probe (frame.py): 4 KiB from the middle.
SAMPLE_BYTES = 4096
SAMPLE_MIN_SAVING_DIVISOR = 16


@dataclass(frozen=True)
class Probe:
    kind: str
    width: int = 0  # element width in bytes of a float kind (4, or 2 for bf16/fp16)
    phase: int = 0  # offset of the first whole element in the chunk (chunks cut a file anywhere)
    # Binary data whose samples zstd -1 cannot shrink by 1/16 (media, archives, random): no classical
    # codec gets the 1/32 the cold path asks for, so ``best`` stores it raw without trying them.
    incompressible: bool = False


def _position_entropies(a: np.ndarray, width: int) -> list[float]:
    n = len(a) // width * width
    cols = a[:n].reshape(-1, width)
    out = []
    for j in range(width):
        counts = np.bincount(cols[:, j], minlength=256)
        p = counts[counts > 0] / cols.shape[0]
        out.append(float(-(p * np.log2(p)).sum()))
    return out


def analyse(raw: Buffer) -> Probe:
    a = np.frombuffer(raw, dtype=np.uint8)[:PROBE_LIMIT]
    if len(a) == 0:
        return Probe(BINARY)
    printable = np.count_nonzero((a >= 32) | (a >= 9) & (a <= 13))
    if printable >= TEXT_SHARE * len(a):
        return Probe(TEXT)
    if len(a) >= MIN_FLOAT_ELEMENTS * 4:
        # A top byte is a low-entropy position right above a high-entropy one. fp32: one such position
        # in four; 16-bit floats: two, two apart. (The low mantissa bytes may be low too: the first
        # MiniLM tensors have all-zero low bytes, fp32 widened from a 16-bit format.)
        h = _position_entropies(a, 4)
        tops = [j for j in range(4) if h[j] <= FLOAT_TOP_MAX_BITS and h[j - 1] >= FLOAT_LOW_MIN_BITS]
        if len(tops) == 1:
            return Probe(FLOAT32, 4, (tops[0] + 1) % 4)
        if len(tops) == 2 and tops[1] - tops[0] == 2:
            return Probe(FLOAT16, 2, (tops[0] + 1) % 2)
    return Probe(BINARY, incompressible=_incompressible(raw))


def _incompressible(raw: Buffer) -> bool:
    # Three samples (start, middle, end), all must fail: one middle sample, as the hot path takes,
    # called a compressible corpus chunk (a PDF with an embedded image) incompressible in the bench.
    if len(raw) <= 2 * SAMPLE_BYTES:
        return False
    comp = zstandard.ZstdCompressor(level=1)
    for start in (0, len(raw) // 2, len(raw) - SAMPLE_BYTES):
        sample = raw[start:start + SAMPLE_BYTES]
        if len(comp.compress(sample)) <= len(sample) - len(sample) // SAMPLE_MIN_SAVING_DIVISOR:
            return False
    return True
