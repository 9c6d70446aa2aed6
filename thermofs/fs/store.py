"""The store directory: its format record, its lock, and creating it (mkfs).

    STORE/
      thermofs.json    format record: {"format": "thermofs", "version": 1, "chunk_size": ..., codecs}
      meta.lmdb/       LMDB environment (see fs/meta.py for the key layout)
      segments/        append-only segment files (see fs/segments.py)
      lock             flock()ed by the mounted daemon: a second mount is refused
      thermofs.log     the daemon's log
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from thermofs.codecs import CodecTable
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import ROOT_INO, Inode, MetaStore
from thermofs.policy.temperature import PolicyParams

FORMAT_NAME = "thermofs"
FORMAT_VERSION = 1
FORMAT_FILE = "thermofs.json"
DEFAULT_CHUNK_SIZE = 64 << 10
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 4 << 20


@dataclass(frozen=True)
class StoreConfig:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    hot_codec: str = "auto"
    cold_codec: str = "zstd:19"
    # Hot/cold policy parameters set at mkfs (thermofs.policy.temperature.PolicyParams names); a
    # mount's -o options override them.
    policy: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION


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
    try:
        PolicyParams().with_options(cfg.policy)
    except ValueError as e:
        raise StoreError(str(e)) from None


def mkfs(store: Path, cfg: StoreConfig) -> None:
    validate_config(cfg)
    if store.exists() and (not store.is_dir() or any(store.iterdir())):
        raise StoreError(f"{store} exists and is not an empty directory")
    store.mkdir(parents=True, exist_ok=True)
    (store / "segments").mkdir()
    meta = MetaStore(store / "meta.lmdb")
    try:
        now = time.time_ns()
        with meta.write() as t:
            t.put_inode(Inode(ROOT_INO, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), 2, 0, now, now, now,
                              parent=ROOT_INO))
            t.bump("next_ino", ROOT_INO + 1)
    finally:
        meta.close()
    tmp = store / (FORMAT_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(cfg), indent=2) + "\n")
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
    if raw.get("version") != FORMAT_VERSION:
        raise StoreError(f"{store} has format version {raw.get('version')!r}; this thermofs reads version "
                         f"{FORMAT_VERSION} only")
    try:
        cfg = StoreConfig(**raw)
    except TypeError as e:
        raise StoreError(f"{path} has unknown fields: {e}") from e
    validate_config(cfg)
    return cfg


class StoreLock:
    """An exclusive flock on STORE/lock, held for the life of a mount (or an offline admin command)."""

    def __init__(self, store: Path) -> None:
        self.path = store / "lock"
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreError(f"store {self.path.parent} is in use (mounted or locked by pid {holder or '?'}); "
                             f"unmount it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

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
