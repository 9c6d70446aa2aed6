"""``thermofs stats``: volume totals from the running counters in LMDB (no scan), per-file breakdown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from thermofs.codecs import CodecTable
from thermofs.fs.errors import StoreError
from thermofs.fs.meta import MetaStore
from thermofs.fs.mount import mount_source
from thermofs.fs.segments import disk_bytes
from thermofs.fs.store import read_config


def store_of(target: Path) -> Path:
    """A store directory, or the store behind a mounted thermofs mountpoint."""
    target = target.resolve()
    if (target / "thermofs.json").exists():
        return target
    if mount_source(target) is not None:
        want = os.fsencode(str(target))
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split()
                if fields[4] == want:
                    source = fields[fields.index(b"-") + 2].decode()
                    if source.startswith("thermofs:"):
                        return Path(source.removeprefix("thermofs:"))
    raise StoreError(f"{target} is neither a thermofs store nor a mounted thermofs volume")


def _codecs(counters: dict[str, int], table: CodecTable) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for codec_id, codec in sorted(table.by_id.items()):
        row = {f: counters.get(f"codec/{codec_id}/{f}", 0) for f in ("chunks", "raw_bytes", "stored_bytes")}
        if row["chunks"]:
            out[codec.name] = row
    return out


def volume_stats(store: Path) -> dict[str, Any]:
    cfg = read_config(store)
    meta = MetaStore(store / "meta.lmdb", readonly=True)
    try:
        with meta.read() as t:
            c = t.counters()
        codecs = _codecs(c, CodecTable())
    finally:
        meta.close()
    segs = disk_bytes((store / "segments").glob("*.seg"))
    lmdb_bytes = disk_bytes((store / "meta.lmdb").iterdir())
    return {
        "store": str(store), "chunk_size": cfg.chunk_size, "hot_codec": cfg.hot_codec,
        "cold_codec": cfg.cold_codec,
        "logical_bytes": c.get("logical_bytes", 0), "stored_bytes": c.get("stored_bytes", 0),
        "physical_bytes": segs + lmdb_bytes, "segment_bytes": segs, "metadata_bytes": lmdb_bytes,
        "garbage_bytes": c.get("garbage_bytes", 0), "files": c.get("files", 0),
        "chunks": c.get("chunks", 0), "hot_chunks": c.get("hot_chunks", 0),
        "cold_chunks": c.get("cold_chunks", 0), "codecs": codecs,
    }


def file_stats(store: Path, mountpoint: Path | None, paths: list[Path]) -> dict[str, Any]:
    """Per-file breakdown (like compsize): chunks, codecs, stored bytes; scans only those files."""
    table = CodecTable()
    meta = MetaStore(store / "meta.lmdb", readonly=True)
    files: dict[str, Any] = {}
    try:
        with meta.read() as t:
            for p in paths:
                st = os.lstat(p)
                if mountpoint is None or not stat.S_ISREG(st.st_mode):
                    continue
                codecs: dict[str, dict[str, int]] = {}
                stored = chunks = 0
                for _index, e in t.chunks_of(st.st_ino):
                    row = codecs.setdefault(table.by_id[e.codec_id].name,
                                            {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
                    row["chunks"] += 1
                    row["raw_bytes"] += e.raw_len
                    row["stored_bytes"] += e.frame_len
                    stored += e.frame_len
                    chunks += 1
                files[str(p)] = {"logical_bytes": st.st_size, "stored_bytes": stored, "chunks": chunks,
                                 "codecs": codecs}
    finally:
        meta.close()
    return {"files": files,
            "logical_bytes": sum(f["logical_bytes"] for f in files.values()),
            "stored_bytes": sum(f["stored_bytes"] for f in files.values())}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def render(stats: dict[str, Any]) -> str:
    lines = [f"store          {stats['store']}",
             f"chunk size     {_human(stats['chunk_size'])}   hot {stats['hot_codec']}   "
             f"cold {stats['cold_codec']}",
             f"files          {stats['files']}",
             f"logical        {_human(stats['logical_bytes'])}",
             f"stored         {_human(stats['stored_bytes'])}"
             + (f"   ({100 * stats['stored_bytes'] / stats['logical_bytes']:.1f}% of logical)"
                if stats["logical_bytes"] else ""),
             f"physical       {_human(stats['physical_bytes'])}   (garbage {_human(stats['garbage_bytes'])})",
             f"chunks         {stats['chunks']}   (hot {stats['hot_chunks']}, cold {stats['cold_chunks']})",
             "",
             f"{'codec':<10}{'chunks':>10}{'raw':>14}{'stored':>14}{'ratio':>9}"]
    for name, row in stats["codecs"].items():
        ratio = row["stored_bytes"] / row["raw_bytes"] if row["raw_bytes"] else 0.0
        lines.append(f"{name:<10}{row['chunks']:>10}{_human(row['raw_bytes']):>14}"
                     f"{_human(row['stored_bytes']):>14}{100 * ratio:>8.1f}%")
    return "\n".join(lines)


def render_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
