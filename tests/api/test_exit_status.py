"""One exit status rule for every command, as its help says (tests/mount/test_exit_status.py: each
command's status on a wrong target, a bad value, an unreachable daemon)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run


def test_the_exit_status_rule_is_in_the_help(run: Run) -> None:
    r = run("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "Exit status: 0 success; 1 the command ran and failed" in text
    assert "2 usage error or unusable target" in text and "130 interrupted" in text
