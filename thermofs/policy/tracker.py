"""Access tracking: every read and write of a chunk updates its temperature, cheaply.

Accesses are counted in memory (a dict update under a lock, no LMDB write per read) and folded into
the ``temps`` sub-database in one write transaction per flush: every ``FLUSH_SECONDS`` by the cooler
thread, at unmount, and at once when ``MAX_PENDING`` chunks are waiting (the memory bound). A crash
loses at most the accesses since the last flush: temperatures are hints, never data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from thermofs.fs.meta import MetaStore, Txn
from thermofs.policy.temperature import PolicyParams, Temp, accessed, merged

# 30 s: one synced commit per half minute costs nothing next to the foreground's commits, and a
# crash forgets at most that much access history.
FLUSH_SECONDS = 30.0
# ~200 bytes per pending chunk in CPython: 65,536 chunks (4 GiB of 64 KiB chunks touched between
# flushes) is ~13 MiB.
MAX_PENDING = 65536


class Tracker:
    def __init__(self, meta: MetaStore, params: PolicyParams, clock: Callable[[], float] = time.time) -> None:
        self._meta = meta
        self.params = params
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], Temp] = {}
        self.last_access = 0.0  # clock time of the latest foreground access (the cooler yields to it)

    def touch(self, ino: int, first: int, last: int) -> None:
        """Chunks ``first..last`` (inclusive) of ``ino`` were read or written now."""
        now = self._clock()
        half_life = self.params.half_life
        with self._lock:
            self.last_access = now
            pending = self._pending
            for index in range(first, last + 1):
                key = (ino, index)
                pending[key] = accessed(pending.get(key), now, half_life)
            full = len(pending) >= MAX_PENDING
        if full:
            self.flush()

    def flush(self) -> int:
        """Fold pending accesses into LMDB in one write transaction; returns how many chunks."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or self._meta.readonly:  # a read-only volume keeps no history
            return 0
        half_life = self.params.half_life
        try:
            with self._meta.write() as t:
                for (ino, index), recent in pending.items():
                    stored = t.get_temp(ino, index)
                    temp = recent if stored is None else merged(Temp(*stored), recent, half_life)
                    t.put_temp(ino, index, temp.weight, temp.last)
        except BaseException:
            with self._lock:  # not lost: merged back for the next flush
                for key, recent in pending.items():
                    newer = self._pending.get(key)
                    self._pending[key] = recent if newer is None else merged(recent, newer, half_life)
            raise
        return len(pending)

    def temp(self, t: Txn, ino: int, index: int, mtime: float) -> Temp:
        """A chunk's current temperature: stored, plus pending accesses; a chunk with no record
        counts as accessed once at ``mtime`` (its file's last change)."""
        stored = t.get_temp(ino, index)
        base = Temp(*stored) if stored is not None else Temp(1.0, mtime)
        with self._lock:
            recent = self._pending.get((ino, index))
        return base if recent is None else merged(base, recent, self.params.half_life)

    def now(self) -> float:
        return self._clock()
