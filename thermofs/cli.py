"""The ``thermofs`` command: parses arguments, builds the parts, nothing else."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from thermofs.codecs import CodecError
from thermofs.daemon.assembly import make_volume
from thermofs.fs.errors import FsError, StoreError, UnusableTarget
from thermofs.fs.store import DEFAULT_CHUNK_SIZE, StoreConfig, parse_size
from thermofs.policy.temperature import parse_age

# One exit status rule for every command.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_RULE = ("Exit status: 0 success; 1 the command ran and failed (for fsck: found damage); 2 usage error or "
             "unusable target (a bad option or value, a missing directory or one that is no store, a store in "
             "use, a mountpoint missing or not a thermofs mount, a daemon out of reach); 130 interrupted.")


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class AgeType(click.ParamType):
    """A duration: 90, 90s, 15m, 2h, 1d (seconds)."""

    name = "age"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_age(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


T = TypeVar("T")


def _fail(e: Exception, status: int) -> None:
    click.echo(f"thermofs: error: {e}", err=True)
    sys.exit(status)


def _check(action: Callable[[], T]) -> T:
    """Check a command's arguments before it runs: any error is a usage error (exit 2)."""
    try:
        return action()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except (FsError, CodecError, ValueError, OSError) as e:
        _fail(e, EXIT_USAGE)
        raise  # not reached: _fail exits


def _run(action: Callable[[], T]) -> T:
    """Run a command: exit 2 if what it was pointed at cannot serve (in use, daemon out of reach),
    1 on any other error, 130 on Ctrl-C."""
    try:
        return action()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except UnusableTarget as e:
        _fail(e, EXIT_USAGE)
        raise  # not reached: _fail exits
    except (FsError, CodecError, ValueError, OSError, RuntimeError) as e:
        _fail(e, EXIT_FAILED)
        raise  # not reached: _fail exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_RULE)
@click.version_option(package_name="thermofs")
def main() -> None:
    """thermofs: a FUSE filesystem that compresses every chunk of every file."""


@main.command("mkfs")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--chunk-size", type=SizeType(), default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Fixed chunk size of the volume (power of two, 4K..4M).")
@click.option("--hot-codec", default="auto", show_default=True,
              help="Codec spec for new and hot chunks (auto, zstd:LEVEL, raw).")
@click.option("--cold-codec", default="best", show_default=True,
              help="Codec spec for cold chunks (best: the learned codec, brotli, dictionaries or byte "
                   "planes, chosen per chunk; exhaustive; zstd:LEVEL, dict, planes, brotli, learned).")
@click.option("--policy", default="",
              help="Hot/cold policy, comma-separated KEY=VALUE: cold_age (default 5m), cold_count (2.5), "
                   "hot_count (3.5), half_life (10m); a mount's -o overrides them.")
@click.option("--backend", default="", metavar="s3://BUCKET/PREFIX",
              help="Keep sealed segments and metadata backups in this S3-compatible bucket (credentials: "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials).")
@click.option("--endpoint", default="", metavar="URL", help="The object store's URL (default: AWS S3).")
@click.option("--region", default="", help="The bucket's region.")
def mkfs_cmd(store: Path, chunk_size: int, hot_codec: str, cold_codec: str, policy: str, backend: str,
             endpoint: str, region: str) -> None:
    """Make a new, empty volume in the directory STORE (made if missing; it must be empty).

    With --backend, STORE keeps the metadata, the segment being written, the disk cache and the log;
    sealed segments and metadata backups go to the bucket."""
    from thermofs.daemon.assembly import make_remote_volume
    from thermofs.fs.objectstore import parse_url
    from thermofs.tools.stats import human_bytes

    settings = dict(item.partition("=")[::2] for item in policy.split(",") if item)
    if (endpoint or region) and not backend:
        _fail(ValueError("--endpoint and --region go with --backend"), EXIT_USAGE)
    spec = _check(lambda: parse_url(backend, endpoint, region)) if backend else None
    config = StoreConfig(chunk_size=chunk_size, hot_codec=hot_codec, cold_codec=cold_codec, policy=settings,
                         backend=spec.as_dict() if spec is not None else {})
    try:
        if spec is not None:
            make_remote_volume(store, config)
        else:
            make_volume(store, config)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except (StoreError, CodecError) as e:  # mkfs refuses its arguments: a bad value, a non-empty directory
        _fail(e, EXIT_USAGE)
    except (FsError, OSError) as e:
        _fail(e, EXIT_FAILED)
    click.echo(f"made thermofs volume {store} (chunk size {human_bytes(chunk_size)}, hot {hot_codec}, "
               f"cold {cold_codec}" + (f", segments in {spec.url}" if spec is not None else "") + ")")


