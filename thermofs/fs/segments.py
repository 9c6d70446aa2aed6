"""Append-only segment files: where frames live. Knows nothing of chunks, codecs or LMDB.

A segment is ``segments/NNNNNNNN.seg``: a 32-byte header naming the volume and the segment, then frames,
appended, never modified in place (docs/FORMAT.md). Each mount starts a new segment, so the tail of an
older segment left by a crash (frames no commit points at) is never written after; it is garbage that
compaction reclaims.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from thermofs.fs.errors import CorruptChunk, NoSpace

log = logging.getLogger("thermofs.segments")

Buffer = bytes | bytearray | memoryview
IOV_MAX = 1024
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
# 64 MiB: small enough that compaction rewrites a segment in well under a second, large enough that a
# 1 TiB volume needs only 16k files.
SEGMENT_BYTES = 64 << 20
# Read descriptors kept open (cached descriptors are never closed while in use: reads of segments
# beyond this many open and close their own descriptor).
MAX_READ_FDS = 512
# A removed segment's read descriptor stays open this long: far longer than one pread of a frame.
RETIRE_SECONDS = 10.0


# The segment header: magic, header version, reserved, the volume's uuid, the segment's id, then a
# CRC-32 of those 28 bytes. A segment of another volume, or a renamed one, is refused before any
# frame of it is used.
SEGMENT_MAGIC = b"TFSG"
SEGMENT_HEADER_VERSION = 1
SEGMENT_HEADER = struct.Struct(">4sHH16sI")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + 4  # 32


def segment_header(volume_id: bytes, seg_id: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_HEADER_VERSION, 0, volume_id, seg_id)
    return head + zlib.crc32(head).to_bytes(4, "big")


def check_segment_header(head: bytes, volume_id: bytes, seg_id: int) -> str | None:
    """What is wrong with a segment's header (None if it is this volume's segment ``seg_id``)."""
    if len(head) < SEGMENT_HEADER_SIZE:
        return "its header is missing (the file is shorter than a header)"
    if zlib.crc32(head[:SEGMENT_HEADER.size]) != int.from_bytes(head[SEGMENT_HEADER.size:SEGMENT_HEADER_SIZE], "big"):
        return "its header is damaged"
    magic, version, _reserved, owner, number = SEGMENT_HEADER.unpack_from(head)
    if magic != SEGMENT_MAGIC or version != SEGMENT_HEADER_VERSION:
        return f"its header has an unknown magic or version ({magic!r}, {version})"
    if owner != volume_id:
        return f"it belongs to another volume ({owner.hex()}, not {volume_id.hex()})"
    if number != seg_id:
        return f"its header says it is segment {number}"
    return None


def disk_bytes(paths: Iterable[Path]) -> int:
    """Disk space the files use: allocated blocks, so punched-out dead frames do not count."""
    return sum(p.stat().st_blocks * 512 for p in paths)


def segment_name(seg_id: int) -> str:
    return f"{seg_id:08d}.seg"


def segment_id_of(name: str) -> int | None:
    """The id in a segment's file or object name (``segment_name``'s inverse); None for any other name."""
    stem = name[:-4]
    return int(stem) if name.endswith(".seg") and stem.isdigit() else None


class SegmentStore:
    def __init__(self, directory: Path, volume_id: bytes, headers_from: int = 1,
                 segment_bytes: int = SEGMENT_BYTES, on_sealed: Callable[[int], None] | None = None) -> None:
        """Segments of the volume ``volume_id`` (16 bytes) in ``directory``; those from id
        ``headers_from`` on start with a header (older ones, of a store made with format 1, do not).
        ``on_sealed`` is told the id of every segment this process stops appending to (full, sealed
        or closed), synced and holding at least one frame: the object store backend uploads it."""
        self.dir = directory
        self.volume_id = volume_id
        self.headers_from = headers_from
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._read_fds: dict[int, int] = {}
        self._retired: list[tuple[float, int]] = []  # (when, descriptor) of removed segments
        self.compaction = threading.Lock()  # held by the one compaction of these segments at a time
        existing = self.segment_ids()
        self._active_id = (existing[-1] + 1) if existing else 1
        # Segments from this id on were written by this process: a frame in them may still wait for
        # the commit that points at it (compaction must not count it as garbage).
        self.first_id = self._active_id
        self._active_fd = -1
        self._active_size = 0
        self._unsynced: dict[int, int] = {}  # segment id -> fd written since the last sync
        self._on_sealed = on_sealed
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

    def segment_ids(self) -> list[int]:
        return sorted(seg for p in self.dir.glob("*.seg") if (seg := segment_id_of(p.name)) is not None)

    def path(self, seg_id: int) -> Path:
        return self.dir / segment_name(seg_id)

    def header_size(self, seg_id: int) -> int:
        return SEGMENT_HEADER_SIZE if seg_id >= self.headers_from else 0

    def _open_active(self) -> None:
        fd = os.open(self.path(self._active_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size == 0 and self.header_size(self._active_id):
                size = os.write(fd, segment_header(self.volume_id, self._active_id))
        except OSError as e:
            os.close(fd)
            self.path(self._active_id).unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("store disk full while starting a segment") from e
            raise
        self._active_fd, self._active_size = fd, size

    def append(self, frames: Sequence[Buffer | Sequence[Buffer]]) -> list[tuple[int, int]]:
        """Append frames, each one buffer or a sequence of buffers (header, payload) written
        back to back; return (segment id, offset) of each. On a full disk, nothing is left
        half-written."""
        parts = [(f,) if isinstance(f, (bytes, bytearray, memoryview)) else tuple(f) for f in frames]
        sizes = [sum(len(b) for b in p) for p in parts]
        out: list[tuple[int, int]] = []
        with self._lock:
            i = 0
            while i < len(parts):
                if self._active_fd < 0 or self._active_size >= self.segment_bytes:
                    self._roll()
                # One writev per run of frames that fits into the active segment.
                j, room = i, self.segment_bytes - self._active_size
                while j < len(parts) and (j == i or sizes[j] <= room):
                    room -= sizes[j]
                    j += 1
                start = self._active_size
                self._write_all([b for p in parts[i:j] for b in p], sum(sizes[i:j]), start)
                off = start
                for size in sizes[i:j]:
                    out.append((self._active_id, off))
                    off += size
                self._active_size = off
                self._unsynced[self._active_id] = self._active_fd
                i = j
        return out

    def _write_all(self, buffers: list[Buffer], total: int, start: int) -> None:
        try:
            written = os.writev(self._active_fd, buffers[:IOV_MAX])
            if written < total:  # short write or more buffers than one writev takes
                rest = b"".join(bytes(b) for b in buffers)[written:]
                while rest:
                    n = os.write(self._active_fd, rest)
                    rest = rest[n:]
        except OSError as e:
            os.ftruncate(self._active_fd, start)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("store disk full while appending to a segment") from e
            raise

    def _roll(self) -> None:
        if self._active_fd >= 0:
            self._close_active()
            self._active_id += 1
        self._open_active()

    def _close_active(self) -> None:
        """Sync and close the active segment (under the lock); tell ``on_sealed`` if it holds frames."""
        if self._active_id in self._unsynced:
            os.fdatasync(self._active_fd)
            del self._unsynced[self._active_id]
        os.close(self._active_fd)
        self._active_fd = -1
        if self._on_sealed is not None and self._active_size > self.header_size(self._active_id):
            self._on_sealed(self._active_id)

    def seal(self) -> int | None:
        """Stop appending to the active segment if it holds a frame (the next append starts a new
        one); its id, or None if there was nothing to seal."""
        with self._lock:
            if self._active_fd < 0 or self._active_size <= self.header_size(self._active_id):
                return None
            sealed = self._active_id
            self._close_active()
            self._active_id += 1
            self._active_size = 0
            return sealed

    def sync(self) -> None:
        """Make every appended frame durable (invariant 1: data before pointer)."""
        # Under the lock: a concurrent roll must not close a descriptor we are about to sync.
        with self._lock:
            for seg_id, fd in list(self._unsynced.items()):
                try:
                    os.fdatasync(fd)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise NoSpace("store disk full while syncing a segment") from e
                    raise
                del self._unsynced[seg_id]

    def has_unsynced(self) -> bool:
        """Were frames appended since the last sync?"""
        with self._lock:
            return bool(self._unsynced)

    def read(self, seg_id: int, offset: int, length: int) -> bytes:
        if offset < self.header_size(seg_id):
            raise CorruptChunk(f"segment {segment_name(seg_id)}: offset {offset} lies in its header")
        with self._lock:
            fd = self._read_fds.get(seg_id)
            own = fd is None and len(self._read_fds) >= MAX_READ_FDS
            if fd is None:
                fd = self._open_checked(seg_id)
                if not own:
                    self._read_fds[seg_id] = fd
        try:
            data = os.pread(fd, length, offset)
        finally:
            if own:
                os.close(fd)
        if len(data) != length:
            raise CorruptChunk(f"segment {segment_name(seg_id)} is truncated at offset {offset}")
        return data

    def _open_checked(self, seg_id: int) -> int:
        """A read descriptor of a segment whose header names this volume and this segment."""
        try:
            fd = os.open(self.path(seg_id), os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptChunk(f"segment {segment_name(seg_id)} is missing") from None
        if self.header_size(seg_id):
            problem = check_segment_header(os.pread(fd, SEGMENT_HEADER_SIZE, 0), self.volume_id, seg_id)
            if problem is not None:
                os.close(fd)
                raise CorruptChunk(f"segment {segment_name(seg_id)}: {problem}")
        return fd

    def check_header(self, seg_id: int) -> str | None:
        """What is wrong with a segment's header, if anything (fsck, mount)."""
        if not self.header_size(seg_id):
            return None
        try:
            with open(self.path(seg_id), "rb") as fh:
                return check_segment_header(fh.read(SEGMENT_HEADER_SIZE), self.volume_id, seg_id)
        except FileNotFoundError:
            return "it is missing"

    def punch(self, ranges: list[tuple[int, int, int]]) -> None:
        """Free the disk blocks of dead frames (segment, offset, length) in place.

        Only the given byte ranges change (to zeros), so neighbouring live frames are untouched;
        the segment keeps its size. Best effort: a filesystem without hole punching keeps the bytes
        until compaction rewrites the segment. Adjacent frames are punched as one range: deleting a
        512 MiB file punched 8,192 frames one by one, about 1 ms each on a disk mounted with
        ``discard``, and slowed the next write to half its speed.
        """
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for seg, off, length in ranges:
            by_segment.setdefault(seg, []).append((off, length))
        for seg, frames in by_segment.items():
            spans = _coalesce(frames)
            try:
                fd = os.open(self.path(seg), os.O_WRONLY)
            except FileNotFoundError:
                continue
            try:
                for off, length in spans:
                    if self._libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) != 0:
                        err = ctypes.get_errno()
                        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
                            return
                        log.warning("punching %d bytes at %d of segment %d: %s", length, off, seg,
                                    os.strerror(err))
            finally:
                os.close(fd)

    def remove(self, seg_id: int) -> None:
        """Delete a segment that holds no live frame (never the active one)."""
        with self._lock:
            if seg_id == self._active_id:
                return
            fd = self._read_fds.pop(seg_id, None)
            now = time.monotonic()
            if fd is not None:
                # A reader may have taken this descriptor just before and be in pread() now:
                # closing it at once could hand its number to another file under that reader.
                # Retired descriptors (of an unlinked file, still readable) are closed later.
                self._retired.append((now, fd))
            while self._retired and now - self._retired[0][0] > RETIRE_SECONDS:
                os.close(self._retired.pop(0)[1])
            self.path(seg_id).unlink(missing_ok=True)

    def size_of(self, seg_id: int) -> int:
        try:
            return self.path(seg_id).stat().st_size
        except FileNotFoundError:
            return 0

    def frame_bytes(self, seg_id: int) -> int:
        """Bytes of frames (live or dead) a segment holds: its size without its header. A segment
        is dead when garbage covers all of them."""
        return max(0, self.size_of(seg_id) - self.header_size(seg_id))

    @property
    def active_id(self) -> int:
        return self._active_id

    def physical_bytes(self) -> int:
        """Disk space the segments use (holes of punched-out dead frames excluded)."""
        return disk_bytes(self.dir.glob("*.seg"))

    def close(self) -> None:
        with self._lock:
            if self._active_fd >= 0:
                self._close_active()
                self._active_id += 1  # nothing is appended after close: the last one is sealed
            self._unsynced.clear()
            for fd in [*self._read_fds.values(), *(fd for _when, fd in self._retired)]:
                os.close(fd)
            self._read_fds.clear()
            self._retired.clear()


def _coalesce(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) ranges sorted, with touching or overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for off, length in sorted(spans):
        if out and off <= out[-1][0] + out[-1][1]:
            start, prev = out[-1]
            out[-1] = (start, max(prev, off + length - start))
        else:
            out.append((off, length))
    return out
