"""What the record checksums cost: commits and lookups with sealed records against the same code with
the seal reduced to four zero bytes (no CRC computed or checked), in one run on the same disk.

    python bench/bench_meta.py [--files 3000] [--rounds 5] [--out bench/out]

Three workloads on a fresh LMDB environment under the work directory:

- create: the commit a small file's close makes (its inode, the directory entry, the parent's times,
  one inline chunk of 1-4 KiB, the totals), one synced transaction per file, as the daemon does;
- create (tmpfs): the same in /dev/shm, where fdatasync costs nothing, so the CPU cost stands out
  from the disk's;
- lookup: resolve a name and read the inode and its inline chunk in a read transaction (getattr
  and a small read), every file once.

Rounds alternate between sealed and unsealed so a slow spell of the shared machine falls on both;
prints the median of each and the ratio, and writes meta.json to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import stat
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from thermofs.codecs import CodecTable, encode_frame
from thermofs.fs import meta as metamod
from thermofs.fs.meta import INLINE_SEGMENT, ROOT_INO, ChunkEntry, Inode, MetaStore

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def unsealed() -> Iterator[None]:
    """The seal as four zero bytes, never checked: what the records cost without their checksums."""
    seal, unseal = metamod.seal, metamod.unseal
    metamod.seal = lambda db, key, payload: payload + b"\0\0\0\0"  # type: ignore[assignment]
    metamod.unseal = lambda db, key, stored: stored[:-4]  # type: ignore[assignment]
    try:
        yield
    finally:
        metamod.seal, metamod.unseal = seal, unseal


def frames(n: int) -> list[tuple[ChunkEntry, bytes]]:
    rng = random.Random(1)
    spec = CodecTable().parse("zstd:1")
    out = []
    for i in range(n):
        raw = (f"line {i} of a small file\n".encode() * 200)[: rng.randrange(1024, 4096)]
        frame, info = encode_frame(raw, spec)
        out.append((ChunkEntry(INLINE_SEGMENT, 0, info.frame_len, info.codec_id, info.param, info.raw_len,
                               info.checksum), frame))
    return out


def create(work: Path, chunks: list[tuple[ChunkEntry, bytes]]) -> tuple[float, MetaStore]:
    """Files per second of one commit per new small file."""
    meta = MetaStore(work / "meta.lmdb", create=True)
    now = time.time_ns()
    with meta.write() as t:
        t.put_inode(Inode(ROOT_INO, stat.S_IFDIR | 0o755, 0, 0, 2, 0, now, now, now, parent=ROOT_INO))
    t0 = time.perf_counter()
    for i, (entry, frame) in enumerate(chunks):
        ino = 100 + i
        with meta.write() as t:
            parent = t.get_inode(ROOT_INO)
            assert parent is not None
            t.put_inode(Inode(ino, stat.S_IFREG | 0o644, 0, 0, 1, entry.raw_len, now, now, now))
            t.put_dirent(ROOT_INO, f"file{i}".encode(), ino, stat.S_IFREG)
            t.put_inode(parent.evolve(mtime=now, ctime=now))
            t.put_chunk(ino, 0, entry, frame)
            t.bump("files", 1)
            t.bump("logical_bytes", entry.raw_len)
    return len(chunks) / (time.perf_counter() - t0), meta


def lookup(meta: MetaStore, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with meta.read() as t:
            ino = t.lookup(ROOT_INO, f"file{i}".encode())
            assert ino is not None and t.get_inode(ino) is not None
            assert t.get_chunk_frame(ino, 0)[1] is not None
    return n / (time.perf_counter() - t0)


def one_round(chunks: list[tuple[ChunkEntry, bytes]], root: Path) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory(dir=root) as d:
        out["create"], meta = create(Path(d), chunks)
        meta.close()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else root) as d:
        out["create (tmpfs)"], meta = create(Path(d), chunks)
        out["lookup"] = lookup(meta, len(chunks))
        meta.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chunks = frames(args.files)
    results: dict[str, list[dict[str, float]]] = {"sealed": [], "unsealed": []}
    variants: dict[str, Callable[[], AbstractContextManager[None]]] = {"sealed": nullcontext,
                                                                       "unsealed": unsealed}
    for r in range(args.rounds):
        for name in (["sealed", "unsealed"] if r % 2 == 0 else ["unsealed", "sealed"]):
            with variants[name]():
                results[name].append(one_round(chunks, args.out))
    table = {}
    print(f"{'workload':<18}{'sealed/s':>12}{'unsealed/s':>13}{'sealed/unsealed':>17}")
    for work in results["sealed"][0]:
        sealed = statistics.median(r[work] for r in results["sealed"])
        plain = statistics.median(r[work] for r in results["unsealed"])
        table[work] = {"sealed_per_s": sealed, "unsealed_per_s": plain, "ratio": sealed / plain,
                       "cost_us": 1e6 / sealed - 1e6 / plain}
        print(f"{work:<18}{sealed:>12,.0f}{plain:>13,.0f}{sealed / plain:>16.3f}x   "
              f"({table[work]['cost_us']:+.1f} us per operation)")
    (args.out / "meta.json").write_text(json.dumps({"files": args.files, "rounds": args.rounds,
                                                     "results": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
