"""``thermofs stats``: volume totals from the running counters in LMDB (no scan), per-file breakdown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from thermofs.codecs import CodecTable
from thermofs.fs.control import ControlError, Target, call
from thermofs.fs.segments import disk_bytes
from thermofs.fs.store import open_meta, read_config
from thermofs.policy.temperature import PolicyParams

# stats must answer within a second even if the daemon is busy: its live figures are optional.
LIVE_TIMEOUT = 0.8


def _codecs(counters: dict[str, int], table: CodecTable) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for codec_id, codec in sorted(table.by_id.items()):
        row = {f: counters.get(f"codec/{codec_id}/{f}", 0) for f in ("chunks", "raw_bytes", "stored_bytes")}
        if row["chunks"]:
            out[codec.name] = row
    return out


def volume_stats(store: Path, mounted: bool = False) -> dict[str, Any]:
    """The running totals of the store; ``mounted``: a daemon has it open (and checked it)."""
    cfg = read_config(store)
    meta, _identity = open_meta(store, cfg, readonly=True, check_structure=not mounted)
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
        "cooled_chunks": c.get("cooled_chunks", 0), "cooled_bytes_saved": c.get("cooled_bytes_saved", 0),
        "promoted_chunks": c.get("promoted_chunks", 0),
        "policy": PolicyParams().with_options(cfg.policy).as_dict(),
    }


def collect(target: Target) -> dict[str, Any]:
    """LMDB totals (read-only, never blocks the daemon) plus, for a mounted volume, the daemon's
    live figures (``live``; None with ``live_error`` if it did not answer within LIVE_TIMEOUT)."""
    stats = volume_stats(target.store, target.mounted)
    stats["mounted"] = target.mounted
    if target.mounted:
        try:
            stats["live"] = call(target.store, "stats", timeout=LIVE_TIMEOUT)
        except ControlError as e:
            stats["live"], stats["live_error"] = None, str(e)
    return stats


def file_stats(store: Path, mountpoint: Path | None, paths: list[Path]) -> dict[str, Any]:
    """Per-file breakdown (like compsize): chunks, codecs, stored bytes; scans only those files."""
    table = CodecTable()
    meta, _identity = open_meta(store, read_config(store), readonly=True, check_structure=mountpoint is None)
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
             f"cooling        {stats['cooled_chunks']} chunks recompressed, {_human(stats['cooled_bytes_saved'])} "
             f"saved, {stats['promoted_chunks']} promoted",
             *_render_live(stats),
             "",
             f"{'codec':<10}{'chunks':>10}{'raw':>14}{'stored':>14}{'ratio':>9}"]
    for name, row in stats["codecs"].items():
        ratio = row["stored_bytes"] / row["raw_bytes"] if row["raw_bytes"] else 0.0
        lines.append(f"{name:<10}{row['chunks']:>10}{_human(row['raw_bytes']):>14}"
                     f"{_human(row['stored_bytes']):>14}{100 * ratio:>8.1f}%")
    return "\n".join(lines)


def render_files(stats: dict[str, Any]) -> str:
    """A compsize-like table: one line per file, then the total."""
    lines = [f"{'file':<40}{'chunks':>8}{'logical':>12}{'stored':>12}{'ratio':>8}  codecs"]

    def row(name: str, f: dict[str, Any]) -> str:
        ratio = f["stored_bytes"] / f["logical_bytes"] if f["logical_bytes"] else 0.0
        codecs = ", ".join(f"{c} {r['chunks']}" for c, r in f.get("codecs", {}).items())
        return (f"{name:<40}{f.get('chunks', ''):>8}{_human(f['logical_bytes']):>12}"
                f"{_human(f['stored_bytes']):>12}{100 * ratio:>7.1f}%  {codecs}")

    lines += [row(name, f) for name, f in stats["files"].items()]
    lines.append(row("total", {**stats, "chunks": sum(f["chunks"] for f in stats["files"].values())}))
    return "\n".join(lines)


def _render_live(stats: dict[str, Any]) -> list[str]:
    if not stats.get("mounted"):
        return ["mounted        no"]
    live = stats.get("live")
    if live is None:
        return [f"mounted        yes (no live figures: {stats.get('live_error')})"]
    c = live["cooler"]
    return [
        f"I/O            read {_human(live['read_bytes_per_s'])}/s ({live['read_ops_per_s']:.0f} ops/s)   "
        f"write {_human(live['write_bytes_per_s'])}/s ({live['write_ops_per_s']:.0f} ops/s)",
        f"cache          {_human(live['cache_bytes'])}, hit rate {100 * live['cache_hit_rate']:.1f}%   "
        f"open files {live['open_files']}   dirty {_human(live['dirty_bytes'])}",
        f"cooler         {c['state']}, pass {c['passes']}: scanned {c['scanned']}/{c['total']}, queue "
        f"{c['queue']}; since mount {c['cooled']} cooled, {c['promoted']} promoted",
    ]


def prometheus(stats: dict[str, Any]) -> str:
    """The figures in Prometheus' text exposition format (base units, _total for counters)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP thermofs_{name} {help_text}")
        out.append(f"# TYPE thermofs_{name} {kind}")
        out.extend(f"thermofs_{name}{labels} {value:g}" if isinstance(value, float) else
                   f"thermofs_{name}{labels} {value}" for labels, value in samples)

    metric("logical_bytes", "gauge", "Sum of file sizes.", [("", stats["logical_bytes"])])
    metric("stored_bytes", "gauge", "Bytes of live frames.", [("", stats["stored_bytes"])])
    metric("physical_bytes", "gauge", "Disk space used by the store, garbage included.",
           [("", stats["physical_bytes"])])
    metric("garbage_bytes", "gauge", "Bytes of dead frames not yet reclaimed.", [("", stats["garbage_bytes"])])
    metric("files", "gauge", "Files in the volume.", [("", stats["files"])])
    metric("chunks", "gauge", "Stored chunks by tier.",
           [('{tier="hot"}', stats["hot_chunks"]), ('{tier="cold"}', stats["cold_chunks"])])
    codecs = stats["codecs"].items()
    metric("codec_chunks", "gauge", "Stored chunks by codec.", [(f'{{codec="{n}"}}', r["chunks"]) for n, r in codecs])
    metric("codec_raw_bytes", "gauge", "Raw bytes of the chunks stored with each codec.",
           [(f'{{codec="{n}"}}', r["raw_bytes"]) for n, r in codecs])
    metric("codec_stored_bytes", "gauge", "Stored bytes of the chunks of each codec.",
           [(f'{{codec="{n}"}}', r["stored_bytes"]) for n, r in codecs])
    metric("cooled_chunks_total", "counter", "Chunks recompressed with the cold codec.",
           [("", stats["cooled_chunks"])])
    metric("cooled_saved_bytes_total", "counter", "Bytes saved by recompression.",
           [("", stats["cooled_bytes_saved"])])
    metric("promoted_chunks_total", "counter", "Cold chunks re-encoded hot.", [("", stats["promoted_chunks"])])
    metric("mounted", "gauge", "1 if a daemon serves the volume.", [("", int(bool(stats.get("mounted"))))])
    live = stats.get("live")
    if live:
        for name, key, help_text in (("read_bytes_total", "read_bytes", "Bytes read since mount."),
                                     ("written_bytes_total", "write_bytes", "Bytes written since mount."),
                                     ("reads_total", "read_ops", "Read requests since mount."),
                                     ("writes_total", "write_ops", "Write requests since mount."),
                                     ("cache_hits_total", "cache_hits", "Decoded-chunk cache hits."),
                                     ("cache_misses_total", "cache_misses", "Decoded-chunk cache misses.")):
            metric(name, "counter", help_text, [("", live[key])])
        metric("cache_bytes", "gauge", "Bytes in the decoded-chunk cache.", [("", live["cache_bytes"])])
        metric("dirty_bytes", "gauge", "Buffered bytes not yet encoded.", [("", live["dirty_bytes"])])
        metric("open_files", "gauge", "Open files.", [("", live["open_files"])])
        metric("cooler_queue_chunks", "gauge", "Cold candidates found and not yet recompressed.",
               [("", live["cooler"]["queue"])])
    return "\n".join(out) + "\n"


def render_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
