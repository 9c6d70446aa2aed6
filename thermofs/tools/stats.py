"""``thermofs stats``: volume totals from the running counters in LMDB (no scan), per-file breakdown."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thermofs.codecs import CodecTable
from thermofs.daemon.control import ControlError, Target, call
from thermofs.daemon.mountinfo import mount_containing, store_mountpoints
from thermofs.fs.errors import UnusableTarget
from thermofs.fs.meta import Txn
from thermofs.fs.segments import disk_bytes
from thermofs.fs.store import FORMAT_FILE, open_meta, read_config
from thermofs.fs.tiered import local_bytes
from thermofs.policy.temperature import PolicyParams
from thermofs.tools.admin import target_of

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
        "backend": cfg.backend.get("url") if cfg.backend else None,
        "disk_cache_bytes": local_bytes(store / "cache") if cfg.backend else 0,
    }


def collect(target: Target) -> dict[str, Any]:
    """LMDB totals (read-only, never blocks the daemon) plus, for a mounted volume, the daemon's
    live figures (``live``; None with ``live_error`` if it did not answer within LIVE_TIMEOUT).
    ``policy`` is the policy in force: the daemon's (with its -o overrides) when it answered,
    else the store's (``store_policy``, set at mkfs); ``policy_source`` says which."""
    stats = volume_stats(target.store, target.mounted)
    stats["mounted"] = target.mounted
    stats["store_policy"], stats["policy_source"] = stats["policy"], "store"
    if target.mounted:
        try:
            stats["live"] = call(target.store, "stats", timeout=LIVE_TIMEOUT)
        except ControlError as e:
            stats["live"], stats["live_error"] = None, str(e)
        else:
            stats["policy"], stats["policy_source"] = stats["live"]["policy"], "mount"
    return stats


# -- per-path figures (like compsize) ---------------------------------------------------------------------

@dataclass(frozen=True)
class PathsOnMount:
    """The volume of ``stats PATH...`` and the paths, each checked to lie on its mount."""

    store: Path
    mountpoint: Path
    paths: list[Path]


def paths_target(target: Path, paths: list[Path]) -> tuple[Target, PathsOnMount | None]:
    """What ``stats TARGET [PATH...]`` reports on. TARGET is a thermofs mountpoint or a store (the
    volume; with PATHs, those paths of its mount) or a file or directory on a thermofs mount (that
    path and the PATHs). UnusableTarget for anything else, and for a PATH that is not on the same
    mount (the same inode number on another volume is another file)."""
    inside = None if _is_volume(target) else mount_containing(target)
    mountpoint: Path | None
    if inside is not None and inside.store is not None:
        where, mountpoint, paths = Target(inside.store, True), inside.mountpoint, [target, *paths]
    elif inside is not None and not target.is_dir():
        raise UnusableTarget(f"{target} is neither a thermofs store nor on a thermofs mount")
    else:
        where = target_of(target)  # the clear "not a store" error, unless it is one
        mountpoints = store_mountpoints(where.store) if where.mounted else []
        mountpoint = mountpoints[-1] if mountpoints else None
    if not paths:
        return where, None
    if mountpoint is None:
        raise UnusableTarget(f"{paths[0]}: the volume of {where.store} is not mounted, so no path is on it")
    device = os.stat(mountpoint).st_dev
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError as e:
            raise UnusableTarget(f"{p}: {e.strerror}") from None
        if st.st_dev != device:
            raise UnusableTarget(f"{p} is not on the thermofs mount {mountpoint} (of {where.store}); every "
                                 f"PATH must be on the same mount")
    return where, PathsOnMount(where.store, mountpoint, paths)


def _is_volume(target: Path) -> bool:
    """A store directory (mounted or not), a thermofs mountpoint or a missing path (for target_of's
    error), rather than a path on some mount."""
    resolved = target.resolve()
    entry = mount_containing(resolved)
    at_mountpoint = entry is not None and entry.mountpoint == resolved and entry.store is not None
    return at_mountpoint or (resolved / FORMAT_FILE).is_file() or not os.path.lexists(resolved)


def _walk(top: Path, device: int) -> Iterator[tuple[Path, os.stat_result]]:
    """``top`` and, for a directory, every entry below it (depth first, sorted by name, symlinks not
    followed), except what lies on another filesystem mounted inside."""
    pending = [top]  # a stack, not recursion: a tree may be deeper than Python's recursion limit
    while pending:
        path = pending.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        if st.st_dev != device:
            continue
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as entries:
                pending += [path / name for name in sorted((entry.name for entry in entries), reverse=True)]


