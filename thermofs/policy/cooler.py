"""The background cooler: finds cold chunks and recompresses them with the cold codec.

It scans the chunk map in slices (short read transactions), asks the policy which chunks are cold,
and hands batches to fs/relocate.py, which keeps invariant 3 (append and sync the new frames, then
swap each pointer only if the chunk was not rewritten meanwhile). Run in the background it
yields to the foreground: it waits while the application did I/O in the last ``IDLE_SECONDS``
(at most ``MAX_DEFER_SECONDS`` per batch, so cooling still progresses under constant load), keeps
under a byte budget, and its thread runs at a lower CPU priority. ``cool(older_than=...)`` is the
forced pass of ``thermofs cool --now``.

Promotion (a cold chunk read often again) re-encodes with the hot codec only chunks whose codec is
slow to decode (``promote_ids``: the learned codec); zstd-19, dictionary and byte-plane frames decode
about as fast as the hot codec's, so a re-heated chunk of theirs stays cold-encoded and the cache of
decoded chunks serves its reads: re-encoding it would give back the space for no gain (README,
"Promotion").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from thermofs.codecs import CodecSpec
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.meta import ChunkEntry, MetaStore, Tier
from thermofs.fs.relocate import Chunk, relocate
from thermofs.policy.temperature import is_cold, is_reheated
from thermofs.policy.tracker import FLUSH_SECONDS, Tracker
from thermofs.progress import Progress

log = logging.getLogger("thermofs.cooler")

SCAN_SLICE = 1024  # chunk entries per read transaction while scanning
BATCH = 32  # chunks per relocate() call: one sync and one commit per 2 MiB of 64 KiB chunks
IDLE_SECONDS = 0.2
MAX_DEFER_SECONDS = 2.0
# Under constant foreground I/O the cooler recompresses this many chunks per MAX_DEFER_SECONDS
# (~50 ms of zstd -19 on one core): cooling still progresses, the foreground keeps the CPU.
BUSY_BATCH = 4
# Background budget, raw bytes per second: zstd -19 encodes 64 KiB chunks at ~5-10 MB/s on one core
# here, so the budget is not what limits it; it bounds a faster cold codec's share of the disk.
DEFAULT_BUDGET = 32 << 20
DEFAULT_INTERVAL = 60.0  # seconds between background passes
NICE = 10  # the cooler's threads: below the foreground


@dataclass
class CoolerStatus:
    state: str = "idle"  # idle, scanning, stopped
    passes: int = 0
    scanned: int = 0  # chunk entries looked at in the current or last pass
    total: int = 0  # chunk entries in the volume when the pass began
    queue: int = 0  # cold candidates found and not yet recompressed in this pass
    cooled: int = 0  # since mount
    promoted: int = 0
    bytes_saved: int = 0
    raced: int = 0
    damaged: int = 0
    last_pass: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)




def _lower_priority() -> None:
    """Nice 10 for the calling thread: Linux applies a nice value to one thread, so the foreground
    keeps its priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError:
        pass


