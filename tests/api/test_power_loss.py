"""Power loss, simulated in the manner of CrashMonkey: the store's files are captured at a sync point,
the volume goes on without syncing (creates, overwrites, deletes, truncates, cooling, compaction's
moves), and torn stores are built from the synced copy plus a random subset of the 4 KiB pages that
changed since and random prefixes of the bytes appended to segments: what a disk may hold after a power
loss, the kernel having written back any of its dirty pages in any order. Each torn store, opened as
after a restart of the machine, must open, pass fsck, hold every file as the sync point left it (a
file changed since: at that version or at a later complete one), and serve new writes.

With ``sync_close`` every close is a sync point of its own: the capture is taken after a close, and the
operation that follows is torn in the order LMDB syncs it (its segment frames first, then the data
pages, then the meta page).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.daemon.options import MountOptions
from thermofs.fs import durability
from thermofs.fs.meta import Tier
from thermofs.fs.relocate import Chunk, relocate
from thermofs.fs.store import StoreConfig, mkfs
from thermofs.tools.fsck import fsck

CS = 4096
PAGE = 4096
TRIALS = 200
UID, GID = os.getuid(), os.getgid()


@dataclass
class History:
    """Every complete version each path had (None: absent), from the sync point on."""

    versions: dict[str, list[bytes | None]] = field(default_factory=dict)

    def record(self, path: str, content: bytes | None) -> None:
        self.versions.setdefault(path, []).append(content)


def capture(store: Path, into: Path) -> None:
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(store, into, ignore=shutil.ignore_patterns("lock.mdb", "control.sock"))


def tear(synced: Path, final: Path, into: Path, rng: random.Random) -> None:
    """A store as a power loss may leave it: the synced copy, plus any subset of the pages that changed
    since (in any file), segments grown by any prefix of what was appended, files made since present
    or not, files deleted since gone or not."""
    shutil.copytree(synced, into)
    for path in sorted(p for p in final.rglob("*") if p.is_file()):
        rel = path.relative_to(final)
        old_path, new = into / rel, path.read_bytes()
        old = old_path.read_bytes() if old_path.exists() else None
        if rel.suffix == ".seg":
            keep = 0 if old is None else len(old)
            cut = rng.randint(keep, len(new))  # appended bytes reach the disk in order, up to a point
            base = bytearray(new[:keep] if old is None else old) + new[keep:cut]
        else:
            base = bytearray(old or b"")
            if len(base) < len(new):
                base.extend(bytes(len(new) - len(base)))
        for start in range(0, min(len(base), len(new)), PAGE):
            if new[start:start + PAGE] != bytes(base[start:start + PAGE]) and rng.random() < 0.5:
                base[start:start + PAGE] = new[start:start + PAGE]
        if old is None and rel.suffix == ".seg" and rng.random() < 0.3:
            continue  # the new segment's directory entry never reached the disk
        old_path.parent.mkdir(parents=True, exist_ok=True)
        old_path.write_bytes(bytes(base))
    for path in sorted(p for p in synced.rglob("*.seg")):
        if not (final / path.relative_to(synced)).exists() and rng.random() < 0.5:
            (into / path.relative_to(synced)).unlink()  # deleted since, and that reached the disk


def read_all(opened: OpenVolume, paths: list[str]) -> dict[str, bytes | None]:
    v = opened.volume
    out: dict[str, bytes | None] = {}
    for path in paths:
        try:
            ino = v.resolve(path)
        except Exception as e:  # any failure to find it is checked below
            out[path] = None if "NotFound" in type(e).__name__ else f"{type(e).__name__}: {e}".encode()
            continue
        fh = v.open(ino, writable=False)
        try:
            out[path] = v.read(fh, 0, 1 << 24)
        finally:
            v.release(fh)
    return out


def write(opened: OpenVolume, path: str, data: bytes, history: History | None) -> None:
    v = opened.volume
    try:
        fh = v.open(v.resolve(path), truncate=True)
    except Exception:  # a new file
        fh, _inode = v.create(path, 0o644, UID, GID)
    v.write(fh, 0, data)
    v.release(fh)
    if history is not None:
        history.record(path, data)


def content(rng: random.Random, i: int) -> bytes:
    """Files of every kind the volume stores: inline, a chunk or several, compressible or not."""
    size = rng.choice([50, 3000, CS, 3 * CS + 17, 9 * CS])
    text = f"file {i} line of text\n".encode() * (size // 20 + 1)
    return (text if i % 2 else rng.randbytes(size // 2) + text)[:size]


def reboot(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on stores open as after a restart of the machine: another boot id."""
    monkeypatch.setattr(durability, "current_boot_id", lambda: "another-boot")


