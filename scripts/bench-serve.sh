#!/usr/bin/env bash
# Benchmarks `mover serve` (issue 15) on the benchmark image (scripts/make-bench-image.sh):
#
#   scripts/bench-serve.sh [--size-gib 4] [--data-mib 1024] [--runs 3] [--memory 256MiB]
#                          [--mover PATH] [--out DIR]
#
# In one run, with a warm page cache (the repository is read once first):
#   - sequential read of the whole export with nbdcopy (4 connections) to null:, beside
#     `mover restore --to -` of the same snapshot to /dev/null (target: >= 0.7x its rate);
#   - random 4 KiB reads from one connection (in data runs only): p50 with every chunk cached (the same 2000
#     offsets within 64 MiB read twice; target <= 0.2 ms),
#     and p99 on a fresh server (uncached: one chunk's fetch and decode each);
#   - the time from starting `mover serve` to the first byte read (target <= 0.5 s);
#   - peak RSS of the server (target <= --memory + 64 MiB).
# Writes DIR/raw.txt (every measurement) and DIR/summary.md (medians).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_GIB=4
DATA_MIB=1024
RUNS=3
MEMORY=256MiB
MOVER=target/release/mover
OUT=
while (($#)); do
    case $1 in
    --size-gib) SIZE_GIB=$2; shift 2 ;;
    --data-mib) DATA_MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --memory) MEMORY=$2; shift 2 ;;
    --mover) MOVER=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
for t in nbdcopy nbdinfo pgrep python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench-serve: $t is missing; run scripts/setup.sh --bench" >&2; exit 1; }
done
[[ -x $MOVER ]] || { echo "bench-serve: $MOVER not built (cargo build --release -p mover-cli)" >&2; exit 1; }
OUT=${OUT:-bench/runs/$(date +%Y-%m-%d)-serve}
mkdir -p "$OUT"
WORK=$(mktemp -d)
SRV=
cleanup() {
    [[ -n $SRV ]] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
RAW=$OUT/raw.txt
: >"$RAW"

IMG=bench/work/bench-${SIZE_GIB}g-${DATA_MIB}m.img
mkdir -p bench/work
scripts/make-bench-image.sh "$IMG" "$SIZE_GIB" "$DATA_MIB"
REPO=$WORK/repo
"$MOVER" init -r "$REPO" -q
"$MOVER" backup -r "$REPO" --source "$IMG" --name bench -q >/dev/null
find "$REPO" -type f -exec cat {} + >/dev/null
SOCK=$WORK/s.sock
URI="nbd+unix:///bench?socket=$SOCK"

now() { date +%s.%N; }
# start_server RUN: starts `mover serve` under /usr/bin/time; waits until a byte can be read;
# records the seconds that took.
start_server() {
    local t0
    t0=$(now)
    /usr/bin/time -v -o "$WORK/time.txt" "$MOVER" serve -r "$REPO" latest --name bench \
        --socket "$SOCK" --memory "$MEMORY" -q >/dev/null 2>"$WORK/serve.log" &
    SRV=$!
    until python3 scripts/nbd-random-read.py "$SOCK" bench 1 0 >/dev/null 2>&1; do
        sleep 0.01
    done
    echo "first_byte_s $1 $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')" >>"$RAW"
}
stop_server() {
    # $SRV is /usr/bin/time; the server is its only child.
    kill -TERM "$(pgrep -P "$SRV")"
    wait "$SRV" || true
    SRV=
    echo "peak_rss_mib $1 $(awk -F: '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$WORK/time.txt")" >>"$RAW"
}

for run in $(seq "$RUNS"); do
    t0=$(now)
    "$MOVER" restore -r "$REPO" latest --name bench --to - -q >/dev/null
    echo "restore_s $run $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" >>"$RAW"

    start_server "$run"
    nbdinfo --map "$URI" >"$WORK/map.txt"
    python3 scripts/nbd-random-read.py "$SOCK" bench 200 1 $((1 << 62)) "$WORK/map.txt" |
        awk -v r="$run" '{ print "uncached_" $1 " " r " " $2 }' >>"$RAW"
    t0=$(now)
    nbdcopy --connections=4 "$URI" null:
    echo "nbdcopy_s $run $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" >>"$RAW"
    # The same 2000 offsets within 64 MiB twice: the second pass reads only cached chunks.
    python3 scripts/nbd-random-read.py "$SOCK" bench 2000 2 $((64 << 20)) "$WORK/map.txt" >/dev/null
    python3 scripts/nbd-random-read.py "$SOCK" bench 2000 2 $((64 << 20)) "$WORK/map.txt" |
        awk -v r="$run" '{ print "cached_" $1 " " r " " $2 }' >>"$RAW"
    stop_server "$run"
done

python3 - "$RAW" "$IMG" "$MEMORY" >"$OUT/summary.md" <<'PY'
import os, statistics, sys
raw, img, memory = sys.argv[1:]
vals = {}
for line in open(raw):
    k, _, v = line.split()
    vals.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
size = os.path.getsize(img)
print(f"# mover serve, {size / 2**30:.1f} GiB image, --memory {memory}, warm page cache\n")
print("| measure | median |\n|---|---|")
for k in sorted(med):
    print(f"| {k} | {med[k]:.4g} |")
ratio = med["restore_s"] / med["nbdcopy_s"]
print(f"\nnbdcopy rate / restore rate: {ratio:.2f} (target >= 0.7)")
PY
cat "$OUT/summary.md"
