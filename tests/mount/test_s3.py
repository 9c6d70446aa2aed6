"""Real mounts of volumes whose segments live in a real S3 server (SeaweedFS, tests/conftest.py): the
corpora round trip through the bucket alone, a restore on "another machine", one mount at a time, a
server that stops while the volume writes or reads, an object damaged in the bucket, kill -9 with
segments not uploaded yet."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import MakeS3Store, Run, Seaweed
    from tests.mount.conftest import Mount, StatsJson

MakeMount = Callable[..., "Mount"]


def diff(a: Path, b: Path) -> None:
    r = subprocess.run(["diff", "-r", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def wipe_local(store: Path) -> None:
    """What a clean unmount leaves of the data locally goes: the disk cache and any segment file."""
    shutil.rmtree(store / "cache", ignore_errors=True)
    for p in (store / "segments").iterdir():
        p.unlink()


def objects(server: Seaweed, url: str) -> dict[str, int]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    answer = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:]: o["Size"] for o in answer.get("Contents", [])}


def test_round_trip_through_the_bucket(seaweed: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount,
                                       corpora: Path, run: Run, stats_json: StatsJson) -> None:
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store, options="metadata_backup=1s")
    shutil.copytree(corpora, m.mountpoint / "corpora", symlinks=True)
    diff(corpora, m.mountpoint / "corpora")
    r = run("sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    stats = stats_json(store)
    assert stats["backend"] == url + "/"
    remote = stats["live"]["remote"]
    assert {"upload_waiting_bytes", "disk_cache_bytes", "disk_cache_hit_rate", "gets", "puts"} <= set(remote)
    prom = run("stats", "--prometheus", store).stdout
    assert "thermofs_upload_waiting_bytes" in prom and "thermofs_s3_puts_total" in prom
    m.stop()
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    for p in [store / "thermofs.json", *store.parent.glob("*.daemon.out"), m.log_path]:
        assert secret not in p.read_bytes(), f"{p} holds the secret key"
    assert not list((store / "segments").iterdir()), "a clean unmount uploads every segment"
    names = objects(seaweed, url)
    assert any(k.startswith("segments/") for k in names) and any(k.startswith("meta/backup-") for k in names)
    wipe_local(store)
    m.start()
    diff(corpora, m.mountpoint / "corpora")


def test_restore_on_another_machine(seaweed: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount,
                                    corpora: Path, run: Run, tmp_path: Path) -> None:
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store)
    shutil.copytree(corpora, m.mountpoint / "corpora", symlinks=True)
    (m.mountpoint / "later").write_bytes(os.urandom(100_000))
    later = (m.mountpoint / "later").read_bytes()
    m.stop()
    elsewhere = tmp_path / "elsewhere"
    r = run("restore", url, elsewhere, "--endpoint", seaweed.endpoint)
    assert r.returncode == 0, r.stderr
    m2 = make_mount(store=elsewhere)
    diff(corpora, m2.mountpoint / "corpora")
    assert (m2.mountpoint / "later").read_bytes() == later
    # the restored volume writes on: its new segments come after every one in the bucket
    (m2.mountpoint / "new").write_bytes(b"written after the restore" * 1000)
    m2.stop()
    wipe_local(elsewhere)
    m2.start()
    assert (m2.mountpoint / "new").read_bytes() == b"written after the restore" * 1000
    diff(corpora, m2.mountpoint / "corpora")


def test_second_mount_of_a_bucket_is_refused(seaweed: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount,
                                             run: Run, tmp_path: Path) -> None:
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store)
    (m.mountpoint / "f").write_bytes(b"x" * 100_000)
    m.stop()
    other = tmp_path / "other"
    assert run("restore", url, other, "--endpoint", seaweed.endpoint).returncode == 0
    m.start()
    mnt = tmp_path / "refused"
    mnt.mkdir()
    r = run("mount", other, mnt)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "mounted elsewhere" in r.stderr and "--force-unlock" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.ismount(mnt)


def test_kill_during_upload_then_next_mount_uploads(seaweed_own: Seaweed, make_s3_store: MakeS3Store,
                                                    make_mount: MakeMount, run: Run, tmp_path: Path) -> None:
    seaweed = seaweed_own
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store, options="metadata_backup=1s,remote_timeout=2s", expect_log_errors=True)
    seaweed.stop()  # before the write: no backup can upload its segment before the server is gone
    data = os.urandom(3 << 20) + b"text " * 200_000
    with open(m.mountpoint / "f", "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    wait_for_log(m, "failed, kept locally")  # the next backup sealed it; its upload fails, retried
    m.kill()
    assert list((store / "segments").iterdir()), "the segment was still local when the daemon died"
    seaweed.start()
    m.start()
    assert (m.mountpoint / "f").read_bytes() == data
    m.stop()
    assert not list((store / "segments").iterdir())
    elsewhere = tmp_path / "elsewhere"
    assert run("restore", url, elsewhere, "--endpoint", seaweed.endpoint).returncode == 0
    m2 = make_mount(store=elsewhere)
    assert (m2.mountpoint / "f").read_bytes() == data
    assert "not uploaded yet: uploading them" in m.log_path.read_text()


def test_server_stopped_while_writing(seaweed_own: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount,
                                      run: Run, tmp_path: Path) -> None:
    store, url = make_s3_store(seaweed_own)
    m = make_mount(store=store, options="remote_timeout=2s,metadata_backup=1s", expect_log_errors=True)
    before = os.urandom(1 << 20)
    (m.mountpoint / "before").write_bytes(before)
    seaweed_own.stop()
    during = os.urandom(1 << 20) + b"during" * 100_000
    with open(m.mountpoint / "during", "wb") as fh:
        fh.write(during)
        os.fsync(fh.fileno())
    # the next backup seals the segment holding "during"; its upload fails and it stays local
    wait_for_log(m, "failed, kept locally")
    seaweed_own.start()
    r = run("sync", m.mountpoint)  # waits for the upload, retried, and makes a backup
    assert r.returncode == 0 and "metadata backup" in r.stdout, r.stdout + r.stderr
    elsewhere = tmp_path / "elsewhere"
    assert run("restore", url, elsewhere, "--endpoint", seaweed_own.endpoint).returncode == 0
    m.stop()
    assert not list((store / "segments").iterdir()), "every segment uploaded once the server was back"
    wipe_local(store)
    m.start()
    assert (m.mountpoint / "before").read_bytes() == before
    assert (m.mountpoint / "during").read_bytes() == during
    m.stop()
    m2 = make_mount(store=elsewhere)  # restored from the backup `thermofs sync` made
    assert (m2.mountpoint / "during").read_bytes() == during


def wait_for_log(m: Mount, text: str, polls: int = 600) -> None:
    """Wait until the daemon's log says ``text`` (polls of 0.1 s; a bound on a hang, not a timing)."""
    for _ in range(polls):
        if text in m.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the log never said {text!r}:\n{m.daemon_output()[-3000:]}")


