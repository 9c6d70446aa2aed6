# End to end: the same data (shared corpora, three stdlib packages, a float32 safetensors model) in two
# volumes made with --cold-codec zstd:19 and best, cooled with `thermofs cool --now`; prints stored sizes.
# Run from the repository root: bash bench/cool_best_e2e.sh
set -e
T=${TMPDIR:-/tmp}/thermofs-e2e; rm -rf $T; mkdir -p $T
TF=.venv/bin/thermofs
ST=$(find .venv -name "model.safetensors" | head -1)
for cold in zstd:19 best; do
  d=$T/${cold/:/}; $TF mkfs $d/store --cold-codec $cold >/dev/null; mkdir $d/mnt
  $TF mount $d/store $d/mnt -o nocool
  cp -a ../shared/corpora $d/mnt/; cp -a /usr/local/lib/python3.11/email /usr/local/lib/python3.11/asyncio /usr/local/lib/python3.11/json $d/mnt/ 2>/dev/null || cp -a $(python3 -c "import sysconfig;print(sysconfig.get_paths()['stdlib'])")/{email,asyncio,json} $d/mnt/
  cp "$ST" $d/mnt/weights.safetensors
  /usr/bin/time -f "$cold cool: %e s" $TF cool $d/mnt --now > /dev/null
  $TF stats $d/mnt --json > $T/$cold.json
  $TF stats $d/mnt $d/mnt/weights.safetensors --json > $T/$cold.weights.json
  diff -r ../shared/corpora $d/mnt/corpora; cmp "$ST" $d/mnt/weights.safetensors
  fusermount -u $d/mnt
done
python3 - <<'P'
import json
for c in ("zstd:19","best"):
    s=json.load(open(f"${TMPDIR:-/tmp}/thermofs-e2e/{c}.json")); w=json.load(open(f"${TMPDIR:-/tmp}/thermofs-e2e/{c}.weights.json"))
    print(c, "logical", s["logical_bytes"], "stored", s["stored_bytes"], "weights stored", w["stored_bytes"], "of", w["logical_bytes"], {k:v["chunks"] for k,v in s["codecs"].items()})
P
