"""One exit status rule for every command: 0 success, 1 failed (fsck: damage found), 2 usage error
or unusable target, 130 interrupted. Here every command (mount and umount too) on a wrong target or
with a bad value, and an unreachable daemon (tests/api/test_exit_status.py: the rule in the help)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.daemon.mountinfo import mount_source

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount


@pytest.mark.parametrize("command", ["mkfs", "mount", "umount", "stats", "fsck", "cool", "compact", "train"])
def test_not_a_store_exits_2(tmp_path: Path, command: str, run: Run) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "precious").write_text("not a store")
    (tmp_path / "mnt").mkdir()
    args: list[str | Path] = {"mkfs": [plain], "mount": [plain, tmp_path / "mnt"]}.get(command, [plain])
    r = run(command, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = {"mkfs": "not an empty directory", "umount": "not a mount point"}.get(command,
                                                                                    "not a thermofs store")
    assert message in r.stderr
    if command != "mkfs":  # mkfs makes a missing directory
        r = run(command, *[tmp_path / "missing" if a == plain else a for a in args])
        assert r.returncode == 2, (r.stdout, r.stderr)
    assert (plain / "precious").read_text() == "not a store"


@pytest.mark.parametrize("command, args, message", [
    ("mkfs", ["--chunk-size", "64Q"], "not a size"),
    ("mkfs", ["--chunk-size", "1000"], "power of two"),
    ("mkfs", ["--policy", "cold_age=soon"], "bad age"),
    ("mount", ["MNT", "-o", "cache_size=lots"], "not a size"),
    ("mount", ["MNT", "-o", "cold_age=often"], "bad age"),
    ("umount", ["--timeout", "soon"], "bad age"),
    ("stats", ["STORE/missing"], "missing"),
    ("fsck", ["--repair=yes"], "does not take a value"),
    ("cool", ["--older-than", "soon"], "bad age"),
    ("compact", ["--min-garbage", "150"], "150"),
    ("train", ["--budget", "forever"], "bad age"),
])
def test_a_bad_value_exits_2(tmp_path: Path, command: str, args: list[str], message: str, run: Run) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    assert run("mkfs", store).returncode == 0
    target = tmp_path / "new" if command == "mkfs" else mnt if command == "umount" else store
    r = run(command, target, *[a.replace("MNT", str(mnt)).replace("STORE", str(store)) for a in args])
    assert r.returncode == 2 and message in r.stderr, (r.stdout, r.stderr)
    assert mount_source(mnt) is None


def test_an_unreachable_daemon_exits_2(mount: Mount, run: Run) -> None:
    (mount.store / "control.sock").unlink()  # the daemon serves the mount, its admin socket is gone
    r = run("cool", mount.mountpoint)
    assert r.returncode == 2 and "cannot reach the daemon" in r.stderr, r.stderr
