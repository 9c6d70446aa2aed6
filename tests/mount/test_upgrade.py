"""A store made by thermofs format 1 (tests/data/store-format1.tar.xz, written through a real mount by the
last format-1 code: 16 KiB chunks, a text file cooled to zstd -19, random data, a sparse file, a
symlink, a hard link, an xattr) is refused by read-only commands with the way to upgrade it, upgraded
by a mount, and then reads back byte for byte, takes new data in headed segments and checks clean
(tests/api/test_upgrade.py: an upgrade cut short)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount


def expected() -> dict[str, bytes]:
    """The files as the format-1 code wrote them (the same recipe)."""
    r = random.Random(7)
    text = "".join(f"line {i} of a text file\n" for i in range(3000)).encode()
    return {"small.txt": b"small file\n", "docs/text.txt": text, "docs/hardlink.txt": text,
            "docs/deep/random.bin": r.randbytes(70000), "sparse.bin": b"\0" * 40000 + b"tail"}


def test_format_1_store_is_upgraded_by_a_mount(old_store: Path, make_mount: Callable[..., Mount], run: Run) -> None:
    for args in (["fsck", old_store], ["stats", old_store]):
        r = run(*args)
        assert r.returncode > 0 and "format version 1" in r.stderr and "upgrade" in r.stderr, r.stderr
    m = make_mount(store=old_store)
    for name, data in expected().items():
        assert (m.mountpoint / name).read_bytes() == data, name
    assert os.readlink(m.mountpoint / "link") == "docs/text.txt"
    assert os.getxattr(m.mountpoint / "small.txt", "user.tag") == b"hello"
    assert os.stat(m.mountpoint / "docs" / "text.txt").st_nlink == 2
    (m.mountpoint / "new.bin").write_bytes(random.Random(8).randbytes(50000))
    m.stop()
    config = json.loads((old_store / "thermofs.json").read_text())
    assert config["version"] == 2 and len(config["uuid"]) == 32
    assert "upgraded" in m.log_path.read_text()
    # The old segment keeps its bytes and has no header; the new one names the volume.
    segments = sorted((old_store / "segments").glob("*.seg"))
    assert segments[0].read_bytes()[:4] != b"TFSG" and segments[-1].read_bytes()[:4] == b"TFSG"
    report = run("fsck", "--json", old_store)
    assert report.returncode == 0, report.stdout[-3000:]
    assert json.loads(report.stdout)["checked"]["frames_verified"] > 0
    m.start()
    assert (m.mountpoint / "new.bin").read_bytes() == random.Random(8).randbytes(50000)
    assert (m.mountpoint / "docs" / "deep" / "random.bin").read_bytes() == expected()["docs/deep/random.bin"]
