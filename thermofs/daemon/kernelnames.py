"""Cached attributes and hard links: the names of a file the kernel caches, and telling it they changed.

The kernel caches each inode's attributes for ``ATTR_TIMEOUT`` (daemon/binding.py), which spares a
GETATTR request for every directory of every path it walks. libfuse's path-based API gives every *name*
its own kernel inode, though, so when a file with several links changes through one name (a write, a
chmod, a link or unlink), what the kernel caches for its other names goes stale: size, link count,
mode, times, pages. ``KernelNames`` closes that gap:

- it remembers every name of a non-directory with more than one link that the kernel looked up (every
  name the kernel caches comes through a lookup, which libfuse answers with a getattr by path) or
  that a link made;
- after an operation changes such an inode, it has libfuse drop what the kernel caches for the
  inode's other names (``fuse_invalidate_path``: attributes and pages) before the operation returns,
  so the next stat or read through them asks the daemon.

The name the operation came through is left out: the kernel updates it from the reply, and
invalidating it from inside its own request could wait for pages that request holds locked. The
invalidation runs on a thread of its own, and the operation waits for it at most ``WAIT_SECONDS``:
a libfuse worker never waits without bound for pages another request holds.

Nothing else needs this: a directory has one name and the kernel drops its cached attributes itself
whenever it changes an entry in it; a file with one link changes only through that name.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("thermofs.kernelnames")

# An invalidation waits for pages another request may hold locked; that request finishes within
# milliseconds unless the machine stalls. Past this the operation answers anyway (the invalidation
# still lands when the pages are free).
WAIT_SECONDS = 5.0

Invalidate = Callable[[str], None]


@dataclass
class _Batch:
    paths: list[str]
    done: threading.Event = field(default_factory=threading.Event)


class KernelNames:
    """The names of multiply-linked inodes the kernel may cache, and their invalidation."""

    def __init__(self, invalidate: Invalidate) -> None:
        self._invalidate = invalidate
        self._lock = threading.Lock()
        self._names: dict[int, set[str]] = {}  # inode -> its names the kernel may cache
        self._inode_of: dict[str, int] = {}  # name -> inode, for every name in _names
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    # -- what the operations tell ---------------------------------------------------------------------
    def looked_up(self, path: str, ino: int, nlink: int, is_dir: bool) -> None:
        """The kernel got attributes for ``path`` (a lookup or a getattr by path)."""
        if nlink > 1 and not is_dir:
            self._add(ino, path)

    @property
    def active(self) -> bool:
        """Is any inode tracked (the cheap test on the write path)?"""
        return bool(self._names)

    def tracks(self, ino: int) -> bool:
        """Does ``ino`` have names to invalidate (the cheap test before ``changed``)?"""
        return ino in self._names

    def changed(self, ino: int, through: str | None) -> None:
        """``ino``'s attributes or data changed through ``through``: invalidate its other names."""
        with self._lock:
            others = [p for p in self._names.get(ino, ()) if p != through]
        self._run(others)

    def linked(self, ino: int, source: str, new: str) -> None:
        """A link ``new`` to the file at ``source`` was made: both names are now the file's, and its
        link count and ctime changed for every name but ``new`` (whose lookup reply is fresh)."""
        self._add(ino, source)
        self._add(ino, new)
        self.changed(ino, new)

    def unlinked(self, path: str) -> None:
        """``path`` was unlinked: the file's other names have one link less."""
        with self._lock:
            ino = self._inode_of.pop(path, None)
            if ino is None:
                return
            names = self._names[ino]
            names.discard(path)
            if not names:
                del self._names[ino]
        self.changed(ino, None)

    def renamed(self, old: str, new: str) -> None:
        """``old`` became ``new``: a file replaced at ``new`` lost a link; a moved file's ctime changed;
        a moved directory's tracked descendants have new paths. Two names of one file: nothing moved."""
        with self._lock:
            if self._inode_of.get(old) is not None and self._inode_of.get(old) == self._inode_of.get(new):
                return
        self.unlinked(new)
        with self._lock:
            moved = [(p, new + p[len(old):]) for p in self._inode_of if p == old or p.startswith(old + "/")]
            for before, after in moved:
                ino = self._inode_of.pop(before)
                self._inode_of[after] = ino
                self._names[ino].discard(before)
                self._names[ino].add(after)
            file_ino = self._inode_of.get(new)
        if file_ino is not None:
            self.changed(file_ino, new)

    # -- the invalidation thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="thermofs-kernelnames", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(WAIT_SECONDS)
            self._thread = None

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            for path in batch.paths:
                try:
                    self._invalidate(path)
                except Exception:  # a daemon thread must not die of one bad path
                    log.exception("invalidating %r", path)
            batch.done.set()

    def _run(self, paths: list[str]) -> None:
        if not paths:
            return
        if self._thread is None:  # not started (tests of the rules, or after unmount): inline
            for path in paths:
                self._invalidate(path)
            return
        batch = _Batch(paths)
        self._queue.put(batch)
        if not batch.done.wait(WAIT_SECONDS):
            log.warning("invalidating %d cached names took over %.0f s; answering without waiting",
                        len(paths), WAIT_SECONDS)

    # -- the registry ---------------------------------------------------------------------------------
    def _add(self, ino: int, path: str) -> None:
        with self._lock:
            previous = self._inode_of.get(path)
            if previous == ino:
                return
            if previous is not None:  # the name now leads to another file
                self._names[previous].discard(path)
                if not self._names[previous]:
                    del self._names[previous]
            self._inode_of[path] = ino
            self._names.setdefault(ino, set()).add(path)
