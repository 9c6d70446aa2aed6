#!/usr/bin/env python3
"""A bare passthrough FUSE filesystem: the baseline thermofs is measured against.

Only the operations are its own. Everything between the kernel and them is thermofs's, taken from
thermofs itself so that it cannot drift while thermofs changes: the binding (thermofs's subclass of
mfusepy's FUSE on libfuse3, threaded), the ``init_with_config`` settings (``thermofs.daemon.binding.configure_fuse``:
use_ino, nullpath_ok, max_readahead ...), the kernel read-ahead raise, and the same mount options
(fsname/subtype, default_permissions, allow_other as root). The difference between the two is then
thermofs's own work: chunking, compression, LMDB, segments.

One setting differs: the passthrough caches no attributes (attribute timeout 0). libfuse's path-based
API gives each name of a hard-linked file its own kernel inode, and a filesystem that lets the kernel
cache attributes must invalidate the other names when the file changes, as thermofs does
(thermofs/daemon/kernelnames.py); the passthrough does not, so only uncached is it correct.
``--cache-attrs`` caches them for thermofs's timeout anyway, as a reference (stale with hard links).

    python bench/passthrough.py ROOT MOUNTPOINT [--nothreads] [--sync-on-close] [--cache-attrs]

It runs in the foreground; unmount with fusermount -u MOUNTPOINT. With --sync-on-close it keeps the
contract of thermofs's ``-o sync_close`` (close of a written file makes it durable) by an fsync of the
backing file when a written handle is flushed; bare, it syncs only on fsync as the kernel's own
filesystems do.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# mfusepy prefers libfuse2 when both are installed; libfuse2 caps writes at 128 KiB.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # must come after FUSE_LIBRARY_NAME

# mfusepy.FUSE with thermofs's fix-ups, and the same settings as thermofs.
from thermofs.daemon.binding import ATTR_TIMEOUT, FUSE, configure_fuse, raise_read_ahead

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
F = TypeVar("F", bound=Callable[..., Any])


def fuse_errors(fn: F) -> F:
    """Map OSError to FuseOSError (thermofs wraps every operation the same way)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from e

    return wrapper  # type: ignore[return-value]


