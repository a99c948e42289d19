#!/usr/bin/env bash
# Benchmarks mover against its compute limit and against restic and borg on disk images made
# by scripts/make-bench-image.sh: the generated one and the real-content VM root disk (--real),
# each with its peers in the same run. See bench/README.md.
#
#   scripts/bench.sh [--image both|generated|real] [--size-gib 4] [--data-mib 1024] [--runs 3]
#                    [--level 3] [--out DIR] [--quick] [--no-peers] [--no-s3] [--install-peers]
#
# With --image both (the default) each image gets its own run, in DIR/generated and DIR/real,
# and DIR/summary.md puts their summaries one after the other.
# Writes DIR/README.md (machine, versions, parameters), DIR/raw.jsonl (one line per timed
# command) and DIR/summary.md (medians and ratios). Default DIR: bench/results/DATE-HOST
# (bench/work/results/DATE-HOST for --quick, which is not meant to be committed).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

SIZE_GIB=4
DATA_MIB=1024
RUNS=3
LEVEL=3
OUT=
QUICK=0
PEERS=1
S3=1
INSTALL_PEERS=0
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
    --runs) RUNS=$2; PASS+=("$2"); shift 2 ;;
    --level) LEVEL=$2; PASS+=("$2"); shift 2 ;;
    --quick) QUICK=1; SIZE_GIB=0.25; DATA_MIB=64; RUNS=1; shift ;;
    --no-peers) PEERS=0; shift ;;
    --no-s3) S3=0; shift ;;
    --install-peers) INSTALL_PEERS=1; shift ;;
    -h | --help) usage ;;
    *) echo "bench: unknown argument $1" >&2; usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $LEVEL =~ ^-?[0-9]+$ ]] || usage
[[ $IMAGE == both || $IMAGE == generated || $IMAGE == real ]] || usage

STAMP=$(date -u +%Y%m%d-%H%M%S)
HOST=$(hostname -s 2>/dev/null || echo host)
if [[ -z $OUT ]]; then
    if ((QUICK)); then OUT=bench/work/results/$STAMP-$HOST; else OUT=bench/results/$STAMP-$HOST; fi
fi
mkdir -p "$OUT" bench/work
if [[ $IMAGE == both ]]; then
    for kind in generated real; do
        "$0" "${PASS[@]}" --image "$kind" --out "$OUT/$kind"
    done
    {
        echo "# mover benchmark: $STAMP, both images"
        echo
        echo "Produced by \`scripts/bench.sh $ARGS\`: one run per image, each with its peers;"
        echo "see \`generated/\` and \`real/\` (README.md for the machine and parameters, raw.jsonl)."
    } >"$OUT/README.md"
    for kind in generated real; do
        echo "# Image: $kind"
        echo
        sed -e '1d' -e 's/^## /### /' "$OUT/$kind/summary.md"
        echo
    done >"$OUT/summary.md"
    echo "bench: results in $OUT" >&2
    exit 0
fi
ROOT=$(pwd -P)
RAW=$(realpath "$OUT")/raw.jsonl
: >"$RAW"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

if ((INSTALL_PEERS)); then
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y restic borgbackup hyperfine time
fi
[[ -x /usr/bin/time ]] || { note "/usr/bin/time is missing (Debian package: time; or --install-peers)"; exit 1; }

HAVE_RESTIC=0
HAVE_BORG=0
if ((PEERS)); then
    if command -v restic >/dev/null; then HAVE_RESTIC=1; else
        loud "restic not found: skipping restic (install it, or pass --install-peers)"; fi
    if command -v borg >/dev/null; then HAVE_BORG=1; else
        loud "borg not found: skipping borg (install borgbackup, or pass --install-peers)"; fi
fi

note "building mover and bench (release)"
cargo build --release -q -p mover-cli -p bench
MOVER=target/release/mover
BENCH=target/release/bench

MOVER_NO_SYNC=0
"$MOVER" restore --help | grep -q -- --no-sync && MOVER_NO_SYNC=1

if [[ $IMAGE == real ]]; then
    IMG=bench/work/real-${SIZE_GIB}g-${DATA_MIB}m.img
    scripts/make-bench-image.sh --real "$IMG" "$SIZE_GIB" "$DATA_MIB"
else
    IMG=bench/work/bench-${SIZE_GIB}g-${DATA_MIB}m.img
    scripts/make-bench-image.sh "$IMG" "$SIZE_GIB" "$DATA_MIB"
