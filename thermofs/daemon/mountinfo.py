"""What is mounted where: /proc/self/mountinfo read for thermofs (which store a mount serves, which mount
a path lies on), and whether a mount answers."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mountpoint: Path
    device: str  # major:minor
    fstype: str
    source: str

    @property
    def store(self) -> Path | None:
        """The store of a thermofs mount (its fsname is thermofs:STORE); None for any other filesystem."""
        if self.fstype.startswith("fuse") and self.source.startswith("thermofs:"):
            return Path(self.source.removeprefix("thermofs:"))
        return None


def _unescape(field: bytes) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))


def mounts() -> list[MountEntry]:
    """Every mount of this process's namespace, in mount order (a later one may hide an earlier)."""
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        tail = fields[fields.index(b"-") + 1:]
        entries.append(MountEntry(Path(_unescape(fields[4])), fields[2].decode(), _unescape(tail[0]),
                                  _unescape(tail[1])))
    return entries


def mount_at(mountpoint: Path) -> MountEntry | None:
    """The mount visible at ``mountpoint`` (None if nothing is mounted there)."""
    target = Path(os.path.abspath(mountpoint))
    found = None
    for entry in mounts():
        if entry.mountpoint == target:
            found = entry  # the last one is on top
    return found


def mount_containing(path: Path) -> MountEntry | None:
    """The mount that ``path`` (resolved) lies on: the nearest mount point above it or at it."""
    resolved = path.resolve()
    by_point = {entry.mountpoint: entry for entry in mounts()}  # later entries win: the visible ones
    for candidate in (resolved, *resolved.parents):
        if candidate in by_point:
            return by_point[candidate]
    return None


def mount_source(mountpoint: Path) -> str | None:
    """The major:minor of the filesystem mounted at ``mountpoint``, or None if nothing is mounted."""
    entry = mount_at(mountpoint)
    return None if entry is None else entry.device


def mounted_store(mountpoint: Path) -> Path | None:
    """The store of the thermofs volume mounted at ``mountpoint``; None if nothing, or another
    filesystem, is mounted there (a store directory may well be a mount point itself)."""
    entry = mount_at(mountpoint)
    return None if entry is None else entry.store


def store_mountpoints(store: Path) -> list[Path]:
    """Where the volume in ``store`` is mounted (normally once, or not at all)."""
    store = store.resolve()
    return [entry.mountpoint for entry in mounts() if entry.store == store]


def answers(path: Path, timeout: float) -> bool:
    """Does the mount at ``path`` answer a statvfs within ``timeout``? A hung FUSE mount blocks
    the caller forever, so ask from a daemon thread."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            os.statvfs(path)
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])
