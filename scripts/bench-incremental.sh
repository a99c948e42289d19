#!/usr/bin/env bash
# Benchmarks incrementals, NBD reads and delta restore (issue: changed-block incrementals).
#
#   scripts/bench-incremental.sh [--image both|generated|real] [--size-gib 4] [--data-mib 1024]
#                                [--change-pct 8] [--runs 3] [--big-gib 64] [--out DIR]
#                                [--quick] [--no-peers]
#
# On a benchmark image (scripts/make-bench-image.sh), as a qcow2 with a persistent dirty
# bitmap exported by qemu-nbd, it times in the same run (with --image both, the default, once
# for the generated image into DIR/generated and once for the real one into DIR/real):
#   - nbdcopy of the export to null: (libnbd's reference reader) beside mover's full backup
#     of the export, mover's second backup of it (all chunks known: NBD reads and hashing),
#     and mover's full backup of the raw image;
#   - after the second version is written through qemu-io (generated image: CHANGE_PCT % of it
#     rewritten with random bytes; real image: its package upgrade, the blocks that
#     make-bench-image.sh --real lists as changed): mover's incremental with
#     the dirty bitmap, with a changed-extent list, and with no map (compare mode), beside
#     restic's and borg's second run on the same data;
#   - a full restore of the changed image, then a delta restore rolling it back to the first
#     (the restored file is read once in between, so the delta restore reads a warm cache);
#   - an incremental of a BIG_GIB mostly empty disk with 64 MiB dirty, with the bitmap.
# Writes DIR/README.md, DIR/raw.jsonl and DIR/summary.md (medians and ratios against targets).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

SIZE_GIB=4
DATA_MIB=1024
CHANGE_PCT=8
RUNS=3
BIG_GIB=64
OUT=
QUICK=0
PEERS=1
IMAGE=both
ARGS="$*"
PASS=() # the arguments a run of one image gets from a run of both
while (($#)); do
    case $1 in
    --image) IMAGE=$2; shift 2; continue ;;
    --out) OUT=$2; shift 2; continue ;;
    esac
    PASS+=("$1")
    case $1 in
    --size-gib) SIZE_GIB=$2; PASS+=("$2"); shift 2 ;;
    --data-mib) DATA_MIB=$2; PASS+=("$2"); shift 2 ;;
    --change-pct) CHANGE_PCT=$2; PASS+=("$2"); shift 2 ;;
    --runs) RUNS=$2; PASS+=("$2"); shift 2 ;;
    --big-gib) BIG_GIB=$2; PASS+=("$2"); shift 2 ;;
    --quick) QUICK=1; SIZE_GIB=0.25; DATA_MIB=64; RUNS=1; BIG_GIB=4; shift ;;
    --no-peers) PEERS=0; shift ;;
    -h | --help) usage ;;
    *) echo "bench: unknown argument $1" >&2; usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $CHANGE_PCT =~ ^[0-9]+$ && $BIG_GIB =~ ^[0-9]+$ ]] || usage
[[ $IMAGE == both || $IMAGE == generated || $IMAGE == real ]] || usage

STAMP=$(date -u +%Y%m%d-%H%M%S)
HOST=$(hostname -s 2>/dev/null || echo host)
if [[ -z $OUT ]]; then
    if ((QUICK)); then OUT=bench/work/results/$STAMP-$HOST-incremental; else
        OUT=bench/results/$STAMP-$HOST-incremental; fi
fi
mkdir -p "$OUT" bench/work
if [[ $IMAGE == both ]]; then
    for kind in generated real; do
        "$0" "${PASS[@]}" --image "$kind" --out "$OUT/$kind"
    done
    {
        echo "# mover incremental benchmark: $STAMP, both images"
        echo
        echo "Produced by \`scripts/bench-incremental.sh $ARGS\`: one run per image, each with its"
        echo "peers; see \`generated/\` and \`real/\` (README.md for the machine and parameters)."
    } >"$OUT/README.md"
    for kind in generated real; do
        echo "# Image: $kind"
        echo
        sed -e '1d' -e 's/^## /### /' "$OUT/$kind/summary.md"
        echo
    done >"$OUT/summary.md"
    exit 0
fi
ROOT=$(pwd -P)
RAW=$(realpath "$OUT")/raw.jsonl
: >"$RAW"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

