"""Errors of the codec layer; only ``fs.operations`` turns them into errno values."""


class CodecError(Exception):
    """Root of every codec error."""


class BadSpec(CodecError, ValueError):
    """A codec spec string names no codec of the table, or has a bad parameter."""


class CorruptFrame(CodecError):
    """A frame failed validation: bad header, bounds, length or checksum. Never return its bytes."""
