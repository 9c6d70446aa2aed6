"""Build a volume from a store and mount it: the one place where the parts are wired together."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from thermofs.codecs import CodecSpec, CodecTable
from thermofs.fs.cache import DEFAULT_CACHE_BYTES, ChunkCache
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.control import ControlServer, Handler, UnusableTarget
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import MetaStore
from thermofs.fs.reclaim import Reclaimer
from thermofs.fs.resources import load_resources
from thermofs.fs.segments import SegmentStore
from thermofs.fs.store import StoreConfig, StoreLock, open_meta, parse_size, read_config, secure
from thermofs.fs.upgrade import upgrade
from thermofs.fs.volume import DEFAULT_DIRTY_BYTES, Volume
from thermofs.policy.cooler import DEFAULT_BUDGET, DEFAULT_INTERVAL, SLOW_DECODERS, Cooler
from thermofs.policy.temperature import POLICY_KEYS, PolicyParams, parse_age
from thermofs.policy.tracker import Tracker
from thermofs.policy.training import ModelTrainer, Progress, Trainer

log = logging.getLogger("thermofs.mount")

LOG_FILE = "thermofs.log"
# Options thermofs itself takes with -o; everything else must be a FUSE option we pass through.
OWN_OPTIONS = {"cache_size", "dirty_size", "cool_interval", "cool_budget", "nocool", *POLICY_KEYS}
FUSE_FLAGS = {"allow_other", "allow_root", "ro", "rw", "noatime", "nodev", "nosuid", "noexec",
              "auto_unmount", "debug", "nothreads", "kernel_cache", "direct_io", "nonempty"}
FUSE_VALUED = {"fsname", "attr_timeout", "entry_timeout", "negative_timeout", "max_read", "subtype",
               "max_idle_threads", "max_threads"}
# Kernel read-ahead for the mount: 1 MiB makes the kernel send 1 MiB read requests instead of 128 KiB,
# which cuts the per-request Python cost of sequential reads by 8x.
READ_AHEAD_KB = 1024
SWITCH_INTERVAL = 0.0005
# The daemon's name in /proc/PID/comm (at most 15 bytes). The store lock file names the holder's pid;
# this name tells an admin command that the holder is a daemon (which, once unmounted, is only
# finishing its writes: worth waiting for) rather than another admin command.
DAEMON_NAME = "thermofs-mount"
PR_SET_NAME = 15
# libfuse 3.14's fuse_main_real hands the max_idle_threads default (UINT_MAX, "never destroy idle
# workers") to fuse_loop_cfg_set_idle_threads, which rejects anything above 100,000 and logs
# "Ignoring invalid max threads value 4294967295 > max (100000)" (fixed in later releases). An
# explicit 100,000 is accepted and means the same with at most max_threads (10) workers: no idle
# worker is ever destroyed, so none loses its pinned Python thread state (see operations.FUSE).
MAX_IDLE_THREADS = 100_000


@dataclass
class MountOptions:
    cache_bytes: int = DEFAULT_CACHE_BYTES
    dirty_bytes: int = DEFAULT_DIRTY_BYTES
    policy: dict[str, str] = field(default_factory=dict)  # overrides the store's policy parameters
    cool_interval: float = DEFAULT_INTERVAL
    cool_budget: int = DEFAULT_BUDGET
    cooler: bool = True
    fuse: dict[str, Any] = field(default_factory=dict)

    @property
    def readonly(self) -> bool:
        """-o ro: nothing is written to the store (it may be on read-only media)."""
        return bool(self.fuse.get("ro"))


def parse_options(text: str | None) -> MountOptions:
    opts = MountOptions()
    for item in filter(None, (text or "").split(",")):
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
        elif key in FUSE_FLAGS and not eq:
            opts.fuse[key] = True
        elif key in FUSE_VALUED and eq:
            opts.fuse[key] = value
        else:
            known = ", ".join(sorted(OWN_OPTIONS | FUSE_FLAGS | FUSE_VALUED))
            raise ValueError(f"unknown or malformed mount option {item!r} (known: {known})")
    PolicyParams().with_options(opts.policy)  # a bad value fails here, before mounting
    return opts


@dataclass
class Parts:
    """Everything a mounted (or offline-opened) volume owns, closed in reverse order."""

    config: StoreConfig
    meta: MetaStore
    segments: SegmentStore
    pool: ThreadPoolExecutor
    volume: Volume
    tracker: Tracker
    cooler: Cooler
    trainer: Trainer
    reclaimer: Reclaimer

    def close(self) -> None:
        """Close every part, last built first. A part that fails to close (the tracker cannot write
        its hints into damaged metadata) is logged and the others still close; the first failure
        is raised at the end."""
        failed: Exception | None = None
        for step in (self.cooler.stop, self.reclaimer.stop, self.volume.close, self.tracker.flush,
                     self.pool.shutdown, self.segments.close, self.meta.close):
            try:
                step()
            except Exception as e:
                log.exception("closing the volume: %s failed", step.__qualname__)
                failed = failed or e
        if failed is not None:
            raise failed


def open_volume(store: Path, cache_bytes: int = DEFAULT_CACHE_BYTES, dirty_bytes: int = DEFAULT_DIRTY_BYTES,
                options: MountOptions | None = None, clock: Callable[[], float] = time.time) -> Parts:
    """Build every part of a volume and recover it after a crash (the cooler and the reclaimer are
    built, not started). The caller holds the lock.
    ``clock`` drives the policy (a simulated one in tests and replays)."""
    options = options or MountOptions(cache_bytes, dirty_bytes)
    readonly = options.readonly
    config = read_config(store)
    if not readonly:
        secure(store)
        config = upgrade(store, config)  # logged; nothing to do for a store of the current format
    meta, identity = open_meta(store, config, readonly=readonly)
    segments = SegmentStore(store / "segments", config.volume_id, identity.headers_from)
    reclaimer = Reclaimer(meta, segments)

    def freed(frames: list[tuple[int, int, int]]) -> None:
        """A commit made frames garbage: punch them out, and a segment may now be all dead."""
        segments.punch(frames)
        reclaimer.freed()

    meta.on_freed = freed
    resources = load_resources(meta)
    table = CodecTable(resources)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="encode")
    hot = table.parse(config.hot_codec)
    chunks = ChunkStore(segments, table, hot, config.chunk_size)
    params = PolicyParams().with_options({**config.policy, **options.policy})
    tracker = Tracker(meta, params, clock)
    volume = Volume(meta, chunks, ChunkCache(options.cache_bytes), pool, options.dirty_bytes, tracker,
                    reclaimer)
    if not readonly:
        volume.recover()
    slow = frozenset(table.by_name[name].ID for name in SLOW_DECODERS if name in table.by_name)
    trainer = Trainer(meta, chunks, resources, model_trainer(table))
    cold = table.parse(config.cold_codec)
    cooler = Cooler(volume, meta, tracker, cold, hot, slow, options.cool_budget, options.cool_interval,
                    prepare=trainer.ensure_dictionaries if uses_dictionaries(cold) else None)
    return Parts(config, meta, segments, pool, volume, tracker, cooler, trainer, reclaimer)


def uses_dictionaries(spec: CodecSpec) -> bool:
    """Does this cold spec encode with the volume's trained dictionaries?"""
    return spec.best or spec.codec.name == "dict"


