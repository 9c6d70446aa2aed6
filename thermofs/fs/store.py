"""The store directory: its format record, its identity, its lock, its permissions, and mkfs.

    STORE/             0700: private to the user who made it (file data and names live inside)
      thermofs.json    format record: {"format": "thermofs", "version": 2, "uuid": ..., "chunk_size": ...,
                       codecs, policy}
      meta.lmdb/       LMDB environment (see fs/meta.py for the key layout)
      segments/        append-only segment files (see fs/segments.py)
      lock             the pid of the process holding the store (the lock itself is a flock on STORE)
      thermofs.log     the daemon's log
      cache/           with an object store backend: blocks of remote segments (fs/diskcache.py)

docs/FORMAT.md describes every byte, the identity checks and the version rule.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from thermofs.codecs import CodecTable
from thermofs.fs.errors import MetaError, StoreError
from thermofs.fs.meta import ROOT_INO, Identity, Inode, MetaDamaged, MetaStore
from thermofs.fs.objectstore import BackendSpec

log = logging.getLogger("thermofs.store")

FORMAT_NAME = "thermofs"
# 2: checksummed metadata records, the volume's identity, segment headers, i128 counters (FORMAT.md).
FORMAT_VERSION = 2
# Format versions this code opens; older ones are upgraded when the store is opened for writing.
UPGRADABLE_VERSIONS = (1,)
FORMAT_FILE = "thermofs.json"
LOCK_FILE = "lock"
DEFAULT_CHUNK_SIZE = 64 << 10
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 4 << 20


# The cold codec of volumes made before ``best`` was mkfs's default.
LEGACY_COLD_CODEC = "zstd:19"


@dataclass(frozen=True)
class StoreConfig:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    hot_codec: str = "auto"
    # The cold path (codecs/coldpath.py). A volume keeps the cold codec stored at its mkfs.
    cold_codec: str = "best"
    # Hot/cold policy parameters set at mkfs (thermofs.policy.temperature.PolicyParams names); a
    # mount's -o options override them.
    policy: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    uuid: str = ""  # the volume's identity (32 hex digits), set by mkfs
    # The object store holding sealed segments and metadata backups ({"url": "s3://BUCKET/PREFIX",
    # "endpoint": ..., "region": ...}; fs/objectstore.py); empty: every segment stays in STORE/segments.
    backend: dict[str, str] = field(default_factory=dict)

    @property
    def volume_id(self) -> bytes:
        return bytes.fromhex(self.uuid)


def parse_size(text: str) -> int:
    """Parse ``65536``, ``64K``, ``1M``, ``64KiB`` into bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" else t
    try:
        value = int(num) * mult
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 64K, 1M)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def validate_config(cfg: StoreConfig) -> None:
    cs = cfg.chunk_size
    if cs < MIN_CHUNK_SIZE or cs > MAX_CHUNK_SIZE or cs & (cs - 1):
        raise StoreError(f"chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} "
                         f"bytes, not {cs}")
    table = CodecTable()
    for spec in (cfg.hot_codec, cfg.cold_codec):
        table.parse(spec)  # raises BadSpec with a clear message
    if cfg.backend:
        BackendSpec.from_dict(cfg.backend)  # raises StoreError naming what is wrong


def check_new_store(store: Path) -> None:
    """StoreError unless ``store`` can become a store: a new or empty directory (mkfs, restore)."""
    if store.exists() and (not store.is_dir() or any(store.iterdir())):
        raise StoreError(f"{store} exists and is not an empty directory")


def mkfs(store: Path, cfg: StoreConfig) -> StoreConfig:
    """Make a new, empty volume in ``store`` (a new or empty directory); returns its config."""
    validate_config(cfg)
    check_new_store(store)
    cfg = replace(cfg, uuid=uuidlib.uuid4().hex, version=FORMAT_VERSION, format=FORMAT_NAME)
    old_umask = os.umask(0o077)
    try:
        store.mkdir(parents=True, exist_ok=True)
        os.chmod(store, 0o700)
        (store / "segments").mkdir()
        meta = MetaStore(store / "meta.lmdb", create=True)
        try:
            now = time.time_ns()
            with meta.write() as t:
                t.put_identity(Identity(cfg.uuid, cfg.chunk_size, FORMAT_VERSION, headers_from=1))
                t.put_inode(Inode(ROOT_INO, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), 2, 0, now, now,
                                  now, parent=ROOT_INO))
                t.bump("next_ino", ROOT_INO + 1)
        finally:
            meta.close()
        write_config(store, cfg)
    finally:
        os.umask(old_umask)
    return cfg


def write_config(store: Path, cfg: StoreConfig) -> None:
    """Replace thermofs.json atomically (private to the owner, like everything in the store)."""
    tmp = store / (FORMAT_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(cfg), indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, store / FORMAT_FILE)


