#!/usr/bin/env bash
# Benchmarks mover against a distant S3 store: Garage (single node, on loopback) behind the
# link emulator (bench's `link-emu`: added delay each way, a rate cap), with restic through the
# same link in the same run, and mover's own CPU per GB against a local repository.
#
#   scripts/bench-s3.sh [--size-gib 1] [--data-mib 512] [--runs 3] [--links "20:200 100:200"]
#                       [--no-restic] [--out DIR]
#
# A link is RTT_MS:MBIT (round trip in ms, half added each way; cap of each direction in
# Mbit/s). Writes DIR/README.md (machine, versions, parameters), DIR/raw.jsonl (one line per
# timed command, with mover's user and system CPU seconds, and the bytes each command sent
# and received through the link) and DIR/summary.md (medians against the targets of issue 18).
# Default DIR: bench/results/DATE-s3link.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

SIZE_GIB=1
DATA_MIB=512
RUNS=3
LINKS="20:200 100:200"
RESTIC=1
OUT=
ARGS="$*"
while (($#)); do
    case $1 in
    --size-gib) SIZE_GIB=$2; shift 2 ;;
    --data-mib) DATA_MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --links) LINKS=$2; shift 2 ;;
    --no-restic) RESTIC=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "bench-s3: unknown argument $1" >&2; usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || usage
for l in $LINKS; do [[ $l =~ ^[0-9]+(\.[0-9]+)?:[0-9]+(\.[0-9]+)?$ ]] || usage; done

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${OUT:-bench/results/$(date -u +%Y%m%d)-s3link}
mkdir -p "$OUT" bench/work
ROOT=$(pwd -P)
RAW=$(realpath "$OUT")/raw.jsonl
: >"$RAW"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
[[ -x /usr/bin/time ]] || { note "/usr/bin/time is missing (Debian package: time)"; exit 1; }
if ((RESTIC)) && ! command -v restic >/dev/null; then
    loud "restic not found: skipping restic (scripts/setup.sh --bench installs it)"
    RESTIC=0
fi

note "building mover and link-emu (release)"
cargo build --release -q -p mover-cli -p bench
MOVER=target/release/mover
LINK_EMU=target/release/link-emu

IMG=bench/work/bench-${SIZE_GIB}g-${DATA_MIB}m.img
scripts/make-bench-image.sh "$IMG" "$SIZE_GIB" "$DATA_MIB"
IMG_BYTES=$(stat -c %s "$IMG")

