"""Trees of files as users make them: `cp -a`, `tar x` and `git clone` onto thermofs and onto a bare passthrough.

    python bench/bench_trees.py [--rounds 3] [--out bench/out]

Three workloads on the standard library (its site-packages/dist-packages left out), each written onto
a freshly made and mounted target:

- cp      ``cp -a`` of the standard library tree;
- tar     ``tar xf`` of an uncompressed tarball of it (made once, on the plain disk);
- git     ``git clone --no-local`` of a repository holding it in one commit (made once): git writes
          a pack file, then checks out every file.

Targets: a plain directory (how fast the machine is at that moment), the bare passthrough
(bench/passthrough.py, never syncs; the goal is thermofs >= 0.6x of it) and thermofs (a fresh volume,
cooler off, the default contract). The order of the targets rotates from round to round, so that a
slow spell of the shared machine does not fall on one target only; the source is read once before
each workload, so every copy reads it from the page cache. Prints the median seconds and MiB/s of
each target and workload and the ratios; writes trees.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_codecs import timed
from bench_fs import (
    MiB,
    PassthroughTarget,
    PlainTarget,
    Target,
    ThermofsTarget,
    rotating_rounds,
    run,
    stdlib_entries,
    tree_size,
    warm,
)

GOAL = 0.6  # thermofs >= 0.6x of the bare passthrough on each workload
WORKLOADS = ("cp", "tar", "git")


def make_sources(entries: list[Path], work: Path) -> tuple[Path, Path]:
    """A tarball of the tree and a git repository holding it, on the plain disk."""
    tarball = work / "stdlib.tar"
    run(["tar", "cf", str(tarball), "-C", str(entries[0].parent), *(e.name for e in entries)])
    repo = work / "stdlib.git"
    repo.mkdir()
    run(["tar", "xf", str(tarball), "-C", str(repo)])
    # gc.auto=0: a commit's automatic gc runs detached and would race the repack below.
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "init.defaultBranch=main",
           "-c", "gc.auto=0"]
    run([*git, "init", "-q"], cwd=repo)
    run([*git, "add", "-A", "-f"], cwd=repo)
    run([*git, "commit", "-q", "-m", "stdlib"], cwd=repo)
    run([*git, "repack", "-a", "-d", "-q"], cwd=repo)  # one pack, as a repository fetched from a server has
    return tarball, repo


def check(dest: Path) -> None:
    """What was written reads back right: the copy and the unpacked tarball are the same tree, and
    every file git checked out equals the tarball's (git keeps no empty directories)."""
    run(["diff", "-rq", "--no-dereference", str(dest / "cp"), str(dest / "tar")])
    checkout = dest / "git"
    for dirpath, dirs, files in os.walk(checkout):
        dirs[:] = [d for d in dirs if not (Path(dirpath) == checkout and d == ".git")]
        for name in files:
            path = Path(dirpath, name)
            twin = dest / "tar" / path.relative_to(checkout)
            same = (os.readlink(path) == os.readlink(twin)) if path.is_symlink() else \
                path.read_bytes() == twin.read_bytes()
            if not same:
                raise RuntimeError(f"{path} differs from {twin}")


def one_round(target: Target, entries: list[Path], tarball: Path, repo: Path) -> dict[str, float]:
    """Seconds of each workload on a fresh ``target``."""
    seconds: dict[str, float] = {}
    target.start()
    try:
        dest = target.path
        warm(entries)
        (dest / "cp").mkdir()
        seconds["cp"], _ = timed(lambda: run(["cp", "-a", "--", *map(str, entries), str(dest / "cp")]))
        warm([tarball])
        (dest / "tar").mkdir()
        seconds["tar"], _ = timed(lambda: run(["tar", "xf", str(tarball), "-C", str(dest / "tar")]))
        warm([repo])
        seconds["git"], _ = timed(lambda: run(["git", "clone", "-q", "--no-local", str(repo), str(dest / "git")]))
        check(dest)
    finally:
        target.stop()
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]),
                    help="the tree to copy (its site-packages/dist-packages are skipped)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to make the temporary directories")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the unmounts
    entries = stdlib_entries(args.stdlib)
    size, count = tree_size(entries)
    makers: list[Callable[[Path], Target]] = [
        PlainTarget, PassthroughTarget, lambda w: ThermofsTarget(w, [], "nocool")]
    seconds: dict[str, list[dict[str, float]]] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="thermofs-bench-trees-src-", dir=args.workdir) as src:
        tarball, repo = make_sources(entries, Path(src))
        for r, target in rotating_rounds(makers, args.rounds, "thermofs-bench-trees-", args.workdir):
            result = one_round(target, entries, tarball, repo)
            seconds.setdefault(target.name, []).append(result)
            print(f"round {r + 1} {target.name:<12} " + ", ".join(f"{w} {s:6.2f} s" for w, s in result.items()),
                  file=sys.stderr, flush=True)

    med = {name: {w: statistics.median(r[w] for r in rs) for w in WORKLOADS} for name, rs in seconds.items()}
    print(f"\nstandard library: {count} files, {size / MiB:.1f} MiB; {args.rounds} rounds (median seconds); "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    print(f"{'target':<14}" + "".join(f"{w + ' s':>9}{'MiB/s':>8}" for w in WORKLOADS))
    for name, m in med.items():
        print(f"{name:<14}" + "".join(f"{m[w]:9.2f}{size / MiB / m[w]:8.1f}" for w in WORKLOADS))
    print()
    ratios = {w: med["passthrough"][w] / med["thermofs"][w] for w in WORKLOADS}
    for w, ratio in ratios.items():
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(f"thermofs / passthrough, {w:<4}: {ratio:.2f}x  (goal >= {GOAL}x: {verdict}); "
              f"passthrough / plain {med['plain'][w] / med['passthrough'][w]:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trees.json").write_text(json.dumps(
        {"files": count, "bytes": size, "rounds": args.rounds, "seconds": seconds, "medians": med,
         "ratios": ratios, "loadavg_start": load, "loadavg_end": os.getloadavg()[0]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
