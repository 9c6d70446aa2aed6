"""Running an admin command against a volume, mounted or not.

A mounted volume's daemon holds the store lock and its caches: the command goes to it over the
control socket (fs/control.py). An unmounted store is opened here, under its lock, with the same
parts the daemon builds, and the same code runs in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from thermofs.fs.control import Target, call, resolve_target
from thermofs.fs.mount import MountOptions, Parts, mounted_store, open_volume
from thermofs.fs.store import read_config
from thermofs.tools.compact import CompactReport
from thermofs.tools.compact import compact as compact_store
from thermofs.tools.offline import lock_store


def target_of(path: Path) -> Target:
    target = resolve_target(path.resolve(), mounted_store)
    read_config(target.store)  # a clear error for a directory that is no store
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


@contextmanager
def progress_bar(desc: str, unit: str = "chunk") -> Iterator[Callable[[int, int], None]]:
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


def cool(path: Path, older_than: float | None, throttle: bool, show_progress: bool) -> dict[str, Any]:
    """One cooling pass (``thermofs cool``); returns the pass's figures."""
    target = target_of(path)
    with progress_bar("cooling") as bar:
        report = bar if show_progress else (lambda done, total: None)
        if target.mounted:
            result: dict[str, Any] = call(target.store, "cool", {"older_than": older_than, "throttle": throttle},
                                          on_progress=lambda p: report(p["done"], p["total"]))
            return result
        with offline(target.store) as parts:
            return parts.cooler.cool(older_than, progress=report, throttle=throttle).as_dict()


def compact(path: Path, min_garbage: float, stop: threading.Event) -> CompactReport:
    """``thermofs compact``: offline under the lock, or by the mounted volume's daemon."""
    target = target_of(path)
    with progress_bar("compacting", "B") as bar:
        if target.mounted:
            result = call(target.store, "compact", {"min_garbage": min_garbage},
                          on_progress=lambda p: bar(p["done"], p["total"]))
            return CompactReport(**result)
        with offline(target.store) as parts:
            chunks = parts.volume.chunks
            return compact_store(parts.meta, parts.segments, chunks.table, chunks.chunk_size, bar, stop,
                                 min_garbage)


def train(path: Path, budget: float, model: bool) -> dict[str, Any]:
    """``thermofs train``: dictionaries (and a learned model) from the volume's own chunks."""
    target = target_of(path)
    with progress_bar("training", "‰") as bar:
        if target.mounted:
            result: dict[str, Any] = call(target.store, "train", {"budget": budget, "model": model},
                                          on_progress=lambda p: bar(p["done"], p["total"]))
            return result
        with offline(target.store) as parts:
            report = parts.trainer.train(budget, lambda f: bar(int(1000 * f), 1000), model=model)
            return asdict(report)
