"""The volume's trained dictionaries and learned models, loaded from LMDB for the codec table."""

from __future__ import annotations

import logging

from thermofs.codecs import CodecError, Resources
from thermofs.fs.meta import BLOB_DICTIONARY, BLOB_MODEL, DamagedRecord, MetaStore

log = logging.getLogger("thermofs.resources")
# A model blob is an npz archive (a zip: these 4 bytes first), trained for any kind of data, or
# ``kind + b"\n" + npz`` for a model trained on one kind (docs/FORMAT.md, "blobs").
NPZ_MAGIC = b"PK\x03\x04"


def model_record(blob: bytes, kind: str | None) -> bytes:
    """The blob record of a learned model trained for ``kind`` (None: for any kind)."""
    return blob if kind is None else kind.encode() + b"\n" + blob


def parse_model_record(value: bytes) -> tuple[str | None, bytes]:
    """(kind, npz blob) of a model record; ValueError if it is neither form."""
    if value.startswith(NPZ_MAGIC):
        return None, value
    kind, sep, blob = value.partition(b"\n")
    if not sep or not kind or not blob.startswith(NPZ_MAGIC):
        raise ValueError("neither a model nor a kind and a model")
    return kind.decode(), blob


def load_resources(meta: MetaStore, damaged: list[DamagedRecord] | None = None) -> Resources:
    """The dictionaries and models stored in the volume, under their ids (a dictionary blob is
    ``kind + b"\\n" + bytes``, a model one ``model_record``). A damaged blob is left out (and listed
    in ``damaged``): the frames that name it read as EIO, the rest of the volume stays usable."""
    found: list[DamagedRecord] = []
    resources = Resources()
    with meta.read() as t:
        for rid, value in t.blobs(BLOB_DICTIONARY, damaged=found):
            kind, sep, data = value.partition(b"\n")
            try:
                if not sep:
                    raise ValueError("no kind")
                resources.add_dictionary(kind.decode(), data, rid)
            except (ValueError, CodecError) as e:
                found.append(DamagedRecord("blobs", bytes([BLOB_DICTIONARY]) + rid.to_bytes(4, "big"),
                                           f"dictionary {rid} is unreadable: {e}"))
        for rid, value in t.blobs(BLOB_MODEL, damaged=found):
            try:
                model_kind, blob = parse_model_record(value)
                resources.add_model(blob, rid, model_kind)
            except (ValueError, CodecError) as e:
                found.append(DamagedRecord("blobs", bytes([BLOB_MODEL]) + rid.to_bytes(4, "big"),
                                           f"model {rid} is unreadable: {e}"))
    for record in found:
        log.error("left out a damaged blob: %s", record.why)
    if damaged is not None:
        damaged += found
    return resources
