"""The one place where the parts of a volume are built and wired together (as s3ql's mount.py and JuiceFS's
cmd/ do): for the mounted daemon and for offline admin commands alike. Also ``make_volume`` (mkfs with
the policy checked)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from thermofs.codecs import CodecSpec, CodecTable
from thermofs.codecs.base import MODEL
from thermofs.daemon.options import MountOptions
from thermofs.fs.cache import DEFAULT_CACHE_BYTES, ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.durability import Durability, restore
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import MetaStore
from thermofs.fs.reclaim import Reclaimer
from thermofs.fs.recovery import mark_closed, recover
from thermofs.fs.resources import load_resources
from thermofs.fs.segments import SegmentStore
from thermofs.fs.store import StoreConfig, mkfs, open_meta, read_config, secure
from thermofs.fs.upgrade import upgrade
from thermofs.fs.volume import DEFAULT_DIRTY_BYTES, Volume
from thermofs.policy.cooler import Cooler
from thermofs.policy.temperature import PolicyParams
from thermofs.policy.tracker import Tracker
from thermofs.policy.training import ModelTrainer, Trainer
from thermofs.progress import Progress

log = logging.getLogger("thermofs.assembly")


@dataclass
class OpenVolume:
    """Everything a mounted (or offline-opened) volume owns, closed in reverse order."""

    store: Path
    config: StoreConfig
    meta: MetaStore
    segments: SegmentStore
    pool: ThreadPoolExecutor
    volume: Volume
    tracker: Tracker
    cooler: Cooler
    trainer: Trainer
    reclaimer: Reclaimer
    durability: Durability | None  # None when read-only

    def close(self) -> None:
        """Close every part, last built first. A part that fails to close (the tracker cannot write
        its hints into damaged metadata) is logged and the others still close; the first failure
        is raised at the end."""
        failed: Exception | None = None
        for step in (self.cooler.stop, self.reclaimer.stop, self.volume.close, self.tracker.flush,
                     self._mark_closed, self._last_sync_point, self.pool.shutdown, self.segments.close,
                     self.meta.close):
            if step == self._mark_closed and failed is not None:
                continue  # not cleanly closed: the next open recovers
            try:
                step()
            except Exception as e:
                log.exception("closing the volume: %s failed", step.__qualname__)
                failed = failed or e
        if failed is not None:
            raise failed

    def _mark_closed(self) -> None:
        if not self.meta.readonly:
            mark_closed(self.meta)

    def _last_sync_point(self) -> None:
        if self.durability is not None:
            self.durability.close()


def open_volume(store: Path, cache_bytes: int = DEFAULT_CACHE_BYTES, dirty_bytes: int = DEFAULT_DIRTY_BYTES,
                options: MountOptions | None = None, clock: Callable[[], float] = time.time) -> OpenVolume:
    """Build every part of a volume and recover it after a crash (the cooler and the reclaimer are
    built, not started). The caller holds the lock.
    ``clock`` drives the policy (a simulated one in tests and replays)."""
    options = options or MountOptions(cache_bytes, dirty_bytes)
    readonly, durable = options.readonly, options.sync_close
    config = read_config(store)
    if not readonly:
        secure(store)
        config = upgrade(store, config)  # logged; nothing to do for a store of the current format
    restore(store, store / "segments", readonly)  # after a power loss: back to the last sync point
    meta, identity = open_meta(store, config, readonly=readonly, durable_commits=durable)
    segments = SegmentStore(store / "segments", config.volume_id, identity.headers_from)
    durability = None if readonly else Durability(meta, segments, store / "meta.lmdb", durable,
                                                  options.commit_seconds)
    reclaimer = Reclaimer(meta, segments, durability)
    if durability is not None:
        durability.listen(reclaimer)

    def committed(txnid: int, freed: list[tuple[int, int, int]]) -> None:
        """After every commit: the frames it freed are punched once it is synced, and a segment may
        now be all dead."""
        if durability is not None:
            durability.committed(txnid, freed)
        if freed:
            reclaimer.freed()

    meta.on_commit = committed
    resources = load_resources(meta)
    table = CodecTable(resources)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="encode")
    hot = table.parse(config.hot_codec)
    chunks = ChunkStore(segments, table, hot, config.chunk_size, durable_commits=durable)
    params = policy_of(config, options.policy)
    tracker = Tracker(meta, params, clock)
    volume = Volume(meta, chunks, ChunkCache(options.cache_bytes), pool, options.dirty_bytes, tracker,
                    reclaimer, durability)
    if durability is not None:
        durability.sync()  # the state the volume opens at is the first sync point
        recover(meta, segments)  # the explicit, logged step after a crash (fs/recovery.py)
    slow = frozenset(cid for cid, codec in table.by_id.items() if codec.cold_role == MODEL)  # re-heated: re-encoded hot
    trainer = Trainer(meta, chunks, resources, model_trainer(table))
    cold = table.parse(config.cold_codec)
    cooler = Cooler(chunks, meta, tracker, cold, hot, slow, options.cool_budget, options.cool_interval,
                    prepare=preparation(trainer, cold))
    return OpenVolume(store, config, meta, segments, pool, volume, tracker, cooler, trainer, reclaimer,
                      durability)


def preparation(trainer: Trainer, cold: CodecSpec) -> Callable[[], object] | None:
    """What the cooler does before a pass: train the volume's first dictionaries for a cold spec that
    uses them and, for the cold path, its first learned model once it holds enough data."""
    if not uses_dictionaries(cold):
        return None
    if not cold.best:
        return trainer.ensure_dictionaries

    def prepare() -> None:
        trainer.ensure_dictionaries()
        trainer.ensure_model()

    return prepare


def uses_dictionaries(spec: CodecSpec) -> bool:
    """Does this cold spec encode with the volume's trained dictionaries?"""
    return spec.best or spec.codec.name == "dict"


def model_trainer(table: CodecTable) -> ModelTrainer | None:
    """The learned codec's trainer, if the table has that codec."""
    if "learned" not in table.by_name:
        return None

    def train(samples: list[bytes], base: bytes | None, budget: float, progress: Progress | None) -> bytes:
        # numba and torch load only to train: importing the trainer at mount took 0.2-0.3 s.
        from thermofs.codecs.learned.train import train_model

        return train_model(samples, base, budget, progress).blob

    return train


def make_volume(store: Path, config: StoreConfig) -> StoreConfig:
    """``thermofs mkfs``: the policy checked (StoreError naming a bad parameter), then the store made
    (fs.store.mkfs checks the chunk size and the codecs)."""
    policy_of(config)
    return mkfs(store, config)


def policy_of(config: StoreConfig, overrides: dict[str, str] | None = None) -> PolicyParams:
    """The hot/cold policy of a store (its mkfs parameters, then a mount's -o overrides)."""
    try:
        return PolicyParams().with_options({**config.policy, **(overrides or {})})
    except ValueError as e:
        raise StoreError(str(e)) from None
