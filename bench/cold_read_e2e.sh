#!/usr/bin/env bash
# A cold sequential read of learned data through a mount: a file of text and code (the corpora's text
# files and the standard library's sources, concatenated) written into a volume made with
# --cold-codec learned, cooled with `thermofs cool --now`, then after a remount read with `cat`: the
# first MiB apart (it loads the learned kernel and model), then the rest, timed, with the CPU time the
# daemon spent meanwhile ("cores busy"). Every round compares the bytes read with the file.
# Run from the repository root:  bash bench/cold_read_e2e.sh [PYTHON] [CORPORA] [MIB] [ROUNDS]
set -euo pipefail
source "$(dirname "$0")/e2e_lib.sh"
PY=${1:-.venv/bin/python}
CORPORA=${2:-../shared/corpora}
MIB=${3:-8}
ROUNDS=${4:-4}
TF="$PY -m thermofs"
T=$(mktemp -d "${TMPDIR:-/tmp}/thermofs-coldread.XXXXXX")
cleanup() {
    if grep -qs " $T/mnt " /proc/self/mountinfo; then $TF umount "$T/mnt" 2>/dev/null || fusermount -u -z "$T/mnt"; fi
    rm -rf "$T"
}
trap cleanup EXIT

$PY - "$CORPORA" "$T/big.txt" "$MIB" <<'P'
import sys, sysconfig
from pathlib import Path
corpora, out, mib = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
stdlib = Path(sysconfig.get_paths()["stdlib"])
texts = [*sorted((corpora / "canterbury").glob("*.txt")),
         *sorted(p for p in (corpora / "calgary").glob("*") if p.name.startswith(("book", "paper", "prog"))),
         *sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)]
data = bytearray()
for p in texts:
    data += p.read_bytes()
    if len(data) >= mib << 20:
        break
out.write_bytes(data[:mib << 20])
P

mkdir "$T/mnt"
$TF mkfs "$T/store" --cold-codec learned >/dev/null
$TF mount "$T/store" "$T/mnt" -o nocool
cp "$T/big.txt" "$T/mnt/big.txt"
cool_timed "learned, $MIB MiB" "$T/mnt"
$TF umount "$T/mnt"
for round in $(seq "$ROUNDS"); do
    $TF mount "$T/store" "$T/mnt" -o nocool
    pid=$(pgrep -f "thermofs mount .*$T/store" | head -1)
    exec 3<"$T/mnt/big.txt"
    head -c 1048576 <&3 >/dev/null
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    start=$(date +%s.%N)
    cat <&3 >/dev/null
    end=$(date +%s.%N)
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    exec 3<&-
    ticks=$(getconf CLK_TCK)
    echo "round $round: cold sequential read after the first MiB: $(echo "scale=2; ($MIB - 1) * 1.048576 / ($end - $start)" | bc) MB/s," \
         "daemon $(echo "scale=2; ($c1 - $c0) / $ticks / ($end - $start)" | bc) cores busy"
    cmp "$T/big.txt" "$T/mnt/big.txt"
    $TF umount "$T/mnt"
done