@main.command("restore", epilog=EXIT_RULE)
@click.argument("url", metavar="s3://BUCKET/PREFIX")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--endpoint", default="", metavar="URL", help="The object store's URL (default: AWS S3).")
@click.option("--region", default="", help="The bucket's region.")
def restore_cmd(url: str, store: Path, endpoint: str, region: str) -> None:
    """Make a working local store in STORE (new or empty) from the newest metadata backup of the volume
    in the bucket at URL, for example on another machine; then mount STORE as usual. Segments are read
    from the bucket (through the disk cache). The volume must not be mounted elsewhere meanwhile."""
    from thermofs.daemon.assembly import restore_volume
    from thermofs.fs.objectstore import parse_url

    _check(lambda: parse_url(url, endpoint, region))
    header = _run(lambda: restore_volume(url, store, endpoint, region))
    click.echo(f"restored {store} from metadata backup {header['generation']} of {url} "
               f"({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(str(header['created']))))})")


@main.command("mount")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (default: daemon).")
@click.option("-o", "options", default=None,
              help="Comma-separated options: cache_size=SIZE (decoded-chunk cache, default 64M), "
                   "dirty_size=SIZE (write buffers, default 64M); the hot/cold policy: cold_age=AGE, "
                   "cold_count=N, hot_count=N, half_life=AGE (override mkfs --policy), cool_interval=AGE "
                   "(between background passes, default 60s), cool_budget=SIZE (bytes/s, default 32M), "
                   "nocool (no background cooling); commit=AGE (a sync point at least this often, default "
                   "5s), sync_close (every close durable against power loss); with an object store: "
                   "disk_cache=SIZE (default 1G), metadata_backup=AGE (default 10m), remote_timeout=AGE (a read "
                   "of an unreachable store answers EIO after this, default 60s); and FUSE options such as "
                   "allow_other, ro, kernel_cache.")
@click.option("--force-unlock", is_flag=True,
              help="Break the lock object of a volume in an object store (a machine that died with it mounted).")
@click.option("--no-stderr", is_flag=True, hidden=True, help="Log to the store's log file only.")
def mount_cmd(store: Path, mountpoint: Path, foreground: bool, options: str | None, force_unlock: bool,
              no_stderr: bool) -> None:
    """Mount the volume in STORE on MOUNTPOINT (unmount with: thermofs umount MOUNTPOINT).

    Memory stays bounded by cache_size + dirty_size plus a few MiB per encoding thread, whatever the
    file sizes. A store whose previous daemon is still exiting after its unmount is waited for.
    """
    from thermofs.daemon.mount import check_mountpoint, run_daemon, run_foreground
    from thermofs.daemon.options import parse_options
    from thermofs.fs.store import read_config

    if force_unlock:
        options = f"{options},force_unlock" if options else "force_unlock"
    opts = _check(lambda: parse_options(options))
    _check(lambda: read_config(store))
    _check(lambda: check_mountpoint(mountpoint.resolve(), bool(opts.fuse.get("nonempty"))))
    if foreground:
        _run(lambda: run_foreground(store, mountpoint, opts, log_to_stderr=not no_stderr))
    else:
        _run(lambda: run_daemon(store, mountpoint, options))


