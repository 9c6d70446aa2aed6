"""Errors of the filesystem layers; ``daemon.errnos`` alone maps them to errno values."""


class FsError(Exception):
    """Root of every filesystem-layer error."""


class MetaError(FsError):
    """The metadata store (LMDB) failed or holds something inconsistent."""


class StoreError(FsError):
    """The store directory is missing, locked, of an unknown format, or otherwise unusable."""


class UnusableTarget(StoreError):
    """What a command was pointed at cannot serve it: no store, no thermofs mount, a store in use,
    a store it may not write without -o ro, a daemon out of reach (the command exits with status 2,
    as for a usage error)."""


class NotFound(FsError):
    pass


class Exists(FsError):
    pass


class NotEmpty(FsError):
    pass


class NotADir(FsError):
    pass


class IsADir(FsError):
    pass


class InvalidArgument(FsError):
    pass


class NotPermitted(FsError):
    pass


class NameTooLong(FsError):
    pass


class NoAttr(FsError):
    pass


class NotSupported(FsError):
    pass


class FileTooBig(FsError):
    """A write or truncate would take a file past the volume's maximum file size."""


class NoSpace(FsError):
    """The store's disk (or the LMDB map) is full; nothing that was committed is lost."""


class CorruptChunk(FsError):
    """A chunk failed verification (bad frame, bounds, checksum, missing segment): reads give EIO."""
