"""fsck and a mounted store: refused while the daemon holds it, clean once it is unmounted
(tests/api/test_fsck.py: stores damaged on purpose, what fsck reports and repairs, its command line)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount

CS = 4096


def test_mounted_store_is_refused(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount(chunk_size=CS)
    (m.mountpoint / "f").write_bytes(b"mounted")
    r = run("fsck", m.store)
    assert r.returncode == 2 and "in use" in r.stderr
    m.stop()
    r = run("fsck", m.store)
    assert r.returncode == 0, r.stdout + r.stderr
