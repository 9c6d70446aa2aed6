"""The kernel caches attributes (daemon/binding.py ATTR_TIMEOUT), and each name of a hard-linked file is
its own kernel inode: a change through one name must show through every other at once, as on a local
filesystem (daemon/kernelnames.py). Each test first stats every name, so that the kernel holds their
attributes when the change comes; then it reads them back right after the change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.mount.conftest import Mount


def cached(*paths: Path) -> None:
    for p in paths:
        os.stat(p)


def test_a_write_through_one_name_shows_through_the_other(mount: Mount) -> None:
    a, b = mount.mountpoint / "a", mount.mountpoint / "b"
    a.write_bytes(b"first")
    os.link(a, b)
    cached(a, b)
    assert b.read_bytes() == b"first"
    with open(b, "rb") as reader:
        with open(a, "ab") as f:
            f.write(b" and more")
        assert os.stat(b).st_size == len(b"first and more")
        assert reader.read() == b"first and more"  # an open reader of the other name, too
    assert b.read_bytes() == b"first and more"


def test_truncate_and_o_trunc_through_one_name(mount: Mount) -> None:
    a, b = mount.mountpoint / "a", mount.mountpoint / "b"
    a.write_bytes(b"x" * 10000)
    os.link(a, b)
    cached(a, b)
    os.truncate(a, 100)
    assert os.stat(b).st_size == 100
    cached(a, b)
    with open(b, "wb"):  # O_TRUNC through the other name
        pass
    assert os.stat(a).st_size == 0
    assert a.read_bytes() == b""


def test_chmod_chown_utime_and_xattrs_through_one_name(mount: Mount) -> None:
    a, b = mount.mountpoint / "a", mount.mountpoint / "b"
    a.write_bytes(b"data")
    os.link(a, b)
    cached(a, b)
    os.chmod(a, 0o600)
    assert os.stat(b).st_mode & 0o777 == 0o600
    os.utime(b, ns=(1_000_000_000, 2_000_000_000))
    assert os.stat(a).st_mtime_ns == 2_000_000_000
    os.chown(a, 1234, 5678)
    assert (os.stat(b).st_uid, os.stat(b).st_gid) == (1234, 5678)
    before = os.stat(b).st_ctime_ns
    os.setxattr(a, "user.k", b"v")
    assert os.stat(b).st_ctime_ns != before
    before = os.stat(a).st_ctime_ns
    os.removexattr(b, "user.k")
    assert os.stat(a).st_ctime_ns != before


def test_link_counts_and_ctime_follow_links_and_unlinks(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "a").write_bytes(b"data")
    os.link(m / "a", m / "b")
    cached(m / "a", m / "b")
    ctime = os.stat(m / "a").st_ctime_ns
    os.link(m / "b", m / "c")
    assert [os.stat(m / n).st_nlink for n in "abc"] == [3, 3, 3]
    assert os.stat(m / "a").st_ctime_ns != ctime
    (m / "c").unlink()
    assert [os.stat(m / n).st_nlink for n in "ab"] == [2, 2]
    os.rename(m / "a", m / "a2")  # rename's new ctime shows through the other name
    (m / "x").write_bytes(b"other")
    os.rename(m / "x", m / "b")  # replaces b: the file keeps one link, a2
    assert os.stat(m / "a2").st_nlink == 1
    assert (m / "b").read_bytes() == b"other"


def test_names_under_a_renamed_directory_stay_tracked(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "d").mkdir()
    (m / "d" / "a").write_bytes(b"data")
    os.link(m / "d" / "a", m / "b")
    cached(m / "d" / "a", m / "b")
    os.rename(m / "d", m / "e")
    cached(m / "e" / "a")
    with open(m / "b", "ab") as f:
        f.write(b"!")
    assert os.stat(m / "e" / "a").st_size == 5
    assert (m / "e" / "a").read_bytes() == b"data!"


def test_rename_between_two_links_of_one_file_keeps_both(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "a").write_bytes(b"data")
    os.link(m / "a", m / "b")
    cached(m / "a", m / "b")
    os.rename(m / "a", m / "b")
    assert [os.stat(m / n).st_nlink for n in "ab"] == [2, 2]
    with open(m / "a", "ab") as f:
        f.write(b"!")
    assert (m / "b").read_bytes() == b"data!"
