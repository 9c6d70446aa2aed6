"""Real mount: thousands of random writes, truncates, reads and fsyncs, mirrored on a plain model file.

Set THERMOFS_TEST_SEED to replay a run; the seed is printed (pytest shows it when the test fails).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mount.conftest import Mount

FILES = 3
OPS = 4500
REMOUNTS = 4
MAX_WRITE = 300 << 10
MAX_SIZE = 3 << 20  # keep files small enough that whole-file comparisons stay cheap
SEED = int(os.environ.get("THERMOFS_TEST_SEED", "20240611"))


def _payload(rng: random.Random, n: int) -> bytes:
    """Random bytes, compressible text-like bytes, zeros (stored as holes), or a mixture."""
    kind = rng.random()
    if kind < 0.35:
        return rng.randbytes(n)
    if kind < 0.75:
        word = rng.randbytes(rng.randint(1, 64))
        return (word * (n // len(word) + 1))[:n]
    if kind < 0.85:
        return bytes(n)
    half = n // 2
    return rng.randbytes(half) + bytes(n - half)


def _size(rng: random.Random, chunk: int) -> int:
    """Write sizes from 1 byte to MAX_WRITE, log-uniform, with extra weight on chunk-size multiples."""
    r = rng.random()
    if r < 0.15:
        return chunk * rng.randint(1, max(1, MAX_WRITE // chunk))
    if r < 0.25:
        return rng.randint(1, 16)
    return min(MAX_WRITE, max(1, int(2 ** rng.uniform(0, 18.2))))


def _offset(rng: random.Random, size: int, chunk: int) -> int:
    r = rng.random()
    if r < 0.2:  # exactly at a chunk boundary, or just before / after one
        base = chunk * rng.randint(0, max(1, size // chunk + 2))
        return max(0, base + rng.choice((0, 0, -1, 1, -7)))
    if r < 0.35:  # append, or past the end (a hole)
        return size + rng.choice((0, 0, rng.randint(1, 3 * chunk), rng.randint(1, 400 << 10)))
    return rng.randint(0, max(0, size))


def _compare_whole(mnt_path: Path, model_path: Path, ctx: str) -> None:
    got, want = mnt_path.read_bytes(), model_path.read_bytes()
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{ctx}: {mnt_path.name} differs from the model: sizes {len(got)} vs {len(want)}, "
                    f"first difference at byte {first} (seed {SEED})")


@pytest.mark.parametrize("chunk_size, options", [
    pytest.param(4 << 10, None, id="4K"),
    pytest.param(64 << 10, None, id="64K"),
    pytest.param(4 << 10, "direct_io,dirty_size=512K", id="4K-direct_io-small_dirty"),
])
def test_random_operations(make_mount: Callable[..., Mount], tmp_path: Path, chunk_size: int,
                           options: str | None) -> None:
    seed = SEED + chunk_size + (1 if options else 0)
    print(f"seed {seed} (THERMOFS_TEST_SEED={SEED}), chunk size {chunk_size}, options {options}")
    rng = random.Random(seed)
    m = make_mount(chunk_size=chunk_size, options=options)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    names = [f"file{i}" for i in range(FILES)]

    def open_all() -> tuple[list[int], list[int]]:
        fds = [os.open(m.mountpoint / n, os.O_RDWR | os.O_CREAT, 0o644) for n in names]
        mfds = [os.open(model_dir / n, os.O_RDWR | os.O_CREAT, 0o644) for n in names]
        return fds, mfds

    def close_all(fds: list[int], mfds: list[int]) -> None:
        for fd in fds + mfds:
            os.close(fd)

    fds, mfds = open_all()
    counts: dict[str, int] = {}
    remount_at = {OPS * (k + 1) // (REMOUNTS + 1) for k in range(REMOUNTS)}
    for step in range(OPS):
        i = rng.randrange(FILES)
        fd, mfd = fds[i], mfds[i]
        size = os.fstat(mfd).st_size
        op = rng.random()
        ctx = f"step {step} (seed {seed}) {names[i]}"
        if op < 0.45:
            n = _size(rng, chunk_size)
            off = _offset(rng, size, chunk_size)
            if off + n > MAX_SIZE:
                off = max(0, MAX_SIZE - n - rng.randint(0, chunk_size))
            data = _payload(rng, n)
            assert os.pwrite(fd, data, off) == n, f"{ctx}: short write"
            os.pwrite(mfd, data, off)
            counts["write"] = counts.get("write", 0) + 1
            if rng.random() < 0.5:  # read the written range back at once
                assert os.pread(fd, n, off) == data, f"{ctx}: read-back of write [{off}, {off + n})"
        elif op < 0.55:
            r = rng.random()
            if r < 0.5:
                new = rng.randint(0, size)  # down
            elif r < 0.6:
                new = chunk_size * rng.randint(0, size // chunk_size + 1)
            else:
                new = min(MAX_SIZE, size + rng.randint(1, 512 << 10))  # up: a hole at the end
            if rng.random() < 0.8:
                os.ftruncate(fd, new)
            else:
                os.truncate(m.mountpoint / names[i], new)
            os.ftruncate(mfd, new)
            counts["truncate"] = counts.get("truncate", 0) + 1
        elif op < 0.92:
            off = _offset(rng, size, chunk_size)
            n = _size(rng, chunk_size)
            got, want = os.pread(fd, n, off), os.pread(mfd, n, off)
            assert got == want, f"{ctx}: read [{off}, {off + n}) of {size} bytes differs"
            counts["read"] = counts.get("read", 0) + 1
        elif op < 0.97:
            os.fsync(fd)
            counts["fsync"] = counts.get("fsync", 0) + 1
        else:  # close and reopen this one file
            os.close(fd)
            fds[i] = os.open(m.mountpoint / names[i], os.O_RDWR)
            counts["reopen"] = counts.get("reopen", 0) + 1
        assert os.fstat(fds[i]).st_size == os.fstat(mfd).st_size, f"{ctx}: size differs"

        if step in remount_at:
            close_all(fds, mfds)
            m.remount()
            for n in names:
                _compare_whole(m.mountpoint / n, model_dir / n, f"after remount at step {step}")
            fds, mfds = open_all()
            counts["remount"] = counts.get("remount", 0) + 1
        elif step % 300 == 299:
            for n in names:
                _compare_whole(m.mountpoint / n, model_dir / n, f"step {step}")

    close_all(fds, mfds)
    m.remount()
    for n in names:
        _compare_whole(m.mountpoint / n, model_dir / n, "after the final remount")
        assert os.stat(m.mountpoint / n).st_size == os.stat(model_dir / n).st_size
    print("operations:", counts)
    assert counts.get("write", 0) > 500 and counts.get("truncate", 0) > 100 and counts.get("read", 0) > 500
