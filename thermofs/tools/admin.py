"""Running an admin command against a volume, mounted or not.

A mounted volume's daemon holds the store lock and its caches: the command goes to it over the
control socket (fs/control.py). An unmounted store is opened here, under its lock, with the same
parts the daemon builds, and the same code runs in this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from thermofs.fs.control import Handler, Send, Target, UnusableTarget, call
from thermofs.fs.errors import StoreError
from thermofs.fs.mount import MountOptions, Parts, mounted_store, open_volume, store_mountpoints
from thermofs.fs.store import StoreLock, read_config
from thermofs.tools.compact import MIN_GARBAGE_SHARE, CompactReport
from thermofs.tools.compact import compact as compact_store
from thermofs.tools.offline import lock_store


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
def offline(store: Path) -> Iterator[Parts]:
    """The parts of an unmounted store, under its lock (a mount meanwhile is refused)."""
    lock = lock_store(store)
    try:
        parts = open_volume(store, options=MountOptions(cooler=False))
        try:
            yield parts
        finally:
            parts.close()
    finally:
        lock.release()


Progress = Callable[[int, int], None]


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


# The admin operations: one body each, run offline on the parts this process opened, or by a mounted
# volume's daemon on its own parts (``daemon_handlers``). Arguments are JSON values, as they cross
# the control socket; the result is a JSON object.
Operation = Callable[[Parts, dict[str, Any], Progress, threading.Event | None], dict[str, Any]]


def _cool(parts: Parts, args: dict[str, Any], progress: Progress, stop: threading.Event | None) -> dict[str, Any]:
    older = args.get("older_than")
    return parts.cooler.cool(None if older is None else float(older), progress=progress, stop=stop,
                             throttle=bool(args.get("throttle"))).as_dict()


def _compact(parts: Parts, args: dict[str, Any], progress: Progress,
             stop: threading.Event | None) -> dict[str, Any]:
    chunks = parts.volume.chunks
    return asdict(compact_store(parts.meta, parts.segments, chunks.table, chunks.chunk_size, progress, stop,
                                float(args.get("min_garbage", MIN_GARBAGE_SHARE))))


def _train(parts: Parts, args: dict[str, Any], progress: Progress, stop: threading.Event | None) -> dict[str, Any]:
    report = parts.trainer.train(float(args.get("budget", 60.0)), lambda f: progress(int(1000 * f), 1000),
                                 model=bool(args.get("model", True)))
    return asdict(report)


OPERATIONS: dict[str, Operation] = {"cool": _cool, "compact": _compact, "train": _train}


def daemon_handlers(parts: Parts) -> dict[str, Handler]:
    """What ``thermofs stats|cool|compact|train`` may ask of a mounted volume's daemon."""

    def serve(op: Operation) -> Handler:
        return lambda args, send: op(parts, args, lambda done, total: send({"done": done, "total": total}), None)

    return {"stats": live_figures(parts), **{name: serve(op) for name, op in OPERATIONS.items()}}


def live_figures(parts: Parts) -> Handler:
    """The daemon's side of ``stats``: live figures, with rates per second since the previous request
    (at most a minute back) or since the mount, so ``stats --watch`` shows the last second. The
    answer says which (``rates_since``) and over how long (``rate_span_s``), and carries the policy
    in force (the store's, with the mount's -o overrides)."""
    started = time.monotonic()
    previous: list[tuple[float, dict[str, Any]]] = []  # the sample of the previous request, if any

    def live(args: dict[str, Any], send: Send) -> dict[str, Any]:
        now, current = time.monotonic(), asdict(parts.volume.live_stats())
        then, before, since = started, {k: 0 for k in current}, "mount"
        if previous and 0.2 <= now - previous[0][0] <= 60:
            (then, before), since = previous[0], "previous request"
        previous[:] = [(now, current)]
        span = max(now - then, 1e-3)
        rates = {f"{k}_per_s": (current[k] - before[k]) / span
                 for k in ("read_bytes", "write_bytes", "read_ops", "write_ops")}
        lookups = current["cache_hits"] + current["cache_misses"]
        return {**current, **rates, "rates_since": since, "rate_span_s": span, "uptime_s": now - started,
                "cache_hit_rate": current["cache_hits"] / lookups if lookups else 0.0,
                "cooler": parts.cooler.status.as_dict(), "policy": parts.tracker.params.as_dict()}

    return live


def _run(target: Target, op: str, args: dict[str, Any], desc: str, unit: str = "chunk",
         show_progress: bool = True, stop: threading.Event | None = None) -> dict[str, Any]:
    """Run an admin operation on the volume of ``target``: by its daemon if mounted, else here."""
    with progress_bar(desc, unit) as bar:
        report = bar if show_progress else (lambda done, total: None)
        if target.mounted:
            result: dict[str, Any] = call(target.store, op, args,
                                          on_progress=lambda p: report(p["done"], p["total"]))
            return result
        with offline(target.store) as parts:
            return OPERATIONS[op](parts, args, report, stop)


def cool(target: Target, older_than: float | None, throttle: bool, show_progress: bool) -> dict[str, Any]:
    """One cooling pass (``thermofs cool``); returns the pass's figures."""
    return _run(target, "cool", {"older_than": older_than, "throttle": throttle}, "cooling",
                show_progress=show_progress)


def compact(target: Target, min_garbage: float, stop: threading.Event) -> CompactReport:
    """``thermofs compact``: offline under the lock (``stop`` ends it after a batch), or by the
    mounted volume's daemon."""
    return CompactReport(**_run(target, "compact", {"min_garbage": min_garbage}, "compacting", "B", stop=stop))


def train(target: Target, budget: float, model: bool) -> dict[str, Any]:
    """``thermofs train``: dictionaries (and a learned model) from the volume's own chunks."""
    return _run(target, "train", {"budget": budget, "model": model}, "training", "‰")
