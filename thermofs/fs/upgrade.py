"""Upgrading a store of format 1 to format 2 (docs/FORMAT.md, "Versions"): an explicit, logged step
taken when a store is opened for writing (mount, ``fsck --repair``, offline admin commands).

Format 1 had no record checksums, no identity and no segment headers, and counted in i64. The upgrade
rewrites every LMDB record sealed with its checksum in one write transaction (inodes gain their entry
count, counters become i128), adds the identity record with a new uuid, and records that segments
from the next id on start with a header: the segments already written keep their bytes. Then it
rewrites thermofs.json. A crash between the two leaves an upgraded LMDB and a format-1 thermofs.json:
the next upgrade sees the identity record and only rewrites thermofs.json.
"""

from __future__ import annotations

import logging
import struct
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import lmdb

from thermofs.fs.errors import StoreError
from thermofs.fs.meta import COUNTER_BYTES, DBS, IDENTITY_KEY, INODE, U64, Identity, check_lmdb_file, map_size, seal
from thermofs.fs.segments import SegmentStore
from thermofs.fs.store import FORMAT_VERSION, StoreConfig, write_config

log = logging.getLogger("thermofs.upgrade")

V1_DBS = ("inodes", "dirents", "chunks", "symlinks", "xattrs", "orphans", "garbage", "counters", "temps",
          "blobs")
V1_INODE = struct.Struct(">IIIIQqqqQQ")
V1_COUNTER = struct.Struct(">q")


def upgrade(store: Path, cfg: StoreConfig) -> StoreConfig:
    """Upgrade the format-1 store (the caller holds its lock); returns the new config."""
    if cfg.version == FORMAT_VERSION:
        return cfg
    path = store / "meta.lmdb"
    try:
        check_lmdb_file(path)
    except Exception as e:
        raise StoreError(f"cannot upgrade {store}: {e}") from None
    env = lmdb.open(str(path), map_size=map_size(path), max_dbs=len(DBS) + 2, subdir=True, create=False,
                    metasync=True, sync=True, readahead=False)
    try:
        identity = _convert(env, store, cfg)
    except lmdb.Error as e:
        raise StoreError(f"cannot upgrade {store}: LMDB: {e}") from None
    finally:
        env.close()
    new = replace(cfg, version=FORMAT_VERSION, uuid=identity.uuid)
    write_config(store, new)
    log.info("upgraded %s from format %d to %d (volume %s; segments from %d on have headers)",
             store, cfg.version, FORMAT_VERSION, identity.uuid, identity.headers_from)
    return new


def _items(txn: lmdb.Transaction, db: lmdb._Database) -> Iterator[tuple[bytes, bytes]]:
    return cast(Iterator[tuple[bytes, bytes]], iter(txn.cursor(db=db)))


def _convert(env: lmdb.Environment, store: Path, cfg: StoreConfig) -> Identity:
    """Seal every record and add the identity, in one transaction (unless an earlier upgrade did)."""
    with env.begin(write=True) as txn:
        volume = env.open_db(b"volume", txn=txn, create=True)
        raw = txn.get(IDENTITY_KEY, db=volume)
        if raw is not None:  # converted by an upgrade that crashed before rewriting thermofs.json
            return Identity.unpack(raw[:-4])
        dbs = {name: env.open_db(name.encode(), txn=txn, create=True) for name in V1_DBS}
        counts: dict[int, int] = {}
        for db in ("chunks", "dirents"):
            for key in txn.cursor(db=dbs[db]).iternext(keys=True, values=False):
                owner = U64.unpack(key[:8])[0]
                counts[owner] = counts.get(owner, 0) + 1
        for name in V1_DBS:
            records = list(_items(txn, dbs[name]))
            for key, value in records:
                if name == "inodes":
                    value = INODE.pack(*V1_INODE.unpack(value), counts.get(U64.unpack(key)[0], 0))
                elif name == "counters":
                    value = V1_COUNTER.unpack(value)[0].to_bytes(COUNTER_BYTES, "big", signed=True)
                txn.put(key, seal(name, key, value), db=dbs[name])
        existing = SegmentStore(store / "segments", bytes(16)).segment_ids()
        identity = Identity(uuidlib.uuid4().hex, cfg.chunk_size, FORMAT_VERSION,
                            headers_from=(existing[-1] + 1) if existing else 1)
        txn.put(IDENTITY_KEY, seal("volume", IDENTITY_KEY, identity.pack()), db=volume)
    return identity