fi
IMG_BYTES=$(stat -c %s "$IMG")

WORK=$(realpath "$(mktemp -d bench/work/run.XXXXXX)") # absolute: borg runs elsewhere
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
export RESTIC_PASSWORD=mover-bench # a throwaway repository; read from the environment
export RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_BASE_DIR=$WORK/borg-home
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# Warm page cache: read the image once so that every run sees it cached.
cat "$IMG" >/dev/null

check_same() { # check_same TOOL OP RUN FILE
    if cmp -s "$4" "$IMG"; then record "$1" "$2" "$3" check=identical; else
        record "$1" "$2" "$3" check=DIFFERENT
        loud "$1 $2 run $3: restored image differs from the source"
    fi
}

# S3: a Garage server on loopback, started by the project's script (skipped with --no-s3).
S3_READY=0
if ((S3)); then
    S3_STATE=$(mktemp -d -t mover-bench-s3.XXXXXX)
    trap 'scripts/s3-servers.sh stop "$S3_STATE" >/dev/null 2>&1 || true; rm -rf "$S3_STATE"' EXIT
    if scripts/s3-servers.sh start "$S3_STATE" >&2; then
        # shellcheck disable=SC1091
        source "$S3_STATE/env"
        S3_READY=1
        S3_ARGS=(--s3-endpoint "$MOVER_TEST_GARAGE_ENDPOINT" --s3-region "$MOVER_TEST_GARAGE_REGION" --s3-allow-http)
    else
        loud "the S3 servers did not start: skipping the S3 rows"
    fi
fi

# s3_objects PREFIX: "COUNT BYTES" of the objects under PREFIX/ in the Garage bucket.
s3_objects() {
    curl -s --aws-sigv4 "aws:amz:$MOVER_TEST_GARAGE_REGION:s3" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        --user "$MOVER_TEST_GARAGE_ACCESS_KEY:$MOVER_TEST_GARAGE_SECRET_KEY" \
        "$MOVER_TEST_GARAGE_ENDPOINT/$MOVER_TEST_GARAGE_BUCKET?list-type=2&max-keys=1000&prefix=$1%2F" |
        python3 -c 'import re,sys; x=sys.stdin.read(); s=[int(v) for v in re.findall(r"<Size>(\d+)</Size>", x)]; print(len(s), sum(s))'
}

