"""Training on the volume's own data: zstd dictionaries (and, when the learned codec is in the table,
a learned model), stored in the volume's ``blobs`` sub-database under ids that frames name.

A blob is written (and committed) before the codec table may use it, so no frame can ever name an id
the volume does not hold. Dictionaries are stored as ``kind + b"\\n" + bytes``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from thermofs.codecs.dictionary import train_dictionaries
from thermofs.codecs.resources import Resources
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import BLOB_DICTIONARY, BLOB_MODEL, MetaStore
from thermofs.progress import Progress

log = logging.getLogger("thermofs.training")

# 8 MiB of chunks (128 of 64 KiB): zstd's trainer wants ~100x the dictionary size of samples at most;
# more samples made no dictionary measurably better in bench/bench_codecs.py and cost seconds.
SAMPLE_BYTES = 8 << 20
# Below this much data a volume has nothing worth a dictionary (the trainer needs 4x its size).
MIN_VOLUME_BYTES = 1 << 20

# Trains a learned model on samples, from a base model blob, within a budget of seconds; the blob.
ModelTrainer = Callable[[list[bytes], bytes | None, float, Progress | None], bytes]
# Progress of ``thermofs train`` in thousandths: the dictionaries take the first tenth.
STEPS = 1000


def sample_chunks(meta: MetaStore, chunks: ChunkStore, limit: int = SAMPLE_BYTES, seed: int = 0) -> list[bytes]:
    """A uniform random sample (reservoir) of the volume's chunks, decoded and verified."""
    rnd = random.Random(seed)
    want = max(1, limit // chunks.chunk_size)
    picked: list[tuple[int, int]] = []
    seen = 0
    pos = (0, 0)
    while True:
        with meta.read() as t:
            rows = t.chunks_after(*pos, 4096)
        if not rows:
            break
        for ino, index, _entry in rows:
            seen += 1
            if len(picked) < want:
                picked.append((ino, index))
            else:
                j = rnd.randrange(seen)
                if j < want:
                    picked[j] = (ino, index)
        pos = (rows[-1][0], rows[-1][1] + 1)
    out = []
    for ino, index in picked:
        with meta.read() as t:
            entry, inline = t.get_chunk_frame(ino, index)
        if entry is None:
            continue
        try:
            out.append(chunks.read(entry, inline))
        except CorruptChunk as e:
            log.warning("training sample skips a damaged chunk: %s", e)
    return out


@dataclass
class TrainReport:
    samples: int = 0
    sample_bytes: int = 0
    dictionaries: list[dict[str, object]] = field(default_factory=list)  # id, kind, size
    model_id: int | None = None
    model_bytes: int = 0


class Trainer:
    def __init__(self, meta: MetaStore, chunks: ChunkStore, resources: Resources,
                 model_trainer: ModelTrainer | None = None) -> None:
        self._meta = meta
        self._chunks = chunks
        self._resources = resources
        self._model_trainer = model_trainer

    def train_dictionaries(self, samples: list[bytes], report: TrainReport) -> None:
        trained = train_dictionaries(samples)
        if not trained:
            return
        with self._meta.write() as t:
            ids = [t.put_blob(BLOB_DICTIONARY, kind.encode() + b"\n" + data) for kind, data in trained]
        for rid, (kind, data) in zip(ids, trained, strict=True):
            self._resources.add_dictionary(kind, data, rid)
            report.dictionaries.append({"id": rid, "kind": kind, "bytes": len(data)})
        log.info("trained dictionaries %s", report.dictionaries)

    def ensure_dictionaries(self) -> TrainReport | None:
        """Train the first dictionaries of a volume that has none and enough data (the cooler calls
        this before recompressing with a spec that uses them)."""
        if self._resources.dictionaries():
            return None
        with self._meta.read() as t:
            if t.counter("stored_bytes") < MIN_VOLUME_BYTES:
                return None
        report = TrainReport()
        samples = sample_chunks(self._meta, self._chunks)
        report.samples, report.sample_bytes = len(samples), sum(map(len, samples))
        self.train_dictionaries(samples, report)
        return report

    def train(self, budget: float, progress: Progress | None = None, model: bool = True) -> TrainReport:
        """``thermofs train``: new dictionaries and, if the learned codec is available, a model
        fine-tuned from the newest one within ``budget`` seconds."""
        report = TrainReport()
        samples = sample_chunks(self._meta, self._chunks)
        report.samples, report.sample_bytes = len(samples), sum(map(len, samples))
        if progress is not None:
            progress(STEPS // 20, STEPS)
        self.train_dictionaries(samples, report)
        if model and self._model_trainer is not None and samples:
            current = self._resources.current_model()
            base = self._resources.model(current) if current is not None else None
            blob = self._model_trainer(
                samples, base, budget,
                None if progress is None else
                (lambda done, total: progress(STEPS // 10 + 9 * STEPS // 10 * done // total, STEPS)))
            with self._meta.write() as t:
                rid = t.put_blob(BLOB_MODEL, blob)
            self._resources.add_model(blob, rid)
            report.model_id, report.model_bytes = rid, len(blob)
        if progress is not None:
            progress(STEPS, STEPS)
        return report
