"""POSIX behaviour applications rely on, through the kernel on a real mount."""

from __future__ import annotations

import errno
import mmap
import os
import sqlite3
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mount.conftest import Mount, RequireTool


def test_create_read_write_offsets_and_holes(mount: Mount) -> None:
    p = mount.mountpoint / "f"
    with open(p, "wb") as f:
        f.write(b"hello")
        f.seek(200_000)
        f.write(b"world")
    data = p.read_bytes()
    assert len(data) == 200_005
    assert data[:5] == b"hello" and data[-5:] == b"world"
    assert data[5:200_000] == bytes(200_000 - 5)
    with open(p, "r+b") as f:
        f.seek(65_530)
        f.write(b"X" * 20)  # across a chunk boundary
    data = p.read_bytes()
    assert data[65_530:65_550] == b"X" * 20 and data[65_529] == 0 and data[65_550] == 0


def test_truncate_up_and_down(mount: Mount) -> None:
    p = mount.mountpoint / "t"
    payload = os.urandom(150_000)
    p.write_bytes(payload)
    os.truncate(p, 70_000)
    assert p.read_bytes() == payload[:70_000]
    os.truncate(p, 300_000)
    assert p.read_bytes() == payload[:70_000] + bytes(230_000)
    with open(p, "r+b") as f:
        f.truncate(10)
        f.seek(0)
        assert f.read() == payload[:10]
    assert p.stat().st_size == 10


def test_unlink_mkdir_rmdir(mount: Mount) -> None:
    d = mount.mountpoint / "d"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    with pytest.raises(OSError) as e:
        d.rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    (d / "x").unlink()
    assert not (d / "x").exists()
    d.rmdir()
    assert not d.exists()
    with pytest.raises(FileNotFoundError):
        (mount.mountpoint / "nope").unlink()


def test_rename_files_and_directories(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "a").mkdir()
    (m / "b").mkdir()
    (m / "a" / "f").write_bytes(b"first")
    (m / "b" / "g").write_bytes(b"second")
    os.rename(m / "a" / "f", m / "b" / "g")  # replaces the target, across directories
    assert (m / "b" / "g").read_bytes() == b"first"
    assert not (m / "a" / "f").exists()
    (m / "a" / "sub").mkdir()
    (m / "a" / "sub" / "deep").write_bytes(b"deep")
    os.rename(m / "a", m / "b" / "a2")
    assert (m / "b" / "a2" / "sub" / "deep").read_bytes() == b"deep"
    with pytest.raises(OSError) as e:
        os.rename(m / "b", m / "b" / "a2" / "inside")
    assert e.value.errno == errno.EINVAL
    (m / "c").mkdir()
    (m / "c" / "x").write_bytes(b"")
    with pytest.raises(OSError) as e:
        os.rename(m / "b" / "a2", m / "c")
    assert e.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(m)) == ["b", "c"]
    assert os.stat(m).st_nlink == 4  # ".", "..", and b, c


def test_rename_noreplace(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "x").write_bytes(b"x")
    (m / "y").write_bytes(b"y")
    r = subprocess.run(["mv", "-n", str(m / "x"), str(m / "y")], capture_output=True)
    assert (m / "y").read_bytes() == b"y", r.stderr
    assert (m / "x").read_bytes() == b"x"


def test_hard_links_and_counts(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "orig").write_bytes(b"shared")
    os.link(m / "orig", m / "alias")
    assert os.stat(m / "orig").st_nlink == 2
    assert os.stat(m / "orig").st_ino == os.stat(m / "alias").st_ino
    with open(m / "alias", "ab") as f:
        f.write(b" data")
    assert (m / "orig").read_bytes() == b"shared data"
    (m / "orig").unlink()
    assert os.stat(m / "alias").st_nlink == 1
    assert (m / "alias").read_bytes() == b"shared data"


def test_symlinks(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "target").write_bytes(b"pointed at")
    os.symlink("target", m / "link")
    assert os.readlink(m / "link") == "target"
    assert (m / "link").read_bytes() == b"pointed at"
    assert stat.S_ISLNK(os.lstat(m / "link").st_mode)
    os.symlink("/nonexistent/dangling", m / "dangling")
    assert os.readlink(m / "dangling") == "/nonexistent/dangling"


