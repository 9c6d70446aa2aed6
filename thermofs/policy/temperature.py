"""Chunk temperature: a decayed access count plus the last access time, and the hot/cold rules.

Pure functions over plain numbers, so the daemon's tracker and cooler and the trace replay in
``bench/replay_policy.py`` run exactly the same policy.

A chunk's temperature is ``(weight, last)``: ``weight`` is the number of accesses, each weighted by
``2 ** -(age / half_life)``, evaluated at time ``last`` (seconds). Accesses of one chunk less than
``DEDUP_SECONDS`` apart count once, so a sequential read of a 64 KiB chunk in 4 KiB requests is one
access, not sixteen.

Hysteresis: a hot chunk turns cold when it was not accessed for ``cold_age`` and its decayed count is
below ``cold_count``; a cold chunk turns hot again only when its decayed count reaches ``hot_count``
(> ``cold_count``), i.e. after repeated accesses: one scan (a backup, a grep) adds one access and
does not undo cooling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

DEDUP_SECONDS = 1.0


class Temp(NamedTuple):
    weight: float  # the decayed access count as of ``last`` (not ``count``: tuples have a count())
    last: float


@dataclass(frozen=True)
class PolicyParams:
    """Settable at mkfs (stored in the volume's format record) and per mount (``-o cold_age=2h``).

    Defaults chosen by replaying the CloudPhysics trace (bench/replay_policy.py, README table):
    see the README for the figures behind them.
    """

    # Replay of the CloudPhysics trace (false-cold window 15 min): age 300 s with these counts gave
    # 0.1% false-cold and 88% of cool-everything's saving; ages of 900 s and more gave 6-35%
    # false-cold (that trace re-reads much of its data 15-60 minutes later).
    cold_age: float = 300.0  # seconds without access before a chunk may turn cold
    cold_count: float = 2.5  # ... and its decayed count must be below this
    hot_count: float = 3.5  # a cold chunk is re-heated when its decayed count reaches this
    half_life: float = 600.0  # seconds for an access to lose half its weight

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"policy parameter {f.name} must be a non-negative number, not {value!r}")
        if self.half_life <= 0:
            raise ValueError("policy parameter half_life must be positive")
        if self.hot_count <= self.cold_count:
            raise ValueError(f"hot_count ({self.hot_count}) must exceed cold_count ({self.cold_count}): "
                             "that gap is the hysteresis")

    def with_options(self, options: dict[str, str]) -> PolicyParams:
        """Override from ``name=value`` strings; ages accept s/m/h/d suffixes."""
        changes: dict[str, float] = {}
        names = {f.name for f in fields(self)}
        for key, text in options.items():
            if key not in names:
                raise ValueError(f"unknown policy parameter {key!r} (known: {', '.join(sorted(names))})")
            changes[key] = parse_age(text) if key in ("cold_age", "half_life") else _number(key, text)
        return replace(self, **changes)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


POLICY_KEYS = tuple(f.name for f in fields(PolicyParams))
_AGE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"policy parameter {key} must be a number, not {text!r}") from None


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    m = _AGE.match(str(text).lower())
    if not m:
        raise ValueError(f"bad age {text!r} (examples: 90s, 15m, 2h, 1d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def decayed(temp: Temp, now: float, half_life: float) -> float:
    """The decayed count as of ``now``."""
    age = max(0.0, now - temp.last)
    factor: float = 2.0 ** (-age / half_life)  # float ** float is typed Any (a negative base gives complex)
    return temp.weight * factor


def accessed(temp: Temp | None, now: float, half_life: float) -> Temp:
    """The temperature after one more access at ``now`` (deduplicated within DEDUP_SECONDS)."""
    if temp is None:
        return Temp(1.0, now)
    if now - temp.last < DEDUP_SECONDS:
        return Temp(temp.weight, max(temp.last, now))
    return Temp(decayed(temp, now, half_life) + 1.0, now)


def merged(stored: Temp, recent: Temp, half_life: float) -> Temp:
    """Fold a batch of recent accesses (``recent``, counted from zero) into the stored temperature."""
    if recent.last <= stored.last:
        return Temp(stored.weight + decayed(recent, stored.last, half_life), stored.last)
    return Temp(decayed(stored, recent.last, half_life) + recent.weight, recent.last)


def is_cold(temp: Temp, now: float, p: PolicyParams) -> bool:
    """Should a hot chunk be recompressed with the cold codec?"""
    return now - temp.last >= p.cold_age and decayed(temp, now, p.half_life) < p.cold_count


def is_reheated(temp: Temp, now: float, p: PolicyParams) -> bool:
    """Has a cold chunk been accessed often enough lately to count as hot again?"""
    return decayed(temp, now, p.half_life) >= p.hot_count