class Passthrough(mfusepy.Operations):
    use_ns = True
    # With nullpath_ok, operations on open handles get path None: everything works on descriptors.
    flag_nullpath_ok = True
    flag_nopath = True

    def __init__(self, root: str, sync_on_close: bool = False, cache_attrs: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.sync_on_close = sync_on_close
        self.attr_timeout = ATTR_TIMEOUT if cache_attrs else 0.0
        self._written: set[int] = set()  # handles written since their last flush (sync_on_close)
        self._written_lock = threading.Lock()

    def _full(self, path: str) -> str:
        return self.root + path if path != "/" else self.root

    def init_with_config(self, conn: Any, config: Any) -> None:
        configure_fuse(conn, config, self.attr_timeout)

    @fuse_errors
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        st = os.fstat(fh) if path is None else os.lstat(self._full(path))
        return {"st_ino": st.st_ino, "st_mode": st.st_mode, "st_nlink": st.st_nlink, "st_uid": st.st_uid,
                "st_gid": st.st_gid, "st_size": st.st_size, "st_rdev": st.st_rdev,
                "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
                "st_blksize": st.st_blksize, "st_blocks": st.st_blocks}

    @fuse_errors
    def opendir(self, path: str) -> int:
        # readdir gets no path under nullpath_ok: keep a descriptor of the directory.
        return os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)

    @fuse_errors
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        entries = [(".", {"st_mode": stat.S_IFDIR}, 0), ("..", {"st_mode": stat.S_IFDIR}, 0)]
        with os.scandir(fh) as it:
            for e in it:
                # The kernel only takes the file type from st_mode (d_type), which scandir has already.
                kind = (stat.S_IFLNK if e.is_symlink() else stat.S_IFDIR if e.is_dir(follow_symlinks=False)
                        else stat.S_IFREG if e.is_file(follow_symlinks=False)
                        else stat.S_IFMT(e.stat(follow_symlinks=False).st_mode))
                entries.append((e.name, {"st_ino": e.inode(), "st_mode": kind}, 0))
        return entries

    @fuse_errors
    def releasedir(self, path: str | None, fh: int) -> int:
        os.close(fh)
        return 0

    @fuse_errors
    def open(self, path: str, flags: int) -> int:
        return os.open(self._full(path), flags)

    @fuse_errors
    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        # Files are owned by the daemon's user (root here), like the benchmark's own files.
        return os.open(self._full(path), flags | os.O_CREAT, mode)

    @fuse_errors
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    @fuse_errors
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        if self.sync_on_close:
            with self._written_lock:
                self._written.add(fh)
        return os.pwrite(fh, data, offset)

    @fuse_errors
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)  # type: ignore[arg-type]
        return 0

    @fuse_errors
    def flush(self, path: str | None, fh: int) -> int:
        if self.sync_on_close:
            with self._written_lock:
                written = fh in self._written
                self._written.discard(fh)
            if written:
                # A new file's directory entry is in the same ext4 journal commit as its inode.
                os.fsync(fh)
        os.close(os.dup(fh))  # as libfuse's passthrough_fh: close() semantics of the backing file
        return 0

    @fuse_errors
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    @fuse_errors
    def release(self, path: str | None, fh: int) -> int:
        if self.sync_on_close:
            with self._written_lock:
                self._written.discard(fh)  # the number may be reused by the next open
        os.close(fh)
        return 0

    @fuse_errors
    def unlink(self, path: str) -> int:
        os.unlink(self._full(path))
        return 0

    @fuse_errors
    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    @fuse_errors
    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    @fuse_errors
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            raise OSError(errno.EINVAL, "rename flags are not supported")  # callers fall back
        os.rename(self._full(old), self._full(new))
        return 0

    @fuse_errors
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        os.chmod(fh if path is None else self._full(path), mode)  # type: ignore[arg-type]
        return 0

    @fuse_errors
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if path is None:
            os.fchown(fh, uid, gid)  # type: ignore[arg-type]
        else:
            os.lchown(self._full(path), uid, gid)
        return 0

    @fuse_errors
    def utimens(self, path: str | None, times: tuple[int, int] | None = None, fh: int | None = None) -> int:
        target: Any = fh if path is None else self._full(path)
        if times is None:
            os.utime(target, follow_symlinks=path is None)
            return 0
        now = time.time_ns()
        if UTIME_OMIT in times:
            st = os.stat(target, follow_symlinks=False) if path is not None else os.fstat(fh)  # type: ignore[arg-type]
            old = (st.st_atime_ns, st.st_mtime_ns)
        else:
            old = (now, now)
        ns = tuple(o if t == UTIME_OMIT else now if t == UTIME_NOW else t for t, o in zip(times, old, strict=True))
        if path is None:
            os.utime(target, ns=ns)  # type: ignore[arg-type]
        else:
            os.utime(target, ns=ns, follow_symlinks=False)  # type: ignore[arg-type]
        return 0

    @fuse_errors
    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.root)
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                            "f_files", "f_ffree", "f_favail", "f_namemax")}

    @fuse_errors
    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    @fuse_errors
    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, link contents).
        os.symlink(source, self._full(target))
        return 0

    @fuse_errors
    def link(self, target: str, source: str) -> int:
        # mfusepy passes (new name, existing name).
        os.link(self._full(source), self._full(target))
        return 0


def main(argv: list[str]) -> int:
    flags = set(argv[3:])
    if len(argv) < 3 or not flags <= {"--nothreads", "--sync-on-close", "--cache-attrs"}:
        print(f"usage: {argv[0]} ROOT MOUNTPOINT [--nothreads] [--sync-on-close] [--cache-attrs]", file=sys.stderr)
        return 2
    nothreads = "--nothreads" in flags
    # libfuse3 does chdir("/") even in the foreground: absolute paths only.
    root, mountpoint = os.path.realpath(argv[1]), os.path.realpath(argv[2])
    opts: dict[str, Any] = {"fsname": f"passthrough:{root}", "subtype": "passthrough",
                            "default_permissions": True}
    if os.getuid() == 0:
        opts["allow_other"] = True
    threading.Thread(target=raise_read_ahead, args=(Path(mountpoint), time.monotonic() + 30),
                     daemon=True).start()
    FUSE(Passthrough(root, "--sync-on-close" in flags, "--cache-attrs" in flags), mountpoint, foreground=True,
         nothreads=nothreads, **opts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
