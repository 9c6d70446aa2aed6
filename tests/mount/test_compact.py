"""`thermofs compact` of a mounted volume (by its daemon) and of the same store offline: every file
reads back, the garbage goes to zero (tests/api/test_compact.py: compaction itself, interrupted and
killed anywhere, beside writers)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount

CS = 4096


def test_cli_compact_offline_and_mounted(tmp_path: Path, make_mount: Callable[..., Mount], run: Run) -> None:
    r = run("compact", "--help")
    assert r.returncode == 0 and "Safe to interrupt" in r.stdout
    r = run("compact", tmp_path / "nowhere")
    assert r.returncode != 0 and "no such store" in r.stderr
    m = make_mount(chunk_size=CS)
    rng = random.Random(5)
    for i in range(6):
        (m.mountpoint / f"f{i}").write_bytes(rng.randbytes(40_000))
    m.remount()
    keep = {}
    for i in range(6):
        if i % 2:
            (m.mountpoint / f"f{i}").unlink()
        else:
            keep[f"f{i}"] = rng.randbytes(30_000) if i else (m.mountpoint / "f0").read_bytes()
            if i:  # f0 stays live in the first segment, so that segment is partly dead
                (m.mountpoint / f"f{i}").write_bytes(keep[f"f{i}"])
    before = json.loads(run("stats", m.store, "--json").stdout)
    assert before["garbage_bytes"] > 0
    r = run("compact", m.mountpoint, "--min-garbage", "0")  # by the daemon, while mounted
    assert r.returncode == 0 and "compacted:" in r.stdout, r.stderr
    assert {p.name: p.read_bytes() for p in m.mountpoint.iterdir()} == keep
    after = json.loads(run("stats", m.store, "--json").stdout)
    assert after["garbage_bytes"] == 0 and after["physical_bytes"] < before["physical_bytes"]
    m.stop()
    r = run("compact", m.store, "--min-garbage", "0")
    assert r.returncode == 0 and "compacted:" in r.stdout, r.stderr
    r = run("stats", m.store, "--json")
    assert '"garbage_bytes": 0' in r.stdout
    m.start()
    assert {p.name: p.read_bytes() for p in m.mountpoint.iterdir()} == keep