def _file_figures(t: Txn, table: CodecTable, st: os.stat_result) -> dict[str, Any]:
    codecs: dict[str, dict[str, int]] = {}
    stored = chunks = 0
    for _index, e in t.chunks_of(st.st_ino):
        row = codecs.setdefault(table.by_id[e.codec_id].name, {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
        row["chunks"] += 1
        row["raw_bytes"] += e.raw_len
        row["stored_bytes"] += e.frame_len
        stored += e.frame_len
        chunks += 1
    return {"logical_bytes": st.st_size, "stored_bytes": stored, "chunks": chunks, "codecs": codecs}


def _add(total: dict[str, Any], figures: dict[str, Any]) -> None:
    for key in ("logical_bytes", "stored_bytes", "chunks"):
        total[key] += figures[key]
    total["file_count"] += 1
    for name, row in figures["codecs"].items():
        into = total["codecs"].setdefault(name, {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
        for key, value in row.items():
            into[key] += value


def _empty() -> dict[str, Any]:
    return {"file_count": 0, "logical_bytes": 0, "stored_bytes": 0, "chunks": 0, "codecs": {}}


def file_stats(on: PathsOnMount) -> dict[str, Any]:
    """Per-file breakdown (like compsize): chunks, codecs, stored bytes of every regular file among
    the paths and below the directories among them; scans only those files. A file with several
    names among them counts once (its first name, in the order given and then sorted)."""
    table = CodecTable()
    device = os.stat(on.mountpoint).st_dev
    files: dict[str, Any] = {}
    per_path: dict[str, Any] = {}
    total = _empty()
    seen: set[int] = set()
    # The paths are on a mount: its daemon has the store open (and checked it when it opened it).
    meta, _identity = open_meta(on.store, read_config(on.store), readonly=True, check_structure=False)
    try:
        with meta.read() as t:
            for given in on.paths:
                subtotal = per_path.setdefault(str(given), _empty())
                for path, st in _walk(given, device):
                    if not stat.S_ISREG(st.st_mode) or st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                    files[str(path)] = figures = _file_figures(t, table, st)
                    _add(subtotal, figures)
                    _add(total, figures)
    finally:
        meta.close()
    return {"files": files, "paths": per_path, **total}


def human_bytes(n: float) -> str:
    """A byte count as every text output of thermofs shows one: 512 B, 64.0 KiB, 11.9 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _age(seconds: float) -> str:
    """An age in the form the policy options take (90s, 5m, 2h, 1d)."""
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= unit and seconds % unit == 0:
            return f"{seconds / unit:g}{suffix}"
    return f"{seconds:g}s"


def _render_policy(stats: dict[str, Any]) -> str:
    policy = stats["policy"]
    values = ", ".join(f"{key} {_age(value) if key in ('cold_age', 'half_life') else f'{value:g}'}"
                       for key, value in policy.items())
    source = "mount -o" if stats["policy_source"] == "mount" and policy != stats["store_policy"] else "mkfs"
    return f"policy         {values} ({source})"


def render(stats: dict[str, Any]) -> str:
    lines = [f"store          {stats['store']}",
             f"chunk size     {human_bytes(stats['chunk_size'])}   hot {stats['hot_codec']}   "
             f"cold {stats['cold_codec']}",
             f"files          {stats['files']}",
             f"logical        {human_bytes(stats['logical_bytes'])}   (the files' sizes)",
             f"stored         {human_bytes(stats['stored_bytes'])}"
             + (f"   ({100 * stats['stored_bytes'] / stats['logical_bytes']:.1f}% of logical)"
                if stats["logical_bytes"] else ""),
             f"on disk        {human_bytes(stats['physical_bytes'])}, of which "
             f"{human_bytes(stats['garbage_bytes'])} dead frames not yet reclaimed (thermofs compact)",
             f"chunks         {stats['chunks']}   (hot {stats['hot_chunks']}, cold {stats['cold_chunks']})",
             f"cooling        {stats['cooled_chunks']} chunks recompressed, "
             f"{human_bytes(stats['cooled_bytes_saved'])} saved, {stats['promoted_chunks']} promoted",
             _render_policy(stats),
             *_render_live(stats),
             *_render_remote(stats),
             "",
             f"{'codec':<10}{'chunks':>10}{'raw':>14}{'stored':>14}{'ratio':>9}"]
    for name, row in stats["codecs"].items():
        ratio = row["stored_bytes"] / row["raw_bytes"] if row["raw_bytes"] else 0.0
        lines.append(f"{name:<10}{row['chunks']:>10}{human_bytes(row['raw_bytes']):>14}"
                     f"{human_bytes(row['stored_bytes']):>14}{100 * ratio:>8.1f}%")
    return "\n".join(lines)


def render_files(stats: dict[str, Any]) -> str:
    """A compsize-like table: one line per PATH given (a directory with the files below it), then the
    total."""
    lines = [f"{'path':<40}{'files':>7}{'chunks':>8}{'logical':>12}{'stored':>12}{'ratio':>8}  codecs"]

    def row(name: str, f: dict[str, Any]) -> str:
        ratio = f["stored_bytes"] / f["logical_bytes"] if f["logical_bytes"] else 0.0
        codecs = ", ".join(f"{c} {r['chunks']}" for c, r in f["codecs"].items())
        return (f"{name:<40}{f['file_count']:>7}{f['chunks']:>8}{human_bytes(f['logical_bytes']):>12}"
                f"{human_bytes(f['stored_bytes']):>12}{100 * ratio:>7.1f}%  {codecs}")

    lines += [row(name, f) for name, f in stats["paths"].items()]
    lines.append(row("total", stats))
    lines.append("(a file with several names among the paths counts once)")
    return "\n".join(lines)


def _render_live(stats: dict[str, Any]) -> list[str]:
    if not stats.get("mounted"):
        return ["mounted        no"]
    live = stats.get("live")
    if live is None:
        return [f"mounted        yes (no live figures: {stats.get('live_error')})"]
    c = live["cooler"]
    span = human_duration(live["rate_span_s"])
    period = (f"over the last {span}, since the previous stats" if live["rates_since"] == "previous request"
              else f"average since the mount, {span} ago")
    return [
        f"I/O            ({period})   read {human_bytes(live['read_bytes_per_s'])}/s "
        f"({live['read_ops_per_s']:.0f} ops/s)   write {human_bytes(live['write_bytes_per_s'])}/s "
        f"({live['write_ops_per_s']:.0f} ops/s)",
        f"cache          {human_bytes(live['cache_bytes'])}, hit rate {100 * live['cache_hit_rate']:.1f}%   "
        f"open files {live['open_files']}   dirty {human_bytes(live['dirty_bytes'])}",
        f"cooler         {c['state']}, pass {c['passes']}: scanned {c['scanned']}/{c['total']}, queue "
        f"{c['queue']}; since mount {c['cooled']} cooled, {c['promoted']} promoted",
    ]


def _render_remote(stats: dict[str, Any]) -> list[str]:
    """The object store backend: where, what waits for upload, the disk cache, the requests."""
    if not stats.get("backend"):
        return []
    live = stats.get("live") or {}
    r = live.get("remote")
    if not r:
        return [f"object store   {stats['backend']}   disk cache {human_bytes(stats['disk_cache_bytes'])}"]
    return [f"object store   {stats['backend']}   {r['remote_segments']} segments; waiting for upload "
            f"{human_bytes(r['upload_waiting_bytes'])} ({r['upload_waiting_segments']} segments, "
            f"{r['upload_failures']} failing)",
            f"disk cache     {human_bytes(r['disk_cache_bytes'])} of {human_bytes(r['disk_cache_limit'])}, hit rate "
            f"{100 * r['disk_cache_hit_rate']:.1f}%   requests: {r['gets']} GET ({human_bytes(r['bytes_got'])}), "
            f"{r['puts']} PUT ({human_bytes(r['bytes_put'])}), {r['deletes']} DELETE, {r['retries']} retried"]


REMOTE_METRICS = (("upload_waiting_bytes", "gauge", "Bytes of sealed segments not uploaded yet."),
                  ("upload_waiting_segments", "gauge", "Sealed segments not uploaded yet."),
                  ("disk_cache_bytes", "gauge", "Bytes in the disk cache of remote segments."),
                  ("disk_cache_hits_total", "counter", "Disk cache hits (blocks)."),
                  ("disk_cache_misses_total", "counter", "Disk cache misses (blocks)."),
                  ("s3_gets_total", "counter", "GET requests to the object store."),
                  ("s3_puts_total", "counter", "PUT requests (and upload parts) to the object store."),
                  ("s3_deletes_total", "counter", "DELETE requests to the object store."),
                  ("s3_retries_total", "counter", "Requests retried after a network or server error."),
                  ("s3_got_bytes_total", "counter", "Bytes fetched from the object store."),
                  ("s3_put_bytes_total", "counter", "Bytes uploaded to the object store."))
# The remote figures' keys in the daemon's answer, by metric name.
REMOTE_KEYS = {"disk_cache_hits_total": "disk_cache_hits", "disk_cache_misses_total": "disk_cache_misses",
               "s3_gets_total": "gets", "s3_puts_total": "puts", "s3_deletes_total": "deletes",
               "s3_retries_total": "retries", "s3_got_bytes_total": "bytes_got", "s3_put_bytes_total": "bytes_put"}


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
        remote = live.get("remote")
        if remote:
            for name, kind, help_text in REMOTE_METRICS:
                metric(name, kind, help_text, [("", remote[REMOTE_KEYS.get(name, name)])])
    return "\n".join(out) + "\n"


def render_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