def test_chmod_chown_utimens(mount: Mount) -> None:
    p = mount.mountpoint / "meta"
    p.write_bytes(b"x")
    os.chmod(p, 0o640)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(p, ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    # UTIME_OMIT for atime: only mtime changes.
    subprocess.run(["touch", "-m", "-d", "@3000", str(p)], check=True)
    st = os.stat(p)
    assert st.st_atime_ns == 1_000_000_123 and st.st_mtime_ns == 3000 * 10**9


def test_timestamps_follow_changes(mount: Mount) -> None:
    m = mount.mountpoint
    before = time.time_ns() - 10**9
    p = m / "ts"
    p.write_bytes(b"1")
    st1 = os.stat(p)
    assert st1.st_mtime_ns >= before and st1.st_ctime_ns >= before
    dir_mtime = os.stat(m).st_mtime_ns
    time.sleep(0.05)
    with open(p, "ab") as f:
        f.write(b"2")
    st2 = os.stat(p)
    assert st2.st_mtime_ns > st1.st_mtime_ns
    time.sleep(0.05)
    os.chmod(p, 0o600)
    assert os.stat(p).st_ctime_ns > st2.st_ctime_ns
    (m / "new").write_bytes(b"")
    assert os.stat(m).st_mtime_ns > dir_mtime


def test_statfs_real_numbers(mount: Mount) -> None:
    st = os.statvfs(mount.mountpoint)
    under = os.statvfs(mount.store)
    assert st.f_blocks > 0 and st.f_bsize > 0
    assert abs(st.f_blocks * st.f_frsize - under.f_blocks * under.f_frsize) < under.f_frsize * 16
    assert st.f_bavail <= st.f_blocks and st.f_namemax == 255


def test_xattrs(mount: Mount) -> None:
    p = mount.mountpoint / "xa"
    p.write_bytes(b"")
    os.setxattr(p, "user.color", b"blue")
    assert os.getxattr(p, "user.color") == b"blue"
    assert "user.color" in os.listxattr(p)
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.color", b"red", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.size", b"1", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.removexattr(p, "user.color")
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.color")
    assert e.value.errno == errno.ENODATA


def test_xattr_names_that_are_not_utf8(mount: Mount) -> None:
    """Regression: setfattr -n $'user.\\xff' gave EINVAL and a traceback in the daemon log (the
    fixture fails on one). Any bytes make a name, as on ext4."""
    p = mount.mountpoint / "xb"
    p.write_bytes(b"")
    names = [b"user.\xff", b"user.caf\xe9", b"user." + bytes(range(128, 256)) + b"x" * 122]
    for i, name in enumerate(names):
        os.setxattr(p, name, bytes([i]) * 5, os.XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(p, names[0], b"again", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    assert sorted(map(os.fsencode, os.listxattr(p))) == sorted(names)
    mount.remount()
    for i, name in enumerate(names):
        assert os.getxattr(p, name) == bytes([i]) * 5
    os.removexattr(p, names[0])
    with pytest.raises(OSError) as e:
        os.getxattr(p, names[0])
    assert e.value.errno == errno.ENODATA
    assert sorted(map(os.fsencode, os.listxattr(p))) == sorted(names[1:])


def test_fsync_and_fdatasync(mount: Mount) -> None:
    p = mount.mountpoint / "synced"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"a" * 100_000)
        os.fsync(fd)
        os.write(fd, b"b" * 1000)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert p.read_bytes() == b"a" * 100_000 + b"b" * 1000


def test_unlinked_file_stays_readable_while_open(mount: Mount) -> None:
    p = mount.mountpoint / "ghost"
    payload = os.urandom(200_000)
    p.write_bytes(payload)
    with open(p, "r+b") as f:
        p.unlink()
        assert not p.exists()
        assert f.read() == payload
        f.write(b"more")
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        assert f.read() == payload + b"more"
        assert os.fstat(f.fileno()).st_size == len(payload) + 4
        assert os.fstat(f.fileno()).st_nlink == 0  # libfuse's hidden name is not a link
    # The kernel releases the file after close() returns; then nothing of it is left.
    deadline = time.monotonic() + 10
    while os.listdir(mount.mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(mount.mountpoint) == []


def test_sparse_file_beyond_4gib(mount: Mount) -> None:
    p = mount.mountpoint / "sparse"
    offset = 5 << 30
    with open(p, "wb") as f:
        f.write(b"start")
        f.seek(offset)
        f.write(b"end")
    assert p.stat().st_size == offset + 3
    with open(p, "rb") as f:
        f.seek(offset - 10)
        assert f.read() == bytes(10) + b"end"
        f.seek(1 << 32)
        assert f.read(4096) == bytes(4096)
    mount.remount()
    with open(p, "rb") as f:
        assert f.read(5) == b"start"
        f.seek(offset)
        assert f.read() == b"end"


def test_several_processes_on_one_file(mount: Mount) -> None:
    p = mount.mountpoint / "shared"
    p.write_bytes(bytes(8 * 65536))
    code = ("import os,sys\n"
            "fd=os.open(sys.argv[1],os.O_WRONLY)\n"
            "k=int(sys.argv[2])\n"
            "for i in range(50):\n"
            "    os.pwrite(fd, bytes([65+k])*1000, k*65536+i*1000)\n"
            "os.close(fd)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), str(k)]) for k in range(8)]
    assert all(proc.wait(60) == 0 for proc in procs)
    data = p.read_bytes()
    for k in range(8):
        assert data[k * 65536:k * 65536 + 50_000] == bytes([65 + k]) * 50_000
        assert data[k * 65536 + 50_000:(k + 1) * 65536] == bytes(65536 - 50_000)


def test_mmap_read_and_write(mount: Mount) -> None:
    p = mount.mountpoint / "mapped"
    p.write_bytes(b"\0" * 300_000)
    with open(p, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        mm[100:105] = b"mmap!"
        mm[299_990:300_000] = b"0123456789"
        mm.flush()
        mm.close()
    data = p.read_bytes()
    assert data[100:105] == b"mmap!" and data[-10:] == b"0123456789"
    mount.remount()
    with open(p, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert mm[100:105] == b"mmap!"
        mm.close()


def test_sqlite_database(mount: Mount) -> None:
    db = mount.mountpoint / "app.db"
    con = sqlite3.connect(db)
    con.execute("create table t (k integer primary key, v text)")
    with con:
        con.executemany("insert into t (v) values (?)", [(f"row {i} " * 20,) for i in range(5000)])
    with con:
        con.execute("update t set v = 'changed' where k % 7 = 0")
        con.execute("delete from t where k % 11 = 0")
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    expected = con.execute("select count(*), sum(length(v)) from t").fetchone()
    con.close()
    mount.remount()
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("select count(*), sum(length(v)) from t").fetchone() == expected
    con.close()
    # A WAL database uses shared-memory mmap of a file on the mount.
    wal = sqlite3.connect(mount.mountpoint / "wal.db")
    assert wal.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
    with wal:
        wal.executemany("create table if not exists w (x)", [()])
        wal.executemany("insert into w values (?)", [(i,) for i in range(1000)])
    assert wal.execute("select sum(x) from w").fetchone()[0] == sum(range(1000))
    wal.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch users")
def test_permission_checks_as_kernel_does(mount: Mount) -> None:
    m = mount.mountpoint
    os.chmod(m, 0o755)
    secret = m / "secret"
    secret.write_bytes(b"root only")
    os.chmod(secret, 0o600)
    public = m / "public"
    public.write_bytes(b"for all")
    os.chmod(public, 0o644)
    nobody = 65534

    def as_nobody(script: str) -> subprocess.CompletedProcess[str]:
        # /bin/sh, not this venv's python: the venv may live where nobody cannot execute. The child
        # changes into the mountpoint before it drops root, so the test's private parent directories
        # need not be searchable by nobody: paths below are relative.
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, cwd=m,
                               user=nobody, group=nobody, extra_groups=[], timeout=60)

    r = as_nobody("cat secret")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_nobody("cat public")
    assert r.returncode == 0 and r.stdout == "for all"
    r = as_nobody("echo x >> public")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_nobody(": > new")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert not (m / "new").exists()
    (m / "drop").mkdir()
    os.chmod(m / "drop", 0o1777)
    r = as_nobody("echo n > drop/mine && stat -c %u drop/mine")
    assert r.returncode == 0 and r.stdout.strip() == str(nobody)
    (m / "drop" / "roots").write_bytes(b"")
    r = as_nobody("rm -f drop/roots")  # sticky directory: not nobody's file
    assert r.returncode != 0
    assert (m / "drop" / "roots").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch users")
def test_no_user_can_grow_a_file_past_the_maximum_size(mount: Mount, require_tool: RequireTool) -> None:
    """Regression: any user could truncate -s $((2**63-4096)) a file, which overflowed the signed
    64-bit total of file bytes; then commits failed. Past the maximum file size a truncate or a
    write answers EFBIG, and the volume goes on as before."""
    require_tool("setpriv")
    m = mount.mountpoint
    os.chmod(m, 0o755)
    (m / "u").mkdir()
    os.chmod(m / "u", 0o777)

    def as_nobody(script: str) -> subprocess.CompletedProcess[str]:
        # setpriv changes user after the child entered the mountpoint: paths are relative (see
        # test_permission_checks_as_kernel_does).
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                               script], capture_output=True, text=True, cwd=m, timeout=120)

    r = as_nobody("printf hello > u/big && truncate -s 9223372036854771712 u/big")
    assert r.returncode != 0 and os.strerror(errno.EFBIG) in r.stderr, r.stderr
    r = as_nobody("dd if=/dev/zero of=u/big bs=1 count=1 seek=1152921504606846976 conv=notrunc")
    assert r.returncode != 0 and os.strerror(errno.EFBIG) in r.stderr, r.stderr
    with pytest.raises(OSError) as e:
        os.truncate(m / "u" / "big", 2**62)
    assert e.value.errno == errno.EFBIG
    assert (m / "u" / "big").read_bytes() == b"hello"
    # 64 KiB files: together more than the 4,096 bytes the refused size left below 2**63.
    r = as_nobody("for i in 1 2 3; do head -c 65536 /dev/zero | tr '\\0' $i > u/f$i; done && cat u/f1 u/f2 u/f3")
    assert r.returncode == 0 and r.stdout == "1" * 65536 + "2" * 65536 + "3" * 65536, r.stderr
    mount.remount()
    assert (m / "u" / "big").read_bytes() == b"hello"
    for i in (1, 2, 3):
        assert (m / "u" / f"f{i}").read_bytes() == str(i).encode() * 65536


def test_stable_inode_numbers(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "d").mkdir()
    (m / "d" / "f").write_bytes(b"x")
    before = {p: os.stat(m / p).st_ino for p in ("d", "d/f")}
    listed = {e.name: e.inode() for e in os.scandir(m / "d")}
    assert listed["f"] == before["d/f"]
    mount.remount()
    assert {p: os.stat(m / p).st_ino for p in ("d", "d/f")} == before


def test_a_name_over_name_max_is_enametoolong_for_every_call(mount: Mount) -> None:
    """pjdfstest chmod/02.t, chown/02.t, truncate/02.t, link/02.t, rename/01.t, rmdir/02.t, unlink/02.t ..."""
    m = mount.mountpoint
    (m / "f").write_bytes(b"x")
    (m / "d").mkdir()
    long_name = "n" * 256
    calls = {
        "stat": lambda p: os.stat(p), "lstat": lambda p: os.lstat(p), "chmod": lambda p: os.chmod(p, 0o600),
        "chown": lambda p: os.chown(p, 0, 0), "truncate": lambda p: os.truncate(p, 0),
        "open": lambda p: os.close(os.open(p, os.O_RDONLY)), "unlink": lambda p: os.unlink(p),
        "rmdir": lambda p: os.rmdir(p), "link-from": lambda p: os.link(p, m / "g"),
        "link-to": lambda p: os.link(m / "f", p), "rename-from": lambda p: os.rename(p, m / "g"),
        "rename-to": lambda p: os.rename(m / "f", p), "mkdir": lambda p: os.mkdir(p),
        "create": lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)),
        "symlink": lambda p: os.symlink("t", p), "readlink": lambda p: os.readlink(p),
        "utime": lambda p: os.utime(p), "getxattr": lambda p: os.getxattr(p, "user.a"),
        "setxattr": lambda p: os.setxattr(p, "user.a", b"1"), "listxattr": lambda p: os.listxattr(p),
    }
    for call, fn in calls.items():
        for path in (m / long_name, m / "d" / long_name, m / long_name / "x"):
            with pytest.raises(OSError) as e:
                fn(path)
            assert e.value.errno == errno.ENAMETOOLONG, (call, str(path)[-20:], e.value)
    assert sorted(os.listdir(m)) == ["d", "f"] and (m / "f").read_bytes() == b"x"


def test_path_max_is_the_kernels_limit_of_one_argument_not_of_the_tree(mount: Mount) -> None:
    """A path argument of PATH_MAX bytes is ENAMETOOLONG, one byte less works (pjdfstest */03.t);
    a tree deeper than PATH_MAX, reached by relative paths, works as on ext4."""
    m = mount.mountpoint
    root = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    component, deep_component = "c" * 200, "d" * 200
    fds = [root]
    try:
        rel = ""
        while 4095 - len(rel) > 255:  # directories, until a file name fills the path to 4095 bytes
            rel = f"{rel}{component}/"
            os.mkdir(rel, dir_fd=root)
        name = "f" * (4095 - len(rel))
        fd = os.open(rel + name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=root)
        os.write(fd, b"at PATH_MAX - 1")
        os.close(fd)
        assert os.stat(rel + name, dir_fd=root).st_size == len(b"at PATH_MAX - 1")
        with pytest.raises(OSError) as e:
            os.stat(rel + name + "x", dir_fd=root)
        assert e.value.errno == errno.ENAMETOOLONG
        # Deeper, one directory at a time: 60 levels of 200 bytes, a 12,000-byte path from the root.
        for _ in range(60):
            os.mkdir(deep_component, dir_fd=fds[-1])
            fds.append(os.open(deep_component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open("deep", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        os.write(fd, b"deep down")
        os.close(fd)
        os.rename("deep", "deeper", src_dir_fd=fds[-1], dst_dir_fd=fds[-1])
        assert os.listdir(fds[-1]) == ["deeper"]
    finally:
        for fd in reversed(fds):
            os.close(fd)
    mount.remount()
    root = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    fds = [root]
    try:
        for _ in range(60):
            fds.append(os.open(deep_component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open("deeper", os.O_RDONLY, dir_fd=fds[-1])
        assert os.read(fd, 100) == b"deep down"
        os.close(fd)
    finally:
        for fd in reversed(fds):
            os.close(fd)