def read_config(store: Path) -> StoreConfig:
    if not store.is_dir():
        raise StoreError(f"{store}: no such store directory")
    path = store / FORMAT_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{store} is not a thermofs store (no {FORMAT_FILE}; make one with "
                         f"'thermofs mkfs')") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is unreadable or damaged: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise StoreError(f"{store} is not a thermofs store ({FORMAT_FILE} names no thermofs format)")
    version = raw.get("version")
    if version != FORMAT_VERSION and version not in UPGRADABLE_VERSIONS:
        raise StoreError(f"{store} has format version {version!r}; this thermofs reads version "
                         f"{FORMAT_VERSION} (and upgrades {', '.join(map(str, UPGRADABLE_VERSIONS))})")
    raw.setdefault("cold_codec", LEGACY_COLD_CODEC)  # every mkfs wrote one; should one be missing
    try:
        cfg = StoreConfig(**raw)
    except TypeError as e:
        raise StoreError(f"{path} has unknown fields: {e}") from e
    if version == FORMAT_VERSION:
        try:
            if len(cfg.volume_id) != 16:
                raise ValueError
        except ValueError:
            raise StoreError(f"{path} is damaged: its uuid {cfg.uuid!r} is not 32 hex digits") from None
    validate_config(cfg)
    return cfg


class DamagedMetadata(StoreError):
    """The store's LMDB is missing, empty, truncated, structurally damaged or another volume's."""


def open_meta(store: Path, cfg: StoreConfig, readonly: bool = False, check_structure: bool = True,
              durable_commits: bool = True) -> tuple[MetaStore, Identity]:
    """Open the store's LMDB and check it is this volume's: present, not empty, not truncated, sound
    in structure (``check_structure`` off only for a look at a store a daemon has open), its identity
    record sound and equal to thermofs.json's. A store failing any check is refused, never opened as
    a fresh namespace over the segments beside it."""
    if cfg.version != FORMAT_VERSION:
        raise StoreError(f"{store} has format version {cfg.version}; mount it (or run 'thermofs fsck --repair') "
                         f"once to upgrade it to version {FORMAT_VERSION}")
    try:
        meta = MetaStore(store / "meta.lmdb", readonly=readonly, check_structure=check_structure,
                         durable_commits=durable_commits)
    except MetaDamaged as e:
        raise DamagedMetadata(f"{e}; the volume's metadata is lost or damaged, so nothing was opened "
                              f"(restore meta.lmdb from a backup; its segments are left untouched)") from None
    except MetaError as e:
        raise StoreError(f"cannot open the metadata of {store}: {e}") from None
    try:
        with meta.read() as t:
            identity = t.identity()
    except MetaError as e:
        meta.close()
        raise StoreError(f"{store}: the volume's identity record is damaged ({e})") from None
    problem = None
    if identity is None:
        problem = "its metadata has no identity record (not this volume's, or damaged)"
    elif identity.uuid != cfg.uuid:
        problem = f"its metadata belongs to volume {identity.uuid}, thermofs.json names {cfg.uuid}"
    elif identity.chunk_size != cfg.chunk_size:
        problem = (f"thermofs.json says chunk size {cfg.chunk_size}, the metadata says {identity.chunk_size} "
                   f"(thermofs.json is damaged or was edited)")
    if problem is not None:
        meta.close()
        raise DamagedMetadata(f"{store}: {problem}; nothing was opened")
    assert identity is not None
    return meta, identity


def secure(store: Path) -> None:
    """Make the store private to its owner (0700 directories, 0600 files), stores made before
    included: file data, names and xattrs live in it."""
    paths = [store, store / "meta.lmdb", store / "segments"]
    for top in paths[:]:
        if top.is_dir():
            paths += [p for p in top.iterdir() if p.is_file()]
    for p in paths:
        try:
            st = p.lstat()
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) & ~want:
                os.chmod(p, stat.S_IMODE(st.st_mode) & want)
        except FileNotFoundError:
            continue


class StoreLock:
    """An exclusive flock on the store directory itself, held for the life of a mount (or an offline
    admin command): deleting a file cannot release it. STORE/lock holds the holder's pid, for messages."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store / LOCK_FILE
        self.fd = -1

    def acquire(self) -> None:
        try:
            fd = os.open(self.store, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise StoreError(f"{self.store}: no such store directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"store {self.store} is in use (mounted or locked by pid {self.holder() or '?'}); "
                             f"unmount it first") from None
        try:
            pid = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(pid, f"{os.getpid()}\n".encode())
            finally:
                os.close(pid)
        except OSError:
            pass  # a read-only store: the pid is only for messages
        self.fd = fd

    def holder(self) -> str:
        """The pid written by the holder (it may be stale if nobody holds the lock)."""
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def is_held_elsewhere(self) -> bool:
        try:
            self.acquire()
        except StoreError:
            return True
        self.release()
        return False