@main.command("umount", epilog=EXIT_RULE)
# A plain string, not click.Path: that one stats the path, which blocks on a mount whose daemon hangs.
@click.argument("mountpoint", type=str)
@click.option("--timeout", type=AgeType(), default="5m", show_default=True,
              help="How long to wait for the daemon to exit after the unmount (90s, 5m, ...).")
def umount_cmd(mountpoint: str, timeout: float) -> None:
    """Unmount the thermofs volume at MOUNTPOINT and wait until its daemon has exited.

    The daemon writes what it still holds and closes the store after the unmount (seconds on a busy
    volume); once this returns, fsck or a new mount can take the store at once. A busy mount (a file
    open, a shell in it) is left mounted, with fusermount's message.
    """
    from thermofs.tools.umount import unmount

    _run(lambda: unmount(Path(mountpoint), timeout))


@main.command("stats")
@click.argument("target", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--prometheus", is_flag=True, help="Print Prometheus text exposition format.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
def stats_cmd(target: Path, paths: tuple[Path, ...], as_json: bool, prometheus: bool, watch: bool) -> None:
    """Show sizes, chunk counts and codecs of the volume at TARGET (a store or a mountpoint), or of
    files and directories on a mounted volume (like compsize).

    Reads the running totals in LMDB read-only (no scan, never blocks a mount); a mounted volume adds
    live figures from its daemon (I/O rates, cache, cooler, the policy in force). With PATHs, or a
    TARGET that is a file or directory on the mount, report those paths only: a directory counts
    every file below it. Every path must be on the same thermofs mount.
    """
    from thermofs.tools import stats as st

    where, on_mount = _check(lambda: st.paths_target(target, list(paths)))

    def show() -> None:
        while True:
            if on_mount is not None:
                files = st.file_stats(on_mount)
                text = st.render_json(files) if as_json else st.render_files(files)
            else:
                data = st.collect(where)
                text = (st.render_json(data) if as_json else st.prometheus(data) if prometheus
                        else st.render(data))
            if watch:
                click.clear()
            click.echo(text.rstrip("\n"))
            if not watch:
                return
            time.sleep(1)

    _run(show)


@main.command("fsck", epilog="Exit status: 0 clean (or every problem repaired); 1 damage found (or left after "
                             "--repair), or the check failed; 2 usage error or unusable store (not a store, "
                             "mounted, locked by another command, not writable); 130 interrupted.")
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
    from thermofs.fs.store import read_config
    from thermofs.tools.admin import progress_bar
    from thermofs.tools.fsck import FsckReport, fsck, render

    _check(lambda: read_config(store))

    def check() -> FsckReport:
        with progress_bar("verifying frames", "chunk") as bar:
            return fsck(store, repair=repair, progress=bar)

    report = _run(check)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render(report))
    sys.exit(EXIT_FAILED if report.exit_code else EXIT_OK)


@main.command("compact")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--min-garbage", type=click.IntRange(0, 100), default=25, show_default=True,
              help="Rewrite a segment once this percentage of it is dead (0: every segment with garbage).")
def compact_cmd(target: Path, min_garbage: int) -> None:
    """Reclaim the space of overwritten, deleted and recompressed frames of the volume at TARGET (a
    store or a mountpoint): live frames of mostly-dead segments are copied, then the segments deleted.
    A mounted volume is compacted by its daemon, while it serves.

    Safe to interrupt at any point (Ctrl-C stops after the current batch; even kill -9 loses nothing).
    """
    from thermofs.tools.admin import compact, target_of
    from thermofs.tools.compact import render

    where = _check(lambda: target_of(target))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
    report = _run(lambda: compact(where, min_garbage / 100, stop))
    click.echo(render(report))
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)


