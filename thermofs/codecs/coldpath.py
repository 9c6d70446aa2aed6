"""The cold path: which codec recompresses a cold chunk.

Two specs use it (table.py):

``best`` (a new volume's cold codec) predicts, per chunk, which slow codec can win, and encodes with
that one and the fast ones only:

- the probe's kind (probe.py): incompressible chunks stay raw; float tensors get the fast codecs only
  (byte planes, zstd as the guard);
- text goes to the learned codec (it wins on 258 of 275 text chunks of the corpora and stdlib);
- a binary chunk goes to brotli -11 when zstd -1 shrinks it to at most ``BROTLI_MAX_Z1`` (tables,
  spreadsheets, bitmaps: long exact repeats, where brotli beats the learned codec), else to the
  learned codec (ELF code, object files);
- the fast codecs (zstd -19, or the dictionary where the chunk's kind has one, and byte planes: ~5
  MB/s, decode at > 500 MB/s) are the comparison and the fallback. The learned codec must beat the
  best of them by ``MIN_LEARNED_GAIN`` to be kept (its decode costs ~40 ms per 64 KiB chunk against
  ~0.1 ms). When the learned frame beats even a cheap floor of their sizes (``Codec.size_floor``: the
  codec at level 3, scaled by less than the smallest level-19 ratio seen) by that much, they are not
  encoded at all.

``exhaustive`` encodes every candidate of every codec of the table (``Codec.cold_params``) and keeps
the smallest: the benchmark's reference, 3-5x slower.

Either way the frame kept is decoded once and compared with the chunk before it replaces the hot one,
and it must save at least 1/``COLD_MIN_SAVING_DIVISOR`` of the raw size, else the chunk stays raw.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from thermofs.codecs.base import FAST, HEAVY, MODEL, Buffer, Codec, RawCodec, ZstdCodec
from thermofs.codecs.errors import CorruptFrame
from thermofs.codecs.probe import BINARY, TEXT, Probe, analyse

# A cold frame is kept only if it saves at least 1/32: cold chunks are read rarely, so the decode cost
# weighs less than the space (fp32 weights save 1/8 to 1/5 with byte planes).
COLD_MIN_SAVING_DIVISOR = 32
# The learned frame must be this much smaller than the best fast frame. Measured by
# bench/bench_coldpath.py on 360 chunks (corpora, stdlib sources, shared objects): of 318 chunks the
# learned codec shrinks below the fast codecs, those gaining 0-2% save 206 B each, 2-4% 406 B, 4-6%
# 583 B, 6-8% 1,180 B, 8-10% 1,394 B; the average is 1,323 B. Every learned chunk costs ~40 ms of CPU
# per read (decode at ~1.5 MB/s against > 500 MB/s). Below 6% a chunk saves ~470 B per decode, a third
# of the average; cutting there gives up 3.7% of the learned codec's savings (15 KB of 2.9 MB stored)
# and 10% of its decodes (33 chunks); from 6% on, chunks save about as much as the average one.
MIN_LEARNED_GAIN = 0.06
# Binary chunks that zstd -1 shrinks to at most this share of their size go to brotli, the others to
# the learned codec. Measured on the binary chunks of the corpora and of 2 MB of shared objects:
# brotli beats learned on xls 0.068 vs 0.079, the ptt5/pic bitmap 0.083 vs 0.094, kppkn.gtb 0.153 vs
# 0.171, all below 0.20 with zstd -1; learned wins on ELF objects (zstd -1 at 0.43): 0.324 vs 0.330.
# Thresholds from 0.15 to 0.25 store within 0.2% of each other.
BROTLI_MAX_Z1 = 0.20


def encode_cold(raw: Buffer, candidates: Sequence[Codec], exhaustive: bool = False) -> tuple[int, int, Buffer]:
    """(codec id, param, payload) of the cold frame for ``raw``: see the module docstring."""
    if not len(raw):
        return RawCodec.ID, 0, raw
    probe = analyse(raw)
    limit = len(raw) - len(raw) // COLD_MIN_SAVING_DIVISOR
    want = xxhash.xxh3_64_intdigest(raw)
    if exhaustive:
        tried = _encode(raw, [(c, p) for c in candidates for p in c.cold_params(raw, probe)], limit)
        return _verified(raw, tried, want) or (RawCodec.ID, 0, raw)
    fast = [(c, p) for c in candidates if c.cold_role == FAST for p in c.cold_params(raw, probe)]
    dropped = {name for c, _p in fast for name in c.supersedes}
    fast = [(c, p) for c, p in fast if c.name not in dropped]
    role = _slow_role(raw, probe, candidates)
    slow = [(c, p) for c in candidates if c.cold_role == role for p in c.cold_params(raw, probe)]
    if role == HEAVY:  # brotli decodes fast: the smallest frame wins
        return _verified(raw, _encode(raw, slow + fast, limit), want) or (RawCodec.ID, 0, raw)
    learned = _encode(raw, slow, limit)
    if learned:
        floors = [c.size_floor(raw, p) for c, p in fast]
        if all(f is not None for f in floors) and \
                learned[0][0] <= (1 - MIN_LEARNED_GAIN) * min([limit, *(f for f in floors if f is not None)]):
            found = _verified(raw, learned, want)
            if found is not None:
                return found
    classic = _encode(raw, fast, limit)
    best_classic = classic[0][0] if classic else limit
    kept = [t for t in learned if t[0] <= (1 - MIN_LEARNED_GAIN) * best_classic]
    return _verified(raw, kept, want) or _verified(raw, classic, want) or (RawCodec.ID, 0, raw)


def _slow_role(raw: Buffer, probe: Probe, candidates: Sequence[Codec]) -> str | None:
    """Which slow codec can win on this chunk: MODEL (learned), HEAVY (brotli) or None."""
    if probe.incompressible or probe.kind not in (TEXT, BINARY):
        return None
    if probe.kind == TEXT:
        return MODEL
    zstd = next((c for c in candidates if isinstance(c, ZstdCodec)), None)
    if zstd is None:
        return MODEL
    # zstd -1 on the whole chunk: ~0.2 ms, next to ~45 ms for either slow codec.
    z1 = len(zstd.compress(raw, ZstdCodec.param_of(1)))
    return HEAVY if z1 <= BROTLI_MAX_Z1 * len(raw) else MODEL


def _encode(raw: Buffer, todo: list[tuple[Codec, int]], limit: int) -> list[tuple[int, int, bytes, Codec, int]]:
    """Encode with each (codec, param); those within ``limit``, smallest first:
    (size, order, payload, codec, param)."""
    out = []
    for order, (codec, param) in enumerate(todo):
        packed = codec.compress(raw, param)
        if len(packed) <= limit:
            out.append((len(packed), order, packed, codec, param))
    out.sort(key=lambda t: t[:2])
    return out


def _verified(raw: Buffer, tried: list[tuple[int, int, bytes, Codec, int]],
              want: int) -> tuple[int, int, Buffer] | None:
    """The first of ``tried`` that decodes back to ``raw``: a cooled chunk replaces the hot one, so
    the frame kept is checked (one decode) and the next one is taken if it does not match."""
    for _size, _order, payload, codec, param in tried:
        if decodes_back(payload, codec, param, len(raw), want):
            return codec.ID, param, payload
    return None


def decodes_back(payload: Buffer, codec: Codec, param: int, raw_len: int, want: int) -> bool:
    """Does ``payload`` decode to ``raw_len`` bytes whose xxh3-64 is ``want``? The check every frame
    that replaces another passes first (the cold path's, and a relocation's with one codec)."""
    try:
        return xxhash.xxh3_64_intdigest(codec.decompress(bytes(payload), raw_len, param)) == want
    except CorruptFrame:
        return False
