"""What the text output says: sizes in the same binary units everywhere, the period of the I/O
rates, labels that explain themselves, and the policy in force on a mount (tests/api/test_stats_output.py:
mkfs's units)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Run
    from tests.mount.conftest import Mount


# -- units and labels ----------------------------------------------------------------------------------

HUMAN = r"\d+(\.\d)? (B|KiB|MiB|GiB)"


def test_text_output_uses_human_units(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount(options="nocool", cold_codec="zstd:19")
    (m.mountpoint / "text").write_bytes(b"a line of text that compresses well enough\n" * 40_000)
    r = run("cool", "--now", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"saved {HUMAN} ", r.stdout) and "bytes" not in r.stdout, r.stdout
    r = run("train", "--no-model", "--budget", "5s", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"sampled \d+ chunks \({HUMAN}\)", r.stdout) and "bytes" not in r.stdout, r.stdout
    stats = run("stats", m.mountpoint).stdout
    assert "bytes" not in stats
    assert re.search(rf"on disk +{HUMAN}, of which {HUMAN} dead frames not yet reclaimed", stats), stats
    # The rates say over which period they were measured: since the mount, then since the request before.
    assert re.search(r"I/O +\(average since the mount, [0-9.]+ (s|min|h) ago\) +read", stats), stats
    again = run("stats", m.mountpoint).stdout
    assert re.search(r"I/O +\((average since the mount, [0-9.]+ (s|min|h) ago|over the last [0-9.]+ "
                     r"(s|min), since the previous stats\)) +read", again), again
    live = json.loads(run("stats", "--json", m.mountpoint).stdout)["live"]
    assert live["rates_since"] in ("mount", "previous request") and live["rate_span_s"] > 0


# -- the policy in force on a mount ------------------------------------------------------------------------

def test_stats_shows_the_policy_in_force_on_the_mount(make_mount: Callable[..., Mount], run: Run) -> None:
    m = make_mount(options="cold_age=10m,hot_count=6")
    s = json.loads(run("stats", "--json", m.mountpoint).stdout)
    assert s["policy"]["cold_age"] == 600 and s["policy"]["hot_count"] == 6 and s["policy_source"] == "mount"
    assert s["live"]["policy"] == s["policy"]
    assert s["store_policy"]["cold_age"] == 300  # what mkfs set, in force on a mount without -o
    text = run("stats", m.mountpoint).stdout
    assert re.search(r"policy +cold_age 10m, cold_count 2.5, hot_count 6, half_life 10m \(mount -o\)", text), text
    m.stop()
    s = json.loads(run("stats", "--json", m.store).stdout)
    assert s["policy"]["cold_age"] == 300 and s["policy_source"] == "store"