WORK=$(realpath "$(mktemp -d bench/work/s3link.XXXXXX)")
S3_STATE=$WORK/s3
EMU_PID=
cleanup() {
    [[ -n $EMU_PID ]] && kill "$EMU_PID" 2>/dev/null
    scripts/s3-servers.sh stop "$S3_STATE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export RESTIC_PASSWORD=mover-bench # a throwaway repository; read from the environment
export RESTIC_CACHE_DIR=$WORK/restic-cache
export XDG_CACHE_HOME=$WORK/mover-cache

scripts/s3-servers.sh start "$S3_STATE" >&2
# shellcheck disable=SC1091
source "$S3_STATE/env"
# Only the single Garage node is used: stop the others so that they take no CPU.
for pidfile in "$S3_STATE/s3s-fs.pid" "$S3_STATE/moto.pid" "$S3_STATE"/cluster/node*.pid; do
    [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null && rm -f "$pidfile"
done
export AWS_ACCESS_KEY_ID=$MOVER_TEST_GARAGE_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MOVER_TEST_GARAGE_SECRET_KEY
GARAGE_HOSTPORT=${MOVER_TEST_GARAGE_ENDPOINT#http://}
BUCKET=$MOVER_TEST_GARAGE_BUCKET
REGION=$MOVER_TEST_GARAGE_REGION

cat "$IMG" >/dev/null # warm page cache for every run

# restored FILE TOOL OP RUN: records whether FILE is the image, then deletes it.
restored() {
    if cmp -s "$1" "$IMG"; then record "$2" "$3" "$4" check=identical; else
        record "$2" "$3" "$4" check=DIFFERENT
        loud "$2 $3 run $4: restored image differs from the source"
    fi
    rm -rf "$1"
}

# wire TOOL OP RUN BEFORE: records the bytes through the link since BEFORE ("UP DOWN").
wire() {
    sleep 0.3 # the emulator rewrites its stats file every 100 ms
    local up0 down0 up1 down1
    read -r up0 down0 <<<"$4"
    read -r up1 down1 <"$WORK/link.stats"
    record "$1" "$2-wire" "$3" up_bytes=$((up1 - up0)) down_bytes=$((down1 - down0))
}

# ---- the local repository: mover's CPU per GB without a network ----------------------------
for ((run = 1; run <= RUNS; run++)); do
    note "run $run/$RUNS: mover, local repository"
    repo=$WORK/local-repo
    rm -rf "$repo"
    "$MOVER" init -r "$repo" --quiet
    measure mover local-backup "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --source "$IMG" \
        --json --quiet
    warm "$repo"
    measure mover local-restore "$run" - - "$WORK/restored.img" -- "$MOVER" restore -r "$repo" \
        latest --to - --quiet
    restored "$WORK/restored.img" mover local-restore "$run"
    rm -rf "$repo"
done

# ---- through the emulated link -------------------------------------------------------------
for link in $LINKS; do
    rtt=${link%%:*} mbit=${link##*:}
    delay=$(python3 -c "print($rtt / 2)")
    "$LINK_EMU" --upstream "$GARAGE_HOSTPORT" --delay-ms "$delay" --rate-mbit "$mbit" \
        --stats "$WORK/link.stats" >"$WORK/link.out" &
    EMU_PID=$!
    for _ in $(seq 50); do [[ -s $WORK/link.out && -s $WORK/link.stats ]] && break; sleep 0.1; done
    addr=$(awk '/^listening on/ { print $3 }' "$WORK/link.out")
    [[ -n $addr ]] || { note "link-emu did not start"; exit 1; }
    endpoint=http://$addr
    s3=(--s3-endpoint "$endpoint" --s3-region "$REGION" --s3-allow-http)
    tag=rtt${rtt}ms-${mbit}mbit
    note "link $tag: link-emu on $addr, one-way delay ${delay} ms"
    for ((run = 1; run <= RUNS; run++)); do
        note "run $run/$RUNS, $tag: mover"
        url=s3://$BUCKET/mover-$STAMP-$tag-$run
        rm -rf "$XDG_CACHE_HOME"
        "$MOVER" init -r "$url" "${s3[@]}" --quiet
        s=$(cat "$WORK/link.stats")
        measure mover "s3-backup-$tag" "$run" - - - -- "$MOVER" backup -r "$url" "${s3[@]}" \
            --source "$IMG" --json --quiet
        wire mover "s3-backup-$tag" "$run" "$s"
        rm -rf "$XDG_CACHE_HOME" # restore on another machine: no cached index
        s=$(cat "$WORK/link.stats")
        measure mover "s3-restore-$tag" "$run" - - "$WORK/restored.img" -- "$MOVER" restore \
            -r "$url" "${s3[@]}" latest --to - --quiet
        wire mover "s3-restore-$tag" "$run" "$s"
        restored "$WORK/restored.img" mover "s3-restore-$tag" "$run"

        ((RESTIC)) || continue
        note "run $run/$RUNS, $tag: restic"
        rurl=s3:$endpoint/$BUCKET/restic-$STAMP-$tag-$run
        ropt=(-o "s3.region=$REGION")
        rm -rf "$RESTIC_CACHE_DIR"
        restic -r "$rurl" "${ropt[@]}" init --repository-version 2 --quiet >/dev/null
        s=$(cat "$WORK/link.stats")
        measure restic "s3-backup-$tag" "$run" - "$IMG" - -- restic -r "$rurl" "${ropt[@]}" \
            backup --stdin --stdin-filename disk.img --json --quiet
        wire restic "s3-backup-$tag" "$run" "$s"
        rm -rf "$RESTIC_CACHE_DIR"
        s=$(cat "$WORK/link.stats")
        measure restic "s3-restore-$tag" "$run" - - - -- restic -r "$rurl" "${ropt[@]}" \
            restore latest --target "$WORK/restic-out" --quiet
        wire restic "s3-restore-$tag" "$run" "$s"
        restored "$WORK/restic-out/disk.img" restic "s3-restore-$tag" "$run"
        rm -rf "$WORK/restic-out"
    done
    kill "$EMU_PID"
    wait "$EMU_PID" 2>/dev/null || true
    EMU_PID=
done

# ---- README.md and summary.md --------------------------------------------------------------
{
    echo "# mover against a distant S3 store: $STAMP"
    echo
    echo "Produced by \`scripts/bench-s3.sh $ARGS\`: Garage $(garage --version 2>/dev/null |
        awk '{sub(/^cargo:/, "", $2); print $2; exit}') (single node, on loopback) behind \`link-emu\`"
    echo "(bench/src/link.rs: half the round trip added in each direction, a token bucket per"
    echo "direction shared by all connections). Every timed command ran $RUNS time(s);"
    echo "\`summary.md\` gives medians, \`raw.jsonl\` every run. Warm page cache for the image."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores online,"
    echo "  shared with other work and loaded while this ran; Garage, the emulator and mover"
    echo "  share them too, so every figure here is a floor"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "## Software"
    echo
    echo "- mover commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)'), default flags"
    echo "- rustc: $(rustc --version 2>/dev/null || echo unknown)"
    ((RESTIC)) && echo "- $(restic version) (Debian's), default options (\`restic restore\`, parallel)"
    echo
    echo "## Parameters"
    echo
    echo "- Image: $IMG_BYTES bytes ($SIZE_GIB GiB), about $DATA_MIB MiB of data"
    echo "  (scripts/make-bench-image.sh: $(cat "$IMG.params"))"
    echo "- Links (RTT ms : Mbit/s each way): $LINKS"
    echo "- Restores write the image to a file (mover \`--to -\` into it; restic \`restore\`)"
    echo "  that is compared with the source and deleted; caches are emptied before each"
    echo "  restore, as on another machine"
} >"$OUT/README.md"

python3 scripts/bench-s3-summary.py "$RAW" "$IMG_BYTES" "$LINKS" >"$OUT/summary.md"
cat "$OUT/summary.md"
note "results in $OUT"
