"""What a mounted volume's daemon answers on its control socket (the daemon side of ``thermofs stats``,
``cool``, ``compact`` and ``train``), and the same operations for an offline store: one body each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from thermofs.daemon.assembly import OpenVolume
from thermofs.daemon.control import Handler, Send
from thermofs.fs.compaction import MIN_GARBAGE_SHARE
from thermofs.fs.compaction import compact as compact_store
from thermofs.progress import Progress

# The admin operations: one body each, run offline on the parts this process opened, or by a mounted
# volume's daemon on its own parts (``daemon_handlers``). Arguments are JSON values, as they cross
# the control socket; the result is a JSON object.
Operation = Callable[[OpenVolume, dict[str, Any], Progress, threading.Event | None], dict[str, Any]]


def _cool(opened: OpenVolume, args: dict[str, Any], progress: Progress, stop: threading.Event | None) -> dict[str, Any]:
    older = args.get("older_than")
    return opened.cooler.cool(None if older is None else float(older), progress=progress, stop=stop,
                             throttle=bool(args.get("throttle"))).as_dict()


def _compact(opened: OpenVolume, args: dict[str, Any], progress: Progress,
             stop: threading.Event | None) -> dict[str, Any]:
    return asdict(compact_store(opened.meta, opened.volume.chunks, progress, stop,
                                float(args.get("min_garbage", MIN_GARBAGE_SHARE)), opened.durability))


def _train(opened: OpenVolume, args: dict[str, Any], progress: Progress,
           stop: threading.Event | None) -> dict[str, Any]:
    report = opened.trainer.train(float(args.get("budget", 60.0)), progress, model=bool(args.get("model", True)))
    return asdict(report)


def _sync(opened: OpenVolume, args: dict[str, Any], progress: Progress, stop: threading.Event | None) -> dict[str, Any]:
    """A sync point now: everything committed becomes durable against a power loss; with an object
    store, also a metadata backup (the active segment sealed and uploaded first): restorable elsewhere."""
    durability = opened.durability
    txnid = durability.sync() if durability is not None else None
    remote = opened.remote
    if remote is None or remote.backups is None:
        return {"synced_txnid": txnid}
    report = remote.backups.backup(remote.wait)
    return {"synced_txnid": txnid, "backup_generation": report.generation if report is not None else None,
            "upload_waiting_bytes": remote.segments.pending_bytes()}


OPERATIONS: dict[str, Operation] = {"cool": _cool, "compact": _compact, "train": _train, "sync": _sync}


def daemon_handlers(opened: OpenVolume) -> dict[str, Handler]:
    """What ``thermofs stats|cool|compact|train`` may ask of a mounted volume's daemon."""

    def serve(op: Operation) -> Handler:
        return lambda args, send: op(opened, args, lambda done, total: send({"done": done, "total": total}), None)

    return {"stats": live_figures(opened), **{name: serve(op) for name, op in OPERATIONS.items()}}


def live_figures(opened: OpenVolume) -> Handler:
    """The daemon's side of ``stats``: live figures, with rates per second since the previous request
    (at most a minute back) or since the mount, so ``stats --watch`` shows the last second. The
    answer says which (``rates_since``) and over how long (``rate_span_s``), and carries the policy
    in force (the store's, with the mount's -o overrides)."""
    started = time.monotonic()
    previous: list[tuple[float, dict[str, Any]]] = []  # the sample of the previous request, if any

    def live(args: dict[str, Any], send: Send) -> dict[str, Any]:
        now, current = time.monotonic(), asdict(opened.volume.live_stats())
        then, before, since = started, dict.fromkeys(current, 0), "mount"
        if previous and 0.2 <= now - previous[0][0] <= 60:
            (then, before), since = previous[0], "previous request"
        previous[:] = [(now, current)]
        span = max(now - then, 1e-3)
        rates = {f"{k}_per_s": (current[k] - before[k]) / span
                 for k in ("read_bytes", "write_bytes", "read_ops", "write_ops")}
        lookups = current["cache_hits"] + current["cache_misses"]
        return {**current, **rates, "rates_since": since, "rate_span_s": span, "uptime_s": now - started,
                "cache_hit_rate": current["cache_hits"] / lookups if lookups else 0.0,
                "cooler": opened.cooler.status.as_dict(), "policy": opened.tracker.params.as_dict(),
                "remote": opened.remote.segments.remote_stats() if opened.remote is not None else None}

    return live


