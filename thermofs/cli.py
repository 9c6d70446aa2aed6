"""The ``thermofs`` command: parses arguments, builds the parts, nothing else."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from thermofs.codecs import CodecError
from thermofs.fs.errors import FsError
from thermofs.fs.store import DEFAULT_CHUNK_SIZE, StoreConfig, mkfs, parse_size


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _fail(e: Exception) -> None:
    click.echo(f"thermofs: error: {e}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="thermofs")
def main() -> None:
    """thermofs: a FUSE filesystem that compresses every chunk of every file."""


@main.command("mkfs")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--chunk-size", type=SizeType(), default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Fixed chunk size of the volume (power of two, 4K..4M).")
@click.option("--hot-codec", default="auto", show_default=True,
              help="Codec spec for new and hot chunks (auto, zstd:LEVEL, raw).")
@click.option("--cold-codec", default="zstd:19", show_default=True, help="Codec spec for cold chunks.")
def mkfs_cmd(store: Path, chunk_size: int, hot_codec: str, cold_codec: str) -> None:
    """Make a new, empty volume in the directory STORE."""
    try:
        mkfs(store, StoreConfig(chunk_size=chunk_size, hot_codec=hot_codec, cold_codec=cold_codec))
    except (FsError, CodecError, OSError) as e:
        _fail(e)
    click.echo(f"made thermofs volume {store} (chunk size {chunk_size}, hot {hot_codec}, cold {cold_codec})")


@main.command("mount")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (default: daemon).")
@click.option("-o", "options", default=None,
              help="Comma-separated options: cache_size=SIZE (decoded-chunk cache, default 64M), "
                   "dirty_size=SIZE (write buffers, default 64M), and FUSE options such as allow_other, "
                   "ro, kernel_cache.")
@click.option("--no-stderr", is_flag=True, hidden=True, help="Log to the store's log file only.")
def mount_cmd(store: Path, mountpoint: Path, foreground: bool, options: str | None, no_stderr: bool) -> None:
    """Mount the volume in STORE on MOUNTPOINT (unmount with: fusermount -u MOUNTPOINT).

    Memory stays bounded by cache_size + dirty_size plus a few MiB per encoding thread, whatever the
    file sizes.
    """
    from thermofs.fs.mount import parse_options, run_daemon, run_foreground

    try:
        opts = parse_options(options)
        if foreground:
            run_foreground(store, mountpoint, opts, log_to_stderr=not no_stderr)
        else:
            run_daemon(store, mountpoint, options)
    except (FsError, CodecError, ValueError, OSError, RuntimeError) as e:
        _fail(e)


@main.command("stats")
@click.argument("target", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
def stats_cmd(target: Path, paths: tuple[Path, ...], as_json: bool, watch: bool) -> None:
    """Show sizes, chunk counts and codecs of the volume at TARGET (a store or a mountpoint).

    With PATHS (files on the mounted volume), report those files only.
    """
    from thermofs.tools.stats import file_stats, render, render_json, store_of, volume_stats

    try:
        store = store_of(target)
        while True:
            if paths:
                data = file_stats(store, target.resolve(), list(paths))
                text = render_json(data)
            else:
                data = volume_stats(store)
                text = render_json(data) if as_json else render(data)
            if watch:
                click.clear()
            click.echo(text)
            if not watch:
                return
            time.sleep(1)
    except KeyboardInterrupt:
        return
    except (FsError, CodecError, OSError) as e:
        _fail(e)


@main.command("fsck", epilog="Exit status: 0 clean (or every problem repaired), 1 damage found (or left after "
                             "--repair), 2 usage or other error (not a store, mounted, unreadable).")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True, help="Fix what can be fixed without guessing; say what could not be.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fsck_cmd(store: Path, repair: bool, as_json: bool) -> None:
    """Check the unmounted volume in STORE: every frame's checksum, the chunk map against the segments,
    the directory tree against the inodes, link counts and the running totals.

    With --repair, bad directory entries are removed, unreachable files are linked into /lost+found,
    link counts, totals and garbage records are recomputed. Damaged chunks are reported with their file
    and byte range and left as they are: their bytes keep reading as EIO rather than as made-up zeros.
    """
    from thermofs.tools.fsck import EXIT_ERROR, fsck, render

    bar = _Bar("verifying frames", "chunks")
    try:
        report = fsck(store, repair=repair, progress=bar)
    except (FsError, CodecError, OSError) as e:
        bar.close()
        click.echo(f"thermofs: error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    bar.close()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render(report))
    sys.exit(report.exit_code)


@main.command("compact")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--min-garbage", type=click.IntRange(0, 100), default=25, show_default=True,
              help="Rewrite a segment once this percentage of it is dead (0: every segment with garbage).")
def compact_cmd(target: Path, min_garbage: int) -> None:
    """Reclaim the space of overwritten, deleted and recompressed frames of the volume at TARGET (a
    store or a mountpoint): live frames of mostly-dead segments are copied, then the segments deleted.

    Safe to interrupt at any point (Ctrl-C stops after the current batch; even kill -9 loses nothing).
    """
    from thermofs.fs.mount import open_volume
    from thermofs.fs.store import read_config
    from thermofs.tools.compact import compact, render
    from thermofs.tools.offline import StoreInUse, lock_store
    from thermofs.tools.stats import store_of

    try:
        store = store_of(target)
        read_config(store)
        lock = lock_store(store)
    except StoreInUse:
        # lead wires the control socket here
        _fail(FsError("store is mounted; compact of a mounted volume goes through the daemon"))
    except (FsError, CodecError, OSError) as e:
        _fail(e)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
    bar = _Bar("compacting", "B")
    try:
        parts = open_volume(store)
        try:
            chunks = parts.volume.chunks
            report = compact(parts.meta, parts.segments, chunks.table, chunks.chunk_size, bar, stop,
                             min_garbage / 100)
        finally:
            parts.close()
    except (FsError, CodecError, OSError) as e:
        bar.close()
        _fail(e)
    finally:
        lock.release()
    bar.close()
    click.echo(render(report))
    if report.interrupted:
        sys.exit(130)


class _Bar:
    """A tqdm progress bar on stderr, shown on a terminal only, fed with (done, total) calls."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit = desc, unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, unit_scale=self.unit == "B",
                            file=sys.stderr, disable=None, leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    main()
