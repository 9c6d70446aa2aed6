"""Harnesses for real mounts, as fixtures: every mount is unmounted in teardown, also when the test or the
daemon failed; programs a test needs; what ``thermofs stats --json`` says."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from thermofs.daemon.mountinfo import answers, mount_source
from thermofs.fs.store import StoreConfig, mkfs

if TYPE_CHECKING:
    from tests.conftest import Run

# Lines the daemon log may hold without failing the test (none: libfuse's "Ignoring invalid max
# threads value" is gone since the daemon passes a valid max_idle_threads).
BENIGN_LOG: tuple[str, ...] = ()
RequireTool = Callable[[str], str]
StatsJson = Callable[..., dict[str, Any]]


@dataclass
class Mount:
    """A thermofs volume mounted by a foreground daemon that this process started."""

    store: Path
    mountpoint: Path
    options: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    expect_log_errors: bool = False

    @property
    def log_path(self) -> Path:
        return self.store / "thermofs.log"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "thermofs", "mount", "-f", "--no-stderr", str(self.store),
               str(self.mountpoint)]
        if self.options:
            cmd += ["-o", self.options]
        with open(self.store.parent / f"{self.store.name}.daemon.out", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while mount_source(self.mountpoint) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.daemon_output()}")
            if time.monotonic() > deadline:
                raise RuntimeError("mount did not appear")
            time.sleep(0.02)
        os.statvfs(self.mountpoint)

    def daemon_output(self) -> str:
        parts = []
        for p in (self.log_path, self.store.parent / f"{self.store.name}.daemon.out"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def kill(self) -> None:
        """kill -9 the daemon (a crash); the mount then answers ENOTCONN until unmounted."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._unmount()

    def _unmount(self) -> None:
        if mount_source(self.mountpoint) is None:
            return
        if subprocess.run(["fusermount", "-u", str(self.mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["fusermount", "-u", "-z", str(self.mountpoint)], capture_output=True)

    def stop(self) -> None:
        """Unmount cleanly (the daemon flushes and exits); kill it if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None and not answers(self.mountpoint, 10):
            self.proc.kill()
        self._unmount()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self._unmount()
        self.proc = None

    def remount(self) -> None:
        self.stop()
        self.start()

    def log_problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines()
                if ("WARNING" in line or "ERROR" in line or "CRITICAL" in line or "Traceback" in line)
                and not any(b in line for b in BENIGN_LOG)]


@pytest.fixture
def make_mount(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """Factory: ``make_mount(chunk_size=..., hot_codec=..., cold_codec=..., options=..., store=...)``
    -> mounted Mount."""
    mounts: list[Mount] = []

    def factory(chunk_size: int = 64 << 10, hot_codec: str = "auto", options: str | None = None,
                store: Path | None = None, expect_log_errors: bool = False, cold_codec: str = "zstd:19") -> Mount:
        n = len(mounts)
        store = store or tmp_path / f"store{n}"
        if not (store / "thermofs.json").exists():
            mkfs(store, StoreConfig(chunk_size=chunk_size, hot_codec=hot_codec, cold_codec=cold_codec))
        mnt = tmp_path / f"mnt{n}"
        mnt.mkdir(exist_ok=True)
        m = Mount(store, mnt, options, expect_log_errors=expect_log_errors)
        mounts.append(m)
        m.start()
        return m

    yield factory
    problems: list[str] = []
    for m in mounts:
        try:
            m.stop()
        finally:
            if mount_source(m.mountpoint) is not None:
                subprocess.run(["fusermount", "-u", "-z", str(m.mountpoint)], capture_output=True)
        assert mount_source(m.mountpoint) is None, f"{m.mountpoint} is still mounted"
        if not m.expect_log_errors:
            problems += m.log_problems()
    assert not problems, "daemon log has warnings or errors:\n" + "\n".join(problems)


@pytest.fixture
def mount(make_mount: Callable[..., Mount]) -> Mount:
    """One mounted volume with the default configuration."""
    return make_mount()


@pytest.fixture
def require_tool() -> RequireTool:
    """``require_tool(name)``: the path of a program; the test is skipped when it is not installed."""

    def require_tool(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed")
        return path

    return require_tool


@pytest.fixture
def stats_json(run: Run) -> StatsJson:
    """``stats_json(*args)``: what ``thermofs stats --json ARGS`` prints, parsed (the command must succeed)."""

    def stats_json(*args: str | Path) -> dict[str, Any]:
        r = run("stats", "--json", *args)
        assert r.returncode == 0, f"thermofs stats failed: {r.stderr}"
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    return stats_json
