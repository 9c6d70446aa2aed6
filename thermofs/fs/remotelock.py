"""One mount of a bucket at a time: the lock object (docs/FORMAT.md, "Object store layout").

``lock`` in the volume's prefix is a JSON object naming its holder (a random id per mount, the host,
the pid, the local store directory) and the time its lease ends. A mount takes it if it is absent,
expired, or its own store's on this host (the local flock on the store proves that holder dead),
renews it every LEASE_SECONDS / 3 while mounted and deletes it at unmount. A lock of a daemon that
died on another machine blocks mounts until its lease ends, or until ``--force-unlock``.

S3 offers no compare-and-swap on every server, so two mounts starting within one round trip of each
other could both take the lock: the lease is read back after it is written, and a mount that finds
another holder there gives up; a mount that finds at a renewal that another took the lock over logs
an error and stops renewing.
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

    def _current(self) -> dict[str, Any] | None:
        try:
            raw = json.loads(self._backend.get(LOCK_KEY))
        except ObjectMissing:
            return None
        except ValueError:
            return {}  # damaged: treated as expired
        return raw if isinstance(raw, dict) else {}

    def _write(self) -> None:
        body = {**self._me, "lease_until": time.time() + self._lease}
        self._backend.put(LOCK_KEY, json.dumps(body).encode())

    def check(self) -> None:
        """BucketLocked if another mount holds the lock now (checked before a daemon starts)."""
        held = self._current()
        if held and not self._mine_stale(held) and float(held.get("lease_until", 0)) > time.time():
            raise BucketLocked(self._refusal(held))

    def acquire(self, force: bool = False) -> None:
        held = None if force else self._current()
        if held and held.get("holder") != self._me["holder"] and not self._mine_stale(held) \
                and float(held.get("lease_until", 0)) > time.time():
            raise BucketLocked(self._refusal(held))
        if force:
            log.warning("--force-unlock: the lock object of %s was broken", self._url)
        self._write()
        held = self._current()
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
                held = self._current()
                if held and held.get("holder") != self._me["holder"]:
                    log.error("the lock object of %s was taken over (host %s, pid %s, store %s: --force-unlock?); "
                              "two mounts of one volume delete what the other needs: unmount one", self._url,
                              held.get("host"), held.get("pid"), held.get("store"))
                    return
                self._write()
            except Exception as e:  # unreachable: tried again; the lease outlasts a few misses
                log.warning("renewing the lock object of %s failed: %s", self._url, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            held = self._current()
            if held is not None and held.get("holder") == self._me["holder"]:
                self._backend.delete(LOCK_KEY)
        except Exception as e:
            log.warning("releasing the lock object of %s failed (it lapses in %.0f s): %s", self._url,
                        self._lease, e)
