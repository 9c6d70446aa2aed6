"""The learned codec: exact round trips, exactness across processes and threads, hostile input."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from thermofs.codecs.errors import BadSpec, CorruptFrame
from thermofs.codecs.learned import LearnedCodec
from thermofs.codecs.learned.model import Model
from thermofs.codecs.learned.train import train_model

REPO = Path(__file__).resolve().parents[2]
CHUNK = 1 << 16


def _text(n: int) -> bytes:
    src = b"".join(p.read_bytes() for p in sorted((REPO / "thermofs").rglob("*.py")))
    return (src * (n // max(1, len(src)) + 1))[:n]


def _samples() -> dict[str, bytes]:
    rnd = os.urandom(CHUNK)
    return {
        "empty": b"",
        "one": b"x",
        "zero_byte": b"\0",
        "zeros": bytes(CHUNK),
        "random": rnd,
        "text": _text(20000),
        "chunk": _text(CHUNK),
        "mixed": _text(CHUNK // 2) + rnd[: CHUNK // 2],
        "ramp": bytes(i & 255 for i in range(CHUNK)),
    }


@pytest.fixture(scope="module")
def codec() -> LearnedCodec:
    return LearnedCodec()


@pytest.mark.parametrize("name", list(_samples()))
def test_round_trip(codec: LearnedCodec, name: str) -> None:
    data = _samples()[name]
    payload = codec.compress(data, 0)
    assert codec.decompress(payload, len(data), 0) == data
    if name in ("text", "chunk", "zeros"):
        assert len(payload) < len(data) // 3


def test_compresses_text_well(codec: LearnedCodec) -> None:
    data = _text(CHUNK)
    assert len(codec.compress(data, 0)) * 8 / len(data) < 2.5


def test_same_payload_every_time(codec: LearnedCodec) -> None:
    data = _text(CHUNK)
    assert codec.compress(data, 0) == codec.compress(data, 0) == LearnedCodec().compress(data, 0)


DECODE_CHILD = r"""
import os, sys, threading
os.environ["NUMBA_NUM_THREADS"] = "2"
import torch
torch.set_num_threads(2)
from concurrent.futures import ThreadPoolExecutor
from thermofs.codecs.learned import LearnedCodec
codec = LearnedCodec()
blob = sys.stdin.buffer.read()
items = []
while blob:
    n = int.from_bytes(blob[:4], "big"); m = int.from_bytes(blob[4:8], "big")
    items.append((blob[8:8 + m], n)); blob = blob[8 + m:]
with ThreadPoolExecutor(2) as pool:
    outs = list(pool.map(lambda it: codec.decompress(it[0], it[1], 0), items))