for ((run = 1; run <= RUNS; run++)); do
    note "run $run/$RUNS: compute limit"
    measure bench compute-limit "$run" - - - -- "$BENCH" compute-limit "$IMG" --level "$LEVEL"

    note "run $run/$RUNS: mover"
    repo=$WORK/mover-repo
    rm -rf "$repo"
    "$MOVER" init -r "$repo" --quiet
    measure mover backup "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --source "$IMG" \
        --compression "$LEVEL" --json --quiet
    measure mover backup-again "$run" "$repo" - - -- "$MOVER" backup -r "$repo" --source "$IMG" \
        --compression "$LEVEL" --json --quiet
    warm "$repo"
    rm -f "$WORK/restored.img"
    measure mover restore "$run" - - - -- "$MOVER" restore -r "$repo" latest \
        --to "$WORK/restored.img" --quiet
    check_same mover restore "$run" "$WORK/restored.img"
    rm -f "$WORK/restored.img"
    if ((MOVER_NO_SYNC)); then # the same without the final fsync: what the disk flush costs
        measure mover restore-no-sync "$run" - - - -- "$MOVER" restore -r "$repo" latest \
            --to "$WORK/restored.img" --no-sync --quiet
        rm -f "$WORK/restored.img"
    fi
    measure mover restore-stdout "$run" - - /dev/null -- "$MOVER" restore -r "$repo" latest \
        --to - --quiet

    note "run $run/$RUNS: mover, encrypted repository"
    # The same backup and restores into an encrypted repository (the cipher `init` picks on
    # this processor, keyed BLAKE3 ids); the password comes from the environment like any
    # secret.
    erepo=$WORK/mover-repo-encrypted
    rm -rf "$erepo"
    MOVER_PASSWORD=mover-bench "$MOVER" init -r "$erepo" --encrypt --quiet
    measure mover backup-encrypted "$run" "$erepo" - - -- env MOVER_PASSWORD=mover-bench \
        "$MOVER" backup -r "$erepo" --source "$IMG" --compression "$LEVEL" --json --quiet
    warm "$erepo"
    rm -f "$WORK/restored.img"
    measure mover restore-encrypted "$run" - - - -- env MOVER_PASSWORD=mover-bench \
        "$MOVER" restore -r "$erepo" latest --to "$WORK/restored.img" --quiet
    check_same mover restore-encrypted "$run" "$WORK/restored.img"
    rm -f "$WORK/restored.img"
    measure mover restore-stdout-encrypted "$run" - - /dev/null -- env MOVER_PASSWORD=mover-bench \
        "$MOVER" restore -r "$erepo" latest --to - --quiet
    # What opening costs, data aside: Argon2id once per command for the encrypted repository.
    measure mover open "$run" - - /dev/null -- "$MOVER" snapshots -r "$repo" --quiet
    measure mover open-encrypted "$run" - - /dev/null -- env MOVER_PASSWORD=mover-bench \
        "$MOVER" snapshots -r "$erepo" --quiet
    rm -rf "$erepo"

    note "run $run/$RUNS: mover tape-style archive"
    # Into a pipe (what backup software reading stdout sees), then into a file (its size is
    # the row's repository bytes, compared with the repository's after its first backup),
    # then restored from a pipe. Pipelines run under bash -c with pipefail so that a failing
    # mover fails the row.
    arc=$WORK/mover.arc
    rm -f "$arc"
    measure mover archive-backup-pipe "$run" - - - -- bash -c 'set -o pipefail; "$0" backup \
        --source "$1" --compression "$2" --to-archive - --quiet | cat >/dev/null' \
        "$MOVER" "$IMG" "$LEVEL"
    measure mover archive-backup "$run" "$arc" - - -- "$MOVER" backup --source "$IMG" \
        --compression "$LEVEL" --to-archive "$arc" --json --quiet
    measure mover archive-restore-pipe "$run" - - - -- bash -c 'set -o pipefail; cat "$1" |
        "$0" restore --from-archive - --to - --quiet >/dev/null' "$MOVER" "$arc"
    if ((run == 1)); then # untimed: the restored stream is the image
        if cat "$arc" | "$MOVER" restore --from-archive - --to - --quiet | cmp -s - "$IMG"; then
            record mover archive-restore-pipe "$run" check=identical
        else
            record mover archive-restore-pipe "$run" check=DIFFERENT
            loud "mover restore --from-archive - --to - differs from the source"
        fi
    fi
    rm -f "$arc"

    if ((S3_READY)); then
        note "run $run/$RUNS: mover on S3 (Garage)"
        s3prefix=bench-$STAMP-$run
        s3url=s3://$MOVER_TEST_GARAGE_BUCKET/$s3prefix
        export AWS_ACCESS_KEY_ID=$MOVER_TEST_GARAGE_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MOVER_TEST_GARAGE_SECRET_KEY
        export XDG_CACHE_HOME=$WORK/s3-cache
        "$MOVER" init -r "$s3url" "${S3_ARGS[@]}" --quiet
        measure mover s3-backup "$run" - - - -- "$MOVER" backup -r "$s3url" "${S3_ARGS[@]}" \
            --source "$IMG" --compression "$LEVEL" --json --quiet
        read -r objects bytes < <(s3_objects "$s3prefix")
        record mover s3-objects "$run" objects="$objects" bytes="$bytes"
        rm -f "$WORK/restored.img"
        measure mover s3-restore "$run" - - - -- "$MOVER" restore -r "$s3url" "${S3_ARGS[@]}" \
            latest --to "$WORK/restored.img" --no-sync --quiet
        check_same mover s3-restore "$run" "$WORK/restored.img"
        rm -f "$WORK/restored.img"
        measure mover s3-restore-sync "$run" - - - -- "$MOVER" restore -r "$s3url" "${S3_ARGS[@]}" \
            latest --to "$WORK/restored.img" --quiet
        check_same mover s3-restore-sync "$run" "$WORK/restored.img"
        rm -f "$WORK/restored.img"
        measure mover s3-restore-stdout "$run" - - /dev/null -- "$MOVER" restore -r "$s3url" \
            "${S3_ARGS[@]}" latest --to - --quiet
    fi
    if ((run == 1)); then # untimed: the stream itself is the image
        if "$MOVER" restore -r "$repo" latest --to - --quiet | cmp -s - "$IMG"; then
            record mover restore-stdout "$run" check=identical
        else
            record mover restore-stdout "$run" check=DIFFERENT
            loud "mover restore --to - differs from the source"
        fi
    fi
    rm -rf "$repo"

    if ((HAVE_RESTIC)); then
        note "run $run/$RUNS: restic"
        repo=$WORK/restic-repo
        rm -rf "$repo" "$RESTIC_CACHE_DIR"
        restic init -r "$repo" --repository-version 2 --quiet >/dev/null
        measure restic backup "$run" "$repo" "$IMG" - -- restic -r "$repo" backup --stdin \
            --stdin-filename disk.img --json --quiet
        measure restic backup-again "$run" "$repo" "$IMG" - -- restic -r "$repo" backup --stdin \
            --stdin-filename disk.img --json --quiet
        measure restic restore-stdout "$run" - - "$WORK/restored.img" -- restic -r "$repo" dump \
            latest disk.img
        check_same restic restore-stdout "$run" "$WORK/restored.img"
        rm -rf "$repo" "$WORK/restored.img"
    fi

    if ((HAVE_BORG)); then
        note "run $run/$RUNS: borg"
        repo=$WORK/borg-repo
        rm -rf "$repo" "$BORG_BASE_DIR"
        borg init --encryption=none "$repo"
        # Archive the image under its bare name; the files cache is off so that the second
        # run reads and chunks the image again, like mover and restic do.
        img_abs=$(realpath "$IMG")
        (cd "$(dirname "$img_abs")" && measure borg backup "$run" "$repo" - - -- borg create \
            --files-cache=disabled --compression "zstd,$LEVEL" "$repo::a1" "$(basename "$img_abs")")
        (cd "$(dirname "$img_abs")" && measure borg backup-again "$run" "$repo" - - -- borg create \
            --files-cache=disabled --compression "zstd,$LEVEL" "$repo::a2" "$(basename "$img_abs")")
        mkdir -p "$WORK/borg-out"
        (cd "$WORK/borg-out" && measure borg restore "$run" - - - -- borg extract --sparse \
            "$repo::a1")
        check_same borg restore "$run" "$WORK/borg-out/$(basename "$img_abs")"
        rm -rf "$repo" "$WORK/borg-out"
    fi
