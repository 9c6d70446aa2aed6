"""Parallel readers and writers through the kernel (the daemon's threaded mode)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.mount.conftest import Mount, RequireTool

CHUNK = 64 << 10


def _content(seed: int, size: int) -> bytes:
    """Deterministic, partly compressible data."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(3, 12)) for _ in range(200)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) if rng.random() < 0.8 else rng.randbytes(64)
    return bytes(out[:size])


def test_parallel_writers_and_readers(mount: Mount) -> None:
    m = mount.mountpoint
    # Files that readers hash over and over while the writers work.
    stable = {m / f"stable{i}": _content(100 + i, 3 * CHUNK + 1234 * i) for i in range(3)}
    for path, data in stable.items():
        path.write_bytes(data)
    errors: list[str] = []
    written: dict[Path, bytes] = {}
    stop = threading.Event()

    def writer(k: int) -> None:
        """Random pwrites into its own file, mirrored in memory; then a full check."""
        try:
            rng = random.Random(k)
            path = m / f"w{k}"
            model = bytearray()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                for step in range(150):
                    off = rng.randrange(0, 6 * CHUNK)
                    data = _content(k * 1000 + step, rng.randrange(1, 2 * CHUNK))
                    os.pwrite(fd, data, off)
                    if len(model) < off:
                        model.extend(bytes(off - len(model)))
                    model[off:off + len(data)] = data
                    if step % 25 == 0:
                        os.fsync(fd)
            finally:
                os.close(fd)
            written[path] = bytes(model)
            if path.read_bytes() != written[path]:
                errors.append(f"writer {k}: content differs")
        except OSError as e:
            errors.append(f"writer {k}: {e!r}")

    def shared_writer(k: int) -> None:
        """Several threads writing disjoint chunk ranges of one shared file."""
        try:
            fd = os.open(m / "shared", os.O_WRONLY)
            try:
                for _ in range(20):
                    os.pwrite(fd, _content(k, CHUNK), k * CHUNK)
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(f"shared writer {k}: {e!r}")

    def reader() -> None:
        want = {p: hashlib.sha256(d).hexdigest() for p, d in stable.items()}
        try:
            while not stop.is_set():
                for path, digest in want.items():
                    if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                        errors.append(f"reader: {path.name} read back wrong")
                        return
        except OSError as e:
            errors.append(f"reader: {e!r}")

    (m / "shared").write_bytes(bytes(4 * CHUNK))
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=shared_writer, args=(k,)) for k in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(300)
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors
    assert (m / "shared").read_bytes() == b"".join(_content(k, CHUNK) for k in range(4))
    mount.remount()
    for path, data in stable.items():
        assert path.read_bytes() == data
    assert (m / "shared").read_bytes() == b"".join(_content(k, CHUNK) for k in range(4))
    assert len(written) == 4
    for path, data in written.items():
        assert path.read_bytes() == data


CREATOR = """
import os, sys
failures = 0
for i in range(int(sys.argv[2])):
    try:
        os.close(os.open(os.path.join(sys.argv[1], f"n{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        failures += 1
        print(f"n{i}: {e}", file=sys.stderr)
print(failures)
"""
# Changes the namespace until the creator is done (its stdin closes): every change commits the
# creator's deferred creates.
CHANGER = """
import os, sys, select
target, i = sys.argv[1], 0
while not select.select([sys.stdin], [], [], 0)[0]:
    os.chmod(target, 0o600 | (i & 0o44))
    i += 1
print(i)
"""


