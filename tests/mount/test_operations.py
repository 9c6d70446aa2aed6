"""The FUSE operations without the kernel: which errno each kind of failure answers, what is logged."""

from __future__ import annotations

import errno
import importlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from thermofs.daemon.assembly import OpenVolume, open_volume
from thermofs.fs.store import StoreConfig, mkfs


@pytest.fixture
def operations_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("FUSE_LIBRARY_NAME", "fuse3")  # as the daemon does: mfusepy loads libfuse on import
    return importlib.import_module("thermofs.daemon.operations")


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[OpenVolume]:
    mkfs(tmp_path / "store", StoreConfig(chunk_size=4096))
    p = open_volume(tmp_path / "store")
    yield p
    p.close()


def errno_of(operations_module: ModuleType, call: Callable[[], object]) -> int:
    """The errno a call through the operations answers the kernel with."""
    with pytest.raises(operations_module.mfusepy.FuseOSError) as e:
        call()
    return int(e.value.errno)


@pytest.mark.parametrize("failure", [RuntimeError("a bug"), KeyError(7), OSError(errno.ENOSPC, "not mapped"),
                                     UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates")],
                         ids=["RuntimeError", "KeyError", "OSError", "UnicodeEncodeError"])
def test_an_unexpected_exception_answers_eio_and_is_logged_once_with_its_traceback(
        operations_module: ModuleType, parts: OpenVolume, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, failure: Exception) -> None:
    """mfusepy answers EINVAL (the caller's mistake) to anything but an OSError; a failure nobody
    expected is the filesystem's: EIO, and its traceback in the log at ERROR, once."""
    ops = operations_module.Operations(parts.volume, parts.store)

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(parts.volume, "lookup_attr", fail)
    monkeypatch.setattr(parts.volume, "mkdir", fail)
    for call in (lambda: ops.getattr("/x"), lambda: ops.mkdir("/d", 0o755)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            assert errno_of(operations_module, call) == errno.EIO
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert errors[0].exc_info[1] is failure


def test_a_domain_error_answers_its_errno_without_an_error_in_the_log(
        operations_module: ModuleType, parts: OpenVolume, caplog: pytest.LogCaptureFixture) -> None:
    ops = operations_module.Operations(parts.volume, parts.store)
    fh, _inode = parts.volume.create("/f", 0o644, 0, 0)
    parts.volume.release(fh)
    with caplog.at_level(logging.DEBUG):
        assert errno_of(operations_module, lambda: ops.truncate("/f", 2**63 - 4096)) == errno.EFBIG
        assert errno_of(operations_module, lambda: ops.getattr("/missing")) == errno.ENOENT
        assert errno_of(operations_module, lambda: ops.rmdir("/missing")) == errno.ENOENT
        assert errno_of(operations_module, lambda: ops.getattr("/" + "n" * 256)) == errno.ENAMETOOLONG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
