"""The FUSE binding: mfusepy's FUSE class with thermofs's fix-ups, and how a mount is configured.

mfusepy drops rename's flags (RENAME_NOREPLACE would become a silent overwrite) and the file handle of
truncate/chmod/chown/utimens, and inspects create's signature on every call; ctypes gives every
request a fresh Python thread state. The bench's bare passthrough uses this class too, so both pay the
same for the binding.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import mfusepy  # type: ignore[import-untyped]

from thermofs.daemon.mountinfo import mount_source

log = logging.getLogger("thermofs.binding")

# Kernel read-ahead for the mount: 1 MiB makes the kernel send 1 MiB read requests instead of 128 KiB,
# which cuts the per-request Python cost of sequential reads by 8x.
READ_AHEAD_KB = 1024
# libfuse 3.14's fuse_main_real hands the max_idle_threads default (UINT_MAX, "never destroy idle
# workers") to fuse_loop_cfg_set_idle_threads, which rejects anything above 100,000 and logs
# "Ignoring invalid max threads value 4294967295 > max (100000)" (fixed in later releases). An
# explicit 100,000 is accepted and means the same with at most max_threads (10) workers: no idle
# worker is ever destroyed, so none loses its pinned Python thread state (see FUSE).
MAX_IDLE_THREADS = 100_000


def pin_thread_state(flag: threading.local) -> None:
    """Keep this libfuse worker thread's Python thread state for good.

    ctypes runs a callback from a thread Python did not start under PyGILState_Ensure/Release: a new
    thread state per call, destroyed after it. Every request then paid for building one, and
    everything thread-local was lost between requests (zstd's per-thread contexts were rebuilt for
    every chunk). One extra Ensure, never released, keeps the state alive while the thread lives.
    Measured (3,550 getattr calls of a small-file loop): 3,550 fresh thread states before, 4 after.
    """
    ctypes.pythonapi.PyGILState_Ensure()
    flag.on = True


def raise_read_ahead(mountpoint: Path, deadline: float) -> None:
    """Set the mount's read-ahead once it appears (sysfs has its device only then)."""
    while time.monotonic() < deadline:
        dev = mount_source(mountpoint)
        if dev is not None:
            try:
                Path(f"/sys/class/bdi/{dev}/read_ahead_kb").write_text(f"{READ_AHEAD_KB}\n")
            except OSError as e:
                log.info("could not raise read-ahead (%s); sequential reads use 128 KiB requests", e)
            return
        time.sleep(0.05)


# How long the kernel may cache a file's attributes (and a name's entry, libfuse's default) before it
# asks again. Caching saves a GETATTR for every directory of every path the kernel walks and for each
# stat: creating a small file took 7 GETATTR requests uncached, 3 cached (bench/bench_small_files.py,
# docs/BENCHMARKS.md). A hard-linked file's other names are invalidated on each change
# (daemon/kernelnames.py), so no name shows stale attributes; one second bounds what anything missed
# could cost.
ATTR_TIMEOUT = 1.0


def configure_fuse(conn: Any, config: Any, attr_timeout: float = ATTR_TIMEOUT) -> None:
    """libfuse's connection and configuration at init: read-ahead, inode numbers, paths for every
    operation, and how long the kernel caches attributes."""
    if conn is not None:
        conn.max_readahead = READ_AHEAD_KB << 10
    if config is not None:
        # Real inode numbers (stable across remounts). hard_remove stays off: libfuse then renames a
        # file unlinked while open to a hidden name, so fstat() on it keeps working (with
        # hard_remove the path-based API answers ESTALE); the volume reclaims such files after a crash.
        config.use_ino = 1
        # Operations on open files get the path of the kernel inode they came through (it is left
        # out of an invalidation, daemon/kernelnames.py); a path libfuse cannot build comes as None.
        config.nullpath_ok = 0
        # The path-based libfuse API gives each name of a hard-linked file its own kernel inode: a
        # filesystem that caches attributes must invalidate the other names when the file changes
        # (thermofs does; the bench's passthrough caches nothing). libfuse3 invalidates cached pages
        # when size or mtime change (auto_inval_data).
        config.attr_timeout = attr_timeout
        config.entry_timeout = attr_timeout


class PathInvalidator:
    """Drop what the kernel caches for a path (attributes and pages): libfuse's fuse_invalidate_path.

    ``bind`` runs inside a request (init) to learn the libfuse handle; a path libfuse or the kernel
    no longer knows is nothing to invalidate."""

    def __init__(self) -> None:
        self._fuse: int | None = None

    def bind(self) -> None:
        self._fuse = mfusepy._libfuse.fuse_get_context().contents.fuse

    def __call__(self, path: str) -> None:
        if self._fuse is None:
            return
        err = mfusepy._libfuse.fuse_invalidate_path(ctypes.c_void_p(self._fuse),
                                                       path.encode("utf-8", "surrogateescape"))
        if err and err != -errno.ENOENT:
            log.warning("invalidating the kernel's cache of %r: %s", path, os.strerror(-err))


class FixedUpOperations(Protocol):
    """What the fix-ups below call on the operations object (thermofs's Operations, the bench's passthrough)."""

    def truncate(self, path: str | None, length: int, fh: int | None) -> int: ...
    def chmod(self, path: str | None, mode: int, fh: int | None) -> int: ...
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None) -> int: ...
    def utimens(self, path: str | None, times: tuple[int, int] | None, fh: int | None) -> int: ...
    def create(self, path: str, mode: int, flags: int) -> int: ...
    def rename(self, old: str, new: str, flags: int) -> int: ...


class FUSE(mfusepy.FUSE):
    """mfusepy's FUSE with the fix-ups the module docstring lists."""

    operations: FixedUpOperations  # set by mfusepy.FUSE.__init__ to its first argument

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pinned = threading.local()  # set once in each worker thread whose thread state is kept
        super().__init__(*args, **kwargs)  # runs the FUSE loop until unmounted

    def _wrapper(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Every libfuse callback comes through here (mfusepy looks it up on the instance)."""
        if not getattr(self._pinned, "on", False):
            pin_thread_state(self._pinned)
        return super()._wrapper(func, *args, **kwargs)

    def _fh(self, fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    # mfusepy drops the file handle of these; with nullpath_ok an unlinked open file has no path.
    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return self.operations.truncate(self._path(path), length, self._fh(fip))

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return self.operations.chmod(self._path(path), mode, self._fh(fip))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        if ctypes.c_uint32(uid + 1).value == 0:
            uid = -1
        if ctypes.c_uint32(gid + 1).value == 0:
            gid = -1
        return self.operations.chown(self._path(path), uid, gid, self._fh(fip))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            times = (mfusepy.time_of_timespec(buf.contents.actime, use_ns=True),
                     mfusepy.time_of_timespec(buf.contents.modtime, use_ns=True))
        return self.operations.utimens(self._path(path), times, self._fh(fip))

    def create(self, path: bytes, mode: int, fip: Any) -> int:
        # mfusepy inspects the signature of Operations.create on every call (~10% of a create).
        fi = fip.contents
        fi.fh = self.operations.create(path.decode(self.encoding, self.errors), mode, fi.flags)
        return 0

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)
