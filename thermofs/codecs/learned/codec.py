"""``learned``: the cold tier's context-mixing codec, driven by a pretrained model (id in the frame).

Payload: one format byte, then the arithmetic code (see kernel.py), or (format 0) the bytes stored.
The frame parameter is the model id: 0 is the default model shipped in this package, other ids are
looked up in the volume.

The shipped ``default_model.npz`` is on-disk format like the kernel: every id-0 frame decodes only
with these exact tables. Never replace it in place; a better default ships under a new id (and
test_format_is_pinned says so).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from thermofs.codecs.base import MODEL, Buffer, Codec
from thermofs.codecs.errors import BadSpec, CorruptFrame
from thermofs.codecs.probe import BINARY, TEXT, Probe, analyse
from thermofs.codecs.resources import Resources

if TYPE_CHECKING:
    from thermofs.codecs.learned.model import Model, Workspace

PAYLOAD_FORMAT = 1
STORED_FORMAT = 0  # the bytes as they are, for data the model would expand
DEFAULT_MODEL_ID = 0
DEFAULT_MODEL_FILE = "default_model.npz"

ModelSource = Callable[[int], bytes | None] | Mapping[int, bytes] | Any



def default_model_blob() -> bytes:
    return resources.files(__package__).joinpath(DEFAULT_MODEL_FILE).read_bytes()


def default_model() -> Model:
    """The shipped model, parsed (codecs cache it: one parse per codec table)."""
    from thermofs.codecs.learned.model import Model

    return Model.from_blob(default_model_blob())


def encode_with(model: Model, data: bytes | bytearray | memoryview, workspace: Workspace) -> bytes:
    from thermofs.codecs.learned import kernel as K  # numba: loaded at first use

    # Writable copies everywhere: one compiled signature of the kernel (read-only arrays are another type).
    buf = np.array(np.frombuffer(data, np.uint8)) if len(data) else np.zeros(0, np.uint8)
    n = len(buf)
    out = np.empty(n + 64, np.uint8)
    with workspace.lease(model) as (work, ht):
        size = K.run(K.ENCODE, buf, n, out[:0], out, work.t1, work.th, work.mw, work.a1, work.a2,
                     work.msm, ht, work.lr, K.no_log(), 1)
    if size < 0:  # the code would be larger than the data: store it (the frame layer keeps raw anyway)
        return bytes([STORED_FORMAT]) + bytes(data)
    return bytes([PAYLOAD_FORMAT]) + out[:size].tobytes()


def decode_with(model: Model, payload: bytes, raw_len: int, workspace: Workspace) -> bytes:
    from thermofs.codecs.learned import kernel as K  # numba: loaded at first use

    if len(payload) == raw_len + 1 and payload[0] == STORED_FORMAT:
        return bytes(payload[1:])
    if len(payload) < 1 or payload[0] != PAYLOAD_FORMAT:
        raise CorruptFrame("learned payload: unknown format or length")
    src = np.array(np.frombuffer(payload, np.uint8)[1:])
    buf = np.empty(raw_len, np.uint8)
    with workspace.lease(model) as (work, ht):
        status = K.run(K.DECODE, buf, raw_len, src, buf[:0], work.t1, work.th, work.mw, work.a1,
                       work.a2, work.msm, ht, work.lr, K.no_log(), 1)
    if status != 0:
        raise CorruptFrame("learned payload does not decode consistently (damaged or wrong model)")
    return buf.tobytes()


class LearnedCodec(Codec):
    """Codec id 4. ``models``: the volume's Resources (as the codec table passes them), or a source
    mapping a model id (> 0) to its blob: a callable, a mapping, or an object with ``get(id)``; it may
    return None or raise KeyError/LookupError for an unknown id. New frames use the volume's current
    model for the chunk's kind (``resolve``), the shipped one (id 0) while it has none."""

    ID = 4
    name = "learned"
    default_param = DEFAULT_MODEL_ID
    cold_role = MODEL

    def __init__(self, models: Resources | ModelSource | None = None) -> None:
        self.resources = models if isinstance(models, Resources) else Resources()
        self._models = models.model if isinstance(models, Resources) else models
        self._cache: dict[int, Model] = {}
        self._lock = threading.Lock()
        self._workspace: Workspace | None = None

    def check_param(self, param: int) -> None:
        if not 0 <= param < 1 << 32:
            raise BadSpec(f"learned model id must be a u32, not {param}")

    def _blob(self, model_id: int) -> bytes | None:
        src = self._models
        if src is None:
            return None
        try:
            if callable(src):
                return src(model_id)
            if hasattr(src, "get"):
                return src.get(model_id)
            return src[model_id]
        except (KeyError, LookupError, CorruptFrame):
            return None

    def model(self, model_id: int) -> Model:
        """The parsed model for an id (cached); CorruptFrame if it is unknown or not a valid model."""
        cached = self._cache.get(model_id)
        if cached is not None:
            return cached
        if model_id == DEFAULT_MODEL_ID:
            model = default_model()
        else:
            blob = self._blob(model_id)
            if blob is None:
                raise CorruptFrame(f"unknown learned model id {model_id}")
            from thermofs.codecs.learned.model import BadModel, Model

            try:
                model = Model.from_blob(bytes(blob))
            except BadModel as e:
                raise CorruptFrame(f"learned model {model_id}: {e}") from e
        with self._lock:
            return self._cache.setdefault(model_id, model)

    def resolve(self, raw: Buffer, param: int) -> tuple[Codec, int]:
        """The spec ``learned`` (model 0) encodes with the volume's model for the chunk's kind, if any."""
        if param == DEFAULT_MODEL_ID:
            return self, self.resources.current_model(analyse(raw).kind) or DEFAULT_MODEL_ID
        return self, param

    def cold_params(self, raw: Buffer, probe: Probe) -> list[int]:
        """``best`` tries the learned codec on text and compressible binaries (bench/bench_learned.py:
        16-21% smaller than zstd -19 with a dictionary on text and code, 3% on binaries); byte planes
        win on floats, and incompressible chunks stay raw."""
        if probe.kind not in (TEXT, BINARY) or probe.incompressible:
            return []
        return [self.resources.current_model(probe.kind) or DEFAULT_MODEL_ID]

    def workspace(self) -> Workspace:
        with self._lock:
            if self._workspace is None:
                from thermofs.codecs.learned.model import Workspace

                self._workspace = Workspace()
            return self._workspace

    def compress(self, data: bytes | bytearray | memoryview, param: int) -> bytes:
        return encode_with(self.model(param), data, self.workspace())

    def decompress(self, payload: bytes, raw_len: int, param: int) -> bytes:
        return decode_with(self.model(param), payload, raw_len, self.workspace())
