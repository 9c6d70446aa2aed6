"""Mounting: the daemon's life from taking the store's lock to the unmount (``run_foreground``), and the
command that starts it detached and returns once the mount answers (``run_daemon``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from thermofs.daemon.assembly import check_remote, open_volume
from thermofs.daemon.control import ControlServer
from thermofs.daemon.handlers import daemon_handlers
from thermofs.daemon.lock import DAEMON_NAME, lock_store, name_process
from thermofs.daemon.mountinfo import answers, mount_source
from thermofs.daemon.options import MountOptions, parse_options
from thermofs.fs.errors import StoreError, UnusableTarget
from thermofs.fs.store import read_config

log = logging.getLogger("thermofs.mount")

LOG_FILE = "thermofs.log"
# A thread that gave up the GIL for I/O (an fsync in an LMDB commit, a zstd call) waits up to the
# switch interval to get it back from a busy thread: see run_foreground.
SWITCH_INTERVAL = 0.0005


def check_mountpoint(mountpoint: Path, nonempty: bool) -> None:
    if not mountpoint.exists():
        raise UnusableTarget(f"mountpoint {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise UnusableTarget(f"mountpoint {mountpoint} is not a directory")
    if mount_source(mountpoint) is not None:
        raise UnusableTarget(f"{mountpoint} is already a mountpoint")
    if not nonempty and any(mountpoint.iterdir()):
        raise UnusableTarget(f"mountpoint {mountpoint} is not empty (use -o nonempty to mount over it)")


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


def run_foreground(store: Path, mountpoint: Path, options: MountOptions, log_to_stderr: bool = True) -> None:
    """Mount and serve until unmounted. Holds the store lock for the whole time (waiting for a daemon
    of the same store that is still exiting)."""
    store, mountpoint = store.resolve(), mountpoint.resolve()  # libfuse3 does chdir("/")
    read_config(store)
    check_writable(store, options)
    check_mountpoint(mountpoint, bool(options.fuse.get("nonempty")))
    lock = lock_store(store)
    os.umask(0o077)  # everything the daemon makes in the store is private (the log, segments)
    try:
        name_process(DAEMON_NAME)
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
        # mfusepy loads libfuse when imported: only when mounting.
        from thermofs.daemon.binding import FUSE, MAX_IDLE_THREADS, raise_read_ahead
        from thermofs.daemon.operations import Operations

        setup_logging(store, log_to_stderr)
        opened = open_volume(store, options=options)
        if not options.readonly:
            if options.cooler:
                opened.cooler.start()
            opened.reclaimer.start()
            if opened.durability is not None:
                opened.durability.start()  # a sync point every `commit` seconds
            if opened.remote is not None and opened.remote.backups is not None:
                opened.remote.backups.start()  # a metadata backup every `metadata_backup` seconds
        control = ControlServer(store, daemon_handlers(opened))
        if os.access(store, os.W_OK):
            control.start()  # a store on read-only media has no control socket: stats reads LMDB
        fuse_opts: dict[str, Any] = {"fsname": f"thermofs:{store}", "subtype": "thermofs",
                                     "default_permissions": True, "max_idle_threads": str(MAX_IDLE_THREADS)}
        if os.getuid() == 0:
            fuse_opts["allow_other"] = True  # safe: the kernel checks permissions (default_permissions)
        fuse_opts.update(options.fuse)
        fuse_opts.pop("nonempty", None)
        threading.Thread(target=raise_read_ahead, args=(mountpoint, time.monotonic() + 30),
                         daemon=True).start()
        # A thread that gave up the GIL for I/O (an fsync in an LMDB commit, a zstd call) waits
        # up to the switch interval to get it back from a busy thread: at Python's default 5 ms a
        # commit took 11 ms instead of 0.4 ms with one other thread busy; 0.5 ms cuts that to ~1 ms.
        sys.setswitchinterval(SWITCH_INTERVAL)
        ops = Operations(opened.volume, store)
        log.info("mounting %s on %s (chunk size %d, hot codec %s)", store, mountpoint,
                 opened.config.chunk_size, opened.config.hot_codec)
        try:
            FUSE(ops, str(mountpoint), foreground=True, **fuse_opts)
        finally:
            control.stop()
            opened.close()
            log.info("unmounted %s", mountpoint)
    finally:
        lock.release()


def check_writable(store: Path, options: MountOptions) -> None:
    if not options.readonly and not os.access(store, os.W_OK):
        raise UnusableTarget(f"{store} is not writable (read-only media?); mount it with -o ro to read it")


def run_daemon(store: Path, mountpoint: Path, option_text: str | None, timeout: float = 60.0) -> None:
    """Start the foreground server as a detached process; return once the mount answers. The store
    must be free first (waiting for a daemon still exiting), for a clear error here rather than in
    the log."""
    store, mountpoint = store.resolve(), mountpoint.resolve()
    options = parse_options(option_text)
    read_config(store)
    check_writable(store, options)
    check_mountpoint(mountpoint, bool(options.fuse.get("nonempty")))
    lock_store(store).release()  # the daemon takes it for good
    check_remote(store, options)
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
