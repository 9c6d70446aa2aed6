"""Trained dictionaries and learned models of one volume, by id: what frames name in their parameter.

Codecs know nothing of LMDB: the fs layer persists these blobs in the volume and fills a Resources at
mount (``add_dictionary(kind, data, id)`` / ``add_model(blob, id, kind)`` with the stored ids), then
hands it to ``CodecTable(resources)``. Ids are never reused, so old frames stay readable after
retraining: a new dictionary or model for a kind gets a new id and becomes that kind's current one;
older ones stay for decoding. A model without a kind (volumes trained one model for all data) serves
every kind that has none of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from thermofs.codecs.errors import CodecError, CorruptFrame

# Dictionary ids are 24 bits of the frame's u32 codec parameter (see frame.py); 0 means "none".
MAX_RESOURCE_ID = (1 << 24) - 1


@dataclass(frozen=True)
class Dictionary:
    id: int
    kind: str
    data: bytes


class Resources:
    """Dictionaries (id -> bytes, each trained for one kind of data) and models (id -> bytes blob)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dicts: dict[int, Dictionary] = {}
        self._current: dict[str, int] = {}
        self._models: dict[int, bytes] = {}
        self._current_model: dict[str | None, int] = {}  # kind (None: any kind) -> newest model id

    @staticmethod
    def _check_id(rid: int, taken: dict[int, object]) -> None:
        if not 1 <= rid <= MAX_RESOURCE_ID:
            raise CodecError(f"resource id must be in 1..{MAX_RESOURCE_ID}, not {rid}")
        if rid in taken:
            raise CodecError(f"resource id {rid} is taken")

    def add_dictionary(self, kind: str, data: bytes, dict_id: int | None = None) -> int:
        """Add a dictionary for ``kind``; it becomes that kind's current one if its id is the newest."""
        with self._lock:
            rid = dict_id if dict_id is not None else max(self._dicts, default=0) + 1
            self._check_id(rid, self._dicts)  # type: ignore[arg-type]
            self._dicts[rid] = Dictionary(rid, kind, bytes(data))
            if rid > self._current.get(kind, 0):
                self._current[kind] = rid
            return rid

    def dictionary(self, dict_id: int) -> Dictionary:
        """The dictionary a frame names; an unknown id means the frame (or the volume) is damaged."""
        try:
            return self._dicts[dict_id]
        except KeyError:
            raise CorruptFrame(f"unknown dictionary id {dict_id}") from None

    def current_dictionary(self, kind: str) -> Dictionary | None:
        """The newest dictionary trained for ``kind``, if any: what new frames of that kind use."""
        rid = self._current.get(kind)
        return None if rid is None else self._dicts[rid]

    def dictionaries(self) -> list[Dictionary]:
        return [self._dicts[k] for k in sorted(self._dicts)]

    def add_model(self, blob: bytes, model_id: int | None = None, kind: str | None = None) -> int:
        """Add a model trained for ``kind`` (None: for any kind); it becomes that kind's current one if
        its id is the newest."""
        with self._lock:
            rid = model_id if model_id is not None else max(self._models, default=0) + 1
            self._check_id(rid, self._models)  # type: ignore[arg-type]
            self._models[rid] = bytes(blob)
            if rid > self._current_model.get(kind, 0):
                self._current_model[kind] = rid
            return rid

    def model(self, model_id: int) -> bytes:
        try:
            return self._models[model_id]
        except KeyError:
            raise CorruptFrame(f"unknown model id {model_id}") from None

    def current_model(self, kind: str | None = None) -> int | None:
        """The model new frames of ``kind`` use: the newest trained for that kind, else the newest
        trained for any kind, else None (the shipped model)."""
        with self._lock:
            return self._current_model.get(kind) if kind in self._current_model else self._current_model.get(None)

    def has_models(self) -> bool:
        with self._lock:
            return bool(self._models)
