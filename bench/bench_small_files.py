"""Small files on thermofs: creating them, then overwriting them in place (an O_TRUNC open each).

    python bench/bench_small_files.py [--files 3000]

Each file is 1-7 KiB of compressible text written with ``open(path, "wb").write(...)`` and closed, in
10 directories, one after another (each close is durable: invariant 2). Prints files per second for
the creation round and two overwrite rounds on one volume mounted with the cooler off.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from bench_fs import ThermofsTarget


def round_of(root: Path, contents: list[bytes], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with open(root / f"d{i % 10}" / f"f{i}", "wb") as f:
            f.write(contents[i % len(contents)])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=3000)
    args = ap.parse_args()
    rnd = random.Random(1)
    contents = [os.urandom(16) + b"hello world " * rnd.randint(80, 600) for _ in range(64)]
    with tempfile.TemporaryDirectory(prefix="thermofs-bench-small-") as tmp:
        target = ThermofsTarget(Path(tmp), [], "nocool")
        target.start()
        try:
            for d in range(10):
                (target.path / f"d{d}").mkdir()
            rates = [round_of(target.path, contents, args.files) for _ in range(3)]
        finally:
            target.stop()
    print(f"create {rates[0]:.0f} files/s, overwrite {rates[1]:.0f} and {rates[2]:.0f} files/s ({args.files} files)")


if __name__ == "__main__":
    main()
