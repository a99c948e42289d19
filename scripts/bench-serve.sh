#!/usr/bin/env bash
# Benchmarks `mover serve` (issue 15) on the benchmark image (scripts/make-bench-image.sh):
#
#   scripts/bench-serve.sh [--size-gib 4] [--data-mib 1024] [--runs 3] [--memory 256MiB]
#                          [--mover PATH] [--out DIR]
#
# In one run, with a warm page cache (the repository is read once first):
#   - random 4 KiB reads from one connection (in data runs only): p99 on a fresh server of up
#     to 1000 reads, each in a different chunk (uncached: one chunk's fetch and decode each),
#     beside the server's own p99 of those fetches and of answering those reads (its
#     `stopped` event);
#   - then on a second fresh server: sequential read of the whole export with nbdcopy
#     (--connections=4; nbdcopy caps them at one per core) to null:, beside `mover restore
#     --to -` of the same snapshot to /dev/null (target: >= 0.7x its rate), and the CPU
#     seconds each takes (the server's and nbdcopy's own, apart); and p50 with every chunk
#     cached (the same 2000 offsets within 64 MiB read twice; target <= 0.2 ms);
#   - the time from starting `mover serve` to the first byte read (target <= 0.5 s);
#   - peak RSS of each server, the one that served the random reads and the one that copied
#     (target <= --memory + 64 MiB);
#   - one chunk's fetch and decode, for the uncached target (<= 2x): `mover restore --threads 1
#     --to -` divided by the snapshot's data chunks (an upper bound: it also writes each chunk);
#   - with restic and /dev/fuse: reading the image through `restic mount` (target: nbdcopy >= 3x).
# Writes DIR/README.md (machine, software), DIR/raw.txt (every measurement) and DIR/summary.md
# (medians, against the targets).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

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
    *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
