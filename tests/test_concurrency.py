"""Parallel readers and writers through the kernel (the daemon's threaded mode)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import Mount

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
