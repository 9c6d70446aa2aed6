"""The one place where the parts of a volume are built and wired together (as s3ql's mount.py and JuiceFS's
cmd/ do): for the mounted daemon and for offline admin commands alike. Also ``make_volume`` (mkfs with
the policy checked)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from thermofs.codecs import CodecSpec, CodecTable
from thermofs.codecs.base import MODEL
from thermofs.daemon.options import MountOptions
from thermofs.fs.backup import MetadataBackups, restore_store
from thermofs.fs.cache import DEFAULT_CACHE_BYTES, ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.diskcache import DiskCache
from thermofs.fs.durability import Durability, restore
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import Identity, MetaStore
from thermofs.fs.objectstore import CONFIG_KEY, SEGMENTS_PREFIX, BackendError, BackendSpec, ObjectStore, parse_url
from thermofs.fs.reclaim import Reclaimer
from thermofs.fs.recovery import mark_closed, recover
from thermofs.fs.remotelock import RemoteLock
from thermofs.fs.resources import load_resources
from thermofs.fs.s3 import S3Store
from thermofs.fs.segments import SegmentStore
from thermofs.fs.store import StoreConfig, mkfs, open_meta, read_config, secure, write_config
from thermofs.fs.tiered import TieredSegments, remote_segments
from thermofs.fs.upgrade import upgrade
from thermofs.fs.volume import DEFAULT_DIRTY_BYTES, Volume
from thermofs.policy.cooler import Cooler
from thermofs.policy.temperature import PolicyParams
from thermofs.policy.tracker import Tracker
from thermofs.policy.training import KindModel, ModelTrainer, Trainer
from thermofs.progress import Progress

log = logging.getLogger("thermofs.assembly")

# At unmount, the uploads still under way are waited for this many times the remote timeout, with
# their progress in the log; what is left then stays local and is uploaded by the next mount.
UNMOUNT_WAIT_FACTOR = 5
# mkfs, restore and the check before a daemon starts give up on an unreachable store this soon.
CHECK_TIMEOUT = 15.0


@dataclass
class RemoteParts:
    """The object store side of a volume (fs/tiered.py): its lock, its uploads, its backups."""

    backend: ObjectStore
    spec: BackendSpec
    segments: TieredSegments
    lock: RemoteLock | None  # None when read-only
    backups: MetadataBackups | None
    wait: float

    def finish(self) -> None:
        """After the segments closed (the active one sealed): wait for the uploads (progress in the log),
        make the last metadata backup, stop, say what is left, release the lock object."""
        if self.backups is not None:
            self.backups.stop()
            try:
                if self.backups.backup(self.wait, say=lambda text: log.info("unmounting: %s", text)) is None:
                    log.warning("unmounting: %s", self.segments.leftover_message())
            except Exception as e:
                log.warning("the last metadata backup failed (the previous one stays): %s", e)
        self.segments.stop_uploads()
        if self.segments.pending():
            log.warning("unmounting: %s", self.segments.leftover_message())
        if self.lock is not None:
            self.lock.release()


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
    remote: RemoteParts | None = None  # with an object store backend

    def close(self) -> None:
        """Close every part, last built first. A part that fails to close (the tracker cannot write
        its hints into damaged metadata) is logged and the others still close; the first failure
        is raised at the end."""
        failed: Exception | None = None
        for step in (self._stop_backups, self.cooler.stop, self.reclaimer.stop, self.volume.close, self.tracker.flush,
                     self._mark_closed, self._last_sync_point, self.pool.shutdown, self.segments.close,
                     self._finish_remote, self.meta.close):
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

    def _stop_backups(self) -> None:
        if self.remote is not None and self.remote.backups is not None:
            self.remote.backups.stop()

    def _finish_remote(self) -> None:
        if self.remote is not None:
            self.remote.finish()

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
    try:
        segments, remote = build_segments(store, config, identity, options)
    except BaseException:
        meta.close()
        raise
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
    if remote is not None and not readonly:
        remote.segments.resume()  # upload what a previous mount left local (logged)
        remote.segments.start()
        remote.backups = MetadataBackups(meta, remote.segments, remote.backend, config_dict(config),
                                         options.backup_seconds)
    slow = frozenset(cid for cid, codec in table.by_id.items() if codec.cold_role == MODEL)  # re-heated: re-encoded hot
    trainer = Trainer(meta, chunks, resources, model_trainer(table))
    cold = table.parse(config.cold_codec)
    cooler = Cooler(chunks, meta, tracker, cold, hot, slow, options.cool_budget, options.cool_interval,
                    prepare=preparation(trainer, cold))
    return OpenVolume(store, config, meta, segments, pool, volume, tracker, cooler, trainer, reclaimer,
                      durability, remote)


def build_segments(store: Path, config: StoreConfig, identity: Identity,
                   options: MountOptions) -> tuple[SegmentStore, RemoteParts | None]:
    """The volume's segments: local, or in its object store (then its lock object is taken, unless
    read-only, and the bucket's segments listed: network steps, logged)."""
    if not config.backend:
        return SegmentStore(store / "segments", config.volume_id, identity.headers_from), None
    spec = BackendSpec.from_dict(config.backend)
    backend = S3Store(spec, options.remote_timeout)
    lock = None
    if not options.readonly:
        lock = RemoteLock(backend, spec.url, str(store))
        lock.acquire(options.force_unlock)
    try:
        remote = remote_segments(backend.list(SEGMENTS_PREFIX))
        log.info("object store %s at %s: %d segments", spec.url, spec.endpoint or "AWS S3", len(remote))
        cache = DiskCache(store / "cache", options.disk_cache_bytes)
        cache.load()
        segments = TieredSegments(store / "segments", config.volume_id, identity.headers_from, backend, cache,
                                  remote)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None:
        lock.start()
    wait = options.remote_timeout * UNMOUNT_WAIT_FACTOR
    return segments, RemoteParts(backend, spec, segments, lock, None, wait)


