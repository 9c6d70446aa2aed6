"""The progress callback every long operation takes: ``progress(done, total)``, in units its caller names
(chunks, bytes, or thousandths of a training budget). Depends on nothing, so every layer may use it."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]


def part_of(progress: Progress | None, start: int, span: int, steps: int) -> Progress | None:
    """The progress of one part of a job that ``progress`` follows in ``steps``: the part runs from
    step ``start`` over ``span`` steps, whatever units it reports in itself."""
    if progress is None:
        return None
    whole = progress
    return lambda done, total: whole(start + span * done // total, steps)
