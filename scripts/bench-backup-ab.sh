#!/usr/bin/env bash
# A/B of the benchmark image's backup and restore between two (or more) mover binaries,
# alternated run by run so that all see the same machine load: each run makes a fresh
# repository with each binary, backs the image up (as scripts/bench.sh does: --compression 3),
# backs it up again (every chunk already stored) and restores it to stdout (`--to -`, into
# /dev/null, the repository read once first so that the page cache holds it).
#
#   scripts/bench-backup-ab.sh [--runs 3] [--size-gib 4] [--data-mib 1024] [--out DIR] \
#       NAME_A=MOVER_A NAME_B=MOVER_B [NAME_C=MOVER_C ...]
#
# Writes DIR/raw.jsonl (one line per timed command, `tool` is the binary's NAME) and prints
# the medians: wall time, a backup's own time (its summary's `seconds`: after opening the
# repository, before the file catalog), CPU (user + system) and peak RSS. Warm page cache:
# the image is read once first. Default DIR: bench/work/ab.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

RUNS=3
SIZE_GIB=4
DATA_MIB=1024
OUT=bench/work/ab
BINS=()
while (($#)); do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --size-gib) SIZE_GIB=$2; shift 2 ;;
    --data-mib) DATA_MIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage ;;
    *=*) BINS+=("$1"); shift ;;
    *) echo "bench-backup-ab: unknown argument $1" >&2; usage ;;
    esac
done
[[ ${#BINS[@]} -ge 2 && $RUNS =~ ^[1-9][0-9]*$ ]] || usage

mkdir -p "$OUT" bench/work
ROOT=$(pwd -P)
RAW=$(realpath "$OUT")/raw.jsonl
: >"$RAW"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

IMG=bench/work/bench-${SIZE_GIB}g-${DATA_MIB}m.img
scripts/make-bench-image.sh "$IMG" "$SIZE_GIB" "$DATA_MIB"
WORK=$(realpath "$(mktemp -d bench/work/ab.XXXXXX)")
trap 'rm -rf "$WORK"' EXIT
cat "$IMG" >/dev/null

for ((run = 1; run <= RUNS; run++)); do
    for spec in "${BINS[@]}"; do
        name=${spec%%=*}
        bin=${spec#*=}
        note "run $run/$RUNS: $name"
        repo=$WORK/repo
        rm -rf "$repo"
        "$bin" init -r "$repo" --quiet
        measure "$name" backup "$run" "$repo" - - -- "$bin" backup -r "$repo" --source "$IMG" \
            --compression 3 --json --quiet
        measure "$name" backup-again "$run" "$repo" - - -- "$bin" backup -r "$repo" \
            --source "$IMG" --compression 3 --json --quiet
        warm "$repo"
        measure "$name" restore "$run" - - /dev/null -- "$bin" restore -r "$repo" latest --to - \
            --quiet
        rm -rf "$repo"
    done
done

python3 - "$RAW" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in recs:
    if r["exit_code"] == 0:
        groups.setdefault((r["tool"], r["op"]), []).append(r)
med = statistics.median
print("| binary | operation | runs | wall s, median (min-max) | backup's own s | CPU s | peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|---:|")
for (tool, op), rs in groups.items():
    s = [r["seconds"] for r in rs]
    own = "-"
    if op.startswith("backup"):
        own = "%.2f" % med(r["stdout_last"]["data"]["seconds"] for r in rs)
    cpu = med(r["user_s"] + r["sys_s"] for r in rs)
    rss = med(r["max_rss_kib"] for r in rs) / 1024
    print("| %s | %s | %d | %.2f (%.2f-%.2f) | %s | %.2f | %.0f |" % (
        tool, op, len(rs), med(s), min(s), max(s), own, cpu, rss))
PY
