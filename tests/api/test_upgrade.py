"""A store made by thermofs format 1 (tests/data/store-format1.tar.xz, the ``old_store`` fixture) upgraded
without a mount: an upgrade cut short after its LMDB step is finished by the next open
(tests/mount/test_upgrade.py: refused by read-only commands, upgraded by a mount, read back)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run


def test_an_upgrade_cut_short_after_its_lmdb_step_is_finished(old_store: Path, run: Run) -> None:
    """A crash between the two steps leaves sealed LMDB records and a format-1 thermofs.json: the next
    open only rewrites thermofs.json (sealing the records twice would damage every one)."""
    before = (old_store / "thermofs.json").read_text()
    r = run("fsck", "--repair", old_store)  # upgrades, as a mount would
    assert r.returncode == 0, r.stdout + r.stderr
    uuid = json.loads((old_store / "thermofs.json").read_text())["uuid"]
    (old_store / "thermofs.json").write_text(before)
    r = run("fsck", "--repair", old_store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((old_store / "thermofs.json").read_text())["uuid"] == uuid
    assert run("fsck", old_store).returncode == 0
