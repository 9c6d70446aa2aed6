"""Metadata backups in the object store, and restoring a store from the newest (docs/FORMAT.md,
"Object store layout"; docs/DESIGN.md, "Object store backend").

A backup is a consistent snapshot of LMDB (its compacting copy, taken in one read transaction),
compressed with zstd, under ``meta/backup-GGGGGGGGGGGG.tfsmeta``. It is uploaded only once every
segment its chunk map can point into is in the bucket: the copy is taken first, then the active
segment is sealed, then the backup waits for the uploads of every segment below the new active one
(a frame a committed entry points at was appended before its commit, so it lies in one of them):
invariant 8.
The last BACKUP_GENERATIONS backups are kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from thermofs.fs.errors import StoreError
from thermofs.fs.meta import MetaStore
from thermofs.fs.objectstore import BACKUPS_PREFIX, ObjectStore
from thermofs.fs.store import check_new_store
from thermofs.fs.tiered import TieredSegments

log = logging.getLogger("thermofs.backup")

MAGIC = b"TFSMETA\0"
VERSION = 1
HEADER = struct.Struct(">8sHI")  # magic, version, length of the JSON header that follows
# Backups kept: the newest is the one a restore uses; older ones survive a damaged newest (they may
# name segments that compaction deleted since, whose files then read as EIO).
BACKUP_GENERATIONS = 3
# Every ten minutes by default: at most that much of what was written is only on this machine's disk.
DEFAULT_BACKUP_SECONDS = 600.0
# zstd level 3 with a content checksum: a 100,000-file volume's metadata compressed to ~1/4 of its
# compacted size at level 3, and level 19 saved a few percent more for ten times the time.
ZSTD_LEVEL = 3
# How long a backup waits for the uploads its snapshot needs before it gives up (tried next time).
UPLOAD_WAIT = 600.0


def backup_key(generation: int) -> str:
    return f"{BACKUPS_PREFIX}backup-{generation:012d}.tfsmeta"


def generations(backend: ObjectStore) -> list[int]:
    """The generations of the backups in the bucket, oldest first."""
    out = []
    for key in backend.list(BACKUPS_PREFIX):
        name = key.rpartition("/")[2]
        if name.startswith("backup-") and name.endswith(".tfsmeta") and name[7:-8].isdigit():
            out.append(int(name[7:-8]))
    return sorted(out)


def pack(header: dict[str, Any], data_mdb: bytes) -> bytes:
    text = json.dumps(header, sort_keys=True).encode()
    body = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                    write_content_size=True).compress(data_mdb)
    return HEADER.pack(MAGIC, VERSION, len(text)) + text + body


def unpack(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, data.mdb) of a backup; StoreError if it is not one or is damaged."""
    if len(blob) < HEADER.size:
        raise StoreError("the metadata backup is truncated")
    magic, version, length = HEADER.unpack_from(blob)
    if magic != MAGIC or version != VERSION:
        raise StoreError(f"not a thermofs metadata backup (magic {magic!r}, version {version})")
    try:
        header = json.loads(blob[HEADER.size:HEADER.size + length])
        data = zstandard.ZstdDecompressor().decompress(blob[HEADER.size + length:])
    except (ValueError, zstandard.ZstdError) as e:
        raise StoreError(f"the metadata backup is damaged: {e}") from None
    if not isinstance(header, dict) or len(data) != header.get("data_bytes"):
        raise StoreError("the metadata backup is damaged (its header does not match its data)")
    return header, data


@dataclass
class BackupReport:
    generation: int = 0
    bytes: int = 0  # the uploaded object
    metadata_bytes: int = 0  # the compacted LMDB copy
    seconds: float = 0.0


class MetadataBackups:
    """The backups of one mounted volume: ``backup()`` now, or every ``interval`` seconds in a thread."""

    def __init__(self, meta: MetaStore, segments: TieredSegments, backend: ObjectStore, config: dict[str, Any],
                 interval: float = DEFAULT_BACKUP_SECONDS, keep: int = BACKUP_GENERATIONS) -> None:
        self._meta = meta
        self._segments = segments
        self._backend = backend
        self._config = config
        self._interval = interval
        self._keep = keep
        self._lock = threading.Lock()  # one backup at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: BackupReport | None = None

    def backup(self, wait: float = UPLOAD_WAIT, say: Callable[[str], None] | None = None,
               background: bool = False) -> BackupReport | None:
        """One backup; None if the uploads it needs did not finish within ``wait`` seconds (or, for the
        ``background`` thread's, before ``stop``: the unmount makes its own)."""
        with self._lock:
            started = time.monotonic()
            mark = self._segments.deletion_mark()
            with tempfile.TemporaryDirectory(prefix="thermofs-backup-") as tmp:
                self._meta.compact_copy(Path(tmp))
                data = (Path(tmp) / "data.mdb").read_bytes()
            self._segments.seal()
            below = self._segments.active_id
            if say is not None and self._segments.pending():
                say(f"waiting for {len(self._segments.pending())} segment uploads "
                    f"({self._segments.pending_bytes()} bytes)")
            if not self._segments.wait_uploaded(below, wait, self._stop if background else None):
                log.warning("metadata backup postponed: %s", self._segments.leftover_message())
                return None
            existing = generations(self._backend)
            generation = (existing[-1] + 1) if existing else 1
            header = {"config": self._config, "generation": generation, "created": time.time(),
                      "data_bytes": len(data), "next_segment": below}
            blob = pack(header, data)
            self._backend.put(backup_key(generation), blob)
            for old in [*existing, generation][:-self._keep]:
                self._backend.delete(backup_key(old))
            self._segments.delete_objects(mark)
            report = BackupReport(generation, len(blob), len(data), time.monotonic() - started)
            self.last = report
            log.info("metadata backup %d uploaded (%d bytes, %d uncompressed)", generation, len(blob), len(data))
            return report

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="backup", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.backup(background=True)
            except Exception as e:  # the store unreachable: said in the log, tried next time
                log.warning("metadata backup failed, tried again in %.0f s: %s", self._interval, e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def restore_store(backend: ObjectStore, url: str, store: Path,
                  make_config: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Build a local store in ``store`` (new or empty) from the newest backup in the bucket:
    meta.lmdb/data.mdb from the backup, segments/ empty (every segment is read from the bucket),
    thermofs.json written by ``make_config`` from the backup's config. Returns the backup's header."""
    check_new_store(store)
    found = generations(backend)
    if not found:
        raise StoreError(f"no metadata backup in {url}: nothing to restore")
    header, data = unpack(backend.get(backup_key(found[-1])))
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        (store / "segments").mkdir(mode=0o700)
        (store / "meta.lmdb").mkdir(mode=0o700)
        path = store / "meta.lmdb" / "data.mdb"
        path.write_bytes(data)
        path.chmod(0o600)
        make_config(header["config"])
    except BaseException:
        shutil.rmtree(store / "segments", ignore_errors=True)
        shutil.rmtree(store / "meta.lmdb", ignore_errors=True)
        raise
    return header
