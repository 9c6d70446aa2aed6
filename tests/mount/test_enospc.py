"""Real mount on a full disk: the store lives on a 24 MiB tmpfs; writing past it gives ENOSPC, never loses
what was fsync'd, and the volume stays usable (unmount, remount, delete, write again)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.mount.conftest import Mount

TMPFS_SIZE = "24m"
STEP = 1 << 20


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs. Request it before ``make_mount`` so that it is unmounted after the FUSE mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        assert mount_source(d) is None, f"{d} is still mounted"


class Filled:
    """What a writer saw while filling the store with incompressible data."""

    def __init__(self) -> None:
        self.data = bytearray()  # bytes of every write that returned success
        self.synced = 0          # length at the last fsync that returned success
        self.where = ""          # the call that gave ENOSPC: write, fsync or close
        self.size_after_error = -1  # st_size seen right after the failed call


def _fill(path: Path, rng: random.Random, limit: int = 64 << 20, fsync_every: int = 4 * STEP) -> Filled:
    """Write incompressible data until the writer gets ENOSPC from write, fsync or close."""
    out = Filled()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while len(out.data) < limit:
            block = rng.randbytes(STEP)
            try:
                n = os.write(fd, block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, f"write: expected ENOSPC, got {e!r}"
                out.where = "write"
                break
            out.data += block[:n]
            if fsync_every and len(out.data) % fsync_every == 0:
                try:
                    os.fsync(fd)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, f"fsync: expected ENOSPC, got {e!r}"
                    out.where = "fsync"
                    break
                out.synced = len(out.data)
        else:
            pytest.fail(f"wrote {limit} bytes to a {TMPFS_SIZE} store without ENOSPC")
        out.size_after_error = os.fstat(fd).st_size
    finally:
        try:
            os.close(fd)
        except OSError as e:
            assert e.errno == errno.ENOSPC, f"close: expected ENOSPC, got {e!r}"
            out.where = out.where or "close"
    assert out.where, "no ENOSPC seen"
    assert len(out.data) >= 8 << 20, f"the store filled up suspiciously early ({len(out.data)} bytes)"
    print(f"ENOSPC from {out.where} after {len(out.data)} bytes written, {out.synced} fsync'd")
    return out


def _write_keep(m: Mount, rng: random.Random) -> tuple[Path, bytes]:
    keep = m.mountpoint / "keep"
    line = b"this file was written and fsync'd before the disk filled up\n"
    data = (line * 40000)[:2_000_000] + rng.randbytes(300_000)
    with open(keep, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return keep, data


def _read_prefix(path: Path, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, 0)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # a reader's close reporting the writer's ENOSPC is tested on its own below


def test_enospc_keeps_fsynced_data_and_remounts(small_tmpfs: Path, make_mount: Callable[..., Mount]) -> None:
    rng = random.Random(99)
    m = make_mount(chunk_size=64 << 10, store=small_tmpfs / "store", expect_log_errors=True)
    keep, keep_data = _write_keep(m, rng)
    big = m.mountpoint / "big"
    filled = _fill(big, rng)

    assert keep.read_bytes() == keep_data, "after ENOSPC: the earlier file changed"
    assert _read_prefix(big, filled.synced) == filled.data[:filled.synced], \
        "after ENOSPC: the fsync'd part of the big file changed"

    m.stop()
    assert mount_source(m.mountpoint) is None
    m.start()
    assert keep.read_bytes() == keep_data, "after remount: the earlier file changed"
    assert os.stat(big).st_size >= filled.synced
    assert _read_prefix(big, filled.synced) == filled.data[:filled.synced], \
        "after remount: the fsync'd part of the big file changed"
    # The full volume still serves metadata operations and small reads.
    assert sorted(os.listdir(m.mountpoint)) == ["big", "keep"]
    m.remount()
    assert keep.read_bytes() == keep_data


def test_enospc_failed_write_leaves_the_file_unchanged(small_tmpfs: Path,
                                                       make_mount: Callable[..., Mount]) -> None:
    rng = random.Random(5)
    m = make_mount(chunk_size=64 << 10, store=small_tmpfs / "store", expect_log_errors=True)
    filled = _fill(m.mountpoint / "big", rng, fsync_every=0)
    assert filled.where == "write"
    assert filled.size_after_error == len(filled.data), \
        f"write() failed with ENOSPC, yet the file grew to {filled.size_after_error} bytes " \
        f"(successful writes: {len(filled.data)})"


def test_enospc_read_only_close_succeeds(small_tmpfs: Path, make_mount: Callable[..., Mount]) -> None:
    rng = random.Random(6)
    m = make_mount(chunk_size=64 << 10, store=small_tmpfs / "store", expect_log_errors=True)
    big = m.mountpoint / "big"
    filled = _fill(big, rng)
    fd = os.open(big, os.O_RDONLY)
    try:
        assert os.pread(fd, filled.synced, 0) == filled.data[:filled.synced]
    finally:
        os.close(fd)  # a reader has nothing to flush: this must not fail


def test_enospc_delete_then_write_again(small_tmpfs: Path, make_mount: Callable[..., Mount]) -> None:
    rng = random.Random(7)
    m = make_mount(chunk_size=64 << 10, store=small_tmpfs / "store", expect_log_errors=True)
    keep, keep_data = _write_keep(m, rng)
    big = m.mountpoint / "big"
    _fill(big, rng)
    m.remount()  # isolates this from the stuck write buffers of the failed file (see the test above)
    os.unlink(big)
    # Space must really come back: write more than whatever slack the failed writes left behind.
    new = m.mountpoint / "new"
    new_data = rng.randbytes(10 << 20)
    with open(new, "wb") as fh:
        for pos in range(0, len(new_data), STEP):
            fh.write(new_data[pos:pos + STEP])
        fh.flush()
        os.fsync(fh.fileno())
    assert new.read_bytes() == new_data
    assert keep.read_bytes() == keep_data
    m.remount()
    assert new.read_bytes() == new_data
    assert keep.read_bytes() == keep_data
