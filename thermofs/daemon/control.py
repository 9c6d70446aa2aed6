"""The mounted daemon's admin channel: a unix socket in the store, ``STORE/control.sock``.

``thermofs stats|cool|compact`` on a mounted volume cannot open the store (the daemon holds its lock
and its caches); they send one request here and the daemon runs it with its own parts. Protocol:
one JSON object per line. The client sends ``{"op": NAME, "args": {...}}``; the daemon answers with
any number of ``{"progress": {...}}`` lines and then one ``{"result": ...}`` or ``{"error": TEXT}``.
The socket is created with mode 0600: only the user who mounted the volume may use it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thermofs.fs.errors import StoreError, UnusableTarget

log = logging.getLogger("thermofs.control")

SOCKET_NAME = "control.sock"
# sockaddr_un holds 108 bytes; longer store paths are reached through /proc/self/fd.
SUN_PATH_MAX = 100

Send = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Send], Any]


class ControlError(StoreError):
    """The daemon refused or failed a request, or went away during it."""


class DaemonUnreachable(ControlError, UnusableTarget):
    """The daemon's control socket cannot be connected to."""


@contextmanager
def _short_path(store: Path) -> Iterator[str]:
    path = str(store / SOCKET_NAME)
    if len(path) <= SUN_PATH_MAX:
        yield path
        return
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handlers: dict[str, Handler]


class _Request(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        def send(obj: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(obj).encode() + b"\n")
            self.wfile.flush()

        try:
            request = json.loads(self.rfile.readline(1 << 20))
            op, args = request["op"], request.get("args") or {}
            handler = self.server.handlers.get(op)
            if handler is None:
                send({"error": f"unknown request {op!r}"})
                return
            send({"result": handler(args, lambda p: send({"progress": p}))})
        except BrokenPipeError:
            log.info("control client went away")
        except Exception as e:  # the daemon keeps serving; the client gets the reason
            log.exception("control request failed")
            try:
                send({"error": f"{type(e).__name__}: {e}"})
            except OSError:
                pass


class ControlServer:
    def __init__(self, store: Path, handlers: dict[str, Handler]) -> None:
        self.store = store
        self.handlers = handlers
        self._server: _Server | None = None

    def start(self) -> None:
        sock_path = self.store / SOCKET_NAME
        sock_path.unlink(missing_ok=True)  # left by a crashed daemon: we hold the store lock
        old_umask = os.umask(0o077)
        try:
            with _short_path(self.store) as path:
                self._server = _Server(path, _Request)
        finally:
            os.umask(old_umask)
        self._server.handlers = self.handlers
        threading.Thread(target=self._server.serve_forever, name="control", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            (self.store / SOCKET_NAME).unlink(missing_ok=True)


def call(store: Path, op: str, args: dict[str, Any] | None = None,
         on_progress: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = None) -> Any:
    """Send one request to the daemon serving ``store`` and return its result."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _short_path(store) as path:
            try:
                sock.connect(path)
            except PermissionError:
                raise DaemonUnreachable(f"permission denied on {store / SOCKET_NAME}: run this as the user "
                                        f"who mounted the volume") from None
            except OSError as e:
                raise DaemonUnreachable(f"cannot reach the daemon of {store} ({e.strerror}); is it "
                                        f"mounted?") from None
        with sock.makefile("rwb") as f:
            f.write(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
            f.flush()
            for line in f:
                msg = json.loads(line)
                if "progress" in msg:
                    if on_progress is not None:
                        on_progress(msg["progress"])
                elif "error" in msg:
                    raise ControlError(f"the daemon refused or failed {op!r}: {msg['error']}")
                else:
                    return msg["result"]
        raise ControlError(f"the daemon of {store} closed the connection during {op!r}")
    except TimeoutError:
        raise ControlError(f"the daemon of {store} did not answer {op!r} in time") from None
    except (BrokenPipeError, ConnectionResetError):
        raise ControlError(f"the daemon of {store} went away during {op!r} (unmounted?)") from None
    finally:
        sock.close()


@dataclass(frozen=True)
class Target:
    """What an admin command was pointed at: a store, and whether a daemon is serving it."""

    store: Path
    mounted: bool
