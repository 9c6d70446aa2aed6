#!/usr/bin/env python3
"""Foundation benchmark: thermofs against a bare passthrough FUSE filesystem and a plain directory.

    python bench/bench_fs.py [--size 1G] [--files 10000] [--out bench/out] [--workdir DIR]

Four targets, measured one after the other in one run, each with the same workloads:

- plain             a directory on the disk the work directory lives on (the ceiling);
- passthrough       bench/passthrough.py mounting a plain directory: same binding (mfusepy, libfuse3)
                    and the same FUSE options as thermofs, so thermofs/passthrough is thermofs's own
                    cost (the foundation's goals are set against it);
- passthrough-sync  the same with an fsync at the close of a written file: the durability of
                    thermofs -o sync_close, which the bare passthrough does not keep;
- thermofs          a fresh volume (thermofs mkfs), mounted with the thermofs CLI.

Every read workload starts cold: FUSE targets are unmounted and mounted again (which also empties
thermofs's decoded-chunk cache) and the kernel page cache is dropped (drop_caches as root, else
posix_fadvise(DONTNEED) on every backing file).

Results: one table on stdout, a JSON file and a PNG bar chart of the ratios in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thermofs.daemon.mountinfo import answers, mount_source

MiB = 1 << 20
IO_SIZE = 1 * MiB  # application write/read size for the sequential workloads
PAGE = 4096
BENCH_DIR = Path(__file__).resolve().parent
TARGETS = ("plain", "passthrough", "passthrough-sync", "thermofs")
# Names that say "already compressed": left out of the compressible corpus, or it would not be.
COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".lzma", ".zip", ".whl", ".jar", ".png",
                       ".jpg", ".jpeg", ".gif", ".webp", ".mp3", ".ogg", ".woff", ".woff2", ".7z", ".tgz")
# Top-level entries of the stdlib directory that are not the standard library (pyenv/venv builds
# keep installed packages there).
NOT_STDLIB = {"site-packages", "dist-packages"}
# libfuse 3.14 prints this line on every mount: not a problem.
BENIGN_LOG = ("Ignoring invalid max threads value",)


# ----------------------------------------------------------------------------------------- goals

@dataclass(frozen=True)
class Goal:
    """thermofs must reach ``minimum`` x the ``versus`` target (or, for sizes, stay under ``maximum``)."""

    versus: str
    minimum: float

    def met(self, ratio: float | None) -> bool | None:
        return None if ratio is None else ratio >= self.minimum

    def text(self) -> str:
        return f">= {self.minimum:g}x {self.versus}"


GOALS: dict[str, Goal] = {
    "seq_write_text": Goal("passthrough", 0.7),
    "seq_write_random": Goal("passthrough", 0.7),
    "create_small": Goal("passthrough", 0.7),
}
STDLIB_STORED_GOAL = 0.40  # stored bytes <= 40% of the apparent size of a copied stdlib


# ------------------------------------------------------------------------------------- utilities

def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    return int(float(num) * units[unit])


_warned_fadvise = False


def drop_caches(backing: list[Path]) -> None:
    """Make the next reads come from disk: sync, then drop the page cache. Without the right to
    write drop_caches, evict the files under ``backing`` one by one instead."""
    global _warned_fadvise
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    except OSError as e:
        if not _warned_fadvise:
            print(f"note: cannot drop caches ({e}); evicting backing files with posix_fadvise instead",
                  file=sys.stderr)
            _warned_fadvise = True
    for root in backing:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed with {proc.returncode}:\n{proc.stderr.strip()}")
    return proc


def rotating_rounds(makers: Sequence[Callable[[Path], Target]], rounds: int, prefix: str,
                    workdir: Path | None = None) -> Iterator[tuple[int, Target]]:
    """(round, target) for every maker in every round, each target made in a fresh temporary directory
    (removed once the caller moves on), in an order that rotates from round to round, so that a slow
    spell of the shared machine does not fall on one target only."""
    for r in range(rounds):
        for make in [*makers[r % len(makers):], *makers[:r % len(makers)]]:
            with tempfile.TemporaryDirectory(prefix=prefix, dir=workdir) as tmp:
                yield r, make(Path(tmp))


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


# --------------------------------------------------------------------------------------- targets

class Target:
    """Where the workloads run. ``path`` is the directory they write into; ``cold()`` empties caches."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / self.name

    def start(self) -> None:
        self.path.mkdir()

    def stop(self) -> None:
        pass

    def backing(self) -> list[Path]:
        """Directories whose files hold this target's data on the real disk."""
        return [self.path]

    def cold(self) -> None:
        drop_caches(self.backing())

    def log_problems(self) -> list[str]:
        return []