for t in nbdcopy nbdinfo pgrep python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench-serve: $t is missing; run scripts/setup.sh --bench" >&2; exit 1; }
done
[[ -x $MOVER ]] || { echo "bench-serve: $MOVER not built (cargo build --release -p mover-cli)" >&2; exit 1; }
OUT=${OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S)-serve}
mkdir -p "$OUT"
WORK=$(mktemp -d)
SRV= RESTIC_MNT=
cleanup() {
    [[ -n $SRV ]] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
    [[ -n $RESTIC_MNT ]] && { umount "$RESTIC_MNT" 2>/dev/null; wait 2>/dev/null; }
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
# The disk is named `bench`: that is the export's name.
"$MOVER" backup -r "$REPO" --source "bench=$IMG" --name bench -q >/dev/null
read -r DATA_CHUNKS CHUNK < <("$MOVER" snapshots -r "$REPO" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)[-1]["disks"][0]
print((d["source_bytes"] - d["bytes_zero"]) // d["chunk_size"], d["chunk_size"])')
# Uncached reads: each in a different data chunk, so none finds its chunk cached.
UNCACHED=$((DATA_CHUNKS > 1001 ? 1000 : DATA_CHUNKS - 1))
RESTIC=
if command -v restic >/dev/null && [[ -c /dev/fuse ]]; then
    RESTIC=1
    export RESTIC_REPOSITORY=$WORK/restic RESTIC_PASSWORD=bench
    restic init -q >/dev/null
    restic backup -q "$(realpath "$IMG")" >/dev/null
    find "$WORK/restic" -type f -exec cat {} + >/dev/null
fi
find "$REPO" -type f -exec cat {} + >/dev/null
SOCK=$WORK/s.sock
URI="nbd+unix:///bench?socket=$SOCK"

now() { date +%s.%N; }
# start_server RUN [first]: starts `mover serve --json` under /usr/bin/time; waits until a
# byte can be read; with `first`, records the seconds that took.
start_server() {
    local t0
    t0=$(now)
    /usr/bin/time -v -o "$WORK/time.txt" "$MOVER" serve -r "$REPO" latest --name bench \
        --socket "$SOCK" --memory "$MEMORY" --json >"$WORK/serve.json" 2>"$WORK/serve.log" &
    SRV=$!
    until python3 scripts/nbd-random-read.py "$SOCK" bench 1 0 >/dev/null 2>&1; do
        sleep 0.01
    done
    [[ ${2:-} == first ]] || return 0
    echo "first_byte_s $1 $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')" >>"$RAW"
}
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# stop_server RUN KIND: stops the server, records its peak RSS as KIND_peak_rss_mib; for the
# `random` server, also the median and 99th percentile of the chunks it fetched on demand (its
# `stopped` event).
stop_server() {
    # $SRV is /usr/bin/time; the server is its only child.
    kill -TERM "$(pgrep -P "$SRV")"
    wait "$SRV" || true
    SRV=
    echo "${2}_peak_rss_mib $1 $(awk -F: '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$WORK/time.txt")" >>"$RAW"
    [[ $2 == random ]] || return 0
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    v = json.loads(line)
    if v["type"] == "stopped":
        e = v["data"]["exports"][0]
        for p in ("p50", "p99"):
            for what in ("demand_fetch_", "read_"):
                key = what + p + "_ms"
                print("server_" + key, sys.argv[2], e[key])' \
        "$WORK/serve.json" "$1" >>"$RAW"
}

for run in $(seq "$RUNS"); do
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/restore-cpu.txt" \
        "$MOVER" restore -r "$REPO" latest --name bench --to - -q >/dev/null
    echo "restore_s $run $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" >>"$RAW"
    echo "restore_cpu_s $run $(awk '{ print $1 + $2 }' "$WORK/restore-cpu.txt")" >>"$RAW"
    t0=$(now)
    "$MOVER" restore -r "$REPO" latest --name bench --to - -q --threads 1 >/dev/null
    echo "chunk_fetch_decode_ms $run $(awk -v a="$t0" -v b="$(now)" -v n="$DATA_CHUNKS" 'BEGIN { print (b - a) * 1000 / n }')" >>"$RAW"
    if [[ -n $RESTIC ]]; then
        RESTIC_MNT=$WORK/mnt
        mkdir -p "$RESTIC_MNT"
        restic mount -q "$RESTIC_MNT" >/dev/null 2>"$WORK/restic-mount.log" &
        f=$RESTIC_MNT/snapshots/latest$(realpath "$IMG")
        for _ in $(seq 600); do [[ -f $f ]] && break; sleep 0.1; done
        [[ -f $f ]] || { echo "bench-serve: restic mount failed: $(cat "$WORK/restic-mount.log")" >&2; exit 1; }
        t0=$(now)
        cat "$f" >/dev/null
        echo "restic_mount_s $run $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" >>"$RAW"
        umount "$RESTIC_MNT"
        wait
        RESTIC_MNT=
    fi

    start_server "$run" first
    nbdinfo --map "$URI" >"$WORK/map.txt"
    python3 scripts/nbd-random-read.py "$SOCK" bench "$UNCACHED" "$run" $((1 << 62)) "$WORK/map.txt" "$CHUNK" |
        awk -v r="$run" '{ print "uncached_" $1 " " r " " $2 }' >>"$RAW"
    # The server's own fetch-and-decode times of exactly those reads, then a fresh server.
    stop_server "$run" random
    start_server "$run"
    c0=$(cpu_ticks "$(pgrep -P "$SRV")")
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/nbdcopy-cpu.txt" nbdcopy --connections=4 "$URI" null:
    echo "nbdcopy_s $run $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" >>"$RAW"
    c1=$(cpu_ticks "$(pgrep -P "$SRV")")
    echo "nbdcopy_cpu_s $run $(awk -v t="$(getconf CLK_TCK)" -v a="$c0" -v b="$c1" \
        '{ print $1 + $2 + (b - a) / t }' "$WORK/nbdcopy-cpu.txt")" >>"$RAW"
    echo "nbdcopy_client_cpu_s $run $(awk '{ print $1 + $2 }' "$WORK/nbdcopy-cpu.txt")" >>"$RAW"
    # The same 2000 offsets within 64 MiB twice: the second pass reads only cached chunks.
    python3 scripts/nbd-random-read.py "$SOCK" bench 2000 2 $((64 << 20)) "$WORK/map.txt" >/dev/null
    python3 scripts/nbd-random-read.py "$SOCK" bench 2000 2 $((64 << 20)) "$WORK/map.txt" |
        awk -v r="$run" '{ print "cached_" $1 " " r " " $2 }' >>"$RAW"
    stop_server "$run" copy
done

{
    echo "# mover serve benchmark: $(basename "$OUT")"
    echo
    echo "Produced by \`scripts/bench-serve.sh --runs $RUNS --memory $MEMORY\`; warm page cache"
    echo "(the repositories are read once first). \`summary.md\` has the medians, \`raw.txt\` every run."
    echo
    machine_and_mover
    echo "- $(nbdcopy --version | head -1)"
    [[ -n $RESTIC ]] && echo "- $(restic version)"
    echo
    echo "## Parameters"
    echo
    echo "- Image: \`$IMG\`, $(stat -c %s "$IMG") bytes, about $DATA_MIB MiB of data in $DATA_CHUNKS data chunks of $CHUNK bytes"
    echo "  ($(cat "$IMG.params" 2>/dev/null || echo 'scripts/make-bench-image.sh'))"
} >"$OUT/README.md.head"
python3 - "$RAW" "$IMG" "$MEMORY" >"$OUT/summary.md" <<'PY'
import os, re, statistics, sys
raw, img, memory = sys.argv[1:]
vals = {}
for line in open(raw):
    k, _, v = line.split()
    vals.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
size = os.path.getsize(img)
print(f"# mover serve, {size / 2**30:.1f} GiB image, --memory {memory}, warm page cache\n")
print(f"Medians of {len(vals['restore_s'])} runs.\n")
print("| measure | median | runs |\n|---|---:|---|")
for k in sorted(med):
    print(f"| {k} | {med[k]:.4g} | {', '.join(f'{v:.4g}' for v in vals[k])} |")
units = {"k": 2**10, "m": 2**20, "g": 2**30}
m = re.fullmatch(r"(\d+)([kmg])i?b?", memory.lower())
mem_mib = int(m.group(1)) * units[m.group(2)] / 2**20
def line(name, value, target, ok):
    print(f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |")
print("\n| target | measured | wanted | met |\n|---|---:|---:|---|")
ratio = med["restore_s"] / med["nbdcopy_s"]
line("nbdcopy rate / `restore --to -` rate", f"{ratio:.2f}", ">= 0.7", ratio >= 0.7)
cpu = med["restore_cpu_s"] / med["nbdcopy_cpu_s"]
print(f"| (CPU seconds: `restore --to -` / nbdcopy pass, server and client) | {cpu:.2f} | (the rate ratio on idle cores) | |")
if "nbdcopy_client_cpu_s" in med:
    # With every core busy, a server that cost exactly restore's CPU would still share the
    # cores with nbdcopy itself.
    ceil = med["restore_cpu_s"] / (med["restore_cpu_s"] + med["nbdcopy_client_cpu_s"])
    print(f"| (most the rate ratio can be with all cores busy, for a server costing exactly restore's CPU: restore CPU / (restore CPU + nbdcopy's own CPU)) | {ceil:.2f} | | |")
if "restic_mount_s" in med:
    r = med["restic_mount_s"] / med["nbdcopy_s"]
    line("nbdcopy rate / `restic mount` rate", f"{r:.1f}", ">= 3", r >= 3)
line("random 4 KiB, cached, p50", f"{med['cached_p50_ms']:.3f} ms", "<= 0.2 ms", med["cached_p50_ms"] <= 0.2)
bound = 2 * med["chunk_fetch_decode_ms"]
line("random 4 KiB, uncached, p99", f"{med['uncached_p99_ms']:.2f} ms", f"<= {bound:.2f} ms (2 x one chunk)", med["uncached_p99_ms"] <= bound)
if "server_demand_fetch_p99_ms" in med:
    own = med["uncached_p99_ms"] / med["server_demand_fetch_p99_ms"]
    print(f"| (uncached p99 / p99 of the server's own fetch-and-decode of the same chunks, {med['server_demand_fetch_p99_ms']:.2f} ms) | {own:.2f} | | |")
if "server_read_p99_ms" in med:
    own = med["uncached_p99_ms"] / med["server_read_p99_ms"]
    print(f"| (uncached p99 / p99 of the server answering those reads, request read to reply written, {med['server_read_p99_ms']:.2f} ms) | {own:.2f} | | |")
line("first byte after start", f"{med['first_byte_s']:.3f} s", "<= 0.5 s", med["first_byte_s"] <= 0.5)
# Results before the two servers were told apart have one peak_rss_mib for both.
peak = max(v for k in ("random_peak_rss_mib", "copy_peak_rss_mib", "peak_rss_mib") for v in vals.get(k, []))
line("peak RSS (the largest run of either server)", f"{peak:.0f} MiB", f"<= {mem_mib + 64:.0f} MiB", peak <= mem_mib + 64)
PY
mv "$OUT/README.md.head" "$OUT/README.md"
cat "$OUT/summary.md"