for tool in qemu-img qemu-io qemu-nbd nbdcopy /usr/bin/time; do
    command -v "$tool" >/dev/null || { note "$tool is missing: run scripts/setup.sh --bench"; exit 1; }
done
HAVE_RESTIC=0
HAVE_BORG=0
if ((PEERS)); then
    command -v restic >/dev/null && HAVE_RESTIC=1 || loud "restic not found: skipping restic"
    command -v borg >/dev/null && HAVE_BORG=1 || loud "borg not found: skipping borg"
fi

note "building mover (release)"
cargo build --release -q -p mover-cli
MOVER=$ROOT/target/release/mover

if [[ $IMAGE == real ]]; then
    IMG=bench/work/real-${SIZE_GIB}g-${DATA_MIB}m.img
    scripts/make-bench-image.sh --real "$IMG" "$SIZE_GIB" "$DATA_MIB"
else
    IMG=bench/work/bench-${SIZE_GIB}g-${DATA_MIB}m.img
    scripts/make-bench-image.sh "$IMG" "$SIZE_GIB" "$DATA_MIB"
fi
IMG=$(realpath "$IMG")
IMG_BYTES=$(stat -c %s "$IMG")

WORK=$(realpath "$(mktemp -d bench/work/inc.XXXXXX)")
NBD_PID=
stop_nbd() {
    if [[ -n $NBD_PID ]]; then
        kill "$NBD_PID" 2>/dev/null || true
        wait "$NBD_PID" 2>/dev/null || true
        NBD_PID=
    fi
}
cleanup() { stop_nbd; rm -rf "$WORK"; }
trap cleanup EXIT
export RESTIC_PASSWORD=mover-bench # a throwaway repository; read from the environment
export RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_BASE_DIR=$WORK/borg-home
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

SOCK=$WORK/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
# serve FILE [BITMAP]: exports FILE (qcow2) read-only on $SOCK, with the bitmap when given.
serve() {
    stop_nbd
    rm -f "$SOCK"
    local extra=()
    [[ -n ${2:-} ]] && extra=(--bitmap "$2")
    qemu-nbd --read-only --persistent --shared 8 --cache=none --aio=native -f qcow2 \
        "${extra[@]}" --socket "$SOCK" "$1" 2>"$WORK/qemu-nbd.err" &
    NBD_PID=$!
    for _ in $(seq 100); do [[ -S $SOCK ]] && return 0; sleep 0.1; done
    note "qemu-nbd did not start: $(cat "$WORK/qemu-nbd.err")"
    exit 1
}