def test_create_never_answers_enoent_while_others_change_the_namespace(mount: Mount) -> None:
    """Regression: open(O_CREAT) failed with ENOENT (and created the file anyway) while another
    process chmodded an unrelated file: libfuse's GETATTR right after CREATE read a snapshot from
    before the commit that another request's namespace change made of the new file."""
    m = mount.mountpoint
    (m / "new").mkdir()
    (m / "other").write_bytes(b"")
    creates = 4000
    changers = [subprocess.Popen([sys.executable, "-c", CHANGER, str(m / "other")], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    creator = subprocess.run([sys.executable, "-c", CREATOR, str(m / "new"), str(creates)],
                             capture_output=True, text=True, timeout=600)
    changes = []
    for changer in changers:
        out, _ = changer.communicate("done\n", timeout=60)
        changes.append(int(out))
    assert creator.returncode == 0, creator.stderr
    assert int(creator.stdout) == 0, creator.stderr
    assert min(changes) > 0
    assert len(os.listdir(m / "new")) == creates


HIDDEN_PREFIX = ".fuse_hidden"


def hidden_names(root: Path) -> list[str]:
    """Every libfuse hidden name under ``root``, once the kernel has delivered the releases of
    closed files (asynchronously, after close() returned): a leaked one never goes."""
    deadline = time.monotonic() + 30
    while True:
        found = [os.path.join(d, n) for d, _dirs, files in os.walk(root) for n in files
                 if n.startswith(HIDDEN_PREFIX)]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_no_hidden_file_outlives_the_last_close(mount: Mount) -> None:
    """Regression: files unlinked while open left .fuse_hidden* names behind (1-7 per run of this
    churn): libfuse's unlink saw the file open, and hid it, while the last release counted down."""
    m = mount.mountpoint
    (m / "kept").mkdir()
    errors: list[str] = []

    def churn(k: int) -> None:
        try:
            for i in range(240):
                path = m / f"w{k}-{i}"
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
                os.write(fd, b"x" * 100)
                second = os.open(path, os.O_RDONLY)
                os.close(fd)
                if i % 3 == 0:
                    os.unlink(path)
                    assert os.read(second, 200) == b"x" * 100
                    os.close(second)
                else:
                    os.close(second)
                    if i % 3 == 2:  # as git stores an object: close, link to its name, unlink
                        os.link(path, m / "kept" / path.name)
                    os.unlink(path)  # the kernel's RELEASE is asynchronous: it may still be running
        except (OSError, AssertionError) as e:
            errors.append(f"worker {k}: {e!r}")

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert hidden_names(m) == []
    assert os.listdir(m) == ["kept"]
    kept = sorted(os.listdir(m / "kept"))
    assert kept == sorted(f"w{k}-{i}" for k in range(4) for i in range(2, 240, 3))
    assert all(os.stat(m / "kept" / name).st_nlink == 1 for name in kept)
    mount.remount()
    assert all((m / "kept" / name).read_bytes() == b"x" * 100 for name in kept)


def test_git_leaves_no_hidden_file_and_its_repository_checks_clean(mount: Mount, require_tool: RequireTool) -> None:
    """Regression: git left .fuse_hidden* files in .git/objects after every git process had ended
    (3 of 4 runs of add, commit and gc over a copy of the standard library); git fsck then reported
    "bad sha1 file". git writes an object to a temporary file, closes it, links it to its name and
    unlinks the temporary one at once, racing the release of its close: several writers in
    parallel left dozens of hidden names per run."""
    git = require_tool("git")
    repo = mount.mountpoint / "repo"
    rng = random.Random(7)
    writers = 4
    for d in range(writers):
        (repo / f"d{d}").mkdir(parents=True)
        for f in range(400):
            (repo / f"d{d}" / f"f{f}").write_bytes(rng.randbytes(rng.randint(10, 300)))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(mount.store.parent)}

    def run(*args: str) -> None:
        # gc.auto=0: no gc detached into the background, still running when the test looks.
        subprocess.run([git, "-c", "gc.auto=0", *args], cwd=repo, env=env, check=True, capture_output=True,
                       timeout=600)

    run("init", "-q")
    procs = [subprocess.Popen(f"find d{d} -type f | {git} hash-object -w --stdin-paths", shell=True, cwd=repo,
                              env=env, stdout=subprocess.DEVNULL) for d in range(writers)]
    assert [p.wait(600) for p in procs] == [0] * writers
    run("add", "-A")
    run("commit", "-q", "-m", "x")
    run("gc", "-q")
    assert hidden_names(repo) == []
    fsck = subprocess.run([git, "fsck", "--full"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert fsck.returncode == 0 and "bad sha1 file" not in fsck.stderr, fsck.stderr