def test_server_down_during_a_read(seaweed_own: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount) -> None:
    store, _url = make_s3_store(seaweed_own)
    m = make_mount(store=store, options="remote_timeout=2s", expect_log_errors=True)
    data = os.urandom(2 << 20)
    (m.mountpoint / "f").write_bytes(data)
    m.stop()
    wipe_local(store)
    m.start()
    seaweed_own.stop()
    with pytest.raises(OSError) as e:
        (m.mountpoint / "f").read_bytes()
    assert e.value.errno == errno.EIO
    seaweed_own.start()
    assert (m.mountpoint / "f").read_bytes() == data


def test_object_damaged_in_the_bucket(seaweed: Seaweed, make_s3_store: MakeS3Store, make_mount: MakeMount,
                                      run: Run) -> None:
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store, expect_log_errors=True)
    first = os.urandom(64 << 10) * 4  # four chunks, the first frames of the segment
    second = os.urandom(1 << 20)
    (m.mountpoint / "first").write_bytes(first)
    (m.mountpoint / "second").write_bytes(second)
    m.stop()
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    key = f"{prefix}/segments/00000001.seg"
    client = seaweed.client()
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[1000] ^= 0xFF  # inside the first frame: chunk 0 of "first"
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    wipe_local(store)
    m.start()
    with open(m.mountpoint / "first", "rb") as fh:
        with pytest.raises(OSError) as e:
            fh.read(64 << 10)
        assert e.value.errno == errno.EIO
        fh.seek(64 << 10)
        assert fh.read() == first[64 << 10:]
    assert (m.mountpoint / "second").read_bytes() == second
    m.stop()
    r = run("fsck", store)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "/first" in r.stdout and "/second" not in r.stdout, r.stdout


def test_compaction_deletes_dead_objects_after_a_backup(seaweed: Seaweed, make_s3_store: MakeS3Store,
                                                        make_mount: MakeMount, run: Run) -> None:
    store, url = make_s3_store(seaweed)
    m = make_mount(store=store, options="metadata_backup=1h")
    dead, live = os.urandom(2 << 20), os.urandom(1 << 20)
    (m.mountpoint / "dead").write_bytes(dead)
    (m.mountpoint / "live").write_bytes(live)
    m.stop()
    assert "segments/00000001.seg" in objects(seaweed, url)
    m.start()
    (m.mountpoint / "dead").unlink()
    r = run("compact", m.mountpoint, "--min-garbage", "0")
    assert r.returncode == 0, r.stderr
    assert "segments/00000001.seg" in objects(seaweed, url), "the object waits for the next backup"
    m.stop()
    names = objects(seaweed, url)
    assert "segments/00000001.seg" not in names, names
    wipe_local(store)
    m.start()
    assert (m.mountpoint / "live").read_bytes() == live
    assert not (m.mountpoint / "dead").exists()