def config_dict(config: StoreConfig) -> dict[str, object]:
    """thermofs.json's fields (what the bucket keeps to restore from)."""
    return asdict(config)


def check_remote(store: Path, options: MountOptions) -> None:
    """Before a daemon starts: the object store answers and no other mount holds its lock (a clear
    error on the terminal rather than in the log)."""
    config = read_config(store)
    if not config.backend or options.readonly or options.force_unlock:
        return
    spec = BackendSpec.from_dict(config.backend)
    RemoteLock(S3Store(spec, min(options.remote_timeout, CHECK_TIMEOUT)), spec.url, str(store)).check()


def make_remote_volume(store: Path, config: StoreConfig) -> StoreConfig:
    """``mkfs --backend``: the bucket must answer and hold no volume under the prefix; then the local
    store is made and its thermofs.json put into the bucket too (for restore)."""
    spec = BackendSpec.from_dict(config.backend)
    backend = S3Store(spec, CHECK_TIMEOUT)
    if CONFIG_KEY in backend.list(CONFIG_KEY):  # a LIST, not a HEAD: a missing bucket says so in its body
        raise BackendError(f"{spec.url} already holds a thermofs volume (its {CONFIG_KEY}); use "
                           f"'thermofs restore' to use it from here, or choose another prefix")
    made = make_volume(store, config)
    backend.put(CONFIG_KEY, json.dumps(config_dict(made), indent=2).encode())
    return made


def preparation(trainer: Trainer, cold: CodecSpec) -> Callable[[], object] | None:
    """What the cooler does before a pass: train the volume's first dictionaries for a cold spec that
    uses them and, for the cold path, its first learned models once it holds enough data."""
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

    def train(samples: list[bytes], base: Callable[[str], bytes], budget: float,
              progress: Progress | None) -> list[KindModel]:
        # numba and torch load only to train: importing the trainer at mount took 0.2-0.3 s.
        from thermofs.codecs.learned.train import train_per_kind

        return [KindModel(kind, m.blob, m.improves) for kind, m in train_per_kind(samples, base, budget, progress)]

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


def restore_volume(url: str, store: Path, endpoint: str = "", region: str = "") -> dict[str, object]:
    """``thermofs restore``: a working local store in ``store`` from the newest metadata backup in the
    bucket at ``url`` (every segment is then read from the bucket). Returns the backup's header."""
    spec = parse_url(url, endpoint, region)
    backend = S3Store(spec, CHECK_TIMEOUT)

    def make_config(raw: dict[str, object]) -> None:
        try:
            config = StoreConfig(**{**raw, "backend": spec.as_dict()})  # type: ignore[arg-type]
        except TypeError as e:
            raise StoreError(f"the backup's configuration has unknown fields: {e}") from None
        write_config(store, config)
        read_config(store)  # checked as any store's

    return restore_store(backend, spec.url, store, make_config)
