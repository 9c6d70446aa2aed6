"""``thermofs umount``: unmount a volume and return once its daemon is gone, so that fsck or a new mount
can take the store at once (as s3ql's umount.s3ql)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from thermofs.daemon.lock import DAEMON_EXIT_WAIT, Say, is_daemon, lock_holder, to_stderr
from thermofs.daemon.mountinfo import mount_at
from thermofs.fs.errors import StoreError, UnusableTarget

# umount says that it waits only when the daemon has not exited after this long.
QUIET_WAIT = 1.0


class UnmountFailed(StoreError):
    """fusermount refused (busy), or the daemon did not exit in time."""


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
