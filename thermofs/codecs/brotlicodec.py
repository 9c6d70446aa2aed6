"""Codec 5, ``brotli``: the cold path's coder for text (prose, source code, markup).

Per 64 KiB chunk, brotli at quality 11 (context modelling of literals, plus its built-in dictionary of
common words) codes the text corpora to 0.251 of raw against zstd -19's 0.278 (-9.9%); no zstd level
or trained dictionary gets there (-4.2% with a 112 KiB dictionary). It is slow to encode (0.7 MB/s
here), which is fine for background cooling, and decodes at ~250 MB/s. PPMd codes text better still
but its decoder (pyppmd) crashed on damaged input in our fuzzing: not acceptable behind a frame
decoder that must survive any bytes.
"""

from __future__ import annotations

import brotli  # type: ignore[import-untyped]

from thermofs.codecs.base import HEAVY, Buffer, Codec, parse_level
from thermofs.codecs.errors import BadSpec, CorruptFrame
from thermofs.codecs.probe import FLOAT16, FLOAT32, Probe

DEFAULT_QUALITY = 11
# Window: 2^16 covers a 64 KiB chunk (2^17 gave the same 0.2508 of raw on the corpora).
LGWIN = 16


class BrotliCodec(Codec):
    ID = 5
    name = "brotli"
    cold_role = HEAVY
    default_param = DEFAULT_QUALITY  # frame parameter: bits 0-7 quality (informational for decoding)

    def parse_arg(self, arg: str) -> int:
        return parse_level(arg, DEFAULT_QUALITY, 0, 11, "brotli")

    def spec_str(self, param: int) -> str:
        return f"brotli:{param}"

    def check_param(self, param: int) -> None:
        if not 0 <= param <= 11:
            raise BadSpec(f"brotli level must be in 0..11, not {param}")

    def cold_params(self, raw: Buffer, probe: Probe) -> list[int]:
        # Text and binaries alike gain from brotli's context modelling; on weights it is slow (0.2 MB/s)
        # and loses to byte planes (bench, 64 KiB chunks: fp32 0.991 vs 0.829, bf16 0.720 vs 0.666).
        if probe.kind in (FLOAT32, FLOAT16) or probe.incompressible:
            return []
        return [DEFAULT_QUALITY]

    def compress(self, data: Buffer, param: int) -> bytes:
        payload: bytes = brotli.compress(bytes(data), quality=param, lgwin=LGWIN)
        return payload

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        if param > 11:
            raise CorruptFrame(f"bad brotli parameter {param}")
        dec = brotli.Decompressor()
        try:
            # The output buffer stops growing at raw_len: a damaged stream cannot make it allocate more.
            # (A limit of 0 would mean none: an empty chunk is never brotli-coded, but a damaged frame
            # may say so.)
            out: bytes = dec.process(payload, output_buffer_limit=max(raw_len, 1))
            if not dec.is_finished() or len(out) != raw_len:
                raise CorruptFrame(f"brotli stream does not decode to {raw_len} bytes")
        except brotli.error as e:
            raise CorruptFrame(f"brotli: {e}") from e
        return out