class Cooler:
    def __init__(self, chunks: ChunkStore, meta: MetaStore, tracker: Tracker, cold: CodecSpec, hot: CodecSpec,
                 promote_ids: frozenset[int], budget: float = DEFAULT_BUDGET,
                 interval: float = DEFAULT_INTERVAL, prepare: Callable[[], object] | None = None) -> None:
        """``prepare`` runs before each pass (training the first dictionaries of a volume whose cold
        spec uses them)."""
        self._chunks = chunks
        self._meta = meta
        self._tracker = tracker
        self._cold = cold
        self._hot = hot
        self._promote_ids = promote_ids
        self._budget = budget
        self._interval = interval
        self._prepare = prepare
        self.status = CoolerStatus()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()  # one pass at a time (background or forced)
        self._thread: threading.Thread | None = None
        # The re-encodes of a batch run on every core: the cold codecs release the GIL (the learned
        # kernel is compiled nogil, zstd and brotli release it), bench/bench_coldpath.py measures the
        # scaling. Its threads run at the cooler's lower priority, so the foreground keeps the CPU.
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="cool",
                                        initializer=_lower_priority)

    # -- one pass -------------------------------------------------------------------------------------
    def cool(self, older_than: float | None = None, progress: Progress | None = None,
             stop: threading.Event | None = None, throttle: bool = False) -> CoolerStatus:
        """One pass over the chunk map. ``older_than`` forces: every hot chunk not accessed for that
        many seconds is cooled, whatever its count. Returns this pass's figures."""
        with self._pass_lock:
            self._tracker.flush()
            if self._prepare is not None:
                self._prepare()
            before = CoolerStatus(**asdict(self.status))
            s = self.status
            s.state, s.scanned, s.queue = "scanning", 0, 0
            with self._meta.read() as t:
                s.total = t.counter("chunks")
            params = self._tracker.params
            now = self._tracker.now()
            cold: list[tuple[int, int, ChunkEntry]] = []
            warm: list[tuple[int, int, ChunkEntry]] = []
            pos = (0, 0)
            try:
                while not (stop is not None and stop.is_set()):
                    mtimes: dict[int, float] = {}
                    with self._meta.read() as t:
                        rows = t.chunks_after(*pos, SCAN_SLICE)
                        for ino, index, entry in rows:
                            if ino not in mtimes:
                                inode = t.get_inode(ino)
                                mtimes[ino] = inode.mtime / 1e9 if inode is not None else now
                            temp = self._tracker.temp(t, ino, index, mtimes[ino])
                            if entry.tier == Tier.HOT:
                                if (now - temp.last >= older_than if older_than is not None
                                        else is_cold(temp, now, params)):
                                    cold.append((ino, index, entry))
                                    s.queue += 1
                            elif entry.codec_id in self._promote_ids and is_reheated(temp, now, params):
                                warm.append((ino, index, entry))
                    if not rows:
                        break
                    pos = (rows[-1][0], rows[-1][1] + 1)
                    s.scanned += len(rows)
                    while len(cold) >= BATCH and not (stop is not None and stop.is_set()):
                        del cold[:self._run(cold[:BATCH], self._cold, Tier.COLD, throttle, stop)]
                    while warm and not (stop is not None and stop.is_set()):
                        del warm[:self._run(warm[:BATCH], self._hot, Tier.HOT, throttle, stop)]
                    if progress is not None:
                        progress(s.scanned, max(s.total, s.scanned))
                while cold and not (stop is not None and stop.is_set()):
                    del cold[:self._run(cold[:BATCH], self._cold, Tier.COLD, throttle, stop)]
            finally:
                s.state = "idle"
                s.passes += 1
                s.last_pass = time.time()
                self._tracker.flush()
            return CoolerStatus(**{k: (v - getattr(before, k) if k in ("cooled", "promoted", "bytes_saved",
                                                                           "raced", "damaged") else v)
                                   for k, v in asdict(s).items()})

    def _run(self, batch: list[tuple[int, int, ChunkEntry]], spec: CodecSpec, tier: Tier, throttle: bool,
             stop: threading.Event | None) -> int:
        """Recompress a batch (a few chunks only while the foreground stays busy); returns how many
        chunks of ``batch`` were handled."""
        if throttle and not self._yield_to_foreground(stop):
            batch = batch[:BUSY_BATCH]
        started = time.monotonic()
        done = relocate(self._meta, self._chunks, [Chunk(*item) for item in batch], spec, tier, self._pool)
        s = self.status
        if tier == Tier.COLD:
            s.cooled += done.moved
            s.bytes_saved += done.bytes_saved
            s.queue -= len(batch)
        else:
            s.promoted += done.moved
        s.raced += done.raced
        s.damaged += len(done.damaged)
        if throttle and self._budget > 0:
            raw = sum(e.raw_len for _i, _x, e in batch)
            pause = raw / self._budget - (time.monotonic() - started)
            if pause > 0 and stop is not None:
                stop.wait(pause)
        return len(batch)

    def _yield_to_foreground(self, stop: threading.Event | None) -> bool:
        """Wait until the foreground has been idle for IDLE_SECONDS, at most MAX_DEFER_SECONDS;
        False if it is still busy."""
        deadline = time.monotonic() + MAX_DEFER_SECONDS
        while self._tracker.now() - self._tracker.last_access < IDLE_SECONDS:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return False
            time.sleep(IDLE_SECONDS / 4)
        return True

    # -- the background thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cooler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        _lower_priority()
        next_pass = time.monotonic() + self._interval
        while not self._stop.wait(min(FLUSH_SECONDS, max(0.0, next_pass - time.monotonic()))):
            try:
                if time.monotonic() >= next_pass:
                    self.cool(throttle=True, stop=self._stop)
                    next_pass = time.monotonic() + self._interval
                else:
                    self._tracker.flush()
            except Exception:  # a full disk, a damaged store: log it, try again next time
                log.exception("cooler pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown()
        self.status.state = "stopped"
        self._tracker.flush()