def model_trainer(table: CodecTable) -> ModelTrainer | None:
    """The learned codec's trainer, if the table has that codec."""
    if "learned" not in table.by_name:
        return None

    def train(samples: list[bytes], base: bytes | None, budget: float, progress: Progress | None) -> bytes:
        # numba and torch load only to train: importing the trainer at mount took 0.2-0.3 s.
        from thermofs.codecs.learned.train import train_model

        return train_model(samples, base, budget, progress)

    return train


def statfs_of(store: Path, volume: Volume) -> dict[str, int]:
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


def check_mountpoint(mountpoint: Path, nonempty: bool) -> None:
    if not mountpoint.exists():
        raise UnusableTarget(f"mountpoint {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise UnusableTarget(f"mountpoint {mountpoint} is not a directory")
    if mount_source(mountpoint) is not None:
        raise UnusableTarget(f"{mountpoint} is already a mountpoint")
    if not nonempty and any(mountpoint.iterdir()):
        raise UnusableTarget(f"mountpoint {mountpoint} is not empty (use -o nonempty to mount over it)")


def name_process(name: str) -> None:
    """Set this thread's name as /proc shows it (comm); best effort."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError) as e:
        log.info("could not name the process %r: %s", name, e)


def take_lock_now(store: Path) -> StoreLock:
    """The store lock, taken at once (StoreError if it is held)."""
    lock = StoreLock(store)
    lock.acquire()
    return lock


def _raise_read_ahead(mountpoint: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        dev = mount_source(mountpoint)
        if dev is not None:
            try:
                Path(f"/sys/class/bdi/{dev}/read_ahead_kb").write_text(f"{READ_AHEAD_KB}\n")
            except OSError as e:
                log.info("could not raise read-ahead (%s); sequential reads use 128 KiB requests", e)
            return
        time.sleep(0.05)


def _configure(conn: Any, config: Any) -> None:
    if conn is not None:
        conn.max_readahead = READ_AHEAD_KB << 10
    if config is not None:
        # Real inode numbers (stable across remounts). hard_remove stays off: libfuse then renames a
        # file unlinked while open to a hidden name, so fstat() on it keeps working (with
        # hard_remove the path-based API answers ESTALE); the volume reclaims such files after a crash.
        config.use_ino = 1
        config.nullpath_ok = 1
        # The path-based libfuse API gives each name of a hard-linked file its own kernel inode, so a
        # cached size or link count of one name goes stale when the file changes through another.
        # Attributes are therefore never cached (libfuse3 still invalidates cached pages when size
        # or mtime change: auto_inval_data).
        config.attr_timeout = 0.0


def log_path(store: Path) -> Path:
    """Where the daemon logs: the store's log, or for a store it cannot write (read-only media,
    mounted -o ro) a private file in the temporary directory."""
    if os.access(store, os.W_OK):
        return store / LOG_FILE
    return Path(tempfile.gettempdir()) / f"thermofs-{read_config(store).uuid or store.name}.log"


def setup_logging(store: Path, to_stderr: bool) -> None:
    path = log_path(store)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_foreground(store: Path, mountpoint: Path, options: MountOptions, log_to_stderr: bool = True,
                   handlers: Callable[[Parts], dict[str, Handler]] | None = None,
                   take_lock: Callable[[Path], StoreLock] = take_lock_now) -> None:
    """Mount and serve until unmounted. Holds the store lock for the whole time. ``handlers`` builds
    what the control socket answers (the admin tools' daemon side), from the mounted parts;
    ``take_lock`` takes the store lock (the admin tools' version waits for a daemon still exiting)."""
    store, mountpoint = store.resolve(), mountpoint.resolve()  # libfuse3 does chdir("/")
    read_config(store)
    check_writable(store, options)
    check_mountpoint(mountpoint, bool(options.fuse.get("nonempty")))
    lock = take_lock(store)
    os.umask(0o077)  # everything the daemon makes in the store is private (the log, segments)
    try:
        name_process(DAEMON_NAME)
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
        from thermofs.fs.operations import FUSE, Operations  # loads libfuse: only when mounting

        setup_logging(store, log_to_stderr)
        parts = open_volume(store, options=options)
        if not options.readonly:
            if options.cooler:
                parts.cooler.start()
            parts.reclaimer.start()
        control = ControlServer(store, handlers(parts) if handlers is not None else {})
        if os.access(store, os.W_OK):
            control.start()  # a store on read-only media has no control socket: stats reads LMDB
        fuse_opts: dict[str, Any] = {"fsname": f"thermofs:{store}", "subtype": "thermofs",
                                     "default_permissions": True, "max_idle_threads": str(MAX_IDLE_THREADS)}
        if os.getuid() == 0:
            fuse_opts["allow_other"] = True  # safe: the kernel checks permissions (default_permissions)
        fuse_opts.update(options.fuse)
        fuse_opts.pop("nonempty", None)
        threading.Thread(target=_raise_read_ahead, args=(mountpoint, time.monotonic() + 30),
                         daemon=True).start()
        # A thread that gave up the GIL for I/O (an fsync in an LMDB commit, a zstd call) waits
        # up to the switch interval to get it back from a busy thread: at Python's default 5 ms a
        # commit took 11 ms instead of 0.4 ms with one other thread busy; 0.5 ms cuts that to ~1 ms.
        sys.setswitchinterval(SWITCH_INTERVAL)
        ops = Operations(parts.volume, lambda: statfs_of(store, parts.volume), _configure)
        log.info("mounting %s on %s (chunk size %d, hot codec %s)", store, mountpoint,
                 parts.config.chunk_size, parts.config.hot_codec)
        try:
            FUSE(ops, str(mountpoint), foreground=True, **fuse_opts)
        finally:
            control.stop()
            parts.close()
            log.info("unmounted %s", mountpoint)
    finally:
        lock.release()


def check_writable(store: Path, options: MountOptions) -> None:
    if not options.readonly and not os.access(store, os.W_OK):
        raise UnusableTarget(f"{store} is not writable (read-only media?); mount it with -o ro to read it")


def run_daemon(store: Path, mountpoint: Path, option_text: str | None, timeout: float = 60.0,
               take_lock: Callable[[Path], StoreLock] = take_lock_now) -> None:
    """Start the foreground server as a detached process; return once the mount answers.
    ``take_lock`` checks the store is free first, for a clear error here rather than in the log."""
    store, mountpoint = store.resolve(), mountpoint.resolve()
    options = parse_options(option_text)
    read_config(store)
    check_writable(store, options)
    check_mountpoint(mountpoint, bool(options.fuse.get("nonempty")))
    take_lock(store).release()  # the daemon takes it for good
    cmd = [sys.executable, "-m", "thermofs", "mount", "-f", "--no-stderr", str(store), str(mountpoint)]
    if option_text:
        cmd += ["-o", option_text]
    logs = log_path(store)
    with open(os.open(logs, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mount_source(mountpoint) is not None:
            if not answers(mountpoint, timeout):
                raise StoreError(f"the mount at {mountpoint} does not answer; see {logs}")
            return
        if proc.poll() is not None:
            raise StoreError(f"mount failed (exit {proc.returncode}); see {logs}:\n" + _tail(logs))
        time.sleep(0.05)
    proc.kill()
    raise StoreError(f"mount did not become ready within {timeout:.0f} s; see {logs}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
