"""Taking a store's lock for a mount or an offline admin command (fsck, compact, cool, train), with clear
errors; and telling whether the holder is a daemon.

A daemon goes on after its volume is unmounted: it writes what it still holds and closes the store,
seconds on a busy volume, and keeps the store lock until it exits. A command that finds the lock
held by such a daemon (no longer mounted) waits for it; a store still mounted, or locked by another
admin command, is "in use" at once.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from thermofs.daemon.mountinfo import store_mountpoints
from thermofs.fs.errors import StoreError, UnusableTarget
from thermofs.fs.store import StoreLock

log = logging.getLogger("thermofs.lock")

# How long a command waits for a daemon to finish after its unmount (flushing a large dirty cache to
# a slow disk takes a while; a daemon that takes longer than this is stuck rather than busy).
DAEMON_EXIT_WAIT = 300.0
POLL_INTERVAL = 0.05
# The daemon's name in /proc/PID/comm (at most 15 bytes). The store lock file names the holder's pid;
# this name tells an admin command that the holder is a daemon (which, once unmounted, is only
# finishing its writes: worth waiting for) rather than another admin command.
DAEMON_NAME = "thermofs-mount"
PR_SET_NAME = 15

Say = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StoreInUse(UnusableTarget):
    """The store is locked by another process: mounted, or another admin command runs on it."""


def lock_holder(store: Path) -> int | None:
    """The pid the store's lock file names (the last process that took the lock)."""
    try:
        text = (store / "lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_daemon(pid: int) -> bool:
    """Is ``pid`` a live thermofs daemon (one of its threads carries DAEMON_NAME)?"""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() == DAEMON_NAME:
                return True
        except OSError:
            continue
    return False


def lock_store(store: Path, wait: float = DAEMON_EXIT_WAIT, say: Say = to_stderr) -> StoreLock:
    """The store's lock, held. A store locked by a daemon whose volume is no longer mounted is waited
    for (up to ``wait`` seconds, said through ``say``); a mounted store, or one locked by another
    admin command, raises StoreInUse at once; so does a store this user may not write to."""
    lock = StoreLock(store)
    deadline: float | None = None
    while True:
        try:
            lock.acquire()
            return lock
        except StoreError as e:  # the only StoreError acquire() raises: the lock is held
            in_use = str(e)
        except PermissionError as e:
            raise StoreInUse(f"permission denied: {store} must be writable by this user to be locked "
                             f"({e.strerror}: {e.filename})") from e
        holder = lock_holder(store)
        if holder is None or not is_daemon(holder) or store_mountpoints(store):
            raise StoreInUse(in_use)
        now = time.monotonic()
        if deadline is None:
            deadline = now + wait
            say(f"thermofs: waiting for the daemon of {store} (pid {holder}) to exit: its volume is "
                f"unmounted and it is finishing its writes (up to {wait:g} s)")
        elif now >= deadline:
            raise StoreInUse(f"store {store} is still locked by its daemon (pid {holder}) {wait:g} s after "
                             f"its unmount; see {store / 'thermofs.log'}")
        time.sleep(POLL_INTERVAL)


def name_process(name: str) -> None:
    """Set this thread's name as /proc shows it (comm); best effort."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError) as e:
        log.info("could not name the process %r: %s", name, e)
