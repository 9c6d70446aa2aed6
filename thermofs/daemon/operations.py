"""FUSE operations: translate each kernel request into one volume call and domain errors into errno.

Nothing else lives here: no LMDB, no codecs, no buffering. Permission checks are the kernel's
(``default_permissions``), as for a kernel filesystem.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mfusepy  # type: ignore[import-untyped]

from thermofs.codecs import CodecError
from thermofs.daemon.binding import PathInvalidator, configure_fuse
from thermofs.daemon.errnos import errno_of
from thermofs.daemon.kernelnames import KernelNames
from thermofs.fs.errors import FsError, InvalidArgument, NoSpace
from thermofs.fs.meta import Inode
from thermofs.fs.volume import Volume

log = logging.getLogger("thermofs.operations")

# libfuse passes these in tv_nsec (with tv_sec 0) for "leave unchanged" and "set to now".
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
# libfuse renames a file unlinked while open to this prefix and unlinks it at the last close.
HIDDEN_PREFIX = ".fuse_hidden"

F = TypeVar("F", bound=Callable[..., Any])


def translate(fn: F) -> F:
    """Turn domain errors into FuseOSError and log the ones that mean damage; anything else is EIO
    with its traceback logged here, once (mfusepy would answer EINVAL, the caller's mistake)."""

    def wrapper(self: Operations, *args: Any) -> Any:
        try:
            try:
                return fn(self, *args)
            except NoSpace:
                # Space freed since the last sync point waits for the next (fs/durability.py), as a
                # journaling filesystem commits its journal before it answers ENOSPC: make it come
                # now and try once more (an operation that failed changed nothing).
                if not self.volume.make_room():
                    raise
                return fn(self, *args)
        except (FsError, CodecError) as e:
            code = errno_of(e)
            if code == errno.EIO:
                log.error("%s%r: %s", fn.__name__, args[:1], e)
            raise mfusepy.FuseOSError(code) from e
        except mfusepy.FuseOSError:
            raise
        except Exception:
            log.exception("%s%r: unexpected error", fn.__name__, args[:1])
            raise mfusepy.FuseOSError(errno.EIO) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _stat(inode: Inode) -> dict[str, int]:
    return {
        "st_ino": inode.ino, "st_mode": inode.mode, "st_nlink": inode.nlink, "st_uid": inode.uid,
        "st_gid": inode.gid, "st_size": inode.size, "st_atime": inode.atime, "st_mtime": inode.mtime,
        "st_ctime": inode.ctime, "st_rdev": inode.rdev, "st_blksize": 65536,
        "st_blocks": (inode.size + 511) // 512,
    }


def statfs_of(store: Path, volume: Volume) -> dict[str, int]:
    """statfs: the store's disk, in 4 KiB blocks; files counted by the volume."""
    st = os.statvfs(store)
    scale = st.f_frsize / 4096
    files = volume.counters().get("files", 0)
    return {
        "f_bsize": 4096, "f_frsize": 4096,
        "f_blocks": int(st.f_blocks * scale), "f_bfree": int(st.f_bfree * scale),
        "f_bavail": int(st.f_bavail * scale),
        "f_files": files + st.f_ffree, "f_ffree": st.f_ffree, "f_favail": st.f_favail,
        "f_namemax": 255,
    }


class Operations(mfusepy.Operations):
    use_ns = True
    # A path libfuse cannot build (a file unlinked under hard_remove) comes as None.
    flag_nullpath_ok = True
    flag_nopath = True

    def __init__(self, volume: Volume, store: Path) -> None:
        self.volume = volume
        self._store = store
        self._invalidator = PathInvalidator()
        # Attributes are cached by the kernel (ATTR_TIMEOUT); the other names of a hard-linked file
        # are invalidated when it changes. Every operation that changes a file tells it.
        self._names = KernelNames(self._invalidator)

    def init_with_config(self, conn: Any, config: Any) -> None:
        configure_fuse(conn, config)
        self._invalidator.bind()
        self._names.start()

    def destroy(self, path: str) -> None:
        self._names.stop()
        self.volume.close()

    def _ino(self, path: str | None, fh: int | None) -> int:
        """The inode of an open file handle, else of the path."""
        if fh:
            return self.volume.ino_of(fh)
        if path is None:
            raise InvalidArgument("no path and no file handle")
        return self.volume.resolve(path)

    def _changed(self, ino: int, path: str | None) -> None:
        """``ino`` changed through ``path``: the kernel must not keep its other names' attributes."""
        if self._names.tracks(ino):
            self._names.changed(ino, path)

    @translate
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if fh or path is None:
            return _stat(self.volume.getattr(self._ino(path, fh)))
        inode = self.volume.lookup_attr(path)
        self._names.looked_up(path, inode.ino, inode.nlink, stat.S_ISDIR(inode.mode))
        return _stat(inode)

    @translate
    def opendir(self, path: str) -> int:
        """A directory's handle is its inode number."""
        ino = self.volume.resolve(path)
        self.volume.readdir(ino)  # raises NotADir early
        return ino

    @translate
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        return [(name, {"st_ino": ino, "st_mode": kind}, 0)
                for name, ino, kind in self.volume.readdir(fh or self.volume.resolve(path or "/"))]

    def releasedir(self, path: str | None, fh: int) -> int:
        return 0

    @translate
    def readlink(self, path: str) -> str:
        return self.volume.readlink(self.volume.resolve(path))

    @translate
    def mknod(self, path: str, mode: int, dev: int) -> int:
        uid, gid, _pid = mfusepy.fuse_get_context()
        self.volume.mknod(path, mode, uid, gid, dev)
        return 0

    @translate
    def mkdir(self, path: str, mode: int) -> int:
        uid, gid, _pid = mfusepy.fuse_get_context()
        self.volume.mkdir(path, mode, uid, gid)
        return 0

    @translate
    def symlink(self, target: str, source: str) -> int:
        uid, gid, _pid = mfusepy.fuse_get_context()
        self.volume.symlink(target, source, uid, gid)
        return 0

    @translate
    def link(self, target: str, source: str) -> int:
        ino = self.volume.resolve(source)
        self.volume.link(ino, target)
        self._names.linked(ino, source, target)
        return 0

    @translate
    def unlink(self, path: str) -> int:
        self.volume.unlink(path)
        self._names.unlinked(path)
        return 0

    @translate
    def rmdir(self, path: str) -> int:
        self.volume.rmdir(path)
        return 0

    @translate
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & ~RENAME_NOREPLACE:
            raise InvalidArgument("only RENAME_NOREPLACE is supported")
        self.volume.rename(old, new, noreplace=bool(flags & RENAME_NOREPLACE),
                           hide=new.rpartition("/")[2].startswith(HIDDEN_PREFIX))
        self._names.renamed(old, new)
        return 0

    @translate
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        ino = self._ino(path, fh)
        self.volume.setattr(ino, mode=mode)
        self._changed(ino, path)
        return 0

    @translate
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        ino = self._ino(path, fh)
        self.volume.setattr(ino, uid=uid, gid=gid)
        self._changed(ino, path)
        return 0

    @translate
    def utimens(self, path: str | None, times: tuple[int, int] | None = None, fh: int | None = None) -> int:
        now = time.time_ns()
        if times is None:
            atime: int | None = now
            mtime: int | None = now
        else:
            atime, mtime = (None if t == UTIME_OMIT else now if t == UTIME_NOW else t for t in times)
        ino = self._ino(path, fh)
        self.volume.setattr(ino, atime=atime, mtime=mtime)
        self._changed(ino, path)
        return 0

    @translate
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if length < 0:
            raise InvalidArgument("negative length")
        ino = self._ino(path, fh)
        self.volume.truncate(ino, length)
        self._changed(ino, path)
        return 0

    @translate
    def open(self, path: str, flags: int) -> int:
        # libfuse3 asks for atomic O_TRUNC: the kernel sends no separate truncate.
        ino = self.volume.resolve(path)
        fh = self.volume.open(ino, truncate=bool(flags & os.O_TRUNC), writable=(flags & os.O_ACCMODE) != os.O_RDONLY)
        if flags & os.O_TRUNC:
            self._changed(ino, path)
        return fh

    @translate
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        uid, gid, _pid = mfusepy.fuse_get_context()
        fh, _inode = self.volume.create(path, stat.S_IMODE(mode), uid, gid)
        return fh

    @translate
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.volume.read(fh, offset, size)

    @translate
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        written = self.volume.write(fh, offset, data)
        if self._names.active:
            self._changed(self.volume.ino_of(fh), path)
        return written

    @translate
    def flush(self, path: str | None, fh: int) -> int:
        self.volume.flush(fh)
        return 0

    @translate
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync(fh)
        return 0

    @translate
    def release(self, path: str | None, fh: int) -> int:
        self.volume.release(fh)
        return 0

    @translate
    def statfs(self, path: str) -> dict[str, int]:
        return statfs_of(self._store, self.volume)

    @translate
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.volume.getxattr_path(path, name)

    @translate
    def listxattr(self, path: str) -> list[str]:
        return self.volume.listxattr(self.volume.resolve(path))

    @translate
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        ino = self.volume.resolve(path)
        self.volume.setxattr(ino, name, value, options)
        self._changed(ino, path)
        return 0

    @translate
    def removexattr(self, path: str, name: str) -> int:
        ino = self.volume.resolve(path)
        self.volume.removexattr(ino, name)
        self._changed(ino, path)
        return 0
