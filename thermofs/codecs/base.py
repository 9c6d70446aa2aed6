"""The codec base class and the two basic codecs (raw, zstd), shared by the other codec modules."""

from __future__ import annotations

import threading
from typing import ClassVar

import zstandard

from thermofs.codecs.errors import BadSpec, CorruptFrame
from thermofs.codecs.probe import Probe
from thermofs.codecs.resources import Resources

Buffer = bytes | bytearray | memoryview

# A codec's role on the cold path (coldpath.py): FAST codecs are always tried there (they encode at
# ~5 MB/s and decode at > 500 MB/s); a MODEL codec (learned) wins on text and code but decodes slowly;
# a HEAVY codec (brotli) encodes slowly and decodes fast.
FAST, MODEL, HEAVY = "fast", "model", "heavy"
# size_floor: zstd at this level, times a ratio of level-19 to level-3 sizes below what the 374 text and
# binary chunks of the corpora, stdlib sources and shared objects showed (1st percentile 0.73, median
# 0.87-0.91, with or without a dictionary): a frame that beats the floor beats the level-19 frame,
# except on data far more repetitive than these (bench/bench_coldpath.py counts the misses: 2 of 268
# learned frames kept on the floor gained less than 6% against the real level-19 frames).
FLOOR_LEVEL = 3
FLOOR_SCALE = 0.70


class Codec:
    """A chunk codec. ``param`` is the codec's u32 parameter as stored in the frame (level, ids).

    A codec joins the table by one line in ``CodecTable``'s list; ``best`` asks every codec of the
    table which parameters could win for a chunk (``cold_params``), so no list of names is kept
    elsewhere.
    """

    ID: ClassVar[int]
    name: ClassVar[str]
    default_param: ClassVar[int] = 0
    cold_role: ClassVar[str] = FAST
    # Codecs whose candidates ``best`` drops when this one offers one for the chunk (the dictionary
    # codec: zstd -19 without the dictionary is rarely smaller, and both cost ~12 ms per chunk).
    supersedes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    # -- spec strings -------------------------------------------------------------------------------

    def parse_arg(self, arg: str) -> int:
        """The stored parameter for spec ``name:arg`` (``arg`` empty: ``name`` alone)."""
        if arg:
            raise BadSpec(f"codec {self.name!r} takes no parameter (got {arg!r})")
        return self.default_param

    def spec_str(self, param: int) -> str:
        return self.name

    def check_param(self, param: int) -> None:
        """Raise BadSpec when ``param`` is not valid for this codec."""
        if param != 0:
            raise BadSpec(f"codec {self.name!r} takes no parameter")

    # -- encoding -----------------------------------------------------------------------------------

    def resolve(self, raw: Buffer, param: int) -> tuple[Codec, int]:
        """The codec and parameter that encode this chunk under a spec naming this codec: a codec may
        fill in a dictionary id or a float width, or hand the chunk to another codec (``dict`` with no
        dictionary yet: zstd at the same level). The frame records what is returned."""
        return self, param

    def cold_params(self, raw: Buffer, probe: Probe) -> list[int]:
        """Parameters ``best`` should try on this chunk; empty when this codec cannot win on it."""
        return []

    def floor_param(self, param: int) -> int | None:
        """``param`` at level FLOOR_LEVEL (or its own, if lower), for ``size_floor``; None for a
        codec without levels."""
        return None

    def size_floor(self, raw: Buffer, param: int) -> int | None:
        """A cheap lower bound of ``len(compress(raw, param))``, or None when there is none."""
        cheap = self.floor_param(param)
        if cheap is None:
            return None
        size = len(self.compress(raw, cheap))
        return size if cheap == param else int(size * FLOOR_SCALE)

    def compress(self, data: Buffer, param: int) -> bytes:
        raise NotImplementedError

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        """Return exactly ``raw_len`` bytes or raise CorruptFrame; never allocate more than raw_len
        (the frame checked raw_len against the chunk size before this is called)."""
        raise NotImplementedError


