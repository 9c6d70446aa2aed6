"""Real mount: kill -9 of the daemon in the middle of heavy writes; what was fsync'd survives byte for byte.

A child process writes files (new ones, and rewrites of earlier ones) and appends to a journal file on the
mount, fsyncing each; after every fsync has returned it records that in a list file on a plain directory.
The daemon is killed while the child writes. After a remount every file the list names as done must be
byte-identical to what was written (contents are regenerated from name and generation), the journal must
hold at least its fsync'd prefix, every file on the volume must read without error, and ``thermofs stats``
must work on the crashed store and agree with what the mount shows.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mount.conftest import Mount, StatsJson

SEED = int(os.environ.get("THERMOFS_TEST_SEED", "4242"))
ROUNDS = 2
DIRS = 4


def content(name: str, gen: int) -> bytes:
    """The deterministic bytes of generation ``gen`` of file ``name``: runs of random and of text bytes."""
    rng = random.Random(f"{name}/{gen}")
    r = rng.random()
    size = rng.randint(0, 5000) if r < 0.2 else rng.randint(5000, 300_000) if r < 0.7 \
        else rng.randint(300_000, 1_500_000)
    parts, n = [], 0
    while n < size:
        k = min(size - n, rng.randint(1, 200_000))
        if rng.random() < 0.5:
            parts.append(rng.randbytes(k))
        else:
            line = f"{name} generation {gen} at {n}\n".encode()
            parts.append((line * (k // len(line) + 1))[:k])
        n += k
    return b"".join(parts)


def journal_record(round_no: int, k: int) -> bytes:
    rng = random.Random(f"journal{round_no}/{k}")
    return f"record {k} ".encode() + rng.randbytes(rng.randint(0, 3000)) + b"\n"


def journal_expected(round_no: int, length: int) -> bytes:
    out, k = bytearray(), 0
    while len(out) < length:
        out += journal_record(round_no, k)
        k += 1
    return bytes(out)


def _parse_list(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a last line without newline was cut by the kill
    return [line.split(" ") for line in lines if line]


def child_main(mnt: str, list_file: str, round_no: int, seed: int, rewrite: str) -> None:
    """The writer, run in a subprocess: ``python test_crash.py MNT LIST_FILE ROUND SEED REWRITE``.

    ``rewrite``: how an existing file is rewritten: ``o_trunc`` (open with O_TRUNC, as shells and
    most programs do) or ``ftruncate`` (open, then ftruncate to 0).
    """
    mountpoint, listing = Path(mnt), Path(list_file)
    gens: dict[str, int] = {}
    for rec in _parse_list(listing):
        if rec[0] in ("begin", "done"):
            gens[rec[1]] = max(gens.get(rec[1], -1), int(rec[2]))
    rng = random.Random(seed)
    def record(*fields: object) -> None:
        # Opened per record (it is killed with -9 while it writes): each line reaches the file whole.
        with open(listing, "a") as log:
            log.write(" ".join(map(str, fields)) + "\n")

    for d in range(DIRS):
        os.makedirs(mountpoint / f"d{d}", exist_ok=True)
    jname = f"journal{round_no}"
    jfd = os.open(mountpoint / jname, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    jlen = 0
    for i in range(100_000):
        if gens and rng.random() < 0.25:
            name = rng.choice(sorted(gens))
            gen = gens[name] + 1
        else:
            name, gen = f"d{i % DIRS}/r{round_no}-{i:05d}", 0
        gens[name] = gen
        data = content(name, gen)
        record("begin", name, gen)
        if rewrite == "o_trunc":
            fd = os.open(mountpoint / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        else:
            fd = os.open(mountpoint / name, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(fd, 0)
        pos = 0
        while pos < len(data):  # uneven write sizes, as applications do
            n = rng.randint(1, 256 << 10)
            pos += os.write(fd, data[pos:pos + n])
        os.fsync(fd)
        record("done", name, gen)
        os.close(fd)
        if i % 2 == 0:
            rec = journal_record(round_no, i // 2)
            os.write(jfd, rec)
            os.fsync(jfd)
            jlen += len(rec)
            record("append", jname, jlen)


def _read_everything(root: Path) -> dict[str, bytes]:
    """Read every file below ``root`` in full (any OSError, EIO above all, fails the test)."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root, onerror=lambda e: pytest.fail(f"walk: {e!r}")):
        for fn in filenames:
            p = Path(dirpath) / fn
            try:
                with open(p, "rb") as fh:
                    out[str(p.relative_to(root))] = fh.read()
            except OSError as e:
                pytest.fail(f"reading {p} after the crash: {e!r}")
    return out


def _wait_for_records(list_file: Path, child: subprocess.Popen[bytes], want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(1 for rec in _parse_list(list_file) if rec[0] == "done")
        if done >= want:
            return done
        if child.poll() is not None:
            pytest.fail(f"writer exited early with {child.returncode}")
        time.sleep(0.05)
    pytest.fail(f"the writer did not finish {want} files within {timeout} s")


@pytest.mark.parametrize("rewrite", [
    "ftruncate",
    "o_trunc",
])
def test_kill9_during_heavy_writes(make_mount: Callable[..., Mount], stats_json: StatsJson, tmp_path: Path,
                                   rewrite: str) -> None:
    print(f"seed {SEED}, rewrites by {rewrite}")
    rng = random.Random(SEED)
    m = make_mount(chunk_size=64 << 10)
    list_file = tmp_path / "fsynced.list"
    out_file = tmp_path / "writer.out"
    for round_no in range(ROUNDS):
        with open(out_file, "ab") as out:
            child = subprocess.Popen(
                [sys.executable, __file__, str(m.mountpoint), str(list_file), str(round_no), str(SEED + round_no),
                 rewrite], stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        try:
            _wait_for_records(list_file, child, want=25 * (round_no + 1), timeout=60)
            time.sleep(rng.uniform(0.0, 0.4))  # land the kill at a random point of a write
            assert child.poll() is None, "the writer must still be writing when the daemon dies"
            m.kill()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)

        # The crashed store: stats works offline, before any remount.
        crashed = stats_json(m.store)
        assert crashed["files"] >= 1

        m.start()
        records = _parse_list(list_file)
        last: dict[str, tuple[str, int]] = {}
        for rec in records:
            last[rec[1]] = (rec[0], int(rec[2]))
        files = _read_everything(m.mountpoint)

        checked = 0
        for name, (kind, value) in last.items():
            if kind == "done":
                assert name in files, f"{name} (generation {value}) was fsync'd but is missing"
                want = content(name, value)
                got = files[name]
                assert len(got) == len(want) and got == want, \
                    f"{name} generation {value} was fsync'd but differs ({len(got)} vs {len(want)} bytes)"
                checked += 1
            elif kind == "append":
                got = files[name]
                assert len(got) >= value, f"{name}: fsync'd {value} bytes, only {len(got)} survived"
                assert got[:value] == journal_expected(int(name.removeprefix("journal")), value), \
                    f"{name}: the fsync'd prefix of {value} bytes differs"
                checked += 1
        assert checked >= 20, f"only {checked} files were checked"
        print(f"round {round_no}: {checked} fsync'd files verified, {len(files)} files on the volume")

        # Counters survive the crash consistently with what the mount shows.
        stats = stats_json(m.store)
        assert stats["files"] == len(files)
        assert stats["logical_bytes"] == sum(len(b) for b in files.values())
        assert stats["chunks"] >= 1 and stats["stored_bytes"] > 0

    # After the last round: a clean unmount and mount still show the same bytes.
    before = _read_everything(m.mountpoint)
    m.remount()
    assert _read_everything(m.mountpoint) == before


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
