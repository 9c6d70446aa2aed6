"""The hot/cold policy, one part at a time: the temperature rules and the access tracker (its records in
LMDB), on a clock the test moves (tests/api/test_policy.py: the cooler over a store)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thermofs.fs.meta import MetaStore
from thermofs.policy.temperature import (
    DEDUP_SECONDS,
    PolicyParams,
    Temp,
    accessed,
    decayed,
    is_cold,
    is_reheated,
    merged,
    parse_age,
)
from thermofs.policy.tracker import Tracker

if TYPE_CHECKING:
    from tests.conftest import Clock

P = PolicyParams(cold_age=300, cold_count=2.5, hot_count=3.5, half_life=600)


# -- temperature rules ---------------------------------------------------------------------------------

def test_decay_halves_per_half_life() -> None:
    assert decayed(Temp(4.0, 100.0), 100.0 + 600, 600) == pytest.approx(2.0)
    assert decayed(Temp(4.0, 100.0), 100.0, 600) == 4.0


def test_accesses_within_a_second_count_once() -> None:
    t = accessed(None, 10.0, 600)
    t = accessed(t, 10.0 + DEDUP_SECONDS / 2, 600)
    assert t.weight == 1.0
    t = accessed(t, 20.0, 600)
    assert t.weight == pytest.approx(1.0 * 2 ** (-9.5 / 600) + 1.0)


def test_merged_equals_sequential_accesses() -> None:
    times = [0.0, 50.0, 700.0, 705.0, 2000.0]
    whole: Temp | None = None
    for now in times:
        whole = accessed(whole, now, 600)
    first: Temp | None = None
    for now in times[:2]:
        first = accessed(first, now, 600)
    rest: Temp | None = None
    for now in times[2:]:
        rest = accessed(rest, now, 600)
    assert whole is not None and first is not None and rest is not None
    both = merged(first, rest, 600)
    assert both.last == whole.last and both.weight == pytest.approx(whole.weight)


def test_hysteresis_one_scan_does_not_reheat() -> None:
    idle = Temp(1.0, 0.0)
    assert not is_cold(idle, 299, P) and is_cold(idle, 300, P)
    busy = Temp(4.0, 0.0)  # 2.8 after 300 s: still above cold_count
    assert not is_cold(busy, 300, P)
    scanned = accessed(idle, 1000.0, P.half_life)  # one read of a cold chunk (backup, grep)
    assert not is_reheated(scanned, 1000.0, P)
    heat = scanned
    for k in range(1, 4):
        heat = accessed(heat, 1000.0 + 10 * k, P.half_life)
    assert is_reheated(heat, 1030.0, P)


def test_params_are_validated() -> None:
    assert PolicyParams().with_options({"cold_age": "2h", "hot_count": "5"}).cold_age == 7200
    with pytest.raises(ValueError, match="unknown policy parameter"):
        PolicyParams().with_options({"cold": "1"})
    with pytest.raises(ValueError, match="hysteresis"):
        PolicyParams(cold_count=3, hot_count=2)
    with pytest.raises(ValueError, match="bad age"):
        parse_age("soon")
    with pytest.raises(ValueError, match="non-negative"):
        PolicyParams(cold_age=-1)


# -- the tracker -----------------------------------------------------------------------------------------

def test_tracker_batches_and_survives_reopen(tmp_path: Path, clock: Clock) -> None:
    meta = MetaStore(tmp_path / "m", create=True)
    tr = Tracker(meta, P, clock)
    tr.touch(7, 0, 3)
    clock.now += 100
    tr.touch(7, 2, 2)
    with meta.read() as t:
        assert t.get_temp(7, 2) is None  # nothing written per access
        assert tr.temp(t, 7, 2, 0.0).weight == pytest.approx(2 ** (-100 / 600) + 1)
    assert tr.flush() == 4
    meta.close()
    meta = MetaStore(tmp_path / "m")
    tr = Tracker(meta, P, clock)
    clock.now += 5
    tr.touch(7, 2, 2)
    tr.flush()
    with meta.read() as t:
        count, last = t.get_temp(7, 2)  # type: ignore[misc]
        assert last == clock.now
        assert count == pytest.approx((2 ** (-100 / 600) + 1) * 2 ** (-5 / 600) + 1, rel=1e-6)
        # no record: accessed once at the file's mtime
        assert tr.temp(t, 9, 0, 123.0) == Temp(1.0, 123.0)
    meta.close()
