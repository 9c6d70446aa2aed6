#!/usr/bin/env python3
"""The learned codec against zstd -19, zstd -19 with a trained dictionary and xz -9, per 64 KiB chunk.

    python bench/bench_learned.py [--stdlib-mb 2] [--out bench/out] [--results]

Data: the shared corpora (Canterbury, Calgary, snappy test data) and a fixed sample of the Python
standard library's sources, cut into 64 KiB chunks (the volume's default chunk size); every chunk is
compressed on its own, so each figure keeps random access to 64 KiB.

Codecs, on the same chunks:
- ``learned``     this package's codec with the shipped default model (id 0);
- ``zstd-19``     the zstd CLI, ``zstd -19`` (one process per chunk, stdin to stdout);
- ``zstd-19-dict``zstd level 19 with a 112 KiB dictionary trained (python zstandard, the library the
                  CLI's --train uses) on the chunks of the *other* folds of the same data set
                  (4 folds by file), so no chunk is compressed with a dictionary that has seen it;
- ``xz-9``        the xz CLI, ``xz -9``.
Groups: text and source code (the goals), binaries and mixed data (reported, no goal).

Speed: learned encode and decode per chunk, as thread CPU time (the machine is shared: CPU time
is what one core spends; wall time is reported too). Every learned chunk is decoded and compared
with the original: "exact" counts the chunks that came back identical.

Results: a table on stdout, JSON and a PNG in --out; with --results also bench/results/learned.*.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import zstandard

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from thermofs.codecs.learned import LearnedCodec

CORPORA = REPO.parent / "shared" / "corpora"
CHUNK = 1 << 16
FOLDS = 4
DICT_SIZE = 112640
GOAL_SMALLER = 0.15  # learned >= 15% smaller than zstd -19 with a dictionary (text, source)
GOAL_DECODE_MBS = 1.0

TEXT = {"alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "xargs.1", "book1", "book2",
        "paper1", "paper2", "paper3", "paper4", "paper5", "paper6", "news", "bib", "trans"}
SOURCE = {"fields.c", "grammar.lsp", "cp.html", "progc", "progl", "progp", "html", "html_x_4"}
CODECS = ("learned", "zstd-19", "zstd-19-dict", "xz-9")


def group_of(path: Path) -> str:
    if path.name in TEXT:
        return "text"
    if path.name in SOURCE:
        return "source"
    return "binary+mixed"


def stdlib_files(megabytes: float, seed: int = 7) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    random.Random(seed).shuffle(files)
    out, size = [], 0
    for p in files:
        if size >= megabytes * (1 << 20):
            break
        n = p.stat().st_size
        if n:
            out.append(p)
            size += n
    return sorted(out)


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def cli(cmd: list[str], data: bytes) -> int:
    return len(subprocess.run(cmd, input=data, capture_output=True, check=True).stdout)


def dictionaries(files: list[tuple[str, Path, list[bytes]]]) -> dict[int, zstandard.ZstdCompressor]:
    """One zstd -19 compressor per fold, its dictionary trained on the chunks of the other folds."""
    out = {}
    for fold in range(FOLDS):
        samples = [c[j:j + 4096] for i, (_g, _p, cs) in enumerate(files) if i % FOLDS != fold
                   for c in cs for j in range(0, len(c), 4096)]
        d = zstandard.train_dictionary(DICT_SIZE, samples, level=19)
        out[fold] = zstandard.ZstdCompressor(level=19, dict_data=d)
    return out


def run(stdlib_mb: float) -> dict:
    codec = LearnedCodec()
    codec.compress(b"warm up the compiled kernel", 0)
    sets: dict[str, list[tuple[str, Path, list[bytes]]]] = {"corpora": [], "stdlib": []}
    for p in sorted(CORPORA.rglob("*")):
        if p.is_file() and p.name != "README.md":
            sets["corpora"].append((group_of(p), p, chunks_of(p.read_bytes())))
    for p in stdlib_files(stdlib_mb):
        sets["stdlib"].append(("source", p, chunks_of(p.read_bytes())))
    rows = []
    for set_name, files in sets.items():
        dicts = dictionaries(files)
        for i, (group, path, chunks) in enumerate(files):
            for k, chunk in enumerate(chunks):
                w0, c0 = time.perf_counter(), time.thread_time()
                payload = codec.compress(chunk, 0)
                w1, c1 = time.perf_counter(), time.thread_time()
                back = codec.decompress(payload, len(chunk), 0)
                w2, c2 = time.perf_counter(), time.thread_time()
                rows.append({
                    "set": set_name, "group": "stdlib source" if set_name == "stdlib" else group,
                    "file": path.name if set_name == "corpora" else str(path.relative_to(path.parents[1])),
                    "chunk": k, "raw": len(chunk),
                    "learned": len(payload),
                    "zstd-19": cli(["zstd", "-19", "-q", "-c"], chunk),
                    "zstd-19-dict": len(dicts[i % FOLDS].compress(chunk)),
                    "xz-9": cli(["xz", "-9", "-c"], chunk),
                    "exact": back == chunk,
                    "enc_cpu": c1 - c0, "dec_cpu": c2 - c1, "enc_wall": w1 - w0, "dec_wall": w2 - w1,
                })
    whole_xz = {}
    for name in ("canterbury", "calgary"):
        files = [p for p in sorted((CORPORA / name).iterdir()) if p.is_file()]
        whole_xz[name] = (sum(cli(["xz", "-9", "-c"], p.read_bytes()) for p in files),
                          sum(p.stat().st_size for p in files))
    return {"rows": rows, "whole_file_xz9": whole_xz}


def summarize(result: dict) -> dict:
    rows = result["rows"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    cc = [r for r in rows if r["set"] == "corpora"]
    groups["canterbury+calgary (all)"] = [r for r in cc if r["file"] not in
                                          {p.name for p in (CORPORA / "snappy-testdata").iterdir()}]
    summary = {}
    for g, rs in groups.items():
        raw = sum(r["raw"] for r in rs)
        s = {"chunks": len(rs), "raw": raw}
        for c in CODECS:
            stored = sum(r[c] for r in rs)
            s[c] = {"bytes": stored, "bpb": 8 * stored / raw, "pct_of_raw": 100 * stored / raw}
        s["learned_vs_zstd19dict"] = 1 - s["learned"]["bytes"] / s["zstd-19-dict"]["bytes"]
        s["learned_vs_xz9"] = 1 - s["learned"]["bytes"] / s["xz-9"]["bytes"]
        s["exact"] = sum(r["exact"] for r in rs)
        for kind in ("enc", "dec"):
            s[f"{kind}_MBps_cpu"] = raw / sum(r[f"{kind}_cpu"] for r in rs) / 1e6
            s[f"{kind}_MBps_wall"] = raw / sum(r[f"{kind}_wall"] for r in rs) / 1e6
        summary[g] = s
    xz_bytes = sum(v[0] for v in result["whole_file_xz9"].values())
    xz_raw = sum(v[1] for v in result["whole_file_xz9"].values())
    summary["whole_file_xz9_canterbury+calgary_pct"] = 100 * xz_bytes / xz_raw
    all_raw = sum(r["raw"] for r in rows)
    summary["all"] = {
        "exact": sum(r["exact"] for r in rows), "chunks": len(rows),
        "enc_MBps_cpu": all_raw / sum(r["enc_cpu"] for r in rows) / 1e6,
        "dec_MBps_cpu": all_raw / sum(r["dec_cpu"] for r in rows) / 1e6,
    }
    goals = {}
    for g in ("text", "source", "stdlib source"):
        goals[f"{g}: learned >= 15% smaller than zstd-19-dict"] = (
            summary[g]["learned_vs_zstd19dict"] >= GOAL_SMALLER, round(summary[g]["learned_vs_zstd19dict"], 4))
    goals["decode >= 1 MB/s per core"] = (summary["all"]["dec_MBps_cpu"] >= GOAL_DECODE_MBS,
                                          round(summary["all"]["dec_MBps_cpu"], 3))
    goals["encode >= 0.5 MB/s per core"] = (summary["all"]["enc_MBps_cpu"] >= 0.5,
                                            round(summary["all"]["enc_MBps_cpu"], 3))
    goals["every chunk decodes exactly"] = (summary["all"]["exact"] == len(rows), summary["all"]["exact"])
    summary["goals"] = goals
    return summary


def print_table(summary: dict) -> None:
    print(f"{'group':28} {'chunks':>6} " + " ".join(f"{c:>13}" for c in CODECS)
          + f" {'vs dict':>8} {'enc MB/s':>9} {'dec MB/s':>9}")
    for g, s in summary.items():
        if not isinstance(s, dict) or "learned" not in s:
            continue
        cells = " ".join(f"{s[c]['bpb']:6.3f} {s[c]['pct_of_raw']:5.1f}%" for c in CODECS)
        print(f"{g:28} {s['chunks']:>6} {cells} {100 * s['learned_vs_zstd19dict']:7.1f}% "
              f"{s['enc_MBps_cpu']:9.2f} {s['dec_MBps_cpu']:9.2f}")
    print("(cells: bits per byte, % of raw; vs dict: how much smaller learned is than zstd-19-dict)")
    print(f"whole-file xz -9 on Canterbury+Calgary: {summary['whole_file_xz9_canterbury+calgary_pct']:.1f}%")
    for name, (ok, value) in summary["goals"].items():
        print(f"  [{'met' if ok else 'MISSED'}] {name}: {value}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = [g for g, s in summary.items() if isinstance(s, dict) and "learned" in s]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(CODECS)
    for i, c in enumerate(CODECS):
        ax.bar([x + i * width for x in range(len(groups))], [summary[g][c]["bpb"] for g in groups],
               width, label=c)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], groups, fontsize=8)
    ax.set_ylabel("bits per byte (64 KiB chunks)")
    ax.set_title("learned vs zstd -19, zstd -19 + dictionary, xz -9, per 64 KiB chunk")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stdlib-mb", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--results", action="store_true", help="also copy the run to bench/results/learned.*")
    args = ap.parse_args()
    t0 = time.time()
    result = run(args.stdlib_mb)
    summary = summarize(result)
    print_table(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python bench/bench_learned.py " + " ".join(sys.argv[1:]), "seconds": time.time() - t0,
           "summary": summary, **result}
    (args.out / "learned.json").write_text(json.dumps(doc, indent=1))
    plot(summary, args.out / "learned.png")
    if args.results:
        for ext in ("json", "png"):
            shutil.copy(args.out / f"learned.{ext}", BENCH / "results" / f"learned.{ext}")


if __name__ == "__main__":
    main()