done

# ---- README.md: machine and parameters -----------------------------------------------------
{
    echo "# mover benchmark: $STAMP"
    echo
    echo "Produced by \`scripts/bench.sh $ARGS\`. Warm page cache: the image is read once before"
    echo "the runs and stays cached; caches are not dropped between runs. Every timed command is"
    echo "run $RUNS time(s); \`summary.md\` reports medians, \`raw.jsonl\` every run."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores online"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Filesystem of bench/work: $(df -T bench/work | awk 'NR == 2 { print $2 }')"
    echo "- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "## Software"
    echo
    echo "- mover commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- $("$MOVER" --version)"
    echo "- rustc: $(rustc --version 2>/dev/null || echo unknown)"
    ((HAVE_RESTIC)) && echo "- $(restic version)"
    ((HAVE_BORG)) && echo "- $(borg --version)"
    echo
    echo "## Parameters"
    echo
    echo "- Image ($IMAGE): \`$IMG\`, $IMG_BYTES bytes ($SIZE_GIB GiB), about $DATA_MIB MiB of data"
    echo "  (scripts/make-bench-image.sh: $(head -1 "$IMG.params"))"
    if [[ $IMAGE == real ]]; then
        echo "- What the real image holds (copied from this machine; then its package upgrade):"
        tail -n +2 "$IMG.params" | sed 's/^/  - /'
    fi
    echo "- zstd level: $LEVEL (mover \`--compression $LEVEL\`, borg \`--compression zstd,$LEVEL\`,"
    echo "  restic its default \`--compression auto\`); mover's chunk size: its default"
    echo "- runs: $RUNS; restic: $( ((HAVE_RESTIC)) && echo yes || echo skipped); borg: $( ((HAVE_BORG)) && echo yes || echo skipped)"
} >"$OUT/README.md"

# ---- summary.md ----------------------------------------------------------------------------
python3 - "$RAW" "$IMG_BYTES" "$OUT/summary.md" <<'PY'
import json, statistics, sys
raw, img_bytes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
recs = [json.loads(l) for l in open(raw) if l.strip()]
timed = [r for r in recs if "seconds" in r]
checks = [r for r in recs if "check" in r]
MB = 1e6

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

cl = [r["stdout_last"] for r in timed if r["op"] == "compute-limit" and isinstance(r["stdout_last"], dict)]
nonzero = cl[0]["nonzero_bytes"] if cl else None
groups = {}
for r in timed:
    groups.setdefault((r["tool"], r["op"]), []).append(r)

