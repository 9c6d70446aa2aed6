"""A learned model: the kernel's tables as plain arrays, stored as an ``.npz`` blob (never a pickle).

A blob is read with ``allow_pickle=False`` and every array is checked (name, dtype, shape) before the
kernel sees it: the kernel indexes without bounds checks, so a model that is not exactly the shape
it expects must never reach it. Opening a volume therefore never executes code from it.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from thermofs.codecs.errors import CodecError
from thermofs.codecs.learned import kernel as K

FORMAT = 1
MIN_HBITS, MAX_HBITS = 12, 22
MAX_MODEL_BYTES = 64 << 20
DEFAULT_HBITS = 20
MATCH_TABLE = 1 << 16
PRIOR_COUNT = 1  # count of a primed counter when a chunk starts (see Model.soften)
INIT_WEIGHT = 22000  # 16.16: each input starts at ~0.34


class BadModel(CodecError):
    """A model blob that is not a valid model of this format."""


@dataclass
class Model:
    """The kernel's state. ``lr`` is the mixer's learning rate (see kernel.run)."""

    t1: np.ndarray  # uint16[65536]     order 1: previous byte x partial byte
    th: np.ndarray  # uint16[5, 2**hbits] hashed orders 2, 3, 4, 6, word
    mw: np.ndarray  # int32[N_SETS, N_INPUTS] mixer weights
    a1: np.ndarray  # uint16[APM_ROWS1 * 24]
    a2: np.ndarray  # uint16[APM_ROWS2 * 24]
    msm: np.ndarray  # uint16[MATCH_SLOTS] match model counters
    lr: int

    FIELDS = ("t1", "th", "mw", "a1", "a2", "msm")

    @classmethod
    def fresh(cls, hbits: int = DEFAULT_HBITS, lr: int = 6) -> Model:
        """An untrained model: every counter at p=1/2 with count 0, uniform mixer weights."""
        counter = np.uint16(2048 << 4)
        return cls(
            t1=np.full(1 << 16, counter, np.uint16),
            th=np.full((K.N_HASHED, 1 << hbits), counter, np.uint16),
            mw=np.full((K.N_SETS, K.N_INPUTS), INIT_WEIGHT, np.int32),
            a1=K.apm_init(K.APM_ROWS1),
            a2=K.apm_init(K.APM_ROWS2),
            msm=np.full(K.MATCH_SLOTS, counter, np.uint16),
            lr=lr,
        )

    @property
    def hbits(self) -> int:
        return int(self.th.shape[1]).bit_length() - 1

    def soften(self, cap: int = PRIOR_COUNT) -> None:
        """Cap every counter's count at ``cap``: a primed counter then moves fast towards what the
        chunk shows (measured: count 1 codes text 2-3% smaller than leaving primed counts at 15).
        Slot 0 of each hashed block is a context check, not a counter: left alone."""
        for t in (self.t1, self.th.reshape(-1, 16)[:, 1:], self.msm):
            t[...] = (t & np.uint16(0xFFF0)) | np.minimum(t & np.uint16(15), np.uint16(cap))

    def copy(self) -> Model:
        return Model(**{f: getattr(self, f).copy() for f in self.FIELDS}, lr=self.lr)

    def copy_into(self, dst: Model) -> None:
        for f in self.FIELDS:
            np.copyto(getattr(dst, f), getattr(self, f))
        dst.lr = self.lr

    def to_blob(self) -> bytes:
        out = io.BytesIO()
        np.savez_compressed(out, format=np.array([FORMAT], np.int32), lr=np.array([self.lr], np.int32),
                            **{f: getattr(self, f) for f in self.FIELDS})
        return out.getvalue()

    @classmethod
    def from_blob(cls, blob: bytes) -> Model:
        try:
            # Bound what the archive may expand to before numpy reads it (a damaged or hostile
            # volume must not make opening a model allocate without limit).
            with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                expanded = sum(info.file_size for info in zf.infolist())
            if expanded > MAX_MODEL_BYTES:
                raise BadModel(f"model arrays would take {expanded} bytes (limit {MAX_MODEL_BYTES})")
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise BadModel(f"model blob is not a readable npz: {e}") from e
        return cls.from_arrays(arrays)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Model:
        expected = {"format", "lr", *cls.FIELDS}
        if set(arrays) != expected:
            raise BadModel(f"model arrays {sorted(arrays)} are not {sorted(expected)}")
        fmt, lr = arrays["format"], arrays["lr"]
        if fmt.dtype != np.int32 or fmt.shape != (1,) or int(fmt[0]) != FORMAT:
            raise BadModel(f"unknown model format {fmt!r}")
        if lr.dtype != np.int32 or lr.shape != (1,) or not 0 <= int(lr[0]) <= 64:
            raise BadModel("bad model learning rate")
        th = arrays["th"]
        if th.ndim != 2 or th.shape[0] != K.N_HASHED:
            raise BadModel(f"hashed tables have shape {th.shape}")
        hbits = int(th.shape[1]).bit_length() - 1
        if not (MIN_HBITS <= hbits <= MAX_HBITS and th.shape[1] == 1 << hbits):
            raise BadModel(f"hashed tables of {th.shape[1]} slots")
        shapes = {"t1": ((1 << 16,), np.uint16), "th": ((K.N_HASHED, 1 << hbits), np.uint16),
                  "mw": ((K.N_SETS, K.N_INPUTS), np.int32), "a1": ((K.APM_ROWS1 * 24,), np.uint16),
                  "a2": ((K.APM_ROWS2 * 24,), np.uint16), "msm": ((K.MATCH_SLOTS,), np.uint16)}
        for name, (shape, dtype) in shapes.items():
            a = arrays[name]
            if a.shape != shape or a.dtype != dtype:
                raise BadModel(f"model array {name} is {a.dtype}{a.shape}, expected {np.dtype(dtype)}{shape}")
        # Own, native-order, C-contiguous, writable arrays: the kernel gets exactly what it was compiled for.
        fields = {name: np.ascontiguousarray(arrays[name]).astype(shapes[name][1], copy=True)
                  for name in cls.FIELDS}
        return cls(**fields, lr=int(lr[0]))


class Workspace:
    """A pool of scratch states: a private copy of a model's tables (the kernel adapts them while
    coding) and the match model's hash table. Reused across chunks (a fresh 13 MB state would be
    page-faulted in on every chunk); at most ``keep`` idle states are kept, so memory follows the
    number of chunks coded at once, not the number of threads that ever called."""

    def __init__(self, keep: int | None = None) -> None:
        self._free: list[tuple[Model, np.ndarray]] = []
        self._lock = threading.Lock()
        self._keep = keep or os.cpu_count() or 2

    @contextmanager
    def lease(self, model: Model) -> Iterator[tuple[Model, np.ndarray]]:
        item = None
        with self._lock:
            for i, (work, _ht) in enumerate(self._free):
                if work.th.shape == model.th.shape:
                    item = self._free.pop(i)
                    break
        if item is None:
            item = (model.copy(), np.zeros(MATCH_TABLE, np.int32))
        else:
            model.copy_into(item[0])
            item[1].fill(0)
        try:
            yield item
        finally:
            with self._lock:
                if len(self._free) < self._keep:
                    self._free.append(item)
