"""Small random operations: xfstests' fsx on thermofs and on the bare passthrough, in one run.

    python bench/bench_fsx.py [--ops 100000] [--rounds 1] [--fsx PATH]

fsx (from xfstests: build it there, ``make ltp/fsx``, or give its path with --fsx) does random
reads, writes, truncates and mmap reads and writes on one file and checks every byte it reads
against its own model of the file; the same seed gives both targets the same operations. Options:
``-q -S 42 -F -H -z -C -I -J -B -E -0``: no fallocate, hole punching, zero, collapse or insert
ranges, clone, dedupe, copy or exchange ranges, which neither thermofs nor the passthrough offers.
Prints seconds per target, thermofs / passthrough (goal: within 3x) and writes fsx.json to --out.
A failed fsx check fails the benchmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_fs import PassthroughTarget, Target, ThermofsTarget, rotating_rounds

FSX_FLAGS = ("-q", "-S", "42", "-F", "-H", "-z", "-C", "-I", "-J", "-B", "-E", "-0")
GOAL = 3.0  # thermofs within 3x the passthrough's time


def run_fsx(fsx: str, target: Target, ops: int) -> float:
    """Seconds of ``ops`` fsx operations on a fresh ``target``."""
    target.start()
    try:
        logdir = target.workdir / "fsx-log"
        logdir.mkdir()
        t0 = time.perf_counter()
        proc = subprocess.run([fsx, *FSX_FLAGS, "-N", str(ops), "-P", str(logdir), str(target.path / "fsxfile")],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"fsx failed on {target.name}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return seconds
    finally:
        target.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--fsx", default="fsx", help="the fsx binary")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    fsx = shutil.which(args.fsx)
    if fsx is None:
        print(f"bench_fsx: {args.fsx!r} not found: build xfstests' fsx and give its path with --fsx",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the unmounts
    makers: list[Callable[[Path], Target]] = [PassthroughTarget, lambda w: ThermofsTarget(w, [], "nocool")]
    seconds: dict[str, list[float]] = {}
    for r, target in rotating_rounds(makers, args.rounds, "thermofs-bench-fsx-", args.workdir):
        s = run_fsx(fsx, target, args.ops)
        seconds.setdefault(target.name, []).append(s)
        print(f"round {r + 1} {target.name:<12} {s:7.1f} s", file=sys.stderr, flush=True)
    best = {name: min(v) for name, v in seconds.items()}
    ratio = best["thermofs"] / best["passthrough"]
    print(f"\nfsx, {args.ops} operations, seed 42, best of {args.rounds}:")
    for name, s in best.items():
        print(f"  {name:<12} {s:7.1f} s  {args.ops / s:8.0f} ops/s")
    print(f"thermofs / passthrough: {ratio:.2f}x the time (goal within {GOAL:g}x: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fsx.json").write_text(json.dumps(
        {"ops": args.ops, "flags": FSX_FLAGS, "seconds": seconds, "ratio": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
