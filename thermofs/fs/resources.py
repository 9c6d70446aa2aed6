"""The volume's trained dictionaries and learned models, loaded from LMDB for the codec table."""

from __future__ import annotations

import logging

from thermofs.codecs import CodecError, Resources
from thermofs.fs.meta import BLOB_DICTIONARY, BLOB_MODEL, DamagedRecord, MetaStore

log = logging.getLogger("thermofs.resources")


def load_resources(meta: MetaStore, damaged: list[DamagedRecord] | None = None) -> Resources:
    """The dictionaries and models stored in the volume, under their ids (a dictionary blob is
    ``kind + b"\\n" + bytes``). A damaged blob is left out (and listed in ``damaged``): the frames
    that name it read as EIO, the rest of the volume stays usable."""
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
        for rid, blob in t.blobs(BLOB_MODEL, damaged=found):
            try:
                resources.add_model(blob, rid)
            except CodecError as e:
                found.append(DamagedRecord("blobs", bytes([BLOB_MODEL]) + rid.to_bytes(4, "big"),
                                           f"model {rid} is unreadable: {e}"))
    for record in found:
        log.error("left out a damaged blob: %s", record.why)
    if damaged is not None:
        damaged += found
    return resources
