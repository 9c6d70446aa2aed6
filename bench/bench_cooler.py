"""Sequential write throughput while the background cooler works, against the cooler off.

    python bench/bench_cooler.py [--prefill 256M] [--size 512M] [--rounds 2]

Each round mounts two fresh volumes, one after the other, in alternating order: one with the cooler
off (``-o nocool``), one with the cooler at its most eager (``-o cold_age=0,cool_interval=1s``:
every chunk is cold at once). Both first get ``--prefill`` bytes of real data (so the cooler has work,
recompressing it with zstd -19), then ``--size`` bytes are written sequentially in 1 MiB writes and
fsync'd, timed. The cooler's chunks recompressed during the timed write are reported, so the figure
is known to include its work. Prints the ratio (goal: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_fs import ThermofsTarget, build_text, parse_size, seq_write

OUT = Path(__file__).resolve().parent / "out"
GOAL = 0.8
EAGER = "cold_age=0,cool_interval=1s"


def cooler_status(target: ThermofsTarget) -> dict[str, Any]:
    from thermofs.daemon.control import call

    return dict(call(target.store, "stats", timeout=10)["cooler"])


def one(workdir: Path, options: str, prefill: bytes, data: bytes) -> dict[str, float]:
    target = ThermofsTarget(workdir, [], options)
    target.start()
    try:
        seq_write(target.path / "prefill", prefill)
        time.sleep(2)  # the cooler's first pass starts (cool_interval=1s)
        before = cooler_status(target)
        rate = seq_write(target.path / "timed", data)
        after = cooler_status(target)
        problems = target.log_problems()
        if problems:
            raise SystemExit("daemon log has problems:\n" + "\n".join(problems))
    finally:
        target.stop()
    return {"mib_s": rate, "cooled_during_write": after["cooled"] - before["cooled"],
            "cooled_total": after["cooled"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefill", default="256M")
    ap.add_argument("--size", default="512M")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    text = build_text([Path(sysconfig.get_paths()["stdlib"])], parse_size(args.prefill) + parse_size(args.size))
    prefill, data = text[:parse_size(args.prefill)], text[parse_size(args.prefill):]
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="thermofs-bench-cooler-") as tmp:
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for mode in order:
                workdir = Path(tmp) / f"{mode}{r}"
                workdir.mkdir()
                res = one(workdir, "nocool" if mode == "off" else EAGER, prefill, data)
                runs[mode].append(res)
                print(f"round {r} cooler {mode:3}: {res['mib_s']:7.1f} MiB/s, chunks cooled during the write: "
                      f"{res['cooled_during_write']:.0f}", flush=True)
    off = statistics.median(r["mib_s"] for r in runs["off"])
    on = statistics.median(r["mib_s"] for r in runs["on"])
    ratio = on / off
    print(f"\nsequential write, median of {args.rounds}: cooler off {off:.1f} MiB/s, cooler on {on:.1f} MiB/s, "
          f"ratio {ratio:.2f} (goal >= {GOAL}): {'met' if ratio >= GOAL else 'MISSED'}")
    OUT.mkdir(exist_ok=True)
    (OUT / "cooler.json").write_text(json.dumps({"runs": runs, "off": off, "on": on, "ratio": ratio,
                                                 "prefill": len(prefill), "size": len(data)}, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
