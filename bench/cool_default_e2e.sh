#!/usr/bin/env bash
# End to end, through real mounts: the Python standard library (without site-packages) and one 16 MiB
# file of text and code, in a volume made with the default cold codec (best) and in one made with
# --cold-codec zstd:19, each cooled with `thermofs cool --now`. Prints for each: the time of `cool
# --now`, stored / logical bytes, the chunks by codec, and a cold sequential read of the big file
# after a remount (the kernel's page cache of a FUSE file goes with the mount); every byte is compared.
# Run from the repository root:  bash bench/cool_default_e2e.sh [PYTHON] [CORPORA]
set -euo pipefail
source "$(dirname "$0")/e2e_lib.sh"
PY=${1:-.venv/bin/python}
CORPORA=${2:-../shared/corpora}
TF="$PY -m thermofs"
T=$(mktemp -d "${TMPDIR:-/tmp}/thermofs-e2e.XXXXXX")
STDLIB=$($PY -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
cleanup() {
    for m in "$T"/*/mnt; do
        if grep -qs " $m " /proc/self/mountinfo; then $TF umount "$m" 2>/dev/null || fusermount -u -z "$m"; fi
    done
    rm -rf "$T"
}
trap cleanup EXIT

# The big file: the corpora's text files and stdlib sources, concatenated up to 16 MiB.
$PY - "$CORPORA" "$STDLIB" "$T/big.txt" <<'P'
import sys
from pathlib import Path
corpora, stdlib, out = map(Path, sys.argv[1:])
texts = [*sorted((corpora / "canterbury").glob("*.txt")),
         *sorted(p for p in (corpora / "calgary").glob("*") if p.name.startswith(("book", "paper", "prog"))),
         *sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)]
data = bytearray()
for p in texts:
    data += p.read_bytes()
    if len(data) >= 16 << 20:
        break
out.write_bytes(data[:16 << 20])
P

for cold in best zstd:19; do
    d="$T/${cold/:/}"; mkdir -p "$d/mnt"
    $TF mkfs "$d/store" $([ "$cold" = best ] || echo --cold-codec "$cold") >/dev/null
    $TF mount "$d/store" "$d/mnt" -o nocool
    mkdir "$d/mnt/stdlib"
    for entry in "$STDLIB"/*; do [ "$(basename "$entry")" = site-packages ] || cp -a "$entry" "$d/mnt/stdlib/"; done
    cp "$T/big.txt" "$d/mnt/big.txt"
    cool_timed "$cold" "$d/mnt"
    $TF stats "$d/mnt" --json > "$d/all.json"
    $TF stats "$d/mnt" "$d/mnt/stdlib" --json > "$d/stdlib.json"
    $TF umount "$d/mnt"
    $TF mount "$d/store" "$d/mnt" -o nocool
    start=$(date +%s.%N)
    cat "$d/mnt/big.txt" > /dev/null
    echo "$cold: cold sequential read of big.txt: $(echo "scale=2; 16.777216 / ($(date +%s.%N) - $start)" | bc) MB/s"
    cmp "$T/big.txt" "$d/mnt/big.txt"
    diff -r --no-dereference -x site-packages "$STDLIB" "$d/mnt/stdlib" >/dev/null
    $TF umount "$d/mnt"
done
T="$T" $PY - <<'P'
import json, os
t = os.environ["T"]
for c in ("best", "zstd19"):
    a = json.load(open(f"{t}/{c}/all.json")); s = json.load(open(f"{t}/{c}/stdlib.json"))
    print(f"{c}: stdlib {s['stored_bytes'] / s['logical_bytes']:.1%} of {s['logical_bytes'] / 2**20:.1f} MiB; "
          f"all {a['stored_bytes'] / a['logical_bytes']:.1%}; chunks by codec "
          f"{ {k: v['chunks'] for k, v in a['codecs'].items()} }")
P
