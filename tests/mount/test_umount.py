"""`thermofs umount`, and admin commands that meet a daemon still exiting after its unmount.

After ``fusermount -u`` returns, the daemon keeps running while it flushes (seconds on a busy volume)
and holds the store lock until it exits. A daemon stopped with SIGSTOP after its unmount stands in
for a slow flush here: the store is unmounted and still locked for as long as the test wants, with
no timing involved. (tests/api/test_umount.py: a store locked by another admin command.)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount

THERMOFS = [sys.executable, "-m", "thermofs"]


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*THERMOFS, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def stderr_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The next line the command writes to stderr ('' if it exits first)."""
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "the command said nothing on stderr"
    return proc.stderr.readline()


@contextmanager
def stopped_after_unmount(m: Mount) -> Iterator[int]:
    """The daemon of ``m``, frozen, its volume unmounted: the store stays locked until the block ends
    (then the daemon resumes, finishes and exits)."""
    assert m.proc is not None
    pid = m.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        subprocess.run(["fusermount", "-u", str(m.mountpoint)], check=True, capture_output=True)
        assert mount_source(m.mountpoint) is None
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)
    assert m.proc.wait(60) == 0


def unmount_quietly(mountpoint: Path) -> None:
    unmounted = mount_source(mountpoint) is None
    if not unmounted and subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True).returncode != 0:
        subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], capture_output=True)


def test_umount_returns_once_the_daemon_is_gone(make_mount: Callable[..., Mount], run: Run) -> None:
    """The tester's case: a busy volume unmounted, then fsck and mount at once."""
    m = make_mount()
    src = m.mountpoint / "many"
    src.mkdir()
    for i in range(2000):
        (src / f"f{i}").write_bytes(f"small file {i}\n".encode() * 3)
    assert sum(len((src / f"f{i}").read_bytes()) for i in range(2000)) > 0
    r = run("umount", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert mount_source(m.mountpoint) is None
    assert m.proc is not None and m.proc.poll() == 0  # the daemon had exited when umount returned
    r = run("fsck", m.store)
    assert r.returncode == 0 and "clean" in r.stdout, r.stdout + r.stderr
    r = run("mount", m.store, m.mountpoint)
    try:
        assert r.returncode == 0, r.stderr
        assert len(list((m.mountpoint / "many").iterdir())) == 2000
    finally:
        r = run("umount", m.mountpoint)
        unmount_quietly(m.mountpoint)
    assert r.returncode == 0, r.stderr


def test_umount_says_it_waits_and_gives_up_at_the_timeout(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount()
    (m.mountpoint / "f").write_bytes(b"data")
    assert m.proc is not None
    pid = m.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        r = run("umount", "--timeout", "2s", m.mountpoint)
        assert mount_source(m.mountpoint) is None  # unmounted; only the daemon's exit is missing
    finally:
        os.kill(pid, signal.SIGCONT)
    assert m.proc.wait(60) == 0
    assert r.returncode == 1
    assert "waiting for its daemon" in r.stderr and f"pid {pid}" in r.stderr
    assert "still running after 2 s" in r.stderr, r.stderr
    assert run("fsck", m.store).returncode == 0


def test_umount_waits_through_a_slow_exit(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount()
    assert m.proc is not None
    os.kill(m.proc.pid, signal.SIGSTOP)
    proc = start("umount", m.mountpoint)
    try:
        line = stderr_line(proc)
        assert "waiting for its daemon" in line and f"pid {m.proc.pid}" in line, line
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
    assert proc.wait(120) == 0
    assert m.proc.poll() == 0
    assert run("fsck", m.store).returncode == 0


def test_umount_of_a_busy_mount_fails_with_fusermounts_message(mount: Mount, run: Run) -> None:
    with open(mount.mountpoint / "open", "wb"):
        r = run("umount", mount.mountpoint)
        assert r.returncode == 1 and "busy" in r.stderr, r.stderr
        assert mount_source(mount.mountpoint) is not None
    (mount.mountpoint / "after").write_bytes(b"still serving")
    assert (mount.mountpoint / "after").read_bytes() == b"still serving"


def test_umount_refuses_what_is_not_a_thermofs_mount(tmp_path: Path, run: Run) -> None:
    (tmp_path / "plain").mkdir()
    r = run("umount", tmp_path / "plain")
    assert r.returncode == 2 and "not a mount point" in r.stderr
    r = run("umount", tmp_path / "missing")
    assert r.returncode == 2 and "does not exist" in r.stderr
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(other)], check=True)
    try:
        r = run("umount", other)
        assert r.returncode == 2 and "tmpfs, not of thermofs" in r.stderr
        assert mount_source(other) is not None
    finally:
        subprocess.run(["umount", str(other)], check=True)


@pytest.mark.parametrize("command", ["fsck", "compact", "cool", "mount"])
def test_admin_commands_wait_for_an_exiting_daemon(make_mount: Callable[..., Mount], command: str) -> None:
    m = make_mount()
    (m.mountpoint / "f").write_bytes(b"x" * 100_000)
    args = [m.store, m.mountpoint] if command == "mount" else [m.store]
    with stopped_after_unmount(m) as pid:
        proc = start(command, *args)
        line = stderr_line(proc)
        assert f"waiting for the daemon of {m.store}" in line and f"pid {pid}" in line, line
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    finally:
        if command == "mount":
            unmount_quietly(m.mountpoint)


def test_a_mounted_store_is_still_in_use_at_once(mount: Mount, run: Run) -> None:
    r = run("fsck", mount.store, timeout=30)
    assert r.returncode == 2 and "in use" in r.stderr and "waiting" not in r.stderr