class PlainTarget(Target):
    name = "plain"


class FuseTarget(Target):
    """A FUSE daemon run in the foreground as our child, in its own session, with its output in a log."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.out_log = workdir / f"{self.name}.daemon.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.path.mkdir(exist_ok=True)
        self.mount()

    def mount(self, timeout: float = 60.0) -> None:
        if mount_source(self.path) is not None:
            raise RuntimeError(f"{self.path} is already a mountpoint")
        with open(self.out_log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while mount_source(self.path) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} daemon exited with {self.proc.returncode}; "
                                   f"see {self.out_log}:\n{tail(self.out_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} mount did not appear within {timeout:.0f} s")
            time.sleep(0.02)
        os.statvfs(self.path)  # one real request: the daemon serves
        # Both daemons raise read_ahead_kb from the kernel's 128 KiB from a thread right after mounting;
        # wait (briefly) for that, so that the first reads already use the large requests.
        ra = Path(f"/sys/class/bdi/{mount_source(self.path)}/read_ahead_kb")
        until = time.monotonic() + 2
        while ra.exists() and ra.read_text().strip() == "128" and time.monotonic() < until:
            time.sleep(0.02)

    def unmount(self) -> None:
        """Unmount cleanly (the daemon flushes and exits); kill it if it hangs; never leave a mount."""
        try:
            if self.proc is not None and self.proc.poll() is None and not answers(self.path, 10):
                print(f"warning: {self.name} does not answer; killing it", file=sys.stderr)
                self.proc.kill()
            if mount_source(self.path) is not None and \
                    subprocess.run(["fusermount", "-u", str(self.path)], capture_output=True).returncode:
                subprocess.run(["fusermount", "-u", "-z", str(self.path)], capture_output=True)
            if self.proc is not None:
                try:
                    self.proc.wait(300)  # thermofs writes its buffers out before exiting
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(30)
        finally:
            if mount_source(self.path) is not None:
                subprocess.run(["fusermount", "-u", "-z", str(self.path)], capture_output=True)
            self.proc = None

    def stop(self) -> None:
        self.unmount()

    def cold(self) -> None:
        self.unmount()  # drops the FUSE inodes with their page cache, and any cache in the daemon
        drop_caches(self.backing())
        self.mount()

    def log_problems(self) -> list[str]:
        text = self.out_log.read_text(errors="replace") if self.out_log.exists() else ""
        return [line for line in text.splitlines()
                if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception"))
                and not any(b in line for b in BENIGN_LOG)]


class PassthroughTarget(FuseTarget):
    name = "passthrough"
    flags: tuple[str, ...] = ()

    def __init__(self, workdir: Path, nothreads: bool = False) -> None:
        super().__init__(workdir)
        self.root = workdir / f"{self.name}-root"
        self.nothreads = nothreads

    def start(self) -> None:
        self.root.mkdir()
        super().start()

    def backing(self) -> list[Path]:
        return [self.root]

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "passthrough.py"), str(self.root), str(self.path),
                *self.flags, *(["--nothreads"] if self.nothreads else [])]


class DurablePassthroughTarget(PassthroughTarget):
    """The passthrough under thermofs's contract: close of a written file makes it durable (fsync)."""

    name = "passthrough-sync"
    flags = ("--sync-on-close",)


