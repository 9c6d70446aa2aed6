#!/usr/bin/env bash
# Install everything, then the main job: make a volume, mount it, copy real data in, show its stats,
# cool it (recompress with the cold codec) and show its stats again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
TFS=.venv/bin/thermofs
WORK=$(mktemp -d /tmp/thermofs-demo.XXXXXX)
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
    if grep -qs " $MNT " /proc/self/mountinfo; then
        $TFS umount "$MNT" 2>/dev/null || fusermount -u -z "$MNT"
    fi
}
trap cleanup EXIT

STDLIB=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
$TFS mkfs "$STORE"
$TFS mount "$STORE" "$MNT"
echo "copying the Python standard library ($STDLIB, without site-packages) and the shared corpora into $MNT ..."
mkdir "$MNT/stdlib"
for entry in "$STDLIB"/*; do
    [ "$(basename "$entry")" = site-packages ] || cp -a "$entry" "$MNT/stdlib/"
done
[ -d ../shared/corpora ] && cp -a ../shared/corpora "$MNT/corpora"
if diff -r --no-dereference -x site-packages "$STDLIB" "$MNT/stdlib" >/dev/null; then
    echo "read back: identical to the source"
else
    echo "read back: DIFFERENT from the source" >&2
    exit 1
fi
$TFS stats "$MNT"
echo
echo "recompressing every chunk with the cold codec now (the background cooler would do it once they are cold):"
echo "the default cold path trains dictionaries and fine-tunes learned models (text, binaries) on this volume (~30 s),"
echo "then picks per chunk: learned for text and code, brotli, byte planes or a dictionary elsewhere ..."
$TFS cool "$MNT" --now
diff -r --no-dereference -x site-packages "$STDLIB" "$MNT/stdlib" >/dev/null && echo "read back after cooling: identical"
$TFS stats "$MNT"
$TFS umount "$MNT"
echo "volume left in $STORE (mount it again with: $TFS mount $STORE $MNT)"
