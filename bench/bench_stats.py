"""How long `thermofs stats` takes on a volume of a million chunks (goal: within a second).

    python bench/bench_stats.py [--chunks 1000000]

Builds a store whose chunk map holds that many entries (inline frames of a few bytes, 1,000 files),
written through the metadata layer in large transactions (building it through FUSE would take an
hour), then times `thermofs stats --json` on it, offline, three times.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from thermofs.codecs import CodecTable, encode_frame
from thermofs.fs.meta import INLINE_SEGMENT, ROOT_INO, ChunkEntry, Inode, MetaStore
from thermofs.fs.store import StoreConfig, mkfs


def build(store: Path, chunks: int, files: int = 1000) -> None:
    mkfs(store, StoreConfig())
    frame, info = encode_frame(b"x" * 100, CodecTable().parse("zstd:1"))
    entry = ChunkEntry(INLINE_SEGMENT, 0, info.frame_len, info.codec_id, info.param, info.raw_len, info.checksum)
    meta = MetaStore(store / "meta.lmdb")
    per_file = chunks // files
    now = time.time_ns()
    try:
        for f in range(files):
            ino = 100 + f
            with meta.write() as t:
                t.put_inode(Inode(ino, stat.S_IFREG | 0o644, 0, 0, 1, per_file * (64 << 10), now, now, now))
                t.put_dirent(ROOT_INO, f"f{f}".encode(), ino, stat.S_IFREG)
                t.bump("files", 1)
                t.bump("logical_bytes", per_file * (64 << 10))
                for index in range(per_file):
                    t.put_chunk(ino, index, entry, frame)
        with meta.write() as t:
            t.bump("next_ino", 100 + files)
    finally:
        meta.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="thermofs-bench-stats-") as tmp:
        store = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(store, args.chunks)
        print(f"built a store with {args.chunks} chunk entries in {time.perf_counter() - t0:.0f} s")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "thermofs", "stats", "--json", str(store)],
                               capture_output=True, text=True, env={**os.environ})
            times.append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr
            assert f'"chunks": {args.chunks}' in r.stdout, r.stdout[:500]
        print(f"thermofs stats --json: {min(times):.2f} s best of 3 (all: {', '.join(f'{x:.2f}' for x in times)}); "
              f"goal within 1 s: {'met' if min(times) <= 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
