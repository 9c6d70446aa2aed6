"""thermofs: a FUSE filesystem that compresses every chunk of every file."""

__version__ = "0.1.0"
