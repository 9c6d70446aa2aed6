"""Training on the volume's own data: zstd dictionaries and (when the learned codec is in the table)
learned models, one per kind of data, stored in the volume's ``blobs`` sub-database under ids that
frames name.

A blob is written (and committed) before the codec table may use it, so no frame can ever name an id
the volume does not hold. Dictionaries are stored as ``kind + b"\\n" + bytes``, models as
``fs.resources.model_record``. A fine-tuned model is stored only if it codes the held-out sample
chunks of its kind smaller than the model it started from.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from thermofs.codecs.dictionary import train_dictionaries
from thermofs.codecs.learned.codec import default_model_blob
from thermofs.codecs.resources import Resources
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.errors import CorruptChunk
from thermofs.fs.meta import BLOB_DICTIONARY, BLOB_MODEL, MetaStore
from thermofs.fs.resources import model_record
from thermofs.progress import Progress, part_of

log = logging.getLogger("thermofs.training")

# 8 MiB of chunks (128 of 64 KiB): zstd's trainer wants ~100x the dictionary size of samples at most;
# more samples made no dictionary measurably better in bench/bench_codecs.py and cost seconds.
SAMPLE_BYTES = 8 << 20
# Below this much data a volume has nothing worth a dictionary (the trainer needs 4x its size).
MIN_VOLUME_BYTES = 1 << 20

# The cooler fine-tunes the volume's first learned models (cold spec ``best``) once the volume holds
# this many chunks (64 MiB of 64 KiB chunks): a model is a 2.8 MB blob, and it pays where the default
# model is weak. Measured on the standard library: its .pyc chunks (62% of it) take 0.286 of raw with
# the shipped model, 0.274 with a dictionary trained on them, 0.233 with a model fine-tuned for 30 s
# on a sample of the library's chunks. One model per kind (codecs/learned/train.py): a model primed on
# the mixed sample took the held-out .py chunks from 0.166 to 0.172, the text model to 0.161.
MODEL_MIN_CHUNKS = 1024
# Seconds the cooler gives that first fine-tuning (torch and the kernel load in ~5 s of them).
AUTO_MODEL_BUDGET = 30.0


@dataclass(frozen=True)
class KindModel:
    """A model fine-tuned on the samples of one kind of data; ``improves``: it codes that kind's
    held-out samples smaller than its base (only such models are stored)."""

    kind: str
    blob: bytes
    improves: bool


# Fine-tunes one learned model per kind of data in the samples, each from base(kind), within a
# budget of seconds.
ModelTrainer = Callable[[list[bytes], Callable[[str], bytes], float, Progress | None], list[KindModel]]
# The cooler asks for a volume's first dictionaries and models before every pass; a try that kept
# nothing (incompressible or varied data) is made again only once the volume has grown this many
# times over since, not at every pass: a try samples 8 MiB of chunks (decoding learned ones at ~40 ms
# each) and trains for seconds (the models for 30).
RETRY_GROWTH = 2
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
    models: list[dict[str, object]] = field(default_factory=list)  # id, kind, size
    models_not_better: list[str] = field(default_factory=list)  # kinds whose fine-tuned model was dropped


class Trainer:
    def __init__(self, meta: MetaStore, chunks: ChunkStore, resources: Resources,
                 model_trainer: ModelTrainer | None = None) -> None:
        self._meta = meta
        self._chunks = chunks
        self._resources = resources
        self._model_trainer = model_trainer
        # The volume's size (logical bytes; chunks) at this mount's last try at its first dictionaries
        # (first models), None before any.
        self._dictionaries_tried_at: int | None = None
        self._models_tried_at: int | None = None

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

    def _counter(self, name: str) -> int:
        with self._meta.read() as t:
            return t.counter(name)

    def _sample(self) -> tuple[TrainReport, list[bytes]]:
        """A sample of the volume's chunks, and a report that counts it."""
        report = TrainReport()
        samples = sample_chunks(self._meta, self._chunks)
        report.samples, report.sample_bytes = len(samples), sum(map(len, samples))
        return report, samples

    def ensure_dictionaries(self) -> TrainReport | None:
        """Train the first dictionaries of a volume that has none and enough data (the cooler calls
        this before recompressing with a spec that uses them). A try that kept none is made again
        once the volume's logical size has grown RETRY_GROWTH times over."""
        if self._resources.dictionaries():
            return None
        logical = self._counter("logical_bytes")
        if self._counter("stored_bytes") < MIN_VOLUME_BYTES or not _grown_since(self._dictionaries_tried_at, logical):
            return None
        self._dictionaries_tried_at = logical
        report, samples = self._sample()
        self.train_dictionaries(samples, report)
        return report

    def ensure_model(self, budget: float = AUTO_MODEL_BUDGET) -> TrainReport | None:
        """Fine-tune the first learned models of a volume that has none and at least MODEL_MIN_CHUNKS
        chunks (the cooler calls this before a pass with the cold path ``best``). A try that stored
        no model (the shipped one stays) is made again once the volume holds RETRY_GROWTH times as
        many chunks."""
        if self._model_trainer is None or self._resources.has_models():
            return None
        chunks = self._counter("chunks")
        if chunks < MODEL_MIN_CHUNKS or not _grown_since(self._models_tried_at, chunks):
            return None
        self._models_tried_at = chunks
        report, samples = self._sample()
        self._train_models(samples, budget, None, report)
        log.info("trained learned models %s (not better than their base: %s)", report.models,
                 report.models_not_better)
        return report

    def _base_model(self, kind: str) -> bytes:
        current = self._resources.current_model(kind)
        return self._resources.model(current) if current is not None else default_model_blob()

    def _train_models(self, samples: list[bytes], budget: float, progress: Progress | None,
                      report: TrainReport) -> None:
        """Models fine-tuned per kind from the current ones (the shipped default where there is
        none); each that improves on its base is stored before the codec table may name it."""
        assert self._model_trainer is not None
        for trained in self._model_trainer(samples, self._base_model, budget, progress):
            if not trained.improves:
                report.models_not_better.append(trained.kind)
                continue
            with self._meta.write() as t:
                rid = t.put_blob(BLOB_MODEL, model_record(trained.blob, trained.kind))
            self._resources.add_model(trained.blob, rid, trained.kind)
            report.models.append({"id": rid, "kind": trained.kind, "bytes": len(trained.blob)})

    def train(self, budget: float, progress: Progress | None = None, model: bool = True) -> TrainReport:
        """``thermofs train``: new dictionaries and, if the learned codec is available, models per kind
        fine-tuned from the current ones within ``budget`` seconds."""
        report, samples = self._sample()
        if progress is not None:
            progress(STEPS // 20, STEPS)
        self.train_dictionaries(samples, report)
        if model and self._model_trainer is not None and samples:
            self._train_models(samples, budget, part_of(progress, STEPS // 10, 9 * STEPS // 10, STEPS), report)
        if progress is not None:
            progress(STEPS, STEPS)
        return report


def _grown_since(tried_at: int | None, now: int) -> bool:
    """Is a first training worth trying (again)? Yes if never tried, or once the volume has grown
    RETRY_GROWTH times over since the try that kept nothing."""
    return tried_at is None or now >= RETRY_GROWTH * tried_at
