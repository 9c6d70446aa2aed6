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


def test_mkfs_defaults_to_the_cold_path_and_older_volumes_keep_theirs(tmp_path: Path, run: Run) -> None:
    """A new volume cools with ``best``; a volume whose record names another cold codec keeps it, and
    a record without one (none was ever written so) reads as the old default, zstd:19."""
    import json

    from thermofs.fs.store import read_config

    r = run("mkfs", tmp_path / "new")
    assert r.returncode == 0 and "cold best" in r.stdout
    assert read_config(tmp_path / "new").cold_codec == "best"
    assert run("mkfs", tmp_path / "old", "--cold-codec", "zstd:19").returncode == 0
    assert read_config(tmp_path / "old").cold_codec == "zstd:19"
    record = tmp_path / "old" / "thermofs.json"
    fields = json.loads(record.read_text())
    del fields["cold_codec"]
    record.write_text(json.dumps(fields))
    assert read_config(tmp_path / "old").cold_codec == "zstd:19"
