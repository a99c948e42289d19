#!/usr/bin/env bash
# A/B of a restore's CPU: a local repository and Garage behind link-emu (20 ms round trip,
# RATE Mbit/s, default 200), with the build before (OLD, copied to bench/work/ab/mover-before)
# and after (NEW, target/release/mover), alternating, ROUNDS times (default 5). Prints one line
# per restore: build, repository, wall s, user s, system s, voluntary context switches.
#
#   RATE=200 bench/results/20261206-034204-s3cpu/ab.sh [ROUNDS]
#
# The image: scripts/make-bench-image.sh bench/work/bench-1g-512m.img 1 512
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p bench/work/ab
OLD=bench/work/ab/mover-before NEW=target/release/mover
IMG=bench/work/bench-1g-512m.img
W=$(realpath bench/work/ab); S=$W/s3
scripts/s3-servers.sh start "$S" >/dev/null 2>&1
source "$S/env"
for p in "$S/s3s-fs.pid" "$S/moto.pid" "$S"/cluster/node*.pid; do [[ -f $p ]] && kill "$(cat "$p")" && rm -f "$p"; done
export AWS_ACCESS_KEY_ID=$MOVER_TEST_GARAGE_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MOVER_TEST_GARAGE_SECRET_KEY XDG_CACHE_HOME=$W/cache
target/release/link-emu --upstream "${MOVER_TEST_GARAGE_ENDPOINT#http://}" --delay-ms 10 --rate-mbit "${RATE:-200}" --stats "$W/link.stats" >"$W/link.out" &
EMU=$!; trap 'kill $EMU; scripts/s3-servers.sh stop "$S" >/dev/null 2>&1; rm -rf "$W/local" "$W/cache" "$W/out.img"' EXIT
sleep 1; addr=$(awk '/^listening on/ { print $3 }' "$W/link.out")
s3=(--s3-endpoint "http://$addr" --s3-region "$MOVER_TEST_GARAGE_REGION" --s3-allow-http)
U=s3://$MOVER_TEST_GARAGE_BUCKET/ab
$NEW init -r $U "${s3[@]}" --quiet; $NEW backup -r $U "${s3[@]}" --source $IMG --quiet >/dev/null
$NEW init -r "$W/local" --quiet; $NEW backup -r "$W/local" --source $IMG --quiet >/dev/null
find "$W/local" -type f -exec cat {} + >/dev/null
for i in $(seq "${1:-5}"); do
  for which in OLD NEW; do
    bin=${!which}
    /usr/bin/time -f "$which local %e %U %S %w" $bin restore -r "$W/local" latest --to - --quiet >"$W/out.img"
    rm -rf "$W/cache"
    /usr/bin/time -f "$which s3 %e %U %S %w" $bin restore -r $U "${s3[@]}" latest --to - --quiet >"$W/out.img"
    cmp -s "$W/out.img" $IMG || echo "$which DIFFERENT"
  done
done
