"""Damage and misuse a hostile user or a careless administrator causes: each case of the trust review,
reproduced, with the behaviour that must hold. Lost or foreign metadata is refused (never a fresh
namespace over existing segments), a truncated data.mdb never faults, fsck reads dictionary- and
learned-coded chunks, the store is private to its owner, and the lock cannot be bypassed
(tests/api/test_trust.py: the cases that need no mount)."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount, RequireTool

THERMOFS = [sys.executable, "-m", "thermofs"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def segments_of(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / "segments").glob("*.seg"))}


def fill(m: Mount, n: int = 30) -> dict[str, bytes]:
    """Files of a few sizes (inline, one chunk, several chunks), written and closed."""
    files = {}
    for i in range(n):
        size = 100 + 9000 * (i % 7)
        text = f"file {i} line\n".encode() * (size // 10)
        data = (text[: size // 2] + random.Random(i).randbytes(size // 2)) if i % 2 else text[:size]
        (m.mountpoint / f"f{i}").write_bytes(data)
        files[f"f{i}"] = data
    return files


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory any user may enter (pytest's own temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="thermofs-public-"))
    os.chmod(path, 0o755)
    yield path
    for mnt in path.glob("mnt*"):
        if mount_source(mnt) is not None:
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


# -- lost, emptied, truncated or foreign metadata ------------------------------------------------------

@pytest.mark.parametrize("damage", ["removed", "emptied", "half", "8KiB"])
def test_lost_or_cut_metadata_is_refused_and_segments_kept(make_mount: Callable[..., Mount], damage: str,
                                                           run: Run) -> None:
    m = make_mount()
    fill(m)
    m.stop()
    before = segments_of(m.store)
    assert before
    data = m.store / "meta.lmdb" / "data.mdb"
    size = data.stat().st_size
    if damage == "removed":
        data.unlink()
    else:
        with open(data, "r+b") as fh:
            fh.truncate({"emptied": 0, "half": size // 2, "8KiB": 8192}[damage])
    for args in (["fsck", m.store], ["fsck", "--repair", m.store], ["stats", m.store], ["compact", m.store],
                 ["cool", "--now", m.store], ["mount", m.store, m.mountpoint]):
        r = run(*args)
        assert r.returncode > 0, (args, r.returncode, r.stdout, r.stderr)  # > 0: no signal (SIGBUS)
        assert "metadata" in r.stdout + r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert mount_source(m.mountpoint) is None
    assert segments_of(m.store) == before
    assert not data.exists() or data.stat().st_size < size  # nothing made a fresh environment


def test_metadata_of_another_volume_is_refused(make_mount: Callable[..., Mount], run: Run) -> None:
    a = make_mount()
    fill(a, 5)
    b = make_mount()
    fill(b, 8)
    a.stop()
    b.stop()
    before = segments_of(a.store)
    shutil.rmtree(a.store / "meta.lmdb")
    shutil.copytree(b.store / "meta.lmdb", a.store / "meta.lmdb")
    for args in (["fsck", "--repair", a.store], ["mount", a.store, a.mountpoint], ["stats", a.store]):
        r = run(*args)
        assert r.returncode > 0 and "belongs to volume" in r.stdout + r.stderr, (args, r.stdout, r.stderr)
    assert segments_of(a.store) == before


def test_edited_chunk_size_is_refused(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount()
    fill(m, 5)
    m.stop()
    config = m.store / "thermofs.json"
    config.write_text(config.read_text().replace('"chunk_size": 65536', '"chunk_size": 32768'))
    r = run("fsck", "--repair", m.store)
    out = r.stdout + r.stderr
    assert r.returncode > 0 and "chunk size 32768" in out and "65536" in out


def test_segment_of_another_volume_reads_eio(make_mount: Callable[..., Mount], run: Run) -> None:
    a = make_mount(expect_log_errors=True)
    files = fill(a, 10)
    b = make_mount()
    fill(b, 10)
    a.stop()
    b.stop()
    [seg_a] = (a.store / "segments").glob("*.seg")
    [seg_b] = (b.store / "segments").glob("*.seg")
    shutil.copy(seg_b, seg_a)
    report = run("fsck", a.store)
    assert report.returncode == 1 and "belongs to another volume" in report.stdout
    a.start()
    outcomes = set()
    for name, data in files.items():
        try:
            assert (a.mountpoint / name).read_bytes() == data  # small files live inline in LMDB
            outcomes.add("exact")
        except OSError as e:
            assert e.errno == errno.EIO, (name, e)
            outcomes.add("EIO")
    assert outcomes == {"exact", "EIO"}


# -- fsck reads what the volume's own dictionaries and models coded ------------------------------------

@pytest.mark.parametrize("cold", ["dict", "learned"])
def test_fsck_verifies_dictionary_and_learned_frames(make_mount: Callable[..., Mount], cold: str, run: Run) -> None:
    m = make_mount(cold_codec=cold)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(stdlib.rglob("*.py"))
    # dict: enough that the volume's first dictionaries are trained (1 MiB stored); the learned
    # codec codes about 1 MB/s.
    limit = 6 << 20 if cold == "dict" else 400 << 10
    copied: dict[str, bytes] = {}
    total = 0
    for src in sources:
        data = src.read_bytes()
        if total + len(data) > limit:
            break
        name = "_".join(src.relative_to(stdlib).parts)
        (m.mountpoint / name).write_bytes(data)
        copied[name] = data
        total += len(data)
    r = run("cool", "--now", "--json", m.mountpoint)
    assert r.returncode == 0, r.stderr
    m.stop()
    report = run("fsck", "--json", m.store)
    assert report.returncode == 0, report.stdout[-2000:]
    out = json.loads(report.stdout)
    codec_id = {"dict": 2, "learned": 4}[cold]
    stats = json.loads(run("stats", "--json", m.store).stdout)
    name = {2: "dict", 4: "learned"}[codec_id]
    assert stats["codecs"].get(name, {}).get("chunks", 0) > 0, stats["codecs"]
    assert out["checked"]["frames_verified"] == out["checked"]["chunks"]
    m.start()
    for fname, data in copied.items():
        assert (m.mountpoint / fname).read_bytes() == data


# -- the store is private to its owner -----------------------------------------------------------------

def test_store_is_private_to_its_owner(public_dir: Path, make_mount: Callable[..., Mount], run: Run,
                                       require_tool: RequireTool) -> None:
    require_tool("setpriv")
    store = public_dir / "store"
    r = run("mkfs", store)
    assert r.returncode == 0, r.stderr
    # A store made before stores were private: loosen it the way the old mkfs left it.
    os.chmod(store, 0o755)
    for p in (store / "meta.lmdb").iterdir():
        os.chmod(p, 0o644)
    os.chmod(store / "meta.lmdb", 0o755)
    m = make_mount(store=store)
    secret = b"root-only secret content 7f3a"
    (m.mountpoint / "secret.txt").write_bytes(secret)
    os.chmod(m.mountpoint / "secret.txt", 0o600)
    (m.mountpoint / "private").mkdir(mode=0o700)
    (m.mountpoint / "private" / "hidden-name-91c2").write_bytes(b"x")
    os.setxattr(m.mountpoint / "secret.txt", "user.note", b"xattr secret 55e1")
    os.sync()
    # Positive control: the unprivileged user can read a world-readable file beside the store.
    (public_dir / "open.txt").write_text("readable")
    assert subprocess.run([*NOBODY, "cat", str(public_dir / "open.txt")], capture_output=True).returncode == 0
    for path in [store, *store.rglob("*")]:
        probe = ["cat", str(path)] if path.is_file() else ["ls", str(path)]
        r2 = subprocess.run([*NOBODY, *probe], capture_output=True)
        assert r2.returncode != 0, f"an unprivileged user read {path}"
        assert secret not in r2.stdout and b"hidden-name-91c2" not in r2.stdout
    assert {oct(p.stat().st_mode & 0o777) for p in [store, *store.rglob("*")] if not p.is_socket()} <= {
        "0o700", "0o600"}
    # Through the mount, the kernel applies the file's own permissions.
    r3 = subprocess.run([*NOBODY, "cat", str(m.mountpoint / "secret.txt")], capture_output=True)
    assert r3.returncode != 0 and secret not in r3.stdout


# -- one mount at a time -------------------------------------------------------------------------------

def test_deleting_the_lock_file_does_not_allow_a_second_mount(make_mount: Callable[..., Mount],
                                                               tmp_path: Path, run: Run) -> None:
    m = make_mount()
    (m.mountpoint / "a").write_bytes(b"first")
    (m.store / "lock").unlink()
    second = tmp_path / "second"
    second.mkdir()
    r = run("mount", m.store, second)
    assert r.returncode > 0 and "in use" in r.stderr, r.stderr
    assert mount_source(second) is None
    r = run("fsck", m.store)
    assert r.returncode == 2 and "in use" in r.stderr
    assert (m.mountpoint / "a").read_bytes() == b"first"


# -- limits of the machine -----------------------------------------------------------------------------

def test_mounts_under_an_address_space_limit(make_mount: Callable[..., Mount], tmp_path: Path, repo: Path,
                                             require_tool: RequireTool) -> None:
    """The LMDB map is sized to the limit (ulimit -v 8000000: the fixed 256 GiB map failed)."""
    require_tool("prlimit")
    m = make_mount()
    files = fill(m, 10)
    m.stop()
    limit = 8_000_000 * 1024
    proc = subprocess.Popen(["prlimit", f"--as={limit}", "--", *THERMOFS, "mount", "-f", "--no-stderr",
                             str(m.store), str(m.mountpoint)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(repo)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60  # a bound on the wait for the mount, not on its speed
        while mount_source(m.mountpoint) is None:
            assert proc.poll() is None, (m.log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("mount did not appear within 60 s")
            time.sleep(0.05)
        for name, data in files.items():
            assert (m.mountpoint / name).read_bytes() == data
        (m.mountpoint / "new").write_bytes(b"written under the limit")
    finally:
        subprocess.run(["fusermount", "-u", str(m.mountpoint)], capture_output=True)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            subprocess.run(["fusermount", "-u", "-z", str(m.mountpoint)], capture_output=True)
    assert proc.returncode == 0
    m.start()
    assert (m.mountpoint / "new").read_bytes() == b"written under the limit"


# -- nothing is deleted on the word of one record ------------------------------------------------------

def wait_for_log(m: Mount, text: str, timeout: float = 60) -> str:
    """The first log line containing ``text``, waiting (bounded) for the daemon to write it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in m.log_path.read_text(errors="replace").splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"the daemon never logged {text!r}:\n{m.log_path.read_text()[-3000:]}")


