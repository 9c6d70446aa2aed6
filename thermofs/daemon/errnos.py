"""Which errno the kernel answers for each domain error. FUSE-free: the operations translate with it,
and a caller of the volume API can tell what a failure would look like through a mount without
loading libfuse."""

from __future__ import annotations

import errno

from thermofs.fs.errors import (
    CorruptChunk,
    Exists,
    FileTooBig,
    InvalidArgument,
    IsADir,
    MetaError,
    NameTooLong,
    NoAttr,
    NoSpace,
    NotADir,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
)

ERRNO: dict[type[Exception], int] = {
    NotFound: errno.ENOENT,
    Exists: errno.EEXIST,
    NotEmpty: errno.ENOTEMPTY,
    NotADir: errno.ENOTDIR,
    IsADir: errno.EISDIR,
    InvalidArgument: errno.EINVAL,
    NotPermitted: errno.EPERM,
    NameTooLong: errno.ENAMETOOLONG,
    NoAttr: errno.ENODATA,
    NotSupported: errno.EOPNOTSUPP,
    NoSpace: errno.ENOSPC,
    FileTooBig: errno.EFBIG,
    CorruptChunk: errno.EIO,
    MetaError: errno.EIO,
}


def errno_of(e: Exception) -> int:
    """The errno of a domain error (of its nearest mapped class); EIO for anything else."""
    for cls in type(e).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return errno.EIO
