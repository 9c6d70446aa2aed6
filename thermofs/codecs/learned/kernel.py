"""The compiled context-mixing kernel: model, mixer, SSE and binary arithmetic coder in one loop.

Everything that decides a probability is integer arithmetic (int64 locals, uint16/int32 tables), so
the encoder and the decoder compute the same numbers bit for bit on any CPU, with any thread count:
there is no float, no BLAS and no reduction whose order could change.

Why the arithmetic coder lives inside this kernel and not in constriction: the model predicts one bit
at a time (8 coder calls per byte), and a Python-level call per bit into any coder library costs
~1 us, i.e. ~8 us/byte before any modelling (< 0.15 MB/s). Measured on this machine: a loop of
constriction ``encode`` calls, one symbol each, codes ~0.3 M symbols/s. The 32-bit binary coder
below (the carry-less coder of lpaq1) is a dozen integer operations per bit.

Model, per bit (lpaq1-style, written from the published design):
- inputs: order-1 (direct table), orders 2, 3, 4, 6 and a word context (hashed, one 16-slot
  block per context and nibble), a match model over the chunk's own past, and a bias;
  each table slot is a probability counter: 12-bit probability, 4-bit count (adaptive rate);
- a gated linear mixer in the logistic domain: one of ``mw.shape[0]`` weight sets chosen by the
  partial byte and the match state, int32 weights (16.16), trained online;
- two APM/SSE stages (partial byte; partial byte with the last 3 bytes hashed).

On-disk format: every integer operation here decides the code. Changing any of them (a table, a
constant, an update rule) makes old payloads undecodable: it needs a new payload format byte
(codec.PAYLOAD_FORMAT) with the old kernel kept to decode the old one.

Tables are passed in, so the same kernel codes a chunk (on a private copy of the model's tables),
primes a model on training data (on the model's own tables), or logs mixer inputs for torch.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from numba import njit

# Inputs of the mixer: o1, o2, o3, o4, o6, word, match, bias.
N_INPUTS = 8
N_HASHED = 5  # o2, o3, o4, o6, word
# Two weight sets per bit, their outputs averaged in the logistic domain: the first chosen by the
# partial byte and the match state (none, short, long), the second by the previous byte and the bit
# position. Each set is trained on its own error.
N_SETS1 = 256 * 3
N_SETS = N_SETS1 + 256 * 8
LOG_COLS = 2 + N_INPUTS + 1  # a log row: set 1, set 2, the inputs, the bit
MATCH_MIN = 6  # bytes hashed to find a match
MATCH_SLOTS = 32  # match counter contexts: min(len, 15) * 2 + expected bit
APM_ROWS1 = 256
APM_ROWS2 = 1 << 16
# A weight set whose output missed by less than 30/4096 is not trained: the update would move its
# weights by < 0.0003; skipping it is 5-10% faster for the same size (measured: 1.8386 bits/byte both).
ESKIP = 30
WMAX = 8 << 16  # mixer weights stay within +-8.0: a prior can be confident, never absolute
NEUTRAL = 2048 << 4  # a counter at p = 1/2 with count 0
SENTINEL = 0xA5C3  # 16 bits coded at p = 1/2 after the data: a cheap check of hostile payloads
SENTINEL_BITS = 16

# Modes of the kernel.
ENCODE = 0
DECODE = 1
LEARN = 2  # update the model on the data, code nothing

# An integer in the kernel: numba makes every integer local an int64, from a literal or from
# np.int64() alike; to mypy those are two types, and a local may hold either.
Int: TypeAlias = int | np.int64


def _squash_table() -> np.ndarray:
    """squash(x) = 4096/(1+e^-x/256) for x in -2048..2047, by lpaq1's 33-point interpolation
    (integer, computed once in Python: the same table everywhere)."""
    ts = [1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994, 3348,
          3607, 3785, 3901, 3975, 4024, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094]
    out = np.empty(4096, np.int64)
    for x in range(-2048, 2048):
        w = x & 127
        i = (x >> 7) + 16
        out[x + 2048] = (ts[i] * (128 - w) + ts[i + 1] * w + 64) >> 7
    return out


def _stretch_table(squash: np.ndarray) -> np.ndarray:
    """stretch(p) = the inverse of squash, for p in 0..4095."""
    out = np.empty(4096, np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = int(squash[x + 2048])
        for i in range(pi, v + 1):
            out[i] = x
        pi = max(pi, v + 1)
    out[pi:] = 2047
    return out


def _rate_table() -> np.ndarray:
    """Counter adaptation rate (16.16) by count: 1/(n+1.5), the last entry the steady-state rate."""
    return np.array([65536 * 2 // (2 * n + 3) for n in range(15)] + [65536 // 20], np.int64)


SQUASH = _squash_table()
STRETCH = _stretch_table(SQUASH)
RATE = _rate_table()


def apm_init(rows: int) -> np.ndarray:
    """APM rows of 24 interpolation points, each the identity map (16-bit probabilities)."""
    row = np.array([int(SQUASH[((j * 2 + 1) * 4096) // 48 - 2048 + 2048]) * 16 for j in range(24)],
                   np.uint16)
    return np.tile(row, rows)


@njit(nogil=True, cache=True, inline="always")
def _hash(a: Int, k: Int) -> Int:
    """A 32-bit hash of a 32-bit value and a salt; all products stay below 2**63."""
    h = ((a & 0xFFFFFFFF) * 0x2C9277B5 + (k + 1) * 0x6F4F2A35) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 13
    return h


@njit(nogil=True, cache=True, inline="always")
def _count(t: np.ndarray, i: Int, y: Int) -> None:
    v = np.int64(t[i])
    p = v >> 4
    n = v & 15
    if y:
        p += ((4095 - p) * RATE[n]) >> 16
    else:
        p -= (p * RATE[n]) >> 16
    if n < 15:
        n += 1
    t[i] = (p << 4) | n


@njit(nogil=True, cache=True, inline="always")
def _dot(mw: np.ndarray, ws: Int, st: np.ndarray) -> Int:
    """The weight set's output in the logistic domain, clamped to the squash table."""
    dot: Int = np.int64(0)
    for k in range(N_INPUTS):
        dot += np.int64(mw[ws, k]) * st[k]
    dot >>= 16
    return 2047 if dot > 2047 else (max(dot, -2047))


@njit(nogil=True, cache=True, inline="always")
def _train(mw: np.ndarray, ws: Int, st: np.ndarray, err: Int) -> None:
    for k in range(N_INPUTS):
        w = mw[ws, k] + ((st[k] * err) >> 14)
        mw[ws, k] = WMAX if w > WMAX else (max(w, -WMAX))


@njit(nogil=True, cache=True, inline="always")
def _code(mode: int, y: Int, p: Int, x1: Int, x2: Int, x: Int, src: np.ndarray, ip: int, out: np.ndarray,
          op: int) -> tuple[Int, Int, Int, Int, int, int]:
    """Code one bit ``y`` (decode: find it) with P(1) = p/4096; returns the new coder state.
    ``op`` comes back -1 when the encoder's output buffer is full."""
    xmid = x1 + ((x2 - x1) >> 12) * p
    if mode == DECODE:
        y = 1 if x <= xmid else 0
    if y:
        x2 = xmid
    else:
        x1 = xmid + 1
    while ((x1 ^ x2) & 0xFF000000) == 0:
        if mode == ENCODE:
            if op >= out.shape[0]:
                return y, x1, x2, x, ip, -1
            out[op] = x2 >> 24
            op += 1
        elif mode == DECODE:
            x = ((x << 8) & 0xFFFFFFFF) | (np.int64(src[ip]) if ip < src.shape[0] else 0)
            ip += 1
        x1 = (x1 << 8) & 0xFFFFFFFF
        x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
    return y, x1, x2, x, ip, op


@njit(nogil=True, cache=True, boundscheck=False)
def run(mode: int, buf: np.ndarray, n: int, src: np.ndarray, out: np.ndarray, t1: np.ndarray, th: np.ndarray,
        mw: np.ndarray, a1: np.ndarray, a2: np.ndarray, msm: np.ndarray, ht: np.ndarray, lr: int, log: np.ndarray,
        log_every: int) -> int:
    """Code (or learn) ``n`` bytes of ``buf``.

    ENCODE: ``buf`` is the input, the code goes to ``out``; returns its length, or -1 if ``out`` is
    too small. DECODE: ``src`` is the code, ``buf`` receives the bytes; returns 0, or -1 when the
    code is inconsistent (sentinel or length). LEARN: updates the tables, returns 0.
    ``log`` (rows of LOG_COLS: the two weight sets, the inputs, the bit) receives every
    ``log_every``-th bit while rows are left; pass a 0-row array for none. ``ht`` is the match
    model's hash table (zeroed by the caller).
    """
    hbits = 0
    while (1 << (hbits + 1)) <= th.shape[1]:
        hbits += 1
    bshift = 32 - (hbits - 4)  # block index = top (hbits - 4) bits of a 32-bit hash
    htbits = 0
    while (1 << (htbits + 1)) <= ht.shape[0]:
        htbits += 1
    nlog = 0
    logcap = log.shape[0]
    bitno = 0

    hb = np.zeros(N_HASHED, np.int64)
    base = np.zeros(N_HASHED, np.int64)
    idx = np.zeros(N_HASHED, np.int64)
    st = np.zeros(N_INPUTS, np.int64)
    st[N_INPUTS - 1] = 256

    x1: Int = np.int64(0)
    x2: Int = np.int64(0xFFFFFFFF)
    x: Int = np.int64(0)
    ip = 0
    op = 0
    srclen = src.shape[0]
    outcap = out.shape[0]
    y: Int = np.int64(0)
    if mode == DECODE:
        for _ in range(4):
            x = (x << 8) | (np.int64(src[ip]) if ip < srclen else 0)
            ip += 1

    c4 = np.int64(0)
    c8 = np.int64(0)
    word: Int = np.int64(0)
    for k in range(N_HASHED):
        hb[k] = _hash(0, k)
    mlen = 0
    mptr: Int = 0

    for pos in range(n):
        c = np.int64(buf[pos]) if mode != DECODE else np.int64(0)
        c0 = np.int64(1)
        j: Int = np.int64(1)
        c1 = c4 & 0xFF
        ebyte = np.int64(buf[mptr]) | 256 if mlen > 0 else np.int64(0)
        h2 = c1 << 8
        for bit in range(8):
            if bit == 0 or bit == 4:
                for k in range(N_HASHED):
                    h = hb[k] if bit == 0 else _hash(hb[k] + c0, 99)
                    b = (h >> bshift) << 4
                    # Slot 0 of a block is a 16-bit check of the context that owns it: another
                    # context's statistics (prior or chunk) would be noise, so the block restarts.
                    tag = h & 0xFFFF
                    if th[k, b] != tag:
                        th[k, b] = tag
                        for s in range(1, 16):
                            th[k, b + s] = NEUTRAL
                    base[k] = b
                j = 1
            # --- predict
            i1 = (c1 << 8) | c0
            st[0] = STRETCH[t1[i1] >> 4]
            for k in range(N_HASHED):
                idx[k] = base[k] + j
                st[k + 1] = STRETCH[th[k, idx[k]] >> 4]
            mctx: Int = -1
            if ebyte != 0 and (ebyte >> (8 - bit)) == c0:
                ebit = (ebyte >> (7 - bit)) & 1
                ml = min(15, mlen)
                mctx = ml * 2 + ebit
                st[N_HASHED + 1] = STRETCH[msm[mctx] >> 4]
                ws = c0 + (256 if mlen < 16 else 512)
            else:
                st[N_HASHED + 1] = 0
                ws = c0
            ws2 = N_SETS1 + ((c1 << 3) | bit)
            dot1 = _dot(mw, ws, st)
            dot2 = _dot(mw, ws2, st)
            pm = SQUASH[((dot1 + dot2) >> 1) + 2048]
            # APM / SSE
            s = (STRETCH[pm] + 2048) * 23
            wt = s & 0xFFF
            r1 = c0 * 24 + (s >> 12)
            r2 = (h2 | c0) * 24 + (s >> 12)
            p1 = (np.int64(a1[r1]) * (4096 - wt) + np.int64(a1[r1 + 1]) * wt) >> 16
            p2 = (np.int64(a2[r2]) * (4096 - wt) + np.int64(a2[r2 + 1]) * wt) >> 16
            p = (pm + p1 + 2 * p2 + 2) >> 2
            if p < 1:
                p = 1
            elif p > 4095:
                p = 4095
            # --- code
            y = (c >> (7 - bit)) & 1  # the decoder's guess is replaced by the coded bit
            y, x1, x2, x, ip, op = _code(mode, y, p, x1, x2, x, src, ip, out, op)
            if op < 0:
                return -1
            # --- log for offline training
            if nlog < logcap and bitno % log_every == 0:
                log[nlog, 0] = ws
                log[nlog, 1] = ws2
                for k in range(N_INPUTS):
                    log[nlog, k + 2] = st[k]
                log[nlog, N_INPUTS + 2] = y
                nlog += 1
            bitno += 1
            # --- update
            _count(t1, i1, y)
            for k in range(N_HASHED):
                _count(th[k], idx[k], y)
            if mctx >= 0:
                _count(msm, mctx, y)
            e1 = (y << 12) - SQUASH[dot1 + 2048]
            e2 = (y << 12) - SQUASH[dot2 + 2048]
            if e1 > ESKIP or e1 < -ESKIP:
                _train(mw, ws, st, e1 * lr)
            if e2 > ESKIP or e2 < -ESKIP:
                _train(mw, ws2, st, e2 * lr)
            g = (y << 16) + (y << 7) - y - y
            ri = r1 + (wt >> 11)
            a1[ri] += (g - np.int64(a1[ri])) >> 7
            ri = r2 + (wt >> 11)
            a2[ri] += (g - np.int64(a2[ri])) >> 7
            c0 = (c0 << 1) | y
            j = (j << 1) | y
        c = c0 & 0xFF
        if mode == DECODE:
            buf[pos] = c
        # --- byte boundary: contexts
        c8 = ((c8 << 8) | (c4 >> 24)) & 0xFFFFFFFF
        c4 = ((c4 << 8) | c) & 0xFFFFFFFF
        word = _hash(word + (c | 32), 5) if (c >= 97 and c <= 122) or (c >= 65 and c <= 90) else 0
        hb[0] = _hash(c4 & 0xFFFF, 0)
        hb[1] = _hash(c4 & 0xFFFFFF, 1)
        hb[2] = _hash(c4, 2)
        hb[3] = _hash(_hash(c4, 3) + (c8 & 0xFFFF), 3)
        hb[4] = _hash(word, 4) if word != 0 else _hash(c4 & 0xFF, 14)
        # --- match model
        if mlen > 0:
            if np.int64(buf[mptr]) == c:
                mlen += 1
                mptr += 1
                mlen = min(mlen, 65535)
            else:
                mlen = 0
        if pos + 1 >= MATCH_MIN:
            mh = _hash(_hash(c4, 21) + (c8 & 0xFFFF), 22) >> (32 - htbits)
            if mlen == 0:
                cand = np.int64(ht[mh])
                if cand > 0 and cand <= pos:
                    ln = 0
                    while ln < 32 and cand - 1 - ln >= 0 and buf[cand - 1 - ln] == buf[pos - ln]:
                        ln += 1
                    if ln >= MATCH_MIN:
                        mlen = ln
                        mptr = cand
            ht[mh] = pos + 1
    # --- sentinel and flush
    if mode == LEARN:
        return nlog
    for bit in range(SENTINEL_BITS):
        want = (SENTINEL >> (SENTINEL_BITS - 1 - bit)) & 1
        y, x1, x2, x, ip, op = _code(mode, want, 2048, x1, x2, x, src, ip, out, op)
        if op < 0 or y != want:
            return -1
    if mode == ENCODE:
        for s in range(4):
            if op >= outcap:
                return -1
            out[op] = (x1 >> (24 - 8 * s)) & 0xFF
            op += 1
        return op
    if ip != srclen:
        return -1
    return 0


def no_log() -> np.ndarray:
    return np.zeros((0, LOG_COLS), np.int32)


@njit(nogil=True, cache=True, boundscheck=False)
def learn_log(buf: np.ndarray, n: int, t1: np.ndarray, th: np.ndarray, mw: np.ndarray, a1: np.ndarray,
              a2: np.ndarray, msm: np.ndarray, ht: np.ndarray, lr: int, log: np.ndarray, log_every: int) -> int:
    """LEARN mode that also returns how many log rows were written."""
    dummy = np.zeros(0, np.uint8)
    return run(LEARN, buf, n, dummy, dummy, t1, th, mw, a1, a2, msm, ht, lr, log, log_every)
