"""Running an admin command against a volume, mounted or not.

A mounted volume's daemon holds the store lock and its caches: the command goes to it over the
control socket (fs/control.py). An unmounted store is opened here, under its lock, with the same
parts the daemon builds, and the same code runs in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.daemon.control import Target, call
from thermofs.daemon.handlers import OPERATIONS
from thermofs.daemon.lock import lock_store
from thermofs.daemon.mountinfo import mounted_store, store_mountpoints
from thermofs.daemon.options import MountOptions
from thermofs.fs.compaction import CompactReport
from thermofs.fs.errors import StoreError, UnusableTarget
from thermofs.fs.store import StoreLock, read_config
from thermofs.progress import Progress


def target_of(path: Path) -> Target:
    """STORE or MOUNTPOINT -> the store, mounted or not (mounted: a daemon serves it; a store whose
    lock an exiting daemon or an admin command holds is not, lock_store says what it is). Only a
    thermofs mount counts as a mountpoint: a store directory may itself be the mount point of another
    filesystem."""
    resolved = path.resolve()
    store = mounted_store(resolved)
    if store is not None:
        target = Target(store, True)
    else:
        # Mounted, and its daemon alive: a daemon that crashed leaves the mount (ENOTCONN) and no lock.
        mounted = bool(store_mountpoints(resolved)) and StoreLock(resolved).is_held_elsewhere()
        target = Target(resolved, mounted)
    try:
        read_config(target.store)  # a clear error for a directory that is no store
    except StoreError as e:
        raise UnusableTarget(str(e)) from None
    return target


@contextmanager
def offline(store: Path) -> Iterator[OpenVolume]:
    """The parts of an unmounted store, under its lock (a mount meanwhile is refused)."""
    lock = lock_store(store)
    try:
        # Durable commits: an admin command commits in large batches, and no state stays pinned.
        parts = open_volume(store, options=MountOptions(cooler=False, sync_close=True))
        try:
            yield parts
        finally:
            parts.close()
    finally:
        lock.release()


@contextmanager
def progress_bar(desc: str, unit: str = "chunk") -> Iterator[Progress]:
    """A progress callback (done, total) drawn on stderr by tqdm."""
    # disable=None: drawn on a terminal only, so scripts and logs get the result alone.
    bar = tqdm(desc=desc, unit=unit, total=0, leave=False, dynamic_ncols=True, disable=None,
               unit_scale=unit == "B")

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _run(target: Target, op: str, args: dict[str, Any], desc: str, unit: str = "chunk",
         show_progress: bool = True, stop: threading.Event | None = None) -> dict[str, Any]:
    """Run an admin operation on the volume of ``target``: by its daemon if mounted, else here."""
    with progress_bar(desc, unit) as bar:
        report = bar if show_progress else (lambda done, total: None)
        if target.mounted:
            result: dict[str, Any] = call(target.store, op, args,
                                          on_progress=lambda p: report(p["done"], p["total"]))
            return result
        with offline(target.store) as opened:
            return OPERATIONS[op](opened, args, report, stop)


def cool(target: Target, older_than: float | None, throttle: bool, show_progress: bool) -> dict[str, Any]:
    """One cooling pass (``thermofs cool``); returns the pass's figures."""
    return _run(target, "cool", {"older_than": older_than, "throttle": throttle}, "cooling",
                show_progress=show_progress)


def compact(target: Target, min_garbage: float, stop: threading.Event) -> CompactReport:
    """``thermofs compact``: offline under the lock (``stop`` ends it after a batch), or by the
    mounted volume's daemon."""
    return CompactReport(**_run(target, "compact", {"min_garbage": min_garbage}, "compacting", "B", stop=stop))


def sync(target: Target) -> dict[str, Any]:
    """``thermofs sync``: a sync point of the mounted volume now (an unmounted store is opened, made
    whole after a crash, synced and closed)."""
    return _run(target, "sync", {}, "syncing", show_progress=False)


def train(target: Target, budget: float, model: bool) -> dict[str, Any]:
    """``thermofs train``: dictionaries (and learned models per kind) from the volume's own chunks."""
    return _run(target, "train", {"budget": budget, "model": model}, "training", "‰")
