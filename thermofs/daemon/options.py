"""Mount options: what ``thermofs mount -o`` takes, parsed and checked before anything is mounted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thermofs.fs.backup import DEFAULT_BACKUP_SECONDS
from thermofs.fs.cache import DEFAULT_CACHE_BYTES
from thermofs.fs.diskcache import DEFAULT_DISK_CACHE
from thermofs.fs.durability import DEFAULT_COMMIT_SECONDS
from thermofs.fs.store import parse_size
from thermofs.fs.volume import DEFAULT_DIRTY_BYTES
from thermofs.policy.cooler import DEFAULT_BUDGET, DEFAULT_INTERVAL
from thermofs.policy.temperature import POLICY_KEYS, PolicyParams, parse_age

# A read of a remote segment that cannot reach the object store keeps retrying this long, then answers
# EIO: long enough to ride out a restarting server, short enough that a program is not stuck for good.
DEFAULT_REMOTE_TIMEOUT = 60.0

# Options thermofs itself takes with -o; everything else must be a FUSE option we pass through.
OWN_OPTIONS = {"cache_size", "dirty_size", "cool_interval", "cool_budget", "nocool", "commit", "sync_close",
               "disk_cache", "metadata_backup", "remote_timeout", "force_unlock", *POLICY_KEYS}
FUSE_FLAGS = {"allow_other", "allow_root", "ro", "rw", "noatime", "nodev", "nosuid", "noexec",
              "auto_unmount", "debug", "nothreads", "kernel_cache", "direct_io", "nonempty"}
# attr_timeout and entry_timeout are the daemon's (daemon/binding.py ATTR_TIMEOUT): what the kernel
# may cache is safe only with the invalidations of daemon/kernelnames.py behind it.
FUSE_VALUED = {"fsname", "negative_timeout", "max_read", "subtype", "max_idle_threads", "max_threads"}


@dataclass
class MountOptions:
    cache_bytes: int = DEFAULT_CACHE_BYTES
    dirty_bytes: int = DEFAULT_DIRTY_BYTES
    policy: dict[str, str] = field(default_factory=dict)  # overrides the store's policy parameters
    cool_interval: float = DEFAULT_INTERVAL
    cool_budget: int = DEFAULT_BUDGET
    cooler: bool = True
    # Seconds between sync points (fs/durability.py): at most this much of what was closed is lost to
    # a power loss. sync_close: every close (and every commit) durable on its own.
    commit_seconds: float = DEFAULT_COMMIT_SECONDS
    sync_close: bool = False
    # With an object store backend (fs/tiered.py): the disk cache's bound, seconds between metadata
    # backups, how long a read keeps trying an unreachable store before it answers EIO, and whether
    # to break another mount's lock object.
    disk_cache_bytes: int = DEFAULT_DISK_CACHE
    backup_seconds: float = DEFAULT_BACKUP_SECONDS
    remote_timeout: float = DEFAULT_REMOTE_TIMEOUT
    force_unlock: bool = False
    fuse: dict[str, Any] = field(default_factory=dict)

    @property
    def readonly(self) -> bool:
        """-o ro: nothing is written to the store (it may be on read-only media)."""
        return bool(self.fuse.get("ro"))


def parse_options(text: str | None) -> MountOptions:
    opts = MountOptions()
    for item in filter(None, (text or "").split(",")):
        try:
            _apply(opts, item)
        except ValueError as e:
            raise ValueError(str(e) if item in str(e) else f"mount option {item!r}: {e}") from None
    PolicyParams().with_options(opts.policy)  # a bad value fails here, before mounting
    return opts


def _apply(opts: MountOptions, item: str) -> None:
    """Set what one ``-o`` item says."""
    key, eq, value = item.partition("=")
    key = key.strip()
    if key == "cache_size" and eq:
        opts.cache_bytes = parse_size(value)
    elif key == "dirty_size" and eq:
        opts.dirty_bytes = parse_size(value)
    elif key in POLICY_KEYS and eq:
        opts.policy[key] = value
    elif key == "cool_interval" and eq:
        opts.cool_interval = parse_age(value)
    elif key == "cool_budget" and eq:
        opts.cool_budget = parse_size(value)
    elif key == "nocool" and not eq:
        opts.cooler = False
    elif key == "commit" and eq:
        opts.commit_seconds = _positive(value, key)
    elif key == "sync_close" and not eq:
        opts.sync_close = True
    elif key == "disk_cache" and eq:
        opts.disk_cache_bytes = parse_size(value)
    elif key == "metadata_backup" and eq:
        opts.backup_seconds = _positive(value, key)
    elif key == "remote_timeout" and eq:
        opts.remote_timeout = _positive(value, key)
    elif key == "force_unlock" and not eq:
        opts.force_unlock = True
    elif key in FUSE_FLAGS and not eq:
        opts.fuse[key] = True
    elif key in FUSE_VALUED and eq:
        opts.fuse[key] = value
    else:
        known = ", ".join(sorted(OWN_OPTIONS | FUSE_FLAGS | FUSE_VALUED))
        raise ValueError(f"unknown or malformed mount option {item!r} (known: {known})")




def _positive(value: str, key: str) -> float:
    seconds = parse_age(value)
    if seconds <= 0:
        raise ValueError(f"{key} must be a positive time (got {value!r})")
    return seconds