rows, m = [], {}
for (tool, op), rs in groups.items():
    ok = [r for r in rs if r["exit_code"] == 0]
    if tool == "bench":  # the compute limit: its own timing, I/O excluded
        secs = med([r["stdout_last"]["seconds"] for r in ok if isinstance(r["stdout_last"], dict)])
    else:
        secs = med([r["seconds"] for r in ok])
    rss = med([r["max_rss_kib"] for r in ok])
    repo = med([r["repo_bytes"] for r in ok])
    m[(tool, op)] = {"s": secs, "repo": repo}
    rows.append((tool, op, secs, rss, repo, len(ok), len(rs)))
    if tool == "bench":  # the same pass through mover's encoder (probe skips incompressible data)
        esecs = med([r["stdout_last"].get("encoder_seconds") for r in ok if isinstance(r["stdout_last"], dict)])
        if esecs is not None:
            m[("bench", "encoder-limit")] = {"s": esecs, "repo": None}
            rows.append(("bench", "encoder-limit", esecs, rss, None, len(ok), len(rs)))

def f(x, fmt):
    return "n/a" if x is None else fmt % x

lines = ["# Summary", "",
         "Medians over the runs. MB/s are 10^6 bytes per second of the image's logical size and of",
         "its non-zero data (%s bytes in non-zero 1 MiB chunks). Warm page cache." % (nonzero,), "",
         "| tool | operation | median s | MB/s image | MB/s non-zero | peak RSS MiB | repository bytes | ok runs |",
         "|---|---|---:|---:|---:|---:|---:|---:|"]
for tool, op, secs, rss, repo, nok, n in rows:
    label = {"compute-limit": "compute limit (BLAKE3 + zstd over every chunk, in memory)",
             "encoder-limit": "encoder limit (BLAKE3 + mover's encoder, in memory)"}.get(op, op)
    lines.append("| %s | %s | %s | %s | %s | %s | %s | %d/%d |" % (
        tool, label, f(secs, "%.3f"),
        f(img_bytes / MB / secs if secs else None, "%.0f"),
        f(nonzero / MB / secs if secs and nonzero else None, "%.0f"),
        f(rss / 1024 if rss else None, "%.0f"), f(repo, "%d"), nok, n))

def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None

def s(t, o):
    return m.get((t, o), {}).get("s")

def repo(t, o):
    return m.get((t, o), {}).get("repo")

def sub(a, b):
    return a - b if a is not None and b is not None else None

unlock = sub(s("mover", "open-encrypted"), s("mover", "open"))

s3o = [r for r in recs if r.get("op") == "s3-objects"]
s3_per_gib = None
if s3o and int(s3o[0]["bytes"]) > 0:
    s3_per_gib = int(s3o[0]["objects"]) / (int(s3o[0]["bytes"]) / 2**30)

