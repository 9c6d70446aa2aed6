"""Codecs: the chunk frame format and the codec table. Codecs know nothing of files."""

from thermofs.codecs.errors import BadSpec, CodecError, CorruptFrame
from thermofs.codecs.frame import FrameInfo, decode_frame, encode_frame, encode_parts, parse_header
from thermofs.codecs.table import Codec, CodecSpec, CodecTable

__all__ = ["BadSpec", "Codec", "CodecError", "CodecSpec", "CodecTable", "CorruptFrame", "FrameInfo",
           "decode_frame", "encode_frame", "encode_parts", "parse_header"]