class RawCodec(Codec):
    ID = 0
    name = "raw"

    def compress(self, data: Buffer, param: int) -> bytes:
        return bytes(data)

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        if len(payload) != raw_len:
            raise CorruptFrame(f"raw frame holds {len(payload)} bytes, header says {raw_len}")
        return bytes(payload)


def zstd_decompress(dctx: zstandard.ZstdDecompressor, payload: Buffer, raw_len: int) -> bytes:
    """Decode one zstd frame of exactly raw_len bytes, or raise CorruptFrame."""
    try:
        # zstandard allocates what the zstd header's content size says, whatever max_output_size
        # is: check it against the verified raw length before decoding.
        content = zstandard.frame_content_size(payload)
        if content != raw_len:
            raise CorruptFrame(f"zstd content size {content} does not match raw length {raw_len}")
        out = dctx.decompress(payload, max_output_size=raw_len)
    except zstandard.ZstdError as e:
        raise CorruptFrame(f"zstd: {e}") from e
    if len(out) != raw_len:
        raise CorruptFrame(f"zstd frame decoded to {len(out)} bytes, header says {raw_len}")
    return out


def parse_level(arg: str, default: int, lo: int, hi: int, what: str) -> int:
    try:
        level = int(arg) if arg else default
    except ValueError:
        raise BadSpec(f"{what} level must be an integer, not {arg!r}") from None
    if not lo <= level <= hi:
        raise BadSpec(f"{what} level must be in {lo}..{hi}, not {level}")
    return level


# The cold path's zstd level. Per 64 KiB chunk of the corpora, 19 and 22 give the same size within 0.05%
# (0.2783 vs 0.2782 of raw: a 64 KiB window is already the whole chunk), and 19 is 1.2x faster.
COLD_ZSTD_LEVEL = 19


class ZstdCodec(Codec):
    ID = 1
    name = "zstd"
    default_param = 1001
    # zstd's negative ("fast") levels are stored with an offset so the frame field stays unsigned.
    PARAM_OFFSET: ClassVar[int] = 1000

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        # zstandard contexts are not thread-safe; FUSE calls us from many threads. One context per
        # (thread, level) avoids re-allocating the compressor's tables on every 64 KiB chunk.
        self._local = threading.local()

    @classmethod
    def level_of(cls, param: int) -> int:
        return param - cls.PARAM_OFFSET

    @classmethod
    def param_of(cls, level: int) -> int:
        return level + cls.PARAM_OFFSET

    def parse_arg(self, arg: str) -> int:
        try:
            level = int(arg) if arg else 1
        except ValueError:
            raise BadSpec(f"zstd level must be an integer, not {arg!r}") from None
        return self.param_of(level)

    def spec_str(self, param: int) -> str:
        return f"zstd:{self.level_of(param)}"

    def check_param(self, param: int) -> None:
        level = self.level_of(param)
        if not (-7 <= level <= 22) or level == 0:
            raise BadSpec(f"zstd level must be in -7..-1 or 1..22, not {level}")

    def cold_params(self, raw: Buffer, probe: Probe) -> list[int]:
        # Also tried on chunks that look like floats: it is the guard when the probe is wrong (Calgary's
        # geo and pic look float-like, and byte planes lose there), at ~10 MB/s on weights.
        if probe.incompressible:
            return []
        return [self.param_of(COLD_ZSTD_LEVEL)]

    def floor_param(self, param: int) -> int | None:
        return self.param_of(min(self.level_of(param), FLOOR_LEVEL))

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        cache: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "c", None)
        if cache is None:
            cache = self._local.c = {}
        comp = cache.get(level)
        if comp is None:
            comp = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                                           write_content_size=True)
        return comp

    def decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def compress(self, data: Buffer, param: int) -> bytes:
        return self.compressor(self.level_of(param)).compress(data)

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        return zstd_decompress(self.decompressor(), payload, raw_len)