@pytest.mark.parametrize("damage", ["garbage-record", "cut-segment"])
def test_a_segment_with_live_frames_is_never_deleted(make_mount: Callable[..., Mount], damage: str) -> None:
    """A garbage record that says a segment is all dead (sealed, so no checksum catches it), or a
    segment cut short (its frame bytes then fall under its record): the reclaimer's scan of the chunk
    map finds live frames in it, keeps it and says so."""
    from thermofs.fs.meta import MetaStore

    m = make_mount(expect_log_errors=True)
    files = fill(m)
    (m.mountpoint / "f3").write_bytes(b"overwritten: its old frames are garbage")
    m.stop()
    [seg] = sorted((m.store / "segments").glob("*.seg"))
    seg_id = int(seg.name[:-4])
    if damage == "garbage-record":
        meta = MetaStore(m.store / "meta.lmdb")
        with meta.write() as t:
            t.adjust_garbage(seg_id, seg.stat().st_size)  # far more than is dead
        meta.close()
    else:  # cut short of the garbage it holds: by size alone it looks all dead
        with open(seg, "r+b") as fh:
            fh.truncate(32 + 100)
    before = seg.stat().st_size
    m.start()
    wait_for_log(m, "kept (run thermofs fsck)")
    m.stop()
    assert seg.exists() and seg.stat().st_size == before
    m.start()
    for name, data in files.items():
        if name == "f3":
            continue
        try:
            assert (m.mountpoint / name).read_bytes() == data
        except OSError as e:  # the frames cut off with the segment's tail
            assert damage == "cut-segment" and e.errno == errno.EIO