# changes FILE SIZE PCT SEED: writes "OFFSET LENGTH" lines (4 KiB aligned regions of 64 KiB to
# 2 MiB at random offsets, not overlapping) covering about PCT % of SIZE.
changes() {
    python3 - "$@" <<'PY'
import random, sys
out, size, pct, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
want, got, taken = size * pct / 100, 0, []
while got < want:
    n = r.randrange(16, 513) * 4096
    off = r.randrange(0, (size - n) // 4096) * 4096
    if any(off < e and s < off + n for s, e in taken):
        continue
    taken.append((off, off + n))
    got += n
with open(out, "w") as f:
    for s, e in sorted(taken):
        print(s, e - s, file=f)
PY
}

# apply QCOW2 REGIONS: rewrites the regions with random bytes through qemu-io (so a dirty
# bitmap of the image records them).
apply() {
    head -c $((2 << 20)) /dev/urandom >"$WORK/pattern.bin"
    local cmds=()
    while read -r off len; do cmds+=(-c "write -q -s $WORK/pattern.bin $off $len"); done <"$2"
    qemu-io -f qcow2 "${cmds[@]}" "$1" >/dev/null
}

# apply_from QCOW2 REGIONS SOURCE: writes the regions with SOURCE's bytes at the same offsets
# through qemu-io (one pattern file per region; qemu-io reads its commands from stdin).
apply_from() {
    mkdir -p "$WORK/patterns"
    local i=0
    while read -r off len; do
        dd if="$3" of="$WORK/patterns/$i" bs=4096 skip=$((off / 4096)) count=$((len / 4096)) status=none
        echo "write -q -s $WORK/patterns/$i $off $len"
        i=$((i + 1))
    done <"$2" >"$WORK/apply.cmds"
    qemu-io -f qcow2 "$1" <"$WORK/apply.cmds" >/dev/null
    rm -rf "$WORK/patterns"
}

# change_info REGIONS SIZE > JSON: the same regions as a VMware DiskChangeInfo document.
change_info() {
    python3 -c 'import json,sys
areas=[{"start":int(a),"length":int(b)} for a,b in (l.split() for l in open(sys.argv[1]))]
print(json.dumps({"startOffset":0,"length":int(sys.argv[2]),"changedArea":areas}))' "$1" "$2"
}

same() { # same TOOL OP RUN FILE EXPECTED
    if cmp -s "$4" "$5"; then record "$1" "$2" "$3" check=identical; else
        record "$1" "$2" "$3" check=DIFFERENT
        loud "$1 $2 run $3: restored image differs"
    fi
}

V1Q=$WORK/v1.qcow2
qemu-img convert -O qcow2 "$IMG" "$V1Q"
qemu-img bitmap --add "$V1Q" b0
V2Q=$WORK/v2.qcow2
cp "$V1Q" "$V2Q"
if [[ $IMAGE == real ]]; then
    note "preparing images (qcow2 with a dirty bitmap, the package upgrade written)"
    V2=${IMG%.img}.v2.img
    cp "${IMG%.img}.v2.changes.json" "$WORK/changes.json"
    python3 -c 'import json,sys
for a in json.load(open(sys.argv[1]))["changedArea"]: print(a["start"], a["length"])' \
        "$WORK/changes.json" >"$WORK/regions.txt"
    apply_from "$V2Q" "$WORK/regions.txt" "$V2"
else
    note "preparing images (qcow2 with a dirty bitmap, $CHANGE_PCT % changed)"
    changes "$WORK/regions.txt" "$IMG_BYTES" "$CHANGE_PCT" 20261125
    apply "$V2Q" "$WORK/regions.txt"
    V2=$WORK/v2.img
    qemu-img convert -O raw "$V2Q" "$V2"
    change_info "$WORK/regions.txt" "$IMG_BYTES" >"$WORK/changes.json"
fi
CHANGED_BYTES=$(awk '{ s += $2 } END { print s }' "$WORK/regions.txt")
cat "$IMG" "$V2" >/dev/null # warm page cache

note "preparing the big disk ($BIG_GIB GiB, 512 MiB written, then 64 MiB dirty)"
BIGQ=$WORK/big.qcow2
qemu-img create -q -f qcow2 "$BIGQ" "${BIG_GIB}G"
head -c $((4 << 20)) /dev/urandom >"$WORK/big-pattern.bin"
big_cmds=()
for i in $(seq 0 63); do
    big_cmds+=(-c "write -q -s $WORK/big-pattern.bin $((i * (BIG_GIB << 30) / 64)) 8M")
done
qemu-io -f qcow2 "${big_cmds[@]}" "$BIGQ" >/dev/null
qemu-img bitmap --add "$BIGQ" b0
BIG_BASE=$WORK/big-repo
"$MOVER" init -r "$BIG_BASE" -q
serve "$BIGQ"
"$MOVER" backup -r "$BIG_BASE" -q --name big --source "$URI" >/dev/null
stop_nbd
changes "$WORK/big-regions.txt" $((BIG_GIB << 30)) "$(python3 -c "print(64 / ($BIG_GIB * 1024) * 100)")" 7
apply "$BIGQ" "$WORK/big-regions.txt"

BASE=$WORK/base-repo
for ((run = 1; run <= RUNS; run++)); do
    note "run $run/$RUNS: full backups"
    serve "$V1Q"
    measure nbdcopy read-null "$run" - - - -- nbdcopy "$URI" null:
    repo=$WORK/repo-nbd
    rm -rf "$repo"
    "$MOVER" init -r "$repo" -q
    measure mover full-nbd "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name disk \
        --source "$URI" --json -q
    # Again into the same repository: every chunk is known, so this is NBD reading plus
    # hashing, the part of a backup that nbdcopy's reading compares with.
    measure mover full-nbd-again "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name disk \
        --source "$URI" --json -q
    rm -rf "$repo"
    stop_nbd
    rm -rf "$BASE"
    "$MOVER" init -r "$BASE" -q
    sync # no writeback of earlier runs during the timed ones
    measure mover full-file "$run" "$BASE" - - -- "$MOVER" backup -r "$BASE" --name disk \
        --source "$IMG" --json -q

    note "run $run/$RUNS: incrementals"
    serve "$V2Q" b0
    repo=$WORK/repo-inc
    rm -rf "$repo" && cp -a "$BASE" "$repo" && sync
    measure mover inc-bitmap "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name disk \
        --source "$URI" --parent latest --bitmap b0 --json -q
    stop_nbd
    if ((run == 1)); then
        "$MOVER" restore -r "$repo" latest --name disk --to "$WORK/check.img" -q --no-sync
        same mover inc-bitmap "$run" "$WORK/check.img" "$V2"
        rm -f "$WORK/check.img"
    fi
    rm -rf "$repo" && cp -a "$BASE" "$repo" && sync
    measure mover inc-extents "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name disk \
        --source "$V2" --parent latest --changed-extents "$WORK/changes.json" --json -q
    rm -rf "$repo" && cp -a "$BASE" "$repo" && sync
    measure mover inc-compare "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name disk \
        --source "$V2" --parent latest --json -q

    note "run $run/$RUNS: full restore, then delta restore back to the first snapshot"
    first=$("$MOVER" snapshots -r "$repo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
    warm "$repo"
    rm -f "$WORK/restored.img"
    measure mover restore-full "$run" - - - -- "$MOVER" restore -r "$repo" latest --name disk \
        --to "$WORK/restored.img" --json -q
    # The full restore wrote with direct I/O, past the page cache; the delta restore reads the
    # destination back, so it is read once first: every timed read here, like the backups'
    # reads of the image, comes from a warm cache.
    warm "$WORK/restored.img"
    measure mover restore-delta "$run" - - - -- "$MOVER" restore -r "$repo" "$first" \
        --to "$WORK/restored.img" --delta --json -q
    same mover restore-delta "$run" "$WORK/restored.img" "$IMG"
    rm -rf "$repo" "$WORK/restored.img"

    note "run $run/$RUNS: big disk incremental"
    repo=$WORK/repo-big
    rm -rf "$repo" && cp -a "$BIG_BASE" "$repo" && sync
    serve "$BIGQ" b0
    measure mover inc-bitmap-big "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --name big \
        --source "$URI" --parent latest --bitmap b0 --json -q
    stop_nbd
    rm -rf "$repo"

    if ((HAVE_RESTIC)); then
        note "run $run/$RUNS: restic"
        repo=$WORK/restic-repo
        rm -rf "$repo" "$RESTIC_CACHE_DIR"
        restic init -r "$repo" --repository-version 2 --quiet >/dev/null
        measure restic backup-first "$run" "$repo" "$IMG" - -- restic -r "$repo" backup --stdin \
            --stdin-filename disk.img --json --quiet
        measure restic backup-second "$run" "$repo" "$V2" - -- restic -r "$repo" backup --stdin \
            --stdin-filename disk.img --json --quiet
        rm -rf "$repo"
    fi
    if ((HAVE_BORG)); then
        note "run $run/$RUNS: borg"
        repo=$WORK/borg-repo
        rm -rf "$repo" "$BORG_BASE_DIR"
        borg init --encryption=none "$repo"
        mkdir -p "$WORK/borg-src"
        ln -f "$IMG" "$WORK/borg-src/disk.img" 2>/dev/null || cp --sparse=always "$IMG" "$WORK/borg-src/disk.img"
        (cd "$WORK/borg-src" && measure borg backup-first "$run" "$repo" - - -- borg create \
            --files-cache=disabled --compression zstd,3 "$repo::a1" disk.img)
        rm -f "$WORK/borg-src/disk.img"
        ln -f "$V2" "$WORK/borg-src/disk.img"
        (cd "$WORK/borg-src" && measure borg backup-second "$run" "$repo" - - -- borg create \
            --files-cache=disabled --compression zstd,3 "$repo::a2" disk.img)
        rm -rf "$repo" "$WORK/borg-src"
    fi
done

{
    echo "# mover incremental benchmark: $STAMP"
    echo
    echo "Produced by \`scripts/bench-incremental.sh $ARGS\`. Warm page cache; every timed command"
    echo "is run $RUNS time(s); \`summary.md\` reports medians, \`raw.jsonl\` every run."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores online"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "## Software"
    echo
    echo "- mover commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- $("$MOVER" --version); $(qemu-img --version | head -1); $(nbdcopy --version | head -1)"
    ((HAVE_RESTIC)) && echo "- $(restic version)"
    ((HAVE_BORG)) && echo "- $(borg --version)"
    echo
    echo "## Parameters"
    echo
    echo "- image ($IMAGE): $IMG_BYTES bytes ($SIZE_GIB GiB, $DATA_MIB MiB of files), as qcow2 for NBD"
    echo "  (scripts/make-bench-image.sh: $(head -1 "$IMG.params"))"
    if [[ $IMAGE == real ]]; then
        echo "- changed: the package upgrade, $CHANGED_BYTES bytes in $(wc -l <"$WORK/regions.txt") regions (4 KiB blocks that differ):"
        tail -n +2 "$IMG.params" | sed 's/^/  - /'
    else
        echo "- changed: $CHANGED_BYTES bytes in $(wc -l <"$WORK/regions.txt") regions of 64 KiB–2 MiB (about $CHANGE_PCT %)"
    fi
    echo "- big disk: $BIG_GIB GiB qcow2, 512 MiB written, then $(awk '{ s += $2 } END { print s }' "$WORK/big-regions.txt") bytes dirty"
} >"$OUT/README.md"

python3 - "$RAW" "$IMG_BYTES" >"$OUT/summary.md" <<'PY'
import json, statistics, sys
from collections import defaultdict
raw, img_bytes = sys.argv[1], int(sys.argv[2])
t, checks, reads = defaultdict(list), [], defaultdict(list)
for line in open(raw):
    r = json.loads(line)
    if "check" in r:
        checks.append(f"{r['tool']} {r['op']} run {r['run']}: {r['check']}")
        continue
    if r.get("exit_code"):
        checks.append(f"{r['tool']} {r['op']} run {r['run']}: FAILED (exit {r['exit_code']})")
        continue
    t[(r["tool"], r["op"])].append(r["seconds"])
    out = r.get("stdout_last")
    if isinstance(out, dict) and "data" in out:
        d = out["data"]
        reads[(r["tool"], r["op"])].append(d.get("bytes_read", d.get("bytes_compared")))
med = {k: statistics.median(v) for k, v in t.items()}
print("# Summary (medians)\n")
print("| tool | operation | seconds | runs | MB/s of image | bytes read |")
print("|---|---|---|---|---|---|")
for (tool, op), s in sorted(med.items()):
    br = reads.get((tool, op))
    print(f"| {tool} | {op} | {s:.2f} | {len(t[(tool, op)])} | {img_bytes / s / 1e6:.0f} | "
          f"{statistics.median(br) if br and None not in br else ''} |")
def ratio(a, b):
    return med[a] / med[b] if a in med and b in med else None
rows = [
    ("incremental with bitmap / full backup of the file", ratio(("mover", "inc-bitmap"), ("mover", "full-file")), "≤ 0.40"),
    ("incremental with bitmap / full backup over the same NBD export (like for like)", ratio(("mover", "inc-bitmap"), ("mover", "full-nbd")), "≤ 0.40"),
    ("incremental with extent list / full backup", ratio(("mover", "inc-extents"), ("mover", "full-file")), "≤ 0.40"),
    ("restic second run / mover no-map incremental", ratio(("restic", "backup-second"), ("mover", "inc-compare")), "≥ 2.5"),
    ("restic second run / mover incremental with extent list", ratio(("restic", "backup-second"), ("mover", "inc-extents")), ""),
    ("borg second run / mover no-map incremental", ratio(("borg", "backup-second"), ("mover", "inc-compare")), ""),
    ("NBD reading: nbdcopy to null: time / mover backup-again from NBD time (read + hash)", ratio(("nbdcopy", "read-null"), ("mover", "full-nbd-again")), "≥ 0.90"),
    ("mover full backup: from the file time / from NBD time", ratio(("mover", "full-file"), ("mover", "full-nbd")), ""),
    ("delta restore / full restore", ratio(("mover", "restore-delta"), ("mover", "restore-full")), "≤ 0.40"),
]
print("\n| comparison | value | target |\n|---|---|---|")
for name, v, target in rows:
    print(f"| {name} | {'n/a' if v is None else f'{v:.2f}'} | {target} |")
big = med.get(("mover", "inc-bitmap-big"))
print(f"| big disk incremental, seconds | {'n/a' if big is None else f'{big:.2f}'} | ≤ 2 |")
print("\n## Checks\n")
for c in checks:
    print(f"- {c}")
PY
cat "$OUT/summary.md" >&2
