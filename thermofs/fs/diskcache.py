"""The local disk cache of remote segments (``-o disk_cache=SIZE``): blocks of segment objects kept in
``STORE/cache/``, least recently used evicted first, so reads of a remote segment cost a ranged GET
only the first time (docs/DESIGN.md, "Object store backend").

A block is BLOCK_BYTES of one segment object at an aligned offset (the last block of an object is
shorter), in the file ``cache/SSSSSSSS.BBBBBB``, followed by the 8-byte xxh3-64 of those bytes. A
block is written to a temporary name and renamed, so a crash leaves whole blocks or none. A block
whose checksum does not match (a damaged disk, a file cut short) is dropped and fetched again, so
damage in the cache costs a GET, not an EIO. Nothing in the cache is trusted beyond that either:
every frame read from it is verified against its chunk map entry like any other (invariant 5).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import xxhash

log = logging.getLogger("thermofs.diskcache")

# One block per ranged GET of a cold read: a 1 MiB GET from SeaweedFS here took 4-8 ms, a 64 KiB one
# 4-37 ms (the request, not the bytes, costs): a block carries ~16 frames of a sequential read.
BLOCK_BYTES = 1 << 20
# A miss on the block right after the previous miss of the same segment is a sequential read: fetch
# this many blocks in one GET (read-ahead). A cold sequential read of 256 MiB through a mount on
# SeaweedFS here: 115 MiB/s with 4, 120 MiB/s with 16 (the 2 cores, shared by decoding and the
# server, are the limit), so 4: less fetched in vain by a random read that happens to follow on.
READ_AHEAD_BLOCKS = 4
DEFAULT_DISK_CACHE = 1 << 30
CHECKSUM = struct.Struct(">Q")  # after a block's bytes: their xxh3-64 (~0.1 ms per MiB)

Fetch = Callable[[int, int, int], bytes]  # (segment, offset, length) -> bytes from the object store


class DiskCache:
    """Blocks of remote segments on local disk, bounded by ``limit`` bytes. Thread-safe."""

    def __init__(self, directory: Path, limit: int = DEFAULT_DISK_CACHE) -> None:
        self.dir = directory
        self.limit = limit
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[int, int], int] = OrderedDict()  # (segment, block) -> size, LRU first
        self._bytes = 0
        self._last_miss: dict[int, int] = {}  # segment -> its last block fetched on a miss
        self.hits = 0
        self.misses = 0

    def load(self) -> None:
        """Index the blocks a previous mount left (oldest first), dropping temporary files and
        evicting down to the limit: the explicit step at mount."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        found: list[tuple[float, tuple[int, int], int]] = []
        for entry in os.scandir(self.dir):
            seg, dot, block = entry.name.partition(".")
            if not (dot and seg.isdigit() and block.isdigit()):
                os.unlink(entry.path)  # a block a crash left half written
                continue
            st = entry.stat()
            found.append((st.st_mtime, (int(seg), int(block)), st.st_size))
        with self._lock:
            for _when, key, size in sorted(found):
                self._blocks[key] = size
                self._bytes += size
        self._evict()

    def _path(self, key: tuple[int, int]) -> Path:
        return self.dir / f"{key[0]:08d}.{key[1]:06d}"

    def read(self, seg: int, offset: int, length: int, size: int, fetch: Fetch) -> bytes:
        """``length`` bytes at ``offset`` of segment ``seg`` (an object of ``size`` bytes), from cached
        blocks, the missing ones fetched (with read-ahead when sequential) and kept."""
        first, last = offset // BLOCK_BYTES, (offset + length - 1) // BLOCK_BYTES
        parts: list[bytes] = []
        for block in range(first, last + 1):
            data = self._cached(seg, block)
            if data is None:
                data = self._fetch(seg, block, size, fetch)
            parts.append(data)
        joined = b"".join(parts)
        start = offset - first * BLOCK_BYTES
        return joined[start:start + length]

    def _cached(self, seg: int, block: int) -> bytes | None:
        key = (seg, block)
        with self._lock:
            if key not in self._blocks:
                self.misses += 1
                return None
            self._blocks.move_to_end(key)
        try:
            stored = self._path(key).read_bytes()
        except FileNotFoundError:  # evicted meanwhile
            with self._lock:
                self.misses += 1
            return None
        data = stored[:-CHECKSUM.size]
        if len(stored) < CHECKSUM.size or CHECKSUM.unpack(stored[-CHECKSUM.size:])[0] != xxhash.xxh3_64_intdigest(data):
            log.warning("block %d of segment %d in the disk cache is damaged: fetched again", block, seg)
            self._forget(key)
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return data

    def _forget(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._bytes -= self._blocks.pop(key, 0)
        self._path(key).unlink(missing_ok=True)

    def _fetch(self, seg: int, block: int, size: int, fetch: Fetch) -> bytes:
        with self._lock:
            sequential = self._last_miss.get(seg) == block - 1
        count = READ_AHEAD_BLOCKS if sequential else 1
        start = block * BLOCK_BYTES
        data = fetch(seg, start, min(count * BLOCK_BYTES, max(size - start, 0)))
        with self._lock:
            self._last_miss[seg] = block + count - 1 if sequential else block
        for i in range(count):
            piece = data[i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
            if piece:
                self.put(seg, block + i, piece)
        return data[:BLOCK_BYTES]

    def put(self, seg: int, block: int, data: bytes) -> None:
        """Keep one block (best effort: a full disk only costs a later GET)."""
        key = (seg, block)
        path = self._path(key)
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                stored = data + CHECKSUM.pack(xxhash.xxh3_64_intdigest(data))
                if os.write(fd, stored) != len(stored):
                    raise OSError("short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            log.info("not caching block %d of segment %d: %s", block, seg, e)
            return
        with self._lock:
            self._bytes += len(stored) - self._blocks.get(key, 0)
            self._blocks[key] = len(stored)
            self._blocks.move_to_end(key)
        self._evict()

    def put_file(self, seg: int, path: Path) -> None:
        """Keep a segment uploaded from this machine as blocks: its local copy becomes cache."""
        with open(path, "rb") as fh:
            block = 0
            while data := fh.read(BLOCK_BYTES):
                self.put(seg, block, data)
                block += 1

    def drop(self, seg: int) -> None:
        """Forget every block of a deleted segment."""
        with self._lock:
            keys = [k for k in self._blocks if k[0] == seg]
            self._last_miss.pop(seg, None)
        for key in keys:
            self._forget(key)

    def _evict(self) -> None:
        while True:
            with self._lock:
                if self._bytes <= self.limit or not self._blocks:
                    return
                key, size = self._blocks.popitem(last=False)
                self._bytes -= size
            self._path(key).unlink(missing_ok=True)

    def stats(self) -> dict[str, int | float]:
        with self._lock:
            lookups = self.hits + self.misses
            return {"disk_cache_bytes": self._bytes, "disk_cache_limit": self.limit,
                    "disk_cache_hits": self.hits, "disk_cache_misses": self.misses,
                    "disk_cache_hit_rate": self.hits / lookups if lookups else 0.0}
