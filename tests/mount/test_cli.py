"""The `thermofs` command around mounts: clear errors and non-zero exits for misuse of mount, one mount
of a store at a time, the stats contract on a mount (tests/api/test_cli.py: help and mkfs)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount


def test_policy_from_mkfs_and_mount_options(tmp_path: Path, run: Run) -> None:
    store = tmp_path / "store"
    r = run("mkfs", store, "--policy", "cold_age=10m,hot_count=5")
    assert r.returncode == 0, r.stderr
    policy = json.loads(run("stats", store, "--json").stdout)["policy"]
    assert policy["cold_age"] == 600 and policy["hot_count"] == 5 and policy["cold_count"] == 2.5
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run("mount", store, mnt, "-o", "cold_age=often")
    assert r.returncode != 0 and "bad age" in r.stderr


def test_mount_misuse_gives_clear_errors(tmp_path: Path, run: Run) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    assert run("mkfs", store).returncode == 0
    r = run("mount", tmp_path / "nostore", mnt)
    assert r.returncode != 0 and "no such store" in r.stderr
    r = run("mount", store, tmp_path / "missing")
    assert r.returncode != 0 and "does not exist" in r.stderr
    mnt.mkdir()
    (mnt / "file").write_text("x")
    r = run("mount", store, mnt)
    assert r.returncode != 0 and "not empty" in r.stderr
    (mnt / "file").unlink()
    r = run("mount", store, mnt, "-o", "bogus_option")
    assert r.returncode != 0 and "unknown or malformed mount option" in r.stderr
    (tmp_path / "plain").mkdir()
    r = run("mount", tmp_path / "plain", mnt)
    assert r.returncode != 0 and "not a thermofs store" in r.stderr
    assert mount_source(mnt) is None


def test_unknown_format_version_is_refused(tmp_path: Path, run: Run) -> None:
    store = tmp_path / "store"
    assert run("mkfs", store).returncode == 0
    record = json.loads((store / "thermofs.json").read_text())
    record["version"] = 99
    (store / "thermofs.json").write_text(json.dumps(record))
    (tmp_path / "mnt").mkdir()
    r = run("mount", store, tmp_path / "mnt")
    assert r.returncode != 0 and "format version 99" in r.stderr
    r = run("stats", store)
    assert r.returncode != 0 and "format version 99" in r.stderr


def test_second_mount_of_a_store_is_refused(mount: Mount, tmp_path: Path, run: Run) -> None:
    (tmp_path / "other").mkdir()
    r = run("mount", mount.store, tmp_path / "other")
    assert r.returncode != 0 and "in use" in r.stderr
    assert mount_source(tmp_path / "other") is None
    (mount.mountpoint / "still").write_bytes(b"works")
    assert (mount.mountpoint / "still").read_bytes() == b"works"


def test_daemon_mount_returns_when_ready_and_unmounts(tmp_path: Path, run: Run) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    assert run("mkfs", store).returncode == 0
    r = run("mount", store, mnt)
    try:
        assert r.returncode == 0, r.stderr
        assert mount_source(mnt) is not None
        (mnt / "f").write_bytes(b"daemon")
        assert (mnt / "f").read_bytes() == b"daemon"
    finally:
        if mount_source(mnt) is not None and subprocess.run(["fusermount", "-u", str(mnt)]).returncode != 0:
            subprocess.run(["fusermount", "-u", "-z", str(mnt)])
    assert mount_source(mnt) is None
    log = (store / "thermofs.log").read_text()  # the daemon's stderr goes there too
    assert "mounting" in log and "Ignoring invalid max threads" not in log


def test_stats_json_contract(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount()
    text = (b"all work and no play makes jack a dull boy\n" * 5000)
    (m.mountpoint / "a.txt").write_bytes(text)
    (m.mountpoint / "b.bin").write_bytes(os.urandom(200_000))
    for target in (m.mountpoint, m.store):
        r = run("stats", target, "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        for key in ("logical_bytes", "stored_bytes", "physical_bytes", "garbage_bytes", "files", "chunks",
                    "hot_chunks", "cold_chunks", "codecs"):
            assert key in s
        assert s["files"] == 2 and s["logical_bytes"] == len(text) + 200_000
        assert s["chunks"] == s["hot_chunks"] + s["cold_chunks"]
        assert sum(c["chunks"] for c in s["codecs"].values()) == s["chunks"]
        assert sum(c["stored_bytes"] for c in s["codecs"].values()) == s["stored_bytes"]
        assert s["codecs"]["raw"]["raw_bytes"] >= 200_000 - 65536  # random data is stored raw
        assert s["stored_bytes"] < s["logical_bytes"]
    r = run("stats", m.mountpoint, m.mountpoint / "a.txt", "--json")
    per_file = json.loads(r.stdout)["files"]
    assert per_file[str(m.mountpoint / "a.txt")]["logical_bytes"] == len(text)
    assert per_file[str(m.mountpoint / "a.txt")]["stored_bytes"] < len(text) // 10
    r = run("stats", m.mountpoint)
    assert r.returncode == 0 and "stored" in r.stdout and "zstd" in r.stdout


def test_libfuse_logs_no_invalid_thread_count(mount: Mount) -> None:
    """libfuse 3.14 complained of an invalid max_idle_threads at every mount (stderr: daemon.out here)."""
    (mount.mountpoint / "f").write_bytes(b"x")
    mount.stop()
    assert "mounting" in mount.daemon_output() and "Ignoring invalid max threads" not in mount.daemon_output()
