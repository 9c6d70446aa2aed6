"""One mount of a bucket at a time: the lock object (docs/FORMAT.md, "Object store layout").

``lock`` in the volume's prefix is a JSON object naming its holder (a random id per mount, the host,
the pid, the local store directory) and the time its lease ends. A mount takes it if it is absent,
expired, or its own store's on this host (the local flock on the store proves that holder dead),
renews it every LEASE_SECONDS / 3 while mounted and deletes it at unmount. A lock of a daemon that
died on another machine blocks mounts until its lease ends, or until ``--force-unlock``.

Every write of the lock is a compare-and-swap (``ObjectStore.put_if``): it names the lock it read
(its entity tag, or none), so of two mounts that read the same lock and both decide to take it, only
the first write lands and the other gives up; a renewal that finds the lock changed since its last
write stops renewing and says who took it over. For servers that ignore conditional writes, the lock
is also read back after it is taken.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from thermofs.fs.errors import UnusableTarget
from thermofs.fs.objectstore import LOCK_KEY, ObjectMissing, ObjectStore

log = logging.getLogger("thermofs.remotelock")

# A lease long enough to outlast a few failed renewals (each retried for the store's timeout), short
# enough that a dead machine's lock lapses within minutes.
LEASE_SECONDS = 120.0
# Reads and conditional writes a mount tries before it gives up on a lock other writers keep changing.
ACQUIRE_ATTEMPTS = 5


class BucketLocked(UnusableTarget):
    """Another mount holds the volume's lock object."""


class RemoteLock:
    def __init__(self, backend: ObjectStore, url: str, store: str, lease: float = LEASE_SECONDS) -> None:
        self._backend = backend
        self._url = url
        self._lease = lease
        self._me = {"holder": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "store": store}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tag: str | None = None  # the entity tag of the lock as we last wrote it

    def _current(self) -> tuple[dict[str, Any] | None, str | None]:
        """The lock as it is now, and its entity tag: (None, None) if there is none; a damaged one
        reads as an empty dict (expired)."""
        try:
            raw, tag = self._backend.get_tagged(LOCK_KEY)
        except ObjectMissing:
            return None, None
        try:
            held = json.loads(raw)
        except ValueError:
            return {}, tag
        return (held if isinstance(held, dict) else {}), tag

    def _write(self, tag: str | None) -> str | None:
        """Write our lease over the lock whose tag is ``tag`` (None: over no lock); its new tag, or
        None if the lock changed since it was read."""
        body = {**self._me, "lease_until": time.time() + self._lease}
        return self._backend.put_if(LOCK_KEY, json.dumps(body).encode(), tag)

    def _live_other(self, held: dict[str, Any] | None) -> bool:
        """Another mount's lock whose lease has not ended."""
        if not held:
            return False
        return held.get("holder") != self._me["holder"] and not self._mine_stale(held) \
            and float(held.get("lease_until", 0)) > time.time()

    def check(self) -> None:
        """BucketLocked if another mount holds the lock now (checked before a daemon starts)."""
        held, _tag = self._current()
        if self._live_other(held):
            raise BucketLocked(self._refusal(held or {}))

    def acquire(self, force: bool = False) -> None:
        """Take the lock: BucketLocked if another mount holds it (unless ``force``) or takes it first."""
        if force:
            log.warning("--force-unlock: the lock object of %s is broken", self._url)
        for _attempt in range(ACQUIRE_ATTEMPTS):
            held, tag = self._current()
            if not force and self._live_other(held):
                raise BucketLocked(self._refusal(held or {}))
            self._tag = self._write(tag)
            if self._tag is not None:
                break
            # Another write came between our read and ours: read again (it may be a mount that took it).
        else:
            raise BucketLocked(f"{self._url}: the lock object kept changing while this mount tried to take it")
        held, self._tag = self._current()
        if held is not None and held.get("holder") != self._me["holder"]:
            raise BucketLocked(self._refusal(held))

    def _mine_stale(self, held: dict[str, Any]) -> bool:
        """A lock of this store on this host: its holder died (we hold the store's flock)."""
        return held.get("host") == self._me["host"] and held.get("store") == self._me["store"]

    def _refusal(self, held: dict[str, Any]) -> str:
        left = float(held.get("lease_until", 0)) - time.time()
        return (f"{self._url} is mounted elsewhere: host {held.get('host', '?')}, pid {held.get('pid', '?')}, "
                f"store {held.get('store', '?')} (its lease ends in {max(left, 0):.0f} s unless renewed); "
                f"unmount it there, or if that machine is gone, mount with --force-unlock")

    def start(self) -> None:
        """Renew the lease every third of it while mounted."""
        self._thread = threading.Thread(target=self._loop, name="lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                if not self._renew():
                    return
            except Exception as e:  # unreachable: tried again; the lease outlasts a few misses
                log.warning("renewing the lock object of %s failed: %s", self._url, e)

    def _renew(self) -> bool:
        """Extend the lease over the lock we wrote last; False (and an error in the log) if another
        mount took it over meanwhile."""
        try:
            tag = self._write(self._tag)
        except ObjectMissing:  # deleted under us (a conditional write to a missing object)
            tag = None
        if tag is None:
            held, current = self._current()
            if held is not None and held.get("holder") != self._me["holder"]:
                log.error("the lock object of %s was taken over (host %s, pid %s, store %s: --force-unlock?); "
                          "two mounts of one volume delete what the other needs: unmount one", self._url,
                          held.get("host"), held.get("pid"), held.get("store"))
                return False
            tag = self._write(current)  # ours still (an earlier try landed), or gone: write it again
        if tag is not None:
            self._tag = tag
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            held, _tag = self._current()
            if held is not None and held.get("holder") == self._me["holder"]:
                self._backend.delete(LOCK_KEY)
        except Exception as e:
            log.warning("releasing the lock object of %s failed (it lapses in %.0f s): %s", self._url,
                        self._lease, e)
