"""The durability contract through a real mount: a closed file survives ``kill -9`` of the daemon without
any fsync; sync points come from ``thermofs sync``, from the ``commit`` interval and at unmount; with
``-o sync_close`` every commit is durable on its own. (Power losses are simulated in
tests/api/test_power_loss.py.)"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.fs.durability import BATCHED, DURABLE, read_record
from thermofs.fs.lmdbcheck import newest_txnid

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount


def test_closed_files_survive_kill_9_without_fsync(make_mount: Callable[..., Mount]) -> None:
    m = make_mount(options="commit=3600")  # no sync point comes on its own
    rng = random.Random(3)
    files = {f"f{i}": rng.randbytes(rng.choice([100, 5000, 70000, 300000])) for i in range(40)}
    for name, data in files.items():
        with open(m.mountpoint / name, "wb") as fh:  # closed, never fsync'd
            fh.write(data)
    record = read_record(m.store / "meta.lmdb")
    assert record is not None and record.mode == BATCHED
    m.kill()
    m.start()
    for name, data in files.items():
        assert (m.mountpoint / name).read_bytes() == data, name


def test_sync_points_from_the_command_the_interval_and_the_unmount(make_mount: Callable[..., Mount],
                                                                    run: Run) -> None:
    m = make_mount(options="commit=1")
    record = read_record(m.store / "meta.lmdb")
    assert record is not None
    first = record.txnid
    (m.mountpoint / "a").write_bytes(b"synced by the interval")
    deadline = time.monotonic() + 60
    while (read_record(m.store / "meta.lmdb") or record).txnid == first:  # the background sync point
        if time.monotonic() > deadline:  # a bounded wait for the background thread, not a speed check
            pytest.fail("no sync point within a minute of commit=1")
        time.sleep(0.1)
    (m.mountpoint / "b").write_bytes(b"synced by the command")
    r = run("sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    synced = int(r.stdout.rsplit("transaction ", 1)[1].rstrip(")\n"))
    now = read_record(m.store / "meta.lmdb")
    assert now is not None and now.txnid == synced > first
    (m.mountpoint / "c").write_bytes(b"synced by the unmount")
    m.stop()
    last = read_record(m.store / "meta.lmdb")
    assert last is not None and last.txnid == newest_txnid((m.store / "meta.lmdb" / "data.mdb").read_bytes())


def test_sync_close_makes_every_commit_durable(make_mount: Callable[..., Mount]) -> None:
    m = make_mount(options="sync_close")
    record = read_record(m.store / "meta.lmdb")
    assert record is not None and record.mode == DURABLE
    (m.mountpoint / "f").write_bytes(b"durable at close")
    m.kill()
    m.start()
    assert (m.mountpoint / "f").read_bytes() == b"durable at close"


def test_bad_commit_interval_is_refused(tmp_path: Path, run: Run) -> None:
    assert run("mkfs", tmp_path / "store").returncode == 0
    (tmp_path / "mnt").mkdir()
    for bad in ("commit=0", "commit=soon", "sync_close=1"):
        r = run("mount", tmp_path / "store", tmp_path / "mnt", "-o", bad)
        assert r.returncode == 2 and ("commit" in r.stderr or "sync_close" in r.stderr), r.stderr
