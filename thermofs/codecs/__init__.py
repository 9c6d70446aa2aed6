"""Codecs: the chunk frame format and the codec table. Codecs know nothing of files."""

from thermofs.codecs.dictionary import add_trained, train_dictionaries
from thermofs.codecs.errors import BadSpec, CodecError, CorruptFrame
from thermofs.codecs.frame import (
    HEADER_SIZE,
    FrameInfo,
    checksum,
    decode_frame,
    encode_frame,
    encode_parts,
    parse_header,
)
from thermofs.codecs.resources import Resources
from thermofs.codecs.table import Codec, CodecSpec, CodecTable

__all__ = ["HEADER_SIZE", "BadSpec", "Codec", "CodecError", "CodecSpec", "CodecTable", "CorruptFrame",
           "FrameInfo", "Resources", "add_trained", "checksum", "decode_frame", "encode_frame", "encode_parts",
           "parse_header", "train_dictionaries"]
