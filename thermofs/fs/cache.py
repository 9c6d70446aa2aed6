"""A bounded LRU cache of decoded chunks, keyed by (inode, chunk index)."""

from __future__ import annotations

import threading
from collections import OrderedDict

# 64 MiB of decoded chunks: a 1 MiB read request spans 16 chunks of 64 KiB, so this holds the working
# set of dozens of concurrent sequential readers, and of random readers over a 64 MiB hot region.
DEFAULT_CACHE_BYTES = 64 << 20


class ChunkCache:
    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            data = self._data.get(key)
            if data is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple[int, int], data: bytes) -> None:
        if len(data) > self.capacity:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._data[key] = data
            self._bytes += len(data)
            while self._bytes > self.capacity:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted)

    def discard(self, key: tuple[int, int]) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)

    def discard_range(self, ino: int, start: int, stop: int) -> None:
        """Drop chunks [start, stop) of ``ino``: by key when the range is smaller than the cache,
        else by one pass over the cache (never both, so a truncate costs O(min of the two))."""
        with self._lock:
            if stop - start <= len(self._data):
                keys: list[tuple[int, int]] = [(ino, i) for i in range(start, stop) if (ino, i) in self._data]
            else:
                keys = [k for k in self._data if k[0] == ino and start <= k[1] < stop]
            for key in keys:
                self._bytes -= len(self._data.pop(key))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes
