#!/usr/bin/env python3
"""The cold path (spec ``best``, a new volume's cold codec) against its baselines, in one run.

    python bench/bench_coldpath.py [--corpora ../shared/corpora] [--stdlib-mb 3] [--lib-mb 2]
                                   [--model-budget 30] [--out FILE]

Data, cut into 64 KiB chunks file by file as a volume does: the shared corpora (text, code, a few
binaries), a sample of the Python standard library's .py sources, and a sample of shared objects from
/usr/lib. One dictionary and one learned model per kind are trained on a quarter of the chunks, as
``thermofs train`` does on a sample of the volume (the model fine-tuned from the shipped one within
``--model-budget`` seconds, kept where it codes its kind's held-out chunks smaller). Measured, all in
this run:

- per chunk stored bytes (whole frames) of ``best``, ``exhaustive`` (every candidate of every codec),
  zstd -19 with the dictionary (``dict``), and the ``zstd -19`` and ``xz -9`` tools run on the chunk;
  and the learned codec alone on the text and code chunks with the volume's models and the shipped one;
- cooling throughput: ``best`` and ``exhaustive`` encoding the text and code chunks on 1 and on 2
  threads (wall time; the cooler's pool has one thread per core), and the ratio between them;
- the learned codec's decode speed, per core (thread CPU time) and on 2 threads (wall time);
- the learned codec's gain over the fast codecs chunk by chunk, by threshold (MIN_LEARNED_GAIN);
- how often ``best`` kept a learned frame because it beat the fast codecs' size floor without
  encoding them, and how often that was wrong.

The machine is shared: speeds are compared within the run, and vary by ~15% from run to run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from thermofs.codecs import CodecTable, Resources, add_trained, decode_frame, encode_frame, train_dictionaries
from thermofs.codecs.coldpath import MIN_LEARNED_GAIN
from thermofs.codecs.frame import HEADER_SIZE
from thermofs.codecs.learned import LearnedCodec
from thermofs.codecs.learned.codec import default_model_blob
from thermofs.codecs.learned.train import train_per_kind
from thermofs.codecs.probe import TEXT, analyse
from thermofs.policy.training import AUTO_MODEL_BUDGET

sys.path.insert(0, str(REPO / "bench"))
from bench_codecs import timed as wall
from bench_codecs import tool_size

CHUNK = 64 << 10
TOOLS = {"zstd -19": ["zstd", "-19", "-c", "-q"], "xz -9": ["xz", "-9", "-c"]}
THRESHOLDS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12)


def chunk_files(paths: Sequence[Path], group: str) -> list[tuple[str, bytes]]:
    out = []
    for p in paths:
        data = p.read_bytes()
        out += [(group, data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    return [(g, c) for g, c in out if c]


def sample(paths: list[Path], megabytes: float, seed: int, max_file: int = 1 << 62) -> list[Path]:
    rng = random.Random(seed)
    paths = sorted(paths)
    rng.shuffle(paths)
    out, total = [], 0
    for p in paths:
        size = p.stat().st_size
        if total >= megabytes * 1e6:
            break
        if size <= max_file:
            out.append(p)
            total += size
    return out


def load(corpora: Path, stdlib_mb: float, lib_mb: float) -> list[tuple[str, bytes]]:
    files = sorted(p for p in corpora.rglob("*") if p.is_file() and p.name != "README.md")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    py = [p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts]
    libdir = Path("/usr/lib") / (sysconfig.get_config_var("MULTIARCH") or "")
    libs = [p for p in libdir.glob("*.so*") if p.is_file() and not p.is_symlink()]
    return (chunk_files(files, "corpora") + chunk_files(sample(py, stdlib_mb, 3), "stdlib")
            + chunk_files(sample(libs, lib_mb, 3, 600_000), "usrlib"))


@dataclass
class Run:
    """One pass over chunks on a pool: wall time, the threads' summed CPU time, and the outputs."""

    wall: float
    cpu: float
    out: list[bytes]

    def per_core(self, nbytes: int) -> float:
        """MB per second of one core's CPU time: what the machine's load does not change."""
        return nbytes / self.cpu / 1e6

    @property
    def cores(self) -> float:
        """Cores busy on average (summed thread CPU / wall): 2.0 when two threads run at once."""
        return self.cpu / self.wall


def on_pool(fn: Callable[[bytes], bytes], items: list[bytes], threads: int) -> Run:
    def timed_fn(item: bytes) -> tuple[float, bytes]:
        t = time.thread_time()
        out = fn(item)
        return time.thread_time() - t, out

    with ThreadPoolExecutor(threads) as pool:
        elapsed, done = wall(lambda: list(pool.map(timed_fn, items)))
    return Run(elapsed, sum(c for c, _o in done), [o for _c, o in done])


def encode_all(table: CodecTable, spec: str, chunks: list[bytes], threads: int) -> Run:
    parsed = table.parse(spec)
    return on_pool(lambda c: encode_frame(c, parsed)[0], chunks, threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    ap.add_argument("--stdlib-mb", type=float, default=3.0)
    ap.add_argument("--lib-mb", type=float, default=2.0)
    ap.add_argument("--model-budget", type=float, default=AUTO_MODEL_BUDGET,
                    help="seconds to fine-tune the models (0: the shipped model only)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    chunks = load(args.corpora, args.stdlib_mb, args.lib_mb)
    raws = [c for _g, c in chunks]
    kinds = [analyse(c) for c in raws]
    textlike = [i for i, k in enumerate(kinds) if k.kind == TEXT]
    resources = Resources()
    add_trained(resources, train_dictionaries(raws[::4]))
    models = train_per_kind(raws[::4], lambda _kind: default_model_blob(), args.model_budget) \
        if args.model_budget > 0 else []
    for kind, model in models:
        if model.improves:
            resources.add_model(model.blob, kind=kind)
        print(f"{kind} model: held-out chunks {model.stats.get('held_final', 0):,.0f} B against "
              f"{model.stats.get('held_base', 0):,.0f} B with the shipped one: "
              f"{'kept' if model.improves else 'not kept'}", file=sys.stderr)
    table = CodecTable(resources)
    encode_frame(b"warm up the kernel" * 100, table.parse("learned"))
    total = sum(map(len, raws))
    text_bytes = sum(len(raws[i]) for i in textlike)
    print(f"{len(raws)} chunks, {total / 1e6:.1f} MB; text and code: {len(textlike)} chunks, "
          f"{text_bytes / 1e6:.1f} MB", file=sys.stderr)

    text = [raws[i] for i in textlike]
    best1 = encode_all(table, "best", text, 1)
    best2 = encode_all(table, "best", text, 2)
    ex2 = encode_all(table, "exhaustive", text, 2)
    best_text, ex_text = best2.out, ex2.out
    others = [i for i in range(len(raws)) if i not in set(textlike)]
    best_other = encode_all(table, "best", [raws[i] for i in others], 2).out
    ex_other = encode_all(table, "exhaustive", [raws[i] for i in others], 2).out
    best = dict(zip(textlike + others, best_text + best_other, strict=True))
    exhaustive = dict(zip(textlike + others, ex_text + ex_other, strict=True))
    single = {s: [len(encode_frame(c, table.parse(s))[0]) for c in raws] for s in ("zstd:19", "dict")}
    learned = [encode_frame(c, table.parse("learned"))[0] for c in raws]
    tools = {name: [tool_size(cmd, c) for c in raws] for name, cmd in TOOLS.items()}
    assert all(decode_frame(best[i], table, CHUNK) == raws[i] for i in range(len(raws)))
    shipped = LearnedCodec()
    learned_text = {"volume models": sum(len(learned[i]) for i in textlike) / text_bytes,
                    "shipped model": sum(HEADER_SIZE + len(shipped.compress(raws[i], 0))
                                         for i in textlike) / text_bytes}

    # The learned codec's decode: per core (thread CPU time), and two chunks at once.
    lframes = [(f, raws[i]) for i, f in enumerate(learned) if f[3] == LearnedCodec.ID]
    by_frame = dict(lframes)

    def decode(frame: bytes) -> bytes:
        raw = decode_frame(frame, table, CHUNK)
        assert raw == by_frame[frame]
        return raw

    dec1 = on_pool(decode, [f for f, _r in lframes], 1)
    dec2 = on_pool(decode, [f for f, _r in lframes], 2)
    lbytes = sum(len(r) for _f, r in lframes)

    groups = sorted({g for g, _c in chunks})
    rows: dict[str, dict[str, float]] = {}
    for name, idx in [*((g, [i for i, (gg, _c) in enumerate(chunks) if gg == g]) for g in groups),
                      ("text and code", textlike), ("all", list(range(len(raws))))]:
        raw_n = sum(len(raws[i]) for i in idx)
        rows[name] = {"raw": raw_n, "best": sum(len(best[i]) for i in idx) / raw_n,
                      "exhaustive": sum(len(exhaustive[i]) for i in idx) / raw_n,
                      "zstd:19": sum(single["zstd:19"][i] for i in idx) / raw_n,
                      "dict": sum(single["dict"][i] for i in idx) / raw_n,
                      **{k: sum(v[i] for i in idx) / raw_n for k, v in tools.items()}}
    print("\nstored / raw, per 64 KiB chunk (whole frames; the tools' whole outputs):")
    cols = ["best", "exhaustive", "dict", "zstd:19", "zstd -19", "xz -9"]
    print(f"| set | MB | {' | '.join(cols)} | best vs dict | best vs exhaustive |")
    print("|---|---:|" + "---:|" * (len(cols) + 2))
    for name, r in rows.items():
        vs_dict, vs_ex = 100 * (1 - r["best"] / r["dict"]), 100 * (r["best"] / r["exhaustive"] - 1)
        print(f"| {name} | {r['raw'] / 1e6:.1f} | " + " | ".join(f"{r[c]:.4f}" for c in cols)
              + f" | {vs_dict:.1f}% smaller | {vs_ex:+.2f}% |")

    print("\nthe learned codec alone on the text and code chunks: "
          + ", ".join(f"{k} {v:.4f} ({100 * (1 - v / rows['text and code']['dict']):.1f}% smaller than dict)"
                      for k, v in learned_text.items()))

    chosen: dict[str, int] = {}
    for f in best.values():
        chosen[table.get(f[3]).name] = chosen.get(table.get(f[3]).name, 0) + 1
    shortcut = [i for i in range(len(raws)) if best[i][3] == LearnedCodec.ID]
    wrong = [i for i in shortcut
             if len(learned[i]) > (1 - MIN_LEARNED_GAIN) * min(single["zstd:19"][i], single["dict"][i])]
    print(f"\ncodecs chosen by best: {chosen}; learned frames kept below the threshold against the fast "
          f"codecs' real sizes: {len(wrong)} of {len(shortcut)}")

    print("\nthe learned codec against the best fast frame (zstd -19, dict), text and binary chunks:")
    print("| threshold | chunks on learned | bytes saved | bytes saved by the chunks below the next threshold |")
    print("|---:|---:|---:|---:|")
    gains = []
    for i in range(len(raws)):
        fast = min(single["zstd:19"][i], single["dict"][i])
        if learned[i][3] == LearnedCodec.ID and kinds[i].kind in (TEXT, "binary"):
            gains.append(((fast - len(learned[i])) / fast, fast - len(learned[i])))
    sweep = []
    for k, th in enumerate(THRESHOLDS):
        kept = [s for g, s in gains if g >= th]
        nxt = THRESHOLDS[k + 1] if k + 1 < len(THRESHOLDS) else 1.0
        band = [s for g, s in gains if th <= g < nxt]
        sweep.append({"threshold": th, "chunks": len(kept), "saved": sum(kept), "band_chunks": len(band),
                      "band_saved": sum(band)})
        print(f"| {th:.2f} | {len(kept)} | {sum(kept):,} | {len(band)} chunks, "
              f"{sum(band) / max(1, len(band)):,.0f} B each |")
    avg = sum(s for g, s in gains if g > 0) / max(1, sum(1 for g, _s in gains if g > 0))
    print(f"average saving of a learned chunk that saves anything: {avg:,.0f} B")

    speeds = {"best_per_core_MBps": best1.per_core(text_bytes), "best_1thread_MBps": text_bytes / best1.wall / 1e6,
              "best_2threads_MBps": text_bytes / best2.wall / 1e6, "best_2threads_cores": best2.cores,
              "exhaustive_per_core_MBps": ex2.per_core(text_bytes),
              "exhaustive_2threads_MBps": text_bytes / ex2.wall / 1e6, "exhaustive_2threads_cores": ex2.cores,
              "learned_decode_per_core_MBps": dec1.per_core(lbytes),
              "learned_decode_2threads_MBps": lbytes / dec2.wall / 1e6, "learned_decode_2threads_cores": dec2.cores}
    print(f"\ncooling text and code ({text_bytes / 1e6:.1f} MB): best {best1.per_core(text_bytes):.2f} MB/s per core "
          f"(CPU time); wall: {text_bytes / best1.wall / 1e6:.2f} MB/s on 1 thread, "
          f"{text_bytes / best2.wall / 1e6:.2f} MB/s on 2 threads ({best2.cores:.2f} cores busy); exhaustive "
          f"{ex2.per_core(text_bytes):.2f} MB/s per core, {text_bytes / ex2.wall / 1e6:.2f} MB/s on 2 threads "
          f"({ex2.cores:.2f} cores): best costs {ex2.cpu / best2.cpu:.2f}x less CPU")
    print(f"learned decode ({len(lframes)} frames): {dec1.per_core(lbytes):.2f} MB/s per core (CPU time); "
          f"{lbytes / dec2.wall / 1e6:.2f} MB/s on 2 threads ({dec2.cores:.2f} cores busy), "
          f"{lbytes / dec1.wall / 1e6:.2f} MB/s on 1")
    if args.out:
        args.out.write_text(json.dumps({"sets": rows, "chosen": chosen, "sweep": sweep, "speeds": speeds,
                                        "floor_misses": [len(wrong), len(shortcut)], "learned_text": learned_text,
                                        "models": {k: m.stats | {"kept": m.improves} for k, m in models}},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
