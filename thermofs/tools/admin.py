"""Running an admin command against a volume, mounted or not.

A mounted volume's daemon holds the store lock and its caches: the command goes to it over the
control socket (fs/control.py). An unmounted store is opened here, under its lock, with the same
parts the daemon builds, and the same code runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from thermofs.fs.control import Target, call, resolve_target
from thermofs.fs.mount import MountOptions, Parts, mounted_store, open_volume
from thermofs.fs.store import StoreLock, read_config


def target_of(path: Path) -> Target:
    target = resolve_target(path.resolve(), mounted_store)
    read_config(target.store)  # a clear error for a directory that is no store
    return target


@contextmanager
def offline(store: Path) -> Iterator[Parts]:
    """The parts of an unmounted store, under its lock (a mount meanwhile is refused)."""
    lock = StoreLock(store)
    lock.acquire()
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
    bar = tqdm(desc=desc, unit=unit, total=0, leave=True, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

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