# -- a store on read-only media ------------------------------------------------------------------------

@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``view(store)``: the store seen through a read-only bind mount (unmounted in teardown)."""
    views: list[Path] = []

    def view(store: Path) -> Path:
        target = tmp_path / f"ro{len(views)}"
        target.mkdir()
        for cmd in (["mount", "--bind", str(store), str(target)],
                    ["mount", "-o", "remount,bind,ro", str(target)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot make a read-only bind mount: {r.stderr.strip()}")
            views.append(target) if cmd[1] == "--bind" else None
        return target

    yield view
    for target in views:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_store_mounts_ro_and_is_checked(make_mount: Callable[..., Mount],
                                                  read_only_view: Callable[[Path], Path], tmp_path: Path,
                                                  run: Run) -> None:
    m = make_mount()
    files = fill(m, 12)
    m.stop()
    ro = read_only_view(m.store)
    r = run("fsck", ro)
    assert r.returncode == 0 and "clean" in r.stdout, (r.stdout, r.stderr)
    mnt = tmp_path / "ro-mnt"
    mnt.mkdir()
    r = run("mount", ro, mnt)
    assert r.returncode > 0 and "-o ro" in r.stderr and mount_source(mnt) is None
    view = make_mount(store=ro, options="ro")
    for name, data in files.items():
        assert (view.mountpoint / name).read_bytes() == data
    with pytest.raises(OSError) as info:
        (view.mountpoint / "new").write_bytes(b"x")
    assert info.value.errno == errno.EROFS
    stats = json.loads(run("stats", "--json", view.mountpoint).stdout)
    assert stats["files"] == len(files)


# -- a damaged dictionary blob -------------------------------------------------------------------------

def test_a_damaged_dictionary_blob_leaves_the_volume_mountable(make_mount: Callable[..., Mount], run: Run) -> None:
    """Only what the damaged dictionary coded reads as EIO (it was unmountable: UnicodeDecodeError)."""
    from thermofs.fs.meta import BLOB_DICTIONARY, MetaStore

    m = make_mount(expect_log_errors=True)
    files = fill(m, 12)
    m.stop()
    meta = MetaStore(m.store / "meta.lmdb")
    with meta.write() as t:
        t.put_blob(BLOB_DICTIONARY, b"\xff\xfe" + b"text\n" + b"\x00" * 64)  # sealed, but its kind is no text
    meta.close()
    r = run("fsck", m.store)
    assert r.returncode == 1 and "dictionary 1 is unreadable" in r.stdout
    m.start()
    for name, data in files.items():
        assert (m.mountpoint / name).read_bytes() == data
