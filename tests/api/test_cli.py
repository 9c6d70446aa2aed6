"""The `thermofs` command without a mount: every command has help, mkfs checks its options and its
directory (tests/mount/test_cli.py: the mount command and the stats contract on a mount)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Run


@pytest.mark.parametrize("command", ["mkfs", "mount", "umount", "stats", "cool", "compact", "fsck", "train"])
def test_every_command_has_help(command: str, run: Run) -> None:
    r = run(command, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--chunk-size", "1000"], "chunk size must be a power of two"),
    (["--chunk-size", "64Q"], "not a size"),
    (["--hot-codec", "lz77"], "unknown codec"),
    (["--cold-codec", "zstd:99"], "zstd level"),
    (["--cold-codec", "lerned"], "unknown codec"),
    (["--policy", "cold_age=soon"], "bad age"),
    (["--policy", "hot_count=1"], "hysteresis"),
    (["--policy", "warmth=3"], "unknown policy parameter"),
])
def test_mkfs_rejects_bad_options(tmp_path: Path, args: list[str], message: str, run: Run) -> None:
    r = run("mkfs", tmp_path / "store", *args)
    assert r.returncode != 0 and message in r.stderr
    assert not (tmp_path / "store" / "thermofs.json").exists()


def test_mkfs_refuses_a_non_empty_directory(tmp_path: Path, run: Run) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "precious").write_text("keep me")
    r = run("mkfs", tmp_path / "store")
    assert r.returncode != 0 and "not an empty directory" in r.stderr
    assert (tmp_path / "store" / "precious").read_text() == "keep me"
