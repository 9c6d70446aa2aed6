"""Small files: thermofs against a bare passthrough and a passthrough that syncs on close.

    python bench/bench_small_files.py [--files 10000] [--rounds 3] [--out bench/out]

The workload of bench_fs.py's creation test (1-8 KiB slices of real data, each created with O_EXCL,
written and closed, in 20 directories), then one overwrite round (each file opened with O_TRUNC and
written again). Targets, each freshly made and mounted for every round, in an order that rotates
from round to round so that a slow spell of the shared machine does not fall on one target only:

- plain             a directory on the disk under the work directory: how fast the machine creates
                    files at that moment (on the shared machine this moved between 1,300 and
                    5,000 files/s within minutes, and both passthroughs with it);
- passthrough       bench/passthrough.py, which never syncs: the baseline of thermofs (goal >= 0.7x);
- passthrough-sync  the same with an fsync at the close of a written file: the baseline of
                    thermofs-sync_close (goal >= 0.9x);
- thermofs          a fresh volume, cooler off, the default contract (a sync point every 5 s);
- thermofs-sync_close  the same mounted with -o sync_close (every close durable).

Prints the median files/s of each target, each target against the plain directory, and the two
goals; writes small_files.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from bench_fs import (
    DurablePassthroughTarget,
    PassthroughTarget,
    PlainTarget,
    Target,
    ThermofsSyncCloseTarget,
    ThermofsTarget,
    build_text,
    check_small,
    create_small,
    rotating_rounds,
    small_files,
)

DIRS = 20


def overwrite(root: Path, files: list[tuple[str, bytes]]) -> float:
    """files/s of opening each existing file with O_TRUNC, writing it again and closing it."""
    t0 = time.perf_counter()
    for rel, content in files:
        fd = os.open(root / rel, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, content[::-1])
        finally:
            os.close(fd)
    return len(files) / (time.perf_counter() - t0)


def one_round(target: Target, files: list[tuple[str, bytes]]) -> tuple[float, float]:
    target.start()
    try:
        root = target.path / "small"
        root.mkdir()
        created = create_small(root, files)
        rewritten = overwrite(root, files)
        check_small(root, [(rel, content[::-1]) for rel, content in files], 200, 1)
    finally:
        target.stop()
    return created, rewritten


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targets", type=lambda t: t.split(","), default=["plain", "passthrough", "passthrough-sync",
                    "thermofs", "thermofs-sync_close"], help="comma-separated targets")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = small_files(build_text([stdlib], 16 << 20), args.files, DIRS, seed=1)
    makers = {"plain": PlainTarget, "passthrough": PassthroughTarget, "passthrough-sync": DurablePassthroughTarget,
              "thermofs": lambda w: ThermofsTarget(w, [], "nocool"),
              "thermofs-sync_close": lambda w: ThermofsSyncCloseTarget(w, [], "nocool,sync_close")}
    unknown = set(args.targets) - set(makers)
    if unknown:
        ap.error(f"unknown targets {', '.join(sorted(unknown))} (known: {', '.join(makers)})")
    chosen: list[Callable[[Path], Target]] = [makers[t] for t in args.targets]
    rates: dict[str, list[tuple[float, float]]] = {}
    load = os.getloadavg()[0]
    for r, target in rotating_rounds(chosen, args.rounds, "thermofs-bench-small-"):
        created, rewritten = one_round(target, files)
        rates.setdefault(target.name, []).append((created, rewritten))
        print(f"round {r + 1} {target.name:<17} create {created:7.0f} files/s, "
              f"overwrite {rewritten:7.0f} files/s", file=sys.stderr, flush=True)

    med = {name: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
           for name, v in rates.items()}
    print(f"\n{args.files} small files, {args.rounds} rounds (medians); load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end\n")
    plain = med.get("plain")
    print(f"{'target':<21}{'create':>10}{'/plain':>8}{'overwrite':>11}{'/plain':>8}")
    for name, (c, w) in med.items():
        vs = f"{c / plain[0]:7.2f}x{w:11.0f}{w / plain[1]:7.2f}x" if plain else f"{'-':>8}{w:11.0f}{'-':>8}"
        print(f"{name:<21}{c:10.0f}{vs}")
    print()
    for th, base, goal in (("thermofs", "passthrough", 0.7), ("thermofs-sync_close", "passthrough-sync", 0.9)):
        if th not in med or base not in med:
            continue
        ratio_c, ratio_w = med[th][0] / med[base][0], med[th][1] / med[base][1]
        print(f"{th} / {base}: create {ratio_c:.2f}x, overwrite {ratio_w:.2f}x "
              f"(goal >= {goal}x: {'met' if ratio_c >= goal else 'NOT met'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "small_files.json").write_text(json.dumps(
        {"files": args.files, "rounds": args.rounds, "rates": rates, "medians": med,
         "loadavg_start": load, "loadavg_end": os.getloadavg()[0]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
