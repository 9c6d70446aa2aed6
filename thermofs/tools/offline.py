"""Taking a store for an offline admin command (fsck, compact, cool, train, and mount itself): its lock,
with clear errors; and unmounting a volume until its daemon is gone (``thermofs umount``).

A daemon goes on after its volume is unmounted: it writes what it still holds and closes the store,
seconds on a busy volume, and keeps the store lock until it exits. A command that finds the lock
held by such a daemon (no longer mounted) waits for it; a store still mounted, or locked by another
admin command, is "in use" at once.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from thermofs.fs.control import UnusableTarget
from thermofs.fs.errors import StoreError
from thermofs.fs.mount import DAEMON_NAME, mount_at, store_mountpoints
from thermofs.fs.store import StoreLock

# How long a command waits for a daemon to finish after its unmount (flushing a large dirty cache to
# a slow disk takes a while; a daemon that takes longer than this is stuck rather than busy).
DAEMON_EXIT_WAIT = 300.0
# umount says that it waits only when the daemon has not exited after this long.
QUIET_WAIT = 1.0
POLL_INTERVAL = 0.05

Say = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StoreInUse(UnusableTarget):
    """The store is locked by another process: mounted, or another admin command runs on it."""


class UnmountFailed(StoreError):
    """fusermount refused (busy), or the daemon did not exit in time."""


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


def _absolute(path: Path) -> Path:
    """``path`` made absolute with its parent's symlinks resolved, without touching ``path`` itself
    (a hung FUSE mount would block a stat of it)."""
    absolute = Path(os.path.abspath(path))
    return absolute if absolute == absolute.parent else absolute.parent.resolve() / absolute.name


def _wait_for_exit(pid: int, timeout: float, on_slow: Callable[[], None]) -> bool:
    """Wait until process ``pid`` has exited (True) or ``timeout`` seconds passed (False); call
    ``on_slow`` once if it takes more than QUIET_WAIT seconds."""
    try:
        pidfd = os.pidfd_open(pid)  # pollable until the process exits, whatever its parent does
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if poller.poll(int(min(QUIET_WAIT, timeout) * 1000)):
            return True
        on_slow()
        return bool(poller.poll(int(max(timeout - QUIET_WAIT, 0) * 1000)))
    finally:
        os.close(pidfd)


def unmount(mountpoint: Path, timeout: float = DAEMON_EXIT_WAIT, say: Say = to_stderr) -> None:
    """``thermofs umount``: unmount a thermofs volume and return once its daemon has exited, so the
    store is free for fsck or a new mount."""
    where = _absolute(mountpoint)
    entry = mount_at(where)
    if entry is None:
        raise UnusableTarget(f"{mountpoint} does not exist" if not os.path.lexists(where)
                             else f"{mountpoint} is not a mount point")
    store = entry.store
    if store is None:
        raise UnusableTarget(f"{mountpoint} is a mount point of {entry.fstype}, not of thermofs")
    holder = lock_holder(store)
    daemon = holder if holder is not None and is_daemon(holder) else None  # None: it crashed
    fusermount = shutil.which("fusermount3") or "fusermount"
    done = subprocess.run([fusermount, "-u", str(where)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise UnmountFailed(done.stderr.strip() or f"{fusermount} -u {where} failed (exit {done.returncode})")
    if daemon is None:
        return

    def slow() -> None:
        say(f"thermofs: {where} is unmounted; waiting for its daemon (pid {daemon}) to finish writing "
            f"{store} (up to {timeout:g} s)")

    if not _wait_for_exit(daemon, timeout, slow):
        raise UnmountFailed(f"{where} is unmounted, but its daemon (pid {daemon}) is still running after "
                            f"{timeout:g} s: it holds {store} until it has written everything (see "
                            f"{store / 'thermofs.log'}); mount and fsck wait for it to exit")