sys.stdout.buffer.write(b"".join(outs))
"""


def test_exact_across_processes_and_threads(codec: LearnedCodec) -> None:
    """Encode here with one thread; decode in another process with 2 threads, chunks concurrently."""
    import torch
    torch.set_num_threads(1)
    chunks = [_text(CHUNK), os.urandom(5000), _text(777), bytes(CHUNK)]
    payloads = [codec.compress(c, 0) for c in chunks]
    stdin = b"".join(len(c).to_bytes(4, "big") + len(p).to_bytes(4, "big") + p
                     for c, p in zip(chunks, payloads, strict=True))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", DECODE_CHILD], input=stdin, capture_output=True,
                         env=env, timeout=300, check=True).stdout
    assert out == b"".join(chunks)


def test_concurrent_threads(codec: LearnedCodec) -> None:
    chunks = [_text(CHUNK)[i * 1000:] + bytes([i]) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        payloads = list(pool.map(lambda c: codec.compress(c, 0), chunks))
        assert payloads == [codec.compress(c, 0) for c in chunks]
        outs = list(pool.map(lambda a: codec.decompress(a[0], len(a[1]), 0), zip(payloads, chunks, strict=True)))
    assert outs == chunks


def test_hostile_payloads(codec: LearnedCodec) -> None:
    data = _text(CHUNK)
    good = codec.compress(data, 0)
    hostile = [b"", b"\x01", b"\x02" + good[1:], os.urandom(len(good)), good[:-1], good + b"\0",
               good[:len(good) // 2], bytes(len(good)), b"\x01" + b"\xff" * 100]
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    hostile.append(bytes(flipped))
    for payload in hostile:
        with pytest.raises(CorruptFrame):
            codec.decompress(payload, len(data), 0)
    # Wrong lengths decode to a wrong stream and are caught too.
    for raw_len in (len(data) - 1, len(data) + 1, 1, 0):
        with pytest.raises(CorruptFrame):
            codec.decompress(good, raw_len, 0)


def test_unknown_model_id() -> None:
    data = _text(3000)
    for models in (None, {}, lambda i: None, {7: b"not a model"}, {7: b""}):
        with pytest.raises(CorruptFrame):
            LearnedCodec(models).decompress(LearnedCodec().compress(data, 0), len(data), 7)
    with pytest.raises(BadSpec):
        LearnedCodec().check_param(1 << 32)


def test_model_blob_is_validated() -> None:
    import io

    import numpy as np
    blob = Model.fresh(12).to_blob()
    assert Model.from_blob(blob).hbits == 12
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays, mw=arrays["mw"][:-1])
    out = io.BytesIO()
    np.savez(out, **bad)
    with pytest.raises(CorruptFrame):
        LearnedCodec({9: out.getvalue()}).decompress(b"\x01" + bytes(8), 10, 9)
    huge = io.BytesIO()
    np.savez_compressed(huge, **dict(arrays, th=np.zeros((5, 1 << 24), np.uint16)))
    with pytest.raises(CorruptFrame):
        LearnedCodec({9: huge.getvalue()}).decompress(b"\x01" + bytes(8), 10, 9)
    pickled = io.BytesIO()
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFrame):
        LearnedCodec({9: pickled.getvalue()}).decompress(b"\x01" + bytes(8), 10, 9)


def test_trained_model_round_trips_and_default_frames_still_decode() -> None:
    data = _text(CHUNK)
    default = LearnedCodec()
    old = default.compress(data, 0)
    progress: list[float] = []
    blob = train_model([_text(3 * CHUNK)], base=None, budget_s=20,
                       progress=lambda done, total: progress.append(done / total)).blob
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    fine = train_model([_text(CHUNK)], base=blob, budget_s=10).blob
    store = {5: blob, 6: fine}
    codec = LearnedCodec(store.get)
    for mid in (5, 6):
        payload = codec.compress(data, mid)
        assert codec.decompress(payload, len(data), mid) == data
        assert LearnedCodec(store).decompress(payload, len(data), mid) == data
    assert codec.decompress(old, len(data), 0) == data


def test_format_is_pinned(codec: LearnedCodec) -> None:
    """The kernel's arithmetic and the default model (id 0) are on-disk format: frames written
    today must decode forever. A change that fails this test needs a new payload format byte (or a
    new model id) with the old kernel and model kept, not a new golden value."""
    import hashlib
    data = b"thermofs learned golden chunk: " * 200 + bytes(range(256)) * 8
    payload = codec.compress(data, 0)
    assert hashlib.sha256(payload).hexdigest()[:32] == "faa4e62877254d461f5dd883b1cc2379"


def test_in_a_frame() -> None:
    """Through the frame layer and the codec table's ``learned`` spec: compressible chunks keep a
    learned frame, random ones fall back to raw."""
    from thermofs.codecs import CodecTable, decode_frame, encode_frame

    table = CodecTable()
    spec = table.parse("learned")
    assert spec.codec.ID == LearnedCodec.ID
    for data, kept in ((_text(CHUNK), LearnedCodec.ID), (os.urandom(CHUNK), 0)):
        frame, info = encode_frame(data, spec)
        assert info.codec_id == kept
        assert decode_frame(frame, table, CHUNK) == data


def test_training_keeps_its_budget_on_its_clock() -> None:
    """The budget is counted on the clock it is given: with a clock that advances a second at every
    look, a 20 s budget primes on at most 15 pieces (75% of the budget) of the 40 given, whatever the
    machine's speed; no wall-clock time is asserted."""
    ticks = iter(range(10**6))
    trained = train_model([_text(40 * CHUNK)], base=None, budget_s=20, clock=lambda: float(next(ticks)))
    assert 0 < trained.stats["primed_bytes"] <= 15 * CHUNK < 40 * CHUNK
    codec = LearnedCodec({1: trained.blob}.get)
    assert codec.decompress(codec.compress(_text(CHUNK), 1), CHUNK, 1) == _text(CHUNK)


def test_fine_tuning_per_kind() -> None:
    """``train_per_kind`` fine-tunes one model per kind of data with enough samples, each from the
    base it is given for that kind; a model is said to improve exactly when it codes its kind's
    held-out samples smaller than its base, and every model decodes what it encodes."""
    import numpy as np

    from thermofs.codecs.learned.codec import default_model_blob
    from thermofs.codecs.learned.train import MIN_KIND_PIECES, train_per_kind

    text = _text(MIN_KIND_PIECES * CHUNK)
    # Binary records (little-endian counters and flags): the probe calls them binary, not floats.
    records = np.zeros((MIN_KIND_PIECES * CHUNK // 16, 4), np.uint32)
    records[:, 0] = np.arange(len(records))
    records[:, 1] = np.arange(len(records)) % 7
    records[:, 3] = 0xDEADBEEF
    binary = records.tobytes()
    samples = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]
    samples += [binary[i:i + CHUNK] for i in range(0, len(binary), CHUNK)]
    samples += [os.urandom(CHUNK)] * MIN_KIND_PIECES  # incompressible: no model for it
    asked: list[str] = []

    def base_of(kind: str) -> bytes:
        asked.append(kind)
        return default_model_blob()

    seen: list[float] = []
    trained = dict(train_per_kind(samples, base_of, budget_s=16, progress=lambda d, t: seen.append(d / t)))
    assert sorted(trained) == sorted(asked) == ["binary", "text"]
    assert seen == sorted(seen) and seen[-1] == 1.0  # one progress over both kinds
    for kind, data in (("text", text[:CHUNK]), ("binary", binary[:CHUNK])):
        model = trained[kind]
        assert model.improves == (model.stats["held_final"] < model.stats["held_base"])
        codec = LearnedCodec({1: model.blob}.get)
        assert codec.decompress(codec.compress(data, 1), CHUNK, 1) == data
    # The text samples repeat one source tree: held-out text chunks were seen while priming.
    assert trained["text"].improves
