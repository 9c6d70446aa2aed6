# End to end: the same data (shared corpora, three stdlib packages, a float32 safetensors model) in two
# volumes made with --cold-codec zstd:19 and exhaustive, cooled with `thermofs cool --now`; prints stored sizes.
# Run from the repository root (bench extra installed): bash bench/cool_exhaustive_e2e.sh
set -euo pipefail
source "$(dirname "$0")/e2e_lib.sh"
TF=.venv/bin/thermofs
PY=.venv/bin/python
export T="${TMPDIR:-/tmp}/thermofs-e2e"
rm -rf "$T"; mkdir -p "$T"
ST=$(find .venv -name "model.safetensors" -path "*minilm*" | head -1)
STDLIB=$($PY -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
for cold in zstd:19 exhaustive; do
  d="$T/${cold/:/}"; $TF mkfs "$d/store" --cold-codec "$cold" >/dev/null; mkdir "$d/mnt"
  $TF mount "$d/store" "$d/mnt" -o nocool
  cp -a ../shared/corpora "$STDLIB/email" "$STDLIB/asyncio" "$STDLIB/json" "$d/mnt/"
  cp "$ST" "$d/mnt/weights.safetensors"
  cool_timed "$cold" "$d/mnt"
  $TF stats "$d/mnt" --json > "$T/$cold.json"
  $TF stats "$d/mnt" "$d/mnt/weights.safetensors" --json > "$T/$cold.weights.json"
  diff -r ../shared/corpora "$d/mnt/corpora"; cmp "$ST" "$d/mnt/weights.safetensors"
  fusermount -u "$d/mnt"
done
$PY - <<'P'
import json, os
t = os.environ["T"]
for c in ("zstd:19", "exhaustive"):
    s = json.load(open(f"{t}/{c}.json")); w = json.load(open(f"{t}/{c}.weights.json"))
    print(f"{c}: logical {s['logical_bytes']}, stored {s['stored_bytes']}; weights stored {w['stored_bytes']} "
          f"of {w['logical_bytes']}; rest stored {s['stored_bytes'] - w['stored_bytes']} of "
          f"{s['logical_bytes'] - w['logical_bytes']}; chunks by codec "
          f"{ {k: v['chunks'] for k, v in s['codecs'].items()} }")
P
