"""Replay a block I/O trace against the hot/cold policy with a simulated clock.

    python bench/replay_policy.py [--trace shared/traces/cloudPhysicsIO.csv] [--window 15m]

Every request is mapped to the 64 KiB chunks it touches. Chunks the trace reads before it writes
them are taken as written at time 0 (the volume's data before the trace began). A simulated cooler
wakes every ``--scan`` seconds and recompresses what the policy calls cold, exactly as the daemon's
cooler does (the same functions from ``thermofs.policy.temperature``). Reported per policy:

- false-cold rate: share of recompressions after which the chunk was read within ``--window``
  (the work was wasted and the read paid the cold codec);
- recompressed per written: bytes recompressed (chunk size each) per byte the trace wrote;
- hot-read share: share of chunk reads served by a hot frame;
- space saving: time-averaged number of cold chunks, relative to "cool everything" (every chunk
  saves the same fraction when cold, so the ratio of bytes saved equals the ratio of cold chunks).

Baselines: never cool; cool everything (every chunk cold at the first scan after its write, re-heated
by nothing); age only (LRU: cold after ``cold_age`` without access, hot again at the next access).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from thermofs.policy.temperature import PolicyParams, Temp, accessed, is_cold, is_reheated, parse_age

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CHUNK = 64 << 10
OUT = REPO / "bench" / "out"


@dataclass
class Result:
    name: str
    cooled: int = 0
    false_cold: int = 0
    chunk_reads: int = 0
    hot_reads: int = 0
    written_bytes: int = 0
    cold_chunk_seconds: float = 0.0
    promoted: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def row(self, reference: float) -> dict[str, float | str]:
        return {
            "policy": self.name,
            "false_cold_rate": self.false_cold / self.cooled if self.cooled else 0.0,
            "recompressed_per_written": self.cooled * CHUNK / self.written_bytes if self.written_bytes else 0.0,
            "hot_read_share": self.hot_reads / self.chunk_reads if self.chunk_reads else 1.0,
            "space_saving_vs_cool_all": self.cold_chunk_seconds / reference if reference else 0.0,
            "recompressions": self.cooled,
            "false_cold": self.false_cold,
            "promotions": self.promoted,
        }


Event = tuple[float, bool, range, int]  # time, is_write, chunks touched, bytes


def load_trace(path: Path) -> list[Event]:
    events: list[Event] = []
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        t0: float | None = None
        for r in rows:
            t = float(r["time"])
            t0 = t if t0 is None else t0
            start = int(r["lbn"]) * 512
            end = start + max(1, int(r["size"]))
            events.append((t - t0, r["op"] == "2a", range(start // CHUNK, (end - 1) // CHUNK + 1),
                           int(r["size"])))
    return events


# A strategy decides, at each scan, which hot chunks turn cold, and, at each read of a cold chunk,
# whether it turns hot again.
Cools = Callable[[Temp, float], bool]
Reheats = Callable[[Temp, float], bool]


def replay(events: list[Event], name: str, cools: Cools | None, reheats: Reheats, scan: float,
           window: float, half_life: float) -> Result:
    res = Result(name)
    temps: dict[int, Temp] = {}
    cold: set[int] = set()
    cooled_at: dict[int, float] = {}  # chunk -> time of its last recompression not yet judged
    for _t, is_write, chunks, _size in events:
        for c in chunks:
            if c not in temps and not is_write:
                temps[c] = Temp(0.0, 0.0)  # read before written: data from before the trace
    next_scan = scan
    last_t = 0.0

    def run_scans(until: float) -> Iterator[float]:
        nonlocal next_scan
        while next_scan <= until:
            yield next_scan
            next_scan += scan

    for t, is_write, chunks, size in events:
        for now in run_scans(t):
            res.cold_chunk_seconds += len(cold) * (now - last_t)
            last_t = now
            if cools is None:
                continue
            for c, temp in temps.items():
                if c not in cold and cools(temp, now):
                    cold.add(c)
                    cooled_at[c] = now
                    res.cooled += 1
        for c in chunks:
            if is_write:
                temps[c] = accessed(temps.get(c), t, half_life)
                cold.discard(c)
                cooled_at.pop(c, None)  # rewritten: the cold frame is garbage, not a false cold
                continue
            res.chunk_reads += 1
            if c in cold:
                since = cooled_at.pop(c, None)
                if since is not None and t - since <= window:
                    res.false_cold += 1
                temps[c] = accessed(temps[c], t, half_life)
                if reheats(temps[c], t):
                    cold.discard(c)
                    res.promoted += 1
            else:
                res.hot_reads += 1
                temps[c] = accessed(temps[c], t, half_life)
        if is_write:
            res.written_bytes += size
    end = events[-1][0] if events else 0.0
    res.cold_chunk_seconds += len(cold) * (end - last_t)
    return res


def run(trace: Path, params: PolicyParams, scan: float, window: float) -> list[dict[str, float | str]]:
    events = load_trace(trace)
    hl = params.half_life
    never = replay(events, "never cool", None, lambda temp, now: False, scan, window, hl)
    everything = replay(events, "cool everything", lambda temp, now: True, lambda temp, now: False,
                        scan, window, hl)
    lru = replay(events, f"age only (LRU, {params.cold_age:g} s)",
                 lambda temp, now: now - temp.last >= params.cold_age, lambda temp, now: True,
                 scan, window, hl)
    ours = replay(events, "thermofs policy", lambda temp, now: is_cold(temp, now, params),
                  lambda temp, now: is_reheated(temp, now, params), scan, window, hl)
    reference = everything.cold_chunk_seconds
    return [r.row(reference) for r in (never, everything, lru, ours)]


def sweep(trace: Path, scan: float, window: float) -> list[dict[str, float | str]]:
    """The policy over a grid of ages and thresholds: the choice of defaults behind PolicyParams."""
    rows = []
    for age in (60, 300, 600, 900, 1800, 3600):
        for cold_count in (0.5, 1.0, 1.5, 2.5):
            p = PolicyParams(cold_age=age, cold_count=cold_count, hot_count=max(3.0, cold_count + 1),
                             half_life=PolicyParams().half_life)
            row = run(trace, p, scan, window)[-1]
            row["policy"] = f"age {age}s, cold_count {cold_count}"
            rows.append(row)
    return rows


def render(rows: list[dict[str, float | str]]) -> str:
    head = f"{'policy':38} {'false-cold':>10} {'recomp/written':>14} {'hot reads':>9} {'saving vs all':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['policy']!s:38} {float(r['false_cold_rate']):10.1%} "
                     f"{float(r['recompressed_per_written']):14.2f} {float(r['hot_read_share']):9.1%} "
                     f"{float(r['space_saving_vs_cool_all']):13.1%}")
    return "\n".join(lines)


def draw(rows: list[dict[str, float | str]], sweep_rows: list[dict[str, float | str]], png: Path,
         window: float) -> None:
    """False-cold rate against space saving: the policy's parameter grid and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs = [100 * float(r["space_saving_vs_cool_all"]) for r in sweep_rows]
    ys = [100 * float(r["false_cold_rate"]) for r in sweep_rows]
    ax.scatter(xs, ys, s=18, color="0.6", label="thermofs policy, parameter grid (--sweep)")
    for r, marker in zip(rows, "osD*", strict=False):  # the first four policies get a marker
        ax.scatter([100 * float(r["space_saving_vs_cool_all"])], [100 * float(r["false_cold_rate"])], s=90,
                   marker=marker, label=str(r["policy"]))
    ax.axhline(5, color="red", lw=0.8, ls="--")
    ax.axvline(80, color="red", lw=0.8, ls="--")
    ax.text(81, 5.5, "goal: right of 80%, below 5%", color="red", fontsize=8)
    ax.set_xlabel("space saving, % of cool-everything's (time-averaged)")
    ax.set_ylabel(f"false-cold rate, % (read within {window / 60:g} min of recompression)")
    ax.set_title("Hot/cold policy on the CloudPhysics trace (bench/replay_policy.py)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=SHARED / "traces" / "cloudPhysicsIO.csv")
    ap.add_argument("--scan", default="60s", help="simulated cooler interval (default 60s)")
    ap.add_argument("--window", default="15m", help="false-cold window after a recompression (default 15m)")
    ap.add_argument("--sweep", action="store_true", help="also sweep cold_age and cold_count")
    for key, value in PolicyParams().as_dict().items():
        ap.add_argument(f"--{key.replace('_', '-')}", default=None, help=f"policy parameter (default {value:g})")
    args = ap.parse_args()
    overrides = {k: getattr(args, k) for k in PolicyParams().as_dict() if getattr(args, k) is not None}
    params = PolicyParams().with_options(overrides)
    scan, window = parse_age(args.scan), parse_age(args.window)
    rows = run(args.trace, params, scan, window)
    print(f"trace {args.trace.name}, scan every {scan:g} s, false-cold window {window:g} s, {params}")
    print(render(rows))
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"params": params.as_dict(), "scan": scan, "window": window, "rows": rows}
    if args.sweep:
        result["sweep"] = sweep(args.trace, scan, window)
        print("\nsweep:")
        print(render(result["sweep"]))
    (OUT / "replay_policy.json").write_text(json.dumps(result, indent=1))
    if args.sweep:
        draw(rows, result["sweep"], OUT / "replay_policy.png", window)
    assert all(math.isfinite(float(r["false_cold_rate"])) for r in rows)


if __name__ == "__main__":
    main()
