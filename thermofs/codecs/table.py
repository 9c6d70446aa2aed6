"""The codec table: one stable numeric ID and name per codec, one table, one spec parser.

The IDs are on-disk format (they are written into every frame header and the chunk map): never reuse
or renumber one. Spec strings are parsed against this same table:

    raw            store as is
    zstd[:LEVEL]   zstd, LEVEL -7..-1 or 1..22 (default 1)
    dict[:LEVEL]   zstd with the volume's current dictionary for the chunk's kind (default level 19;
                   zstd at that level while no dictionary exists)
    planes[:LEVEL] byte planes of float tensors, planes coded by zstd (default level 19)
    brotli[:Q]     brotli, quality 0..11 (default 11)
    learned        the learned codec (when its module is in the table)
    auto           the hot path: zstd level 1 (the name volumes are made with)
    best           the cold path (a new volume's cold codec): per chunk, the fast codecs and the one
                   slow codec predicted to win (learned or brotli), see coldpath.py
    exhaustive     every codec's candidates for the chunk, smallest frame wins (benchmarks' reference)

``auto``, ``best`` and ``exhaustive`` are specs, not codecs: a frame records the codec that won.
"""

from __future__ import annotations

from dataclasses import dataclass

from thermofs.codecs.base import Codec, RawCodec, ZstdCodec
from thermofs.codecs.brotlicodec import BrotliCodec
from thermofs.codecs.dictionary import DictCodec
from thermofs.codecs.errors import BadSpec, CorruptFrame
from thermofs.codecs.learned import LearnedCodec
from thermofs.codecs.planes import PlanesCodec
from thermofs.codecs.resources import Resources

__all__ = ["Codec", "CodecSpec", "CodecTable", "RawCodec", "ZstdCodec"]

# Every codec of the table; a new codec (the learned one: ID 4) joins by one line here.
CODECS: list[type[Codec]] = [RawCodec, ZstdCodec, DictCodec, PlanesCodec, LearnedCodec, BrotliCodec]
SPECS = ("auto", "best", "exhaustive")


class CodecTable:
    """The codec table: built once per volume (codecs hold per-thread state and the volume's
    dictionaries and models, ``resources``)."""

    def __init__(self, resources: Resources | None = None,
                 extra: list[type[Codec]] | None = None, without: tuple[str, ...] = ()) -> None:
        """``without``: codec names left out (a benchmark of ``best`` without the learned codec)."""
        self.resources = resources if resources is not None else Resources()
        codecs = [cls(self.resources) for cls in [*CODECS, *(extra or [])] if cls.name not in without]
        self.codecs: tuple[Codec, ...] = tuple(codecs)
        self.by_id: dict[int, Codec] = {c.ID: c for c in codecs}
        self.by_name: dict[str, Codec] = {c.name: c for c in codecs}
        assert len(self.by_id) == len(self.by_name) == len(codecs), "duplicate codec id or name"
        assert not set(SPECS) & set(self.by_name), "a codec named like a spec"

    def get(self, codec_id: int) -> Codec:
        try:
            return self.by_id[codec_id]
        except KeyError:
            raise CorruptFrame(f"unknown codec id {codec_id}") from None

    def parse(self, spec: str) -> CodecSpec:
        """Parse a spec string (see the module doc); BadSpec with the known names on a mistake."""
        text = spec.strip().lower()
        zstd = self.by_name["zstd"]
        if text == "auto":
            return CodecSpec(zstd, ZstdCodec.param_of(1), auto=True)
        if text in ("best", "exhaustive"):
            return CodecSpec(zstd, ZstdCodec.param_of(19), candidates=self.codecs,
                             exhaustive=text == "exhaustive")
        name, _, arg = text.partition(":")
        codec = self.by_name.get(name)
        if codec is None:
            if name in SPECS:
                raise BadSpec(f"{name!r} takes no parameter (got {spec!r})")
            known = ", ".join([*self.by_name, *SPECS])
            raise BadSpec(f"unknown codec {name!r} in spec {spec!r} (known: {known})")
        if ":" in arg:
            raise BadSpec(f"codec {name!r} takes one parameter (got {spec!r})")
        if arg == "" and ":" in text:
            raise BadSpec(f"empty parameter in spec {spec!r}")
        param = codec.parse_arg(arg)
        codec.check_param(param)
        return CodecSpec(codec, param)


@dataclass(frozen=True)
class CodecSpec:
    """A parsed spec: which codec and its stored parameter, whether it was ``auto`` (which it prints
    as), and for the cold path (``best``, ``exhaustive``) the codecs whose candidates it may try."""

    codec: Codec
    param: int
    auto: bool = False
    candidates: tuple[Codec, ...] = ()
    exhaustive: bool = False

    @property
    def best(self) -> bool:
        return bool(self.candidates)

    def __str__(self) -> str:
        if self.auto:
            return "auto"
        if self.best:
            return "exhaustive" if self.exhaustive else "best"
        return self.codec.spec_str(self.param)