class ThermofsTarget(FuseTarget):
    name = "thermofs"

    def __init__(self, workdir: Path, mkfs_args: list[str], mount_options: str | None) -> None:
        super().__init__(workdir)
        self.store = workdir / "thermofs-store"
        self.mkfs_args = mkfs_args
        self.mount_options = mount_options
        self.stats: dict[str, dict[str, Any]] = {}  # label -> `thermofs stats --json`, taken unmounted

    def start(self) -> None:
        run([sys.executable, "-m", "thermofs", "mkfs", str(self.store), *self.mkfs_args])
        super().start()

    def backing(self) -> list[Path]:
        return [self.store]

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "thermofs", "mount", "-f", "--no-stderr", str(self.store), str(self.path)]
        return cmd + (["-o", self.mount_options] if self.mount_options else [])

    def stats_now(self) -> dict[str, Any]:
        return json.loads(run([sys.executable, "-m", "thermofs", "stats", "--json", str(self.store)]).stdout)

    def cold(self, label: str | None = None) -> None:
        """As FuseTarget.cold; with a label, record the volume's stats while it is unmounted (so every
        buffer has been written and the counters are final)."""
        self.unmount()
        if label:
            self.stats[label] = self.stats_now()
        drop_caches(self.backing())
        self.mount()

    def log_problems(self) -> list[str]:
        problems = super().log_problems()
        store_log = self.store / "thermofs.log"
        if store_log.exists():
            problems += [line for line in store_log.read_text(errors="replace").splitlines()
                         if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
                         and not any(b in line for b in BENIGN_LOG)]
        return problems


class ThermofsSyncCloseTarget(ThermofsTarget):
    """thermofs mounted with -o sync_close: every close durable, as passthrough-sync."""

    name = "thermofs-sync_close"


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------ data

def stdlib_entries(stdlib: Path) -> list[Path]:
    """The top-level entries of the stdlib directory, without installed third-party packages."""
    return sorted(p for p in stdlib.iterdir() if p.name not in NOT_STDLIB)


def corpus_files(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not (Path(dirpath) == root and d in NOT_STDLIB))
            for name in sorted(files):
                p = Path(dirpath, name)
                if not name.lower().endswith(COMPRESSED_SUFFIXES) and p.is_file() and not p.is_symlink():
                    yield p


