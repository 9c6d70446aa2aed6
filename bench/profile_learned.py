#!/usr/bin/env python3
"""Where the learned codec's time goes, on one core (thread CPU time, 64 KiB chunks of book2+progc).

    python bench/profile_learned.py

- first call: compile (or load from numba's cache) time of the kernel, in a fresh process;
- per chunk: the private copy of the model's tables (Workspace.lease) and the Python wrapping;
- the kernel in its three modes: LEARN (model only), ENCODE and DECODE (model + arithmetic coder);
- the same kernel on tables of 2^12 slots (they fit in L1/L2) against 2^20 (the default): the
  difference is the cost of cache misses on the context tables.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from thermofs.codecs.learned import kernel as K
from thermofs.codecs.learned.codec import decode_with, default_model, encode_with
from thermofs.codecs.learned.model import Model, Workspace

CORPORA = REPO.parent / "shared" / "corpora"
T = time.thread_time


def first_call() -> float:
    code = ("import time; t=time.perf_counter(); from thermofs.codecs.learned import LearnedCodec; "
            "c=LearnedCodec(); c.decompress(c.compress(b'hello', 0), 5, 0); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return float(out.stdout.strip())


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def main() -> None:
    print(f"first call in a new process (import, model load, kernel from numba's cache): {first_call():.2f} s")
    data = (CORPORA / "calgary" / "book2").read_bytes()[:4 << 16] + (CORPORA / "calgary" / "progc").read_bytes()
    chunks = [data[i:i + (1 << 16)] for i in range(0, len(data), 1 << 16)]
    n = len(data)
    for label, model in (("default model (2^20 slots/order, primed)", default_model()),
                         ("fresh model, 2^20 slots/order", Model.fresh(20)),
                         ("fresh model, 2^12 slots/order (cache-resident)", Model.fresh(12))):
        ws = Workspace()
        encode_with(model, b"warm", ws)
        t = T()
        for _ in chunks:
            with ws.lease(model):
                pass
        copy = T() - t
        t = T()
        payloads = [encode_with(model, c, ws) for c in chunks]
        enc = T() - t
        t = T()
        outs = [decode_with(model, p, len(c), ws) for p, c in zip(payloads, chunks, strict=True)]
        dec = T() - t
        assert outs == chunks
        log = K.no_log()
        t = T()
        for c in chunks:
            with ws.lease(model) as (work, ht):
                buf = np.frombuffer(c, np.uint8).copy()
                K.learn_log(buf, len(buf), work.t1, work.th, work.mw, work.a1, work.a2, work.msm, ht,
                            work.lr, log, 1)
        learn = T() - t
        size = sum(map(len, payloads))
        print(f"{label}:\n  {8 * size / n:.3f} bits/byte;"
              f" per 64 KiB chunk: table copy {1000 * copy / len(chunks):.2f} ms"
              f" ({100 * copy / dec:.0f}% of decode); encode {mbps(n, enc):.2f} MB/s, decode {mbps(n, dec):.2f} MB/s,"
              f" model only (LEARN, incl. copy) {mbps(n, learn):.2f} MB/s")


if __name__ == "__main__":
    main()
