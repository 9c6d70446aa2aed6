"""Taking a store for an offline admin command (fsck, compact): its lock, with clear errors."""

from __future__ import annotations

from pathlib import Path

from thermofs.fs.control import UnusableTarget
from thermofs.fs.errors import StoreError
from thermofs.fs.store import StoreLock


class StoreInUse(UnusableTarget):
    """The store is locked by another process: mounted, or another admin command runs on it."""


def lock_store(store: Path) -> StoreLock:
    """The store's lock, held: a mounted (or otherwise busy) store raises StoreInUse, so does a store
    this user may not write to."""
    lock = StoreLock(store)
    try:
        lock.acquire()
    except StoreError as e:  # the only StoreError acquire() raises
        raise StoreInUse(str(e)) from None
    except PermissionError as e:
        raise StoreInUse(f"permission denied: {store} must be writable by this user to be locked "
                         f"({e.strerror}: {e.filename})") from e
    return lock