def build_text(roots: list[Path], size: int) -> bytes:
    """``size`` bytes of real, compressible data: the corpus files concatenated, repeated as needed.

    The repeat period is kept off any power-of-two boundary, so that a repeated copy never lines up
    with chunk boundaries (a filesystem that deduplicated chunks would otherwise look better)."""
    parts: list[bytes] = []
    total = 0
    for p in corpus_files(roots):
        try:
            parts.append(p.read_bytes())
        except OSError:
            continue
        total += len(parts[-1])
        if total >= size:
            break
    if not total:
        raise SystemExit(f"no corpus files under {', '.join(map(str, roots))}")
    corpus = b"".join(parts)
    if len(corpus) % PAGE == 0:
        corpus = corpus[:-1]
    reps = -(-size // len(corpus))
    return (corpus * reps)[:size]


def small_files(text: bytes, n: int, dirs: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` (relative path, content) pairs: 1-8 KiB slices of real data, spread over ``dirs`` dirs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.randint(1024, 8192)
        off = rng.randrange(0, max(1, len(text) - size))
        out.append((f"d{i % dirs:02d}/f{i:06d}", text[off:off + size]))
    return out


def tree_size(roots: list[Path]) -> tuple[int, int]:
    """(apparent bytes of the regular files, number of regular files) under ``roots``, not following
    symlinks: what a user would call the size of the tree."""
    size = count = 0
    for root in roots:
        if root.is_file() and not root.is_symlink():
            size, count = size + root.stat().st_size, count + 1
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_mode & 0o170000) == 0o100000:
                    size, count = size + st.st_size, count + 1
    return size, count


# ------------------------------------------------------------------------------------- workloads

def seq_write(path: Path, data: bytes) -> float:
    """MiB/s of writing ``data`` in 1 MiB writes, fsync and close included (data must be durable)."""
    view = memoryview(data)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), IO_SIZE):
            chunk = view[off:off + IO_SIZE]
            written = os.write(fd, chunk)
            while written < len(chunk):  # short writes are legal
                written += os.write(fd, chunk[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data) / MiB / (time.perf_counter() - t0)


def seq_read(path: Path, expect: bytes) -> float:
    """MiB/s of reading the file back in 1 MiB reads; the content is checked, untimed."""
    buf = bytearray(IO_SIZE)
    checking = 0.0
    off = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            c0 = time.perf_counter()
            # bytearray == bytes is a memcmp; a memoryview comparison would unpack byte by byte.
            if (buf if n == IO_SIZE else buf[:n]) != expect[off:off + n]:
                raise RuntimeError(f"{path}: wrong data read back at offset {off}")
            checking += time.perf_counter() - c0
            off += n
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0 - checking
    if off != len(expect):
        raise RuntimeError(f"{path}: read {off} bytes, wrote {len(expect)}")
    return off / MiB / elapsed


def random_reads(path: Path, expect: bytes, count: int, seed: int) -> float:
    """IOPS of ``count`` 4 KiB preads at random page-aligned offsets.

    POSIX_FADV_RANDOM turns kernel read-ahead off for the file, so each read is one 4 KiB request
    and the number measures the per-request cost, not how much read-ahead happens to hit."""
    rng = random.Random(seed)
    offsets = [rng.randrange(len(expect) // PAGE) * PAGE for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        t0 = time.perf_counter()
        for off in offsets:
            if os.pread(fd, PAGE, off) != expect[off:off + PAGE]:
                raise RuntimeError(f"{path}: wrong data at offset {off}")
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return count / elapsed


def create_small(root: Path, files: list[tuple[str, bytes]]) -> float:
    """files/s of creating, writing and closing each small file (directories created first, timed)."""
    t0 = time.perf_counter()
    for d in sorted({rel.split("/")[0] for rel, _ in files}):
        (root / d).mkdir()
    for rel, content in files:
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
    return len(files) / (time.perf_counter() - t0)


def check_small(root: Path, files: list[tuple[str, bytes]], sample: int, seed: int) -> None:
    """After a cold restart: all names are there, and a sample reads back right."""
    names = {f"{d}/{n}" for d in os.listdir(root) for n in os.listdir(root / d)}
    missing = {rel for rel, _ in files} - names
    if missing:
        raise RuntimeError(f"{len(missing)} small files missing, e.g. {sorted(missing)[:3]}")
    for rel, content in random.Random(seed).sample(files, min(sample, len(files))):
        if (root / rel).read_bytes() != content:
            raise RuntimeError(f"{root / rel}: wrong content")


def warm(entries: list[Path]) -> None:
    """Read the source tree once, so every target's copy reads it from the page cache and the copy
    measures writing to the target, not reading the source disk."""
    for entry in entries:
        walk = [(str(entry.parent), [], [entry.name])] if not entry.is_dir() else os.walk(entry)
        for dirpath, _dirs, files in walk:
            for name in files:
                p = os.path.join(dirpath, name)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        while f.read(IO_SIZE):
                            pass


def copy_tree(entries: list[Path], dest: Path) -> float:
    """Seconds of `cp -a` of ``entries`` into ``dest`` (one cp for all, like a user would run it)."""
    dest.mkdir()
    t0 = time.perf_counter()
    run(["cp", "-a", "--", *map(str, entries), str(dest)])
    return time.perf_counter() - t0


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ----------------------------------------------------------------------------------------- runs

@dataclass
class Workload:
    key: str
    label: str
    unit: str


WORKLOADS = [
    Workload("seq_write_text", "seq write, real data", "MiB/s"),
    Workload("seq_read_text", "seq read, real data (cold)", "MiB/s"),
    Workload("rand_read_4k", "4 KiB random read (cold)", "IOPS"),
    Workload("seq_write_random", "seq write, random data", "MiB/s"),
    Workload("seq_read_random", "seq read, random data (cold)", "MiB/s"),
    Workload("create_small", "create small files", "files/s"),
    Workload("cp_stdlib", "cp -a stdlib", "MiB/s"),
]


@dataclass
class Inputs:
    text: bytes
    rand: bytes
    small: list[tuple[str, bytes]]
    stdlib: list[Path]
    stdlib_bytes: int
    stdlib_files: int
    rand_reads: int
    seed: int


@dataclass
class Outcome:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # workload -> target -> value
    stdlib: dict[str, Any] = field(default_factory=dict)
    thermofs_stats: dict[str, Any] = field(default_factory=dict)
    log_problems: dict[str, list[str]] = field(default_factory=dict)

    def put(self, key: str, target: str, value: float) -> None:
        self.values.setdefault(key, {})[target] = value


def cold(target: Target, label: str) -> None:
    if isinstance(target, ThermofsTarget):
        target.cold(label)
    else:
        target.cold()


def measure(target: Target, inp: Inputs, out: Outcome) -> None:
    """All workloads on one (started) target. Files are removed after use to bound disk use."""
    name = target.name

    def step(msg: str) -> None:
        print(f"  [{name}] {msg}", file=sys.stderr, flush=True)

    # The stdlib copy first: on a fresh thermofs volume, its stats then describe exactly that tree.
    step("cp -a stdlib")
    warm(inp.stdlib)
    secs = copy_tree(inp.stdlib, target.path / "stdlib")
    out.put("cp_stdlib", name, inp.stdlib_bytes / MiB / secs)
    cold(target, "after cp stdlib")
    if isinstance(target, ThermofsTarget):
        st = target.stats["after cp stdlib"]
        out.stdlib = {
            "source": [str(p) for p in inp.stdlib], "apparent_bytes": inp.stdlib_bytes,
            "files": inp.stdlib_files, "logical_bytes": st["logical_bytes"],
            "stored_bytes": st["stored_bytes"], "physical_bytes": st["physical_bytes"],
            "stored_pct": 100 * st["stored_bytes"] / inp.stdlib_bytes,
            "physical_pct": 100 * st["physical_bytes"] / inp.stdlib_bytes,
            "stored_pct_of_logical": 100 * st["stored_bytes"] / max(1, st["logical_bytes"]),
            "copy_seconds": secs,
        }
    remove(target.path / "stdlib")

    big = target.path / "big-text"
    step(f"seq write {len(inp.text) / MiB:.0f} MiB real data")
    out.put("seq_write_text", name, seq_write(big, inp.text))
    cold(target, "after seq write text")
    step("seq read real data")
    out.put("seq_read_text", name, seq_read(big, inp.text))
    cold(target, "")
    step(f"{inp.rand_reads} random 4 KiB reads")
    out.put("rand_read_4k", name, random_reads(big, inp.text, inp.rand_reads, inp.seed))
    remove(big)

    big = target.path / "big-random"
    step(f"seq write {len(inp.rand) / MiB:.0f} MiB random data")
    out.put("seq_write_random", name, seq_write(big, inp.rand))
    cold(target, "after seq write random")
    step("seq read random data")
    out.put("seq_read_random", name, seq_read(big, inp.rand))
    remove(big)

    small = target.path / "small"
    small.mkdir()
    step(f"create {len(inp.small)} small files")
    out.put("create_small", name, create_small(small, inp.small))
    cold(target, "after small files")
    check_small(small, inp.small, 500, inp.seed)
    remove(small)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(out: Outcome) -> list[dict[str, Any]]:
    rows = []
    for w in WORKLOADS:
        v = out.values.get(w.key, {})
        r_pt = ratio(v.get("thermofs"), v.get("passthrough"))
        r_sync = ratio(v.get("thermofs"), v.get("passthrough-sync"))
        r_plain = ratio(v.get("thermofs"), v.get("plain"))
        goal = GOALS.get(w.key)
        met = goal.met(r_pt if goal and goal.versus == "passthrough" else r_plain) if goal else None
        rows.append({"workload": w.key, "label": w.label, "unit": w.unit, **{t: v.get(t) for t in TARGETS},
                     "thermofs_vs_passthrough": r_pt, "thermofs_vs_passthrough_sync": r_sync,
                     "thermofs_vs_plain": r_plain,
                     "goal": goal.text() if goal else None, "goal_met": met})
    return rows


def render_table(rows: list[dict[str, Any]], out: Outcome) -> str:
    head = (f"{'workload':<30}{'unit':>8}{'plain':>10}{'passthru':>10}{'pt-sync':>10}{'thermofs':>10}"
            f"{'th/pt':>8}{'th/sync':>8}{'th/plain':>9}  goal")
    lines = [head, "-" * len(head)]
    for r in rows:
        goal = ""
        if r["goal"]:
            goal = f"{r['goal']}: " + {True: "met", False: "MISSED", None: "?"}[r["goal_met"]]
        rp, rs, rl = (("-" if x is None else f"{x:.2f}x") for x in (
            r["thermofs_vs_passthrough"], r["thermofs_vs_passthrough_sync"], r["thermofs_vs_plain"]))
        lines.append(f"{r['label']:<30}{r['unit']:>8}{fmt_rate(r['plain']):>10}"
                     f"{fmt_rate(r['passthrough']):>10}{fmt_rate(r['passthrough-sync']):>10}"
                     f"{fmt_rate(r['thermofs']):>10}{rp:>8}{rs:>8}{rl:>9}  {goal}")
    s = out.stdlib
    if s:
        met = "met" if s["stored_pct"] <= 100 * STDLIB_STORED_GOAL else "MISSED"
        lines += ["",
                  f"stdlib copy on thermofs: {s['files']} files, apparent {s['apparent_bytes'] / MiB:.1f} MiB "
                  f"(thermofs logical {s['logical_bytes'] / MiB:.1f} MiB)",
                  f"  stored   {s['stored_bytes'] / MiB:8.1f} MiB = {s['stored_pct']:5.1f}% of apparent size   "
                  f"goal <= {100 * STDLIB_STORED_GOAL:.0f}%: {met}",
                  f"  physical {s['physical_bytes'] / MiB:8.1f} MiB = {s['physical_pct']:5.1f}% of apparent size "
                  f"(segments + LMDB)"]
    st = out.thermofs_stats.get("after seq write text")
    if st and st.get("logical_bytes"):
        lines.append(f"thermofs stored/logical after the real-data write: "
                     f"{100 * st['stored_bytes'] / st['logical_bytes']:.1f}% (physical incl. garbage "
                     f"{st['physical_bytes'] / MiB:.0f} MiB)")
    return "\n".join(lines)


def draw_chart(rows: list[dict[str, Any]], out: Outcome, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    pt = [r["thermofs_vs_passthrough"] or 0 for r in rows]
    sync = [r["thermofs_vs_passthrough_sync"] or 0 for r in rows]
    pl = [r["thermofs_vs_plain"] or 0 for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(11, 6))
    ax.bar([i - 0.27 for i in x], pt, 0.27, label="thermofs / passthrough")
    ax.bar(list(x), sync, 0.27, label="thermofs / passthrough with fsync at close")
    ax.bar([i + 0.27 for i in x], pl, 0.27, label="thermofs / plain")
    goal_label: str | None = "goal"
    for i, r in enumerate(rows):
        goal = GOALS.get(r["workload"])
        if goal:  # a short red line across the bar the goal applies to
            xc = i - 0.27 if goal.versus == "passthrough" else i + 0.27
            ax.hlines(goal.minimum, xc - 0.17, xc + 0.17, colors="red", linewidth=2, label=goal_label)
            goal_label = None
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels, rotation=20, ha="right")
    ax.set_ylabel("ratio (log scale; 1 = as fast)")
    title = "thermofs speed relative to a bare passthrough FUSE fs, one that syncs at close, and a plain directory"
    if out.stdlib:
        title += f"\nstdlib copy stored in {out.stdlib['stored_pct']:.1f}% of its apparent size (goal <= 40%)"
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="1G", help="size of each big file (real data, random data)")
    p.add_argument("--files", type=int, default=10_000, help="number of small files to create")
    p.add_argument("--dirs", type=int, default=10, help="directories the small files are spread over")
    p.add_argument("--random-reads", type=int, default=20_000, help="number of random 4 KiB reads")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="directory for JSON and PNG")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to make the temporary directory (default: the system temp dir)")
    p.add_argument("--stdlib", type=Path, default=stdlib,
                   help="standard library tree to copy (its site-packages/dist-packages are skipped)")
    p.add_argument("--corpus", type=Path, action="append", default=None,
                   help="directories whose files make the real data (repeatable); default: the stdlib "
                        "and /usr/share/doc")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of targets")
    p.add_argument("--mkfs-args", default="", help="extra arguments for thermofs mkfs, e.g. '--chunk-size 128K'")
    p.add_argument("--mount-options", default=None, help="thermofs -o options")
    p.add_argument("--nothreads", action="store_true",
                   help="single-threaded FUSE loop for both FUSE targets (thermofs -o nothreads)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the work directory (never while mounted)")
    args = p.parse_args(argv)
    if args.corpus is None:
        args.corpus = [args.stdlib] + [d for d in (Path("/usr/share/doc"),) if d.is_dir()]
    return args


def make_target(name: str, workdir: Path, args: argparse.Namespace) -> Target:
    if name == "plain":
        return PlainTarget(workdir)
    if name == "passthrough":
        return PassthroughTarget(workdir, args.nothreads)
    if name == "passthrough-sync":
        return DurablePassthroughTarget(workdir, args.nothreads)
    if name == "thermofs":
        options = ",".join(filter(None, [args.mount_options, "nothreads" if args.nothreads else None]))
        return ThermofsTarget(workdir, args.mkfs_args.split(), options or None)
    raise SystemExit(f"unknown target {name!r} (known: {', '.join(TARGETS)})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = parse_size(args.size)
    names = [t for t in args.targets.split(",") if t]
    # SIGTERM must unwind through the finally blocks like Ctrl-C does, or mounts stay behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    t_start = time.monotonic()
    load_start = os.getloadavg()[0]  # other work on the machine skews every number: record it
    print(f"preparing data: {size / MiB:.0f} MiB real data from {', '.join(map(str, args.corpus))}, "
          f"{size / MiB:.0f} MiB random, {args.files} small files", file=sys.stderr, flush=True)
    text = build_text(args.corpus, size)
    entries = stdlib_entries(args.stdlib)
    stdlib_bytes, stdlib_files = tree_size(entries)
    inp = Inputs(text=text, rand=os.urandom(size), small=small_files(text, args.files, args.dirs, args.seed),
                 stdlib=entries, stdlib_bytes=stdlib_bytes, stdlib_files=stdlib_files,
                 rand_reads=args.random_reads, seed=args.seed)

    out = Outcome()
    workdir = Path(tempfile.mkdtemp(prefix="thermofs-bench-", dir=args.workdir))
    fuse_targets: list[FuseTarget] = []
    try:
        for name in names:
            target = make_target(name, workdir, args)
            if isinstance(target, FuseTarget):
                fuse_targets.append(target)
            print(f"{name}:", file=sys.stderr, flush=True)
            try:
                target.start()
                measure(target, inp, out)
            finally:
                target.stop()  # unmounts; a failure here must not hide the original error
                out.log_problems[name] = target.log_problems()
                if isinstance(target, ThermofsTarget):
                    out.thermofs_stats = target.stats
            if not args.keep:  # free the disk before the next target
                remove(target.backing()[0])
                remove(target.path)
    finally:
        for t in fuse_targets:  # belt and braces: nothing may stay mounted
            t.stop()
        left = [t.path for t in fuse_targets if mount_source(t.path) is not None]
        if left:
            print(f"ERROR: still mounted: {', '.join(map(str, left))}; not removing {workdir}", file=sys.stderr)
        elif not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = summarize(out)
    table = render_table(rows, out)
    goals = ("goals: seq write >= 0.7x passthrough, file creation >= 0.7x passthrough, "
             "stdlib stored <= 40% of apparent size")
    print()
    print(f"thermofs benchmark: size {size / MiB:.0f} MiB, {args.files} small files in {args.dirs} dirs, "
          f"{args.random_reads} random reads; {os.cpu_count()} CPUs; {time.monotonic() - t_start:.0f} s; "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(goals)
    print()
    print(table)
    for name, problems in out.log_problems.items():
        if problems:
            print(f"\n{name} daemon log: {len(problems)} warning/error lines, first: {problems[0]}")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {"size": size, "files": args.files, "dirs": args.dirs, "random_reads": args.random_reads,
                   "io_size": IO_SIZE, "corpus": [str(c) for c in args.corpus], "stdlib": str(args.stdlib),
                   "mkfs_args": args.mkfs_args, "mount_options": args.mount_options,
                   "nothreads": args.nothreads, "cpus": os.cpu_count(),
                   "targets": names, "seconds": time.monotonic() - t_start,
                   "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0]},
        "goals": {**{k: g.text() for k, g in GOALS.items()}, "stdlib_stored": f"<= {STDLIB_STORED_GOAL:.0%}"},
        "results": rows, "stdlib": out.stdlib, "thermofs_stats": out.thermofs_stats,
        "log_problems": out.log_problems,
    }
    (args.out / "bench_fs.json").write_text(json.dumps(result, indent=2) + "\n")
    draw_chart(rows, out, args.out / "bench_fs.png")
    print(f"\nwrote {args.out / 'bench_fs.json'} and {args.out / 'bench_fs.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