def populate(store: Path, options: MountOptions, rng: random.Random) -> tuple[OpenVolume, dict[str, bytes]]:
    mkfs(store, StoreConfig(chunk_size=CS))
    opened = open_volume(store, options=options)
    files = {}
    opened.volume.mkdir("/d", 0o755, UID, GID)
    for i in range(24):
        path = f"/d/f{i}" if i % 3 else f"/f{i}"
        files[path] = content(rng, i)
        write(opened, path, files[path], None)
    return opened, files


def workload(opened: OpenVolume, files: dict[str, bytes], rng: random.Random, history: History) -> None:
    """Changes after the sync point, none of them synced: overwrites, creates, deletes, truncates,
    cooling and compaction's moves (fewer than a sync point's 512 commits)."""
    v = opened.volume
    for i in range(24, 40):
        path = f"/d/n{i}"
        write(opened, path, content(rng, i), history)
    for path in rng.sample(sorted(files), 6):
        write(opened, path, content(rng, 100 + len(history.versions)), history)
    for path in rng.sample(sorted(files), 4):
        v.unlink(path)
        history.record(path, None)
    for path in rng.sample(sorted(p for p in files if p.startswith("/d/f")), 3):
        size = rng.randrange(0, 2 * CS)
        v.truncate(v.resolve(path), size)
        try:
            fh = v.open(v.resolve(path), writable=False)
        except Exception:  # deleted above
            continue
        history.record(path, v.read(fh, 0, 1 << 24))
        v.release(fh)
    opened.tracker.flush()
    cold = opened.volume.chunks.table.parse("zstd:19")
    with opened.meta.read() as t:
        chunks = [Chunk(ino, index, e) for ino, index, e in t.chunks_after(0, 0, 10**6)]
    relocate(opened.meta, v.chunks, chunks[: len(chunks) // 2], cold, Tier.COLD)  # cooling
    with opened.meta.read() as t:
        chunks = [Chunk(ino, index, e) for ino, index, e in t.chunks_after(0, 0, 10**6) if e.segment]
    relocate(opened.meta, v.chunks, chunks[::3], None)  # compaction's moves


def check_torn(torn: Path, expected: dict[str, bytes | None], history: History) -> list[str]:
    problems: list[str] = []
    opened = open_volume(torn, options=MountOptions(cooler=False))  # goes back to the sync point
    try:
        got = read_all(opened, sorted(set(expected) | set(history.versions)))
        for path, data in got.items():
            allowed = [expected.get(path), *history.versions.get(path, [])]
            if data not in allowed:
                shown = "absent" if data is None else f"{len(data)} bytes"
                problems.append(f"{path}: {shown}, neither its synced version nor a later complete one")
        write(opened, "/after", b"written after the power loss" * 100, None)
        if read_all(opened, ["/after"])["/after"] != b"written after the power loss" * 100:
            problems.append("a file written after the power loss reads back wrong")
    finally:
        opened.close()
    report = fsck(torn)
    if report.problems:
        problems.append("fsck: " + "; ".join(f"{p.kind} {p.path}: {p.message}" for p in report.problems[:4]))
    return problems


def synced_then_more(tmp_path: Path) -> tuple[dict[str, bytes | None], History]:
    """A volume synced at a sync point (its files copied to tmp_path/synced), then changed without
    syncing (copied to tmp_path/final) and closed: what it held at the sync point and what came after."""
    rng = random.Random(11)
    store = tmp_path / "store"
    opened, files = populate(store, MountOptions(cooler=False), rng)
    assert opened.durability is not None
    opened.durability.sync()  # the sync point
    expected: dict[str, bytes | None] = dict(read_all(opened, sorted(files)))
    capture(store, tmp_path / "synced")
    history = History()
    workload(opened, files, rng, history)
    capture(store, tmp_path / "final")
    opened.close()
    return expected, history


def test_power_loss_between_sync_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected, history = synced_then_more(tmp_path)
    reboot(monkeypatch)
    failures = []
    for trial in range(TRIALS):
        torn = tmp_path / f"torn{trial}"
        tear(tmp_path / "synced", tmp_path / "final", torn, random.Random(trial))
        failures += [f"trial {trial}: {p}" for p in check_torn(torn, expected, history)]
        shutil.rmtree(torn)
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:20])


