#!/usr/bin/env bash
# The repository index at scale with real backups (issue 17): builds a repository of about
# 1 M chunks by backing up an nbdkit `pattern` export (every 64 KiB chunk of it is unique and
# compresses about tenfold) with --chunk-size 64KiB, then measures, each in a fresh process
# under /usr/bin/time -v: the big backup; opening the repository, warm and with the page cache
# dropped (`index-bench open`: open time, memory, lookup rates); small backups into it (1 GiB
# of new data, 1 GiB already stored); gc, check, repair index and verify of a subset.
#
#   scripts/bench-index-real.sh [--size-gib 64] [--subset 1/16] [--runs 3] [--out DIR] [--keep]
#
# Needs nbdkit (Debian `nbdkit`), /usr/bin/time and about a tenth of --size-gib of free disk
# under bench/work. Dropping the page cache needs root; without it the cold rows are skipped.
# Writes DIR/raw.jsonl (one line per timed command, as scripts/bench.sh) and DIR/machine.md.
# Default DIR: bench/results/DATE-index-real. The repository is deleted unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

SIZE_GIB=64
SUBSET=1/16
RUNS=3
OUT=
KEEP=0
while (($#)); do
    case $1 in
    --size-gib) SIZE_GIB=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage ;;
    *) echo "bench-index-real: unknown argument $1" >&2; usage ;;
    esac
done
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || usage
for tool in nbdkit /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-index-real: $tool not found" >&2; exit 1; }
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT=bench/results/$STAMP-index-real
mkdir -p "$OUT" bench/work
ROOT=$(pwd -P)
RAW=$(realpath "$OUT")/raw.jsonl
: >"$RAW"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

note "building mover and index-bench (release)"
cargo build --release -q -p mover-cli -p bench --bin index-bench
MOVER=$ROOT/target/release/mover
IBENCH=$ROOT/target/release/index-bench

WORK=$(realpath "$(mktemp -d bench/work/index-real.XXXXXX)")
NBDKIT_PID=
stop_nbdkit() {
    if [[ -n $NBDKIT_PID ]]; then
        kill "$NBDKIT_PID" 2>/dev/null || true
        wait "$NBDKIT_PID" 2>/dev/null || true
        NBDKIT_PID=
    fi
}
cleanup() {
    stop_nbdkit
    if ((KEEP)); then note "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# serve ARGS...: an nbdkit export on a unix socket in WORK (foreground process, killed by pid).
# The socket's path is relative to the checkout, so that the summaries name no path of this
# machine.
SOCK=${WORK#"$ROOT"/}/nbd.sock
SRC="nbd+unix:///?socket=$SOCK"
serve() {
    stop_nbdkit
    rm -f "$SOCK"
    nbdkit -f -U "$SOCK" "$@" &
    NBDKIT_PID=$!
    for _ in $(seq 100); do [[ -S $SOCK ]] && return 0; sleep 0.1; done
    note "nbdkit did not start: $*"
    exit 1
}

CAN_DROP=0
if [[ -w /proc/sys/vm/drop_caches ]]; then CAN_DROP=1; else
    loud "cannot drop the page cache (not root): skipping the cold rows"; fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

repo=$WORK/repo
"$MOVER" init -r "$repo" --quiet
B=(--chunk-size 64KiB --json --quiet)

note "backup of ${SIZE_GIB} GiB in 64 KiB chunks (pattern plugin)"
serve pattern "size=${SIZE_GIB}G"
measure mover backup-big 1 "$repo" - - -- "$MOVER" backup -r "$repo" --source "$SRC" \
    --name big "${B[@]}"
record mover layout 1 packs="$(find "$repo/packs" -type f | wc -l)" \
    segments="$(find "$repo/index" -type f | wc -l)" index_bytes="$(du -sb "$repo/index" | cut -f1)"

for ((run = 1; run <= RUNS; run++)); do
    note "run $run/$RUNS: open (warm)"
    measure bench open "$run" - - - -- "$IBENCH" open "$repo"
    if ((CAN_DROP)); then
        note "run $run/$RUNS: open (cold)"
        drop_caches
        measure bench open-cold "$run" - - - -- "$IBENCH" open "$repo"
    fi
done

# Small backups into the big repository: 1 GiB past the big export's end (new chunks, every
# lookup a miss) and its first 1 GiB again (every lookup a hit). Their names differ from the
# big one's, so each is a full backup with no parent.
for ((run = 1; run <= RUNS; run++)); do
    note "run $run/$RUNS: small backups"
    serve --filter=offset pattern "size=$((SIZE_GIB + run))G" \
        "offset=$((SIZE_GIB + run - 1))G" range=1G
    measure mover backup-small-new "$run" "$repo" - - -- "$MOVER" backup -r "$repo" \
        --source "$SRC" --name "new$run" "${B[@]}"
    serve pattern size=1G
    measure mover backup-small-stored "$run" "$repo" - - -- "$MOVER" backup -r "$repo" \
        --source "$SRC" --name "stored$run" "${B[@]}"
    if ((CAN_DROP && run == 1)); then
        serve pattern size=1G
        drop_caches
        measure mover backup-small-stored-cold "$run" "$repo" - - -- "$MOVER" backup -r "$repo" \
            --source "$SRC" --name stored-cold "${B[@]}"
    fi
done
stop_nbdkit

note "maintenance: check, gc, repair index, verify $SUBSET"
measure mover check 1 - - - -- "$MOVER" check -r "$repo" --json --quiet
# Nothing is garbage; the small backups' segments are fewer than --compact-segments' default.
measure mover gc 1 "$repo" - - -- "$MOVER" gc -r "$repo" --json --quiet
measure mover repair-index 1 "$repo" - - -- "$MOVER" repair index -r "$repo" --json --quiet
record mover layout-after-repair 1 segments="$(find "$repo/index" -type f | wc -l)" \
    index_bytes="$(du -sb "$repo/index" | cut -f1)"
measure bench open-after-repair 1 - - - -- "$IBENCH" open "$repo"
measure mover check 2 - - - -- "$MOVER" check -r "$repo" --json --quiet
((CAN_DROP)) && drop_caches
measure mover verify-subset 1 - - - -- "$MOVER" verify -r "$repo" --name big --subset "$SUBSET" \
    --json --quiet

{
    echo "# Machine"
    echo
    echo "- CPU: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores online"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Filesystem of bench/work: $(df -T bench/work | awk 'NR == 2 { print $2 }')"
    echo "- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- mover commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- $(nbdkit --version)"
    echo "- Parameters: --size-gib $SIZE_GIB --subset $SUBSET --runs $RUNS; page cache drops: $( ((CAN_DROP)) && echo yes || echo no)"
} >"$OUT/machine.md"
note "results in $OUT"
