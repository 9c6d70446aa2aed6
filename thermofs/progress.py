"""The progress callback every long operation takes: ``progress(done, total)``, in units its caller names
(chunks, bytes, or thousandths of a training budget). Depends on nothing, so every layer may use it."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
