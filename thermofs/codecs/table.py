"""The codec table: one base class, one stable numeric ID and name per codec, one table.

The IDs are on-disk format (they are written into every frame header): never reuse or renumber one.
Spec strings (``raw``, ``zstd:3``, ``auto``) are parsed against this same table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import zstandard

from thermofs.codecs.errors import BadSpec, CorruptFrame


class Codec:
    """A chunk codec. ``param`` is the codec's parameter as stored in the frame (a level, an id)."""

    ID: ClassVar[int]
    name: ClassVar[str]
    default_param: ClassVar[int] = 0

    def check_param(self, param: int) -> None:
        """Raise BadSpec when ``param`` is not valid for this codec."""
        if param != 0:
            raise BadSpec(f"codec {self.name!r} takes no parameter")

    def compress(self, data: bytes | bytearray | memoryview, param: int) -> bytes:
        raise NotImplementedError

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        """Return exactly ``raw_len`` bytes or raise CorruptFrame; never allocate more than raw_len."""
        raise NotImplementedError


class RawCodec(Codec):
    ID = 0
    name = "raw"

    def compress(self, data: bytes | bytearray | memoryview, param: int) -> bytes:
        return bytes(data)

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        if len(payload) != raw_len:
            raise CorruptFrame(f"raw frame holds {len(payload)} bytes, header says {raw_len}")
        return bytes(payload)


class ZstdCodec(Codec):
    ID = 1
    name = "zstd"
    default_param = 1
    # zstd's negative ("fast") levels are stored with an offset so the frame field stays unsigned.
    PARAM_OFFSET: ClassVar[int] = 1000

    def __init__(self) -> None:
        # zstandard contexts are not thread-safe; FUSE calls us from many threads. One context per
        # (thread, level) avoids re-allocating the compressor's tables on every 64 KiB chunk.
        self._local = threading.local()

    @classmethod
    def level_of(cls, param: int) -> int:
        return param - cls.PARAM_OFFSET

    @classmethod
    def param_of(cls, level: int) -> int:
        return level + cls.PARAM_OFFSET

    def check_param(self, param: int) -> None:
        level = self.level_of(param)
        if not (-7 <= level <= 22) or level == 0:
            raise BadSpec(f"zstd level must be in -7..-1 or 1..22, not {level}")

    def _compressor(self, level: int) -> zstandard.ZstdCompressor:
        cache: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "c", None)
        if cache is None:
            cache = self._local.c = {}
        comp = cache.get(level)
        if comp is None:
            comp = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                                           write_content_size=True)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def compress(self, data: bytes | bytearray | memoryview, param: int) -> bytes:
        return self._compressor(self.level_of(param)).compress(data)

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        try:
            # zstandard allocates what the zstd header's content size says, whatever
            # max_output_size is: check it against the verified raw length before decoding.
            content = zstandard.frame_content_size(payload)
            if content != raw_len:
                raise CorruptFrame(f"zstd content size {content} does not match raw length {raw_len}")
            out = self._decompressor().decompress(payload, max_output_size=raw_len)
        except zstandard.ZstdError as e:
            raise CorruptFrame(f"zstd: {e}") from e
        if len(out) != raw_len:
            raise CorruptFrame(f"zstd frame decoded to {len(out)} bytes, header says {raw_len}")
        return out


class CodecTable:
    """The codec table: built once per volume (codecs may hold per-thread state)."""

    def __init__(self) -> None:
        codecs: list[Codec] = [RawCodec(), ZstdCodec()]
        self.by_id: dict[int, Codec] = {c.ID: c for c in codecs}
        self.by_name: dict[str, Codec] = {c.name: c for c in codecs}
        assert len(self.by_id) == len(self.by_name) == len(codecs), "duplicate codec id or name"

    def get(self, codec_id: int) -> Codec:
        try:
            return self.by_id[codec_id]
        except KeyError:
            raise CorruptFrame(f"unknown codec id {codec_id}") from None

    def parse(self, spec: str) -> CodecSpec:
        """Parse ``name[:param]``; ``auto`` is the fast hot codec with a compressibility probe."""
        text = spec.strip().lower()
        if text == "auto":
            return CodecSpec(self.by_name["zstd"], ZstdCodec.param_of(1), probe=True)
        name, _, arg = text.partition(":")
        codec = self.by_name.get(name)
        if codec is None:
            known = ", ".join(sorted([*self.by_name, "auto"]))
            raise BadSpec(f"unknown codec {name!r} in spec {spec!r} (known: {known})")
        if isinstance(codec, ZstdCodec):
            try:
                level = int(arg) if arg else 1
            except ValueError:
                raise BadSpec(f"zstd level must be an integer, not {arg!r}") from None
            param = ZstdCodec.param_of(level)
        elif arg:
            raise BadSpec(f"codec {name!r} takes no parameter (got {spec!r})")
        else:
            param = codec.default_param
        codec.check_param(param)
        return CodecSpec(codec, param, probe=False)


@dataclass(frozen=True)
class CodecSpec:
    """A parsed spec: which codec, its stored parameter, and whether to probe compressibility first."""

    codec: Codec
    param: int
    probe: bool

    def __str__(self) -> str:
        if self.probe:
            return "auto"
        if isinstance(self.codec, ZstdCodec):
            return f"zstd:{ZstdCodec.level_of(self.param)}"
        return self.codec.name