@main.command("cool")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--now", is_flag=True,
              help="Recompress at once, without the background budget; with no --older-than, every chunk.")
@click.option("--older-than", "older_than", type=AgeType(), default=None,
              help="Cool every hot chunk not accessed for this long (90s, 15m, 2h, 1d), whatever its count.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's figures as one JSON object.")
def cool_cmd(target: Path, now: bool, older_than: float | None, as_json: bool) -> None:
    """Recompress cold chunks of the volume at TARGET (a store or a mountpoint) with the cold codec.

    Without options: one pass of the policy (chunks it calls cold), yielding to foreground I/O.
    Returns when the pass is done. Safe to interrupt: every chunk is swapped atomically.
    """
    from thermofs.tools.admin import cool, target_of
    from thermofs.tools.stats import human_bytes

    where = _check(lambda: target_of(target))
    age = older_than if older_than is not None else (0.0 if now else None)
    report = _run(lambda: cool(where, age, throttle=not now, show_progress=not as_json))
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"cooled {report['cooled']} chunks, saved {human_bytes(report['bytes_saved'])} "
                   f"(scanned {report['scanned']}, promoted {report['promoted']}, skipped {report['raced']} "
                   f"rewritten meanwhile, {report['damaged']} damaged)")


@main.command("sync", epilog=EXIT_RULE)
@click.argument("target", type=click.Path(path_type=Path))
def sync_cmd(target: Path) -> None:
    """Make everything written to the volume at TARGET (a store or a mountpoint) durable now.

    A close commits a file without syncing it (it survives a crash of the daemon); a sync point every
    few seconds (mount option commit=SECONDS, default 5), fsync and the unmount make it durable
    against a power loss. This makes one now. With an object store, it also seals the segment being
    written, waits for every upload and makes a metadata backup: a restore elsewhere then has it all.
    """
    from thermofs.tools.admin import sync, target_of

    where = _check(lambda: target_of(target))
    result = _run(lambda: sync(where))
    click.echo(f"synced {where.store} (transaction {result['synced_txnid']})")
    if "backup_generation" in result:
        if result["backup_generation"] is None:
            click.echo(f"no metadata backup: {result['upload_waiting_bytes']} bytes still wait for upload "
                       f"(see {where.store / 'thermofs.log'})")
            sys.exit(EXIT_FAILED)
        click.echo(f"uploaded every segment and metadata backup {result['backup_generation']}")


@main.command("train")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--budget", type=AgeType(), default="60s", show_default=True,
              help="Time budget for training the learned models, shared by the kinds of data (90s, 5m, ...).")
@click.option("--no-model", is_flag=True, help="Train the zstd dictionaries only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def train_cmd(target: Path, budget: float, no_model: bool, as_json: bool) -> None:
    """Train zstd dictionaries and the learned codec's models (one per kind of data, each kept only if
    it codes held-out samples smaller than the current one) on samples of the volume at TARGET (a store
    or a mountpoint). They are stored in the volume under new ids: new cold frames use them, frames
    made before keep decoding with the ones they name."""
    from thermofs.tools.admin import target_of, train
    from thermofs.tools.stats import human_bytes

    where = _check(lambda: target_of(target))
    report = _run(lambda: train(where, budget, model=not no_model))
    if as_json:
        click.echo(json.dumps(report))
    else:
        def listed(items: list[dict[str, Any]]) -> str:
            return ", ".join(f"{d['kind']} (id {d['id']}, {human_bytes(d['bytes'])})" for d in items)

        not_better = "".join(f"; the {kind} model was no better than the current one, not kept"
                             for kind in report["models_not_better"])
        click.echo(f"sampled {report['samples']} chunks ({human_bytes(report['sample_bytes'])}); "
                   f"dictionaries: {listed(report['dictionaries']) or 'none worth keeping'}; "
                   f"models: {listed(report['models']) or 'none trained'}{not_better}")


if __name__ == "__main__":
    main()