lines += ["", "## Ratios", ""]
items = [
    ("mover backup throughput / compute limit (target >= 0.8)", ratio(s("bench", "compute-limit"), s("mover", "backup")), "%.2f"),
    ("mover backup throughput / encoder limit (the same work mover's encoder does, in memory)",
     ratio(s("bench", "encoder-limit"), s("mover", "backup")), "%.2f"),
    ("mover dedup backup throughput / compute limit", ratio(s("bench", "compute-limit"), s("mover", "backup-again")), "%.2f"),
    ("mover backup speed / restic backup speed (target >= 3)", ratio(s("restic", "backup"), s("mover", "backup")), "%.2f x"),
    ("mover backup speed / borg backup speed", ratio(s("borg", "backup"), s("mover", "backup")), "%.2f x"),
    ("mover dedup backup speed / restic dedup backup speed", ratio(s("restic", "backup-again"), s("mover", "backup-again")), "%.2f x"),
    ("stored bytes mover / restic (after first backup; target <= 1.02)", ratio(repo("mover", "backup"), repo("restic", "backup")), "%.3f"),
    ("stored bytes mover / borg (after first backup)", ratio(repo("mover", "backup"), repo("borg", "backup")), "%.3f"),
    ("mover repository growth on the second backup (bytes)",
     None if repo("mover", "backup-again") is None else repo("mover", "backup-again") - repo("mover", "backup"), "%d"),
    ("encrypted / unencrypted backup throughput (target >= 0.85)",
     ratio(s("mover", "backup"), s("mover", "backup-encrypted")), "%.2f"),
    ("encrypted / unencrypted restore throughput, to a file (target >= 0.85)",
     ratio(s("mover", "restore"), s("mover", "restore-encrypted")), "%.2f"),
    ("encrypted / unencrypted restore throughput, to stdout (target >= 0.85)",
     ratio(s("mover", "restore-stdout"), s("mover", "restore-stdout-encrypted")), "%.2f"),
    ("unlocking an encrypted repository (Argon2id, once per command), seconds",
     sub(s("mover", "open-encrypted"), s("mover", "open")), "%.3f"),
    ("encrypted / unencrypted backup throughput, the fixed unlock aside",
     ratio(s("mover", "backup"), sub(s("mover", "backup-encrypted"), unlock)), "%.2f"),
    ("encrypted / unencrypted restore throughput to a file, the fixed unlock aside",
     ratio(s("mover", "restore"), sub(s("mover", "restore-encrypted"), unlock)), "%.2f"),
    ("encrypted / unencrypted restore throughput to stdout, the fixed unlock aside",
     ratio(s("mover", "restore-stdout"), sub(s("mover", "restore-stdout-encrypted"), unlock)), "%.2f"),
    ("mover restore to file, GB/s of image size", ratio(img_bytes / 1e9, s("mover", "restore")), "%.2f"),
    ("mover restore to file with --no-sync, GB/s of image size", ratio(img_bytes / 1e9, s("mover", "restore-no-sync")), "%.2f"),
    ("mover restore to stdout, GB/s of image size", ratio(img_bytes / 1e9, s("mover", "restore-stdout")), "%.2f"),
    ("restic dump, GB/s of image size", ratio(img_bytes / 1e9, s("restic", "restore-stdout")), "%.2f"),
    ("borg extract --sparse, GB/s of image size", ratio(img_bytes / 1e9, s("borg", "restore")), "%.2f"),
    ("mover S3 (Garage) backup throughput / local backup throughput", ratio(s("mover", "backup"), s("mover", "s3-backup")), "%.2f"),
    ("mover S3 restore to file (--no-sync) / local restore to file (--no-sync)", ratio(s("mover", "restore-no-sync"), s("mover", "s3-restore")), "%.2f"),
    ("mover S3 restore to stdout / local restore to file (--no-sync)", ratio(s("mover", "restore-no-sync"), s("mover", "s3-restore-stdout")), "%.2f"),
    ("mover S3 restore to file / local restore to file, both durable (the default)", ratio(s("mover", "restore"), s("mover", "s3-restore-sync")), "%.2f"),
    ("mover S3 restore to stdout / local restore to stdout", ratio(s("mover", "restore-stdout"), s("mover", "s3-restore-stdout")), "%.2f"),
    ("mover S3 objects per GiB stored", s3_per_gib, "%.1f"),
    ("mover archive backup into a pipe throughput / repository backup throughput (target >= 0.9)",
     ratio(s("mover", "backup"), s("mover", "archive-backup-pipe")), "%.2f"),
    ("mover archive backup into a file throughput / repository backup throughput (target >= 0.9)",
     ratio(s("mover", "backup"), s("mover", "archive-backup")), "%.2f"),
    ("mover archive restore from a pipe, GB/s of image size (target >= 1)",
     ratio(img_bytes / 1e9, s("mover", "archive-restore-pipe")), "%.2f"),
    ("mover archive file size / repository size after the first backup (target <= 1.02)",
     ratio(repo("mover", "archive-backup"), repo("mover", "backup")), "%.4f"),
    ("mover restore speed / restic dump speed", ratio(s("restic", "restore-stdout"), s("mover", "restore-stdout")), "%.2f x"),
]
for name, v, fmt in items:
    if v is not None:
        lines.append("- %s: %s" % (name, fmt % v))
bad = [c for c in checks if c["check"] != "identical"]
lines += ["", "## Checks", "",
          "Restored images compared with `cmp` against the source: %d identical, %d different." % (
              len(checks) - len(bad), len(bad))]
for c in bad:
    lines.append("- DIFFERENT: %s %s run %d" % (c["tool"], c["op"], c["run"]))
failed = [r for r in timed if r["exit_code"] != 0]
for r in failed:
    lines.append("- FAILED (exit %d): %s %s run %d: `%s`" % (r["exit_code"], r["tool"], r["op"], r["run"], r["command"]))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
note "results in $OUT"
