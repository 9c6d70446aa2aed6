"""Harnesses the tests of every folder share, as fixtures: the thermofs command in a subprocess, a chunk
map read from a store, a clock a test moves by hand, the shared corpora and a store of format 1. The
mount harness is in tests/mount/conftest.py; nothing here needs FUSE."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from thermofs.fs.meta import ChunkEntry, MetaStore

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# A store written through a real mount by the last format-1 code (see tests/mount/test_upgrade.py).
FORMAT1_ARCHIVE = Path(__file__).parent / "data" / "store-format1.tar.xz"
THERMOFS = [sys.executable, "-m", "thermofs"]

Run = Callable[..., subprocess.CompletedProcess[str]]
ChunkMap = Callable[[Path, int], dict[int, ChunkEntry]]


@pytest.fixture
def repo() -> Path:
    """The checkout under test: PYTHONPATH (or cwd) of a subprocess that must run this code."""
    return REPO


@pytest.fixture
def run() -> Run:
    """``run(*args, prefix=(), timeout=300)``: ``thermofs ARGS`` in a subprocess running this checkout's
    code, without stdin, its output captured as text; ``prefix``: a command it runs under (setpriv...)."""

    def run(*args: str | Path, prefix: Sequence[str] = (), timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *THERMOFS, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})

    return run


@pytest.fixture
def chunk_map() -> ChunkMap:
    """``chunk_map(store, ino)``: chunk index -> entry of one file, read from the store's metadata."""

    def chunk_map(store: Path, ino: int) -> dict[int, ChunkEntry]:
        meta = MetaStore(store / "meta.lmdb", readonly=True)
        try:
            with meta.read() as t:
                return dict(t.chunks_of(ino))
        finally:
            meta.close()

    return chunk_map


class Clock:
    """A clock the test moves by hand (``clock.now += 400``), for the policy's idea of time."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def corpora() -> Path:
    """The shared compression corpora (Calgary, Canterbury, Snappy's test data), next to the checkout."""
    return SHARED / "corpora"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A store of format 1 (tests/data/store-format1.tar.xz), unpacked into the test's directory."""
    with tarfile.open(FORMAT1_ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store"
