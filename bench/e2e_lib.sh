# Shared by the end-to-end scripts (sourced; expects $TF, the thermofs command).

# cool_timed LABEL MOUNTPOINT: `thermofs cool --now` on the mount, printing how long it took.
cool_timed() {
    local start
    start=$(date +%s.%N)
    $TF cool "$2" --now >/dev/null
    echo "$1: cool --now took $(echo "$(date +%s.%N) - $start" | bc) s"
}