def test_without_going_back_the_same_tears_do_damage(tmp_path: Path) -> None:
    """The harness itself: opened without the restore (as if the machine had not restarted), the same
    kind of torn stores are damaged often, so the test above can fail."""
    expected, history = synced_then_more(tmp_path)
    damaged = 0
    for trial in range(30):
        torn = tmp_path / f"torn{trial}"
        tear(tmp_path / "synced", tmp_path / "final", torn, random.Random(trial))
        try:
            damaged += bool(check_torn(torn, expected, history))
        except Exception:  # refused to open, or worse: damage all the same
            damaged += 1
        shutil.rmtree(torn)
    assert damaged >= 10, f"only {damaged} of 30 torn stores were damaged without the restore"


def tear_ordered(before: Path, after: Path, into: Path, rng: random.Random) -> None:
    """A power loss during one durable commit (sync_close), in the order it syncs: some prefix of its
    segment frames; or all of them and some of LMDB's data pages, the meta page still the old one;
    or all of it."""
    phase = rng.choice(["frames", "pages", "done"])
    shutil.copytree(after if phase == "done" else before, into)
    if phase == "done":
        return
    for path in sorted(after.rglob("*.seg")):
        rel, new = path.relative_to(after), path.read_bytes()
        old = (before / rel).read_bytes() if (before / rel).exists() else b""
        cut = rng.randint(len(old), len(new)) if phase == "frames" else len(new)
        (into / rel).write_bytes(old + new[len(old):cut])
    if phase == "pages":
        new, target = (after / "meta.lmdb" / "data.mdb").read_bytes(), into / "meta.lmdb" / "data.mdb"
        base = bytearray(target.read_bytes())
        base.extend(bytes(max(0, len(new) - len(base))))
        for start in range(2 * PAGE, len(new), PAGE):  # the two meta pages come last, and stay old
            if new[start:start + PAGE] != bytes(base[start:start + PAGE]) and rng.random() < 0.5:
                base[start:start + PAGE] = new[start:start + PAGE]
        target.write_bytes(bytes(base))


def test_power_loss_with_sync_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-o sync_close: every close is a sync point; a power loss tears at most the operation under way."""
    rng = random.Random(12)
    store = tmp_path / "store"
    opened, files = populate(store, MountOptions(cooler=False, sync_close=True), rng)
    snapshots: list[tuple[Path, dict[str, bytes | None], str, bytes | None]] = []
    for op in range(16):
        path = rng.choice(sorted(files)) if op % 2 else f"/d/s{op}"
        data = content(rng, 200 + op)
        state = dict(read_all(opened, sorted(set(files) | {path})))
        capture(store, tmp_path / f"before{op}")
        write(opened, path, data, None)
        files[path] = data
        snapshots.append((tmp_path / f"before{op}", state, path, data))
    capture(store, tmp_path / "end")
    opened.close()
    reboot(monkeypatch)
    failures = []
    for trial in range(TRIALS):
        op = trial % len(snapshots)
        before, state, path, data = snapshots[op]
        after = snapshots[op + 1][0] if op + 1 < len(snapshots) else tmp_path / "end"
        torn = tmp_path / f"torn{trial}"
        tear_ordered(before, after, torn, random.Random(trial))
        history = History({path: [data]})
        failures += [f"trial {trial} (op {op}): {p}" for p in check_torn(torn, state, history)]
        shutil.rmtree(torn)
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:20])
