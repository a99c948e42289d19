#!/usr/bin/env bash
# The README's instant-recovery recipe, run end to end and checked bit-exact:
#
#   scripts/instant-recovery.sh [--mover PATH] [--keep]
#
#  1. backs up a small disk (an MBR partition holding ext4 with a few files) as disk `sda`;
#  2. serves it with `mover serve --overlay`, and opens it in qemu-storage-daemon as a running
#     VM would (the same -blockdev, the same QMP commands); qemu-io writes through the daemon's
#     own NBD export stand in for the guest;
#  3. mirrors the disk to a production image with QMP `blockdev-mirror` while the "guest"
#     writes, then `job-complete` switches it over; a write after the switch goes to the
#     production image only. Checked: the production image holds the backup plus every write,
#     the export (its overlay) the backup plus the writes made before the switch;
#  4. the fallback without a VM: `qemu-img convert` of the export to qcow2, `qemu-img compare`d;
#  5. mounts the file system from the export read-only, with the kernel's NBD client where the
#     kernel has one (/dev/nbd0 and nbd-client), else with nbdfuse and a loop mount, and
#     compares its files with the originals.
#
# Needs qemu-img, qemu-io, qemu-storage-daemon (qemu-utils), nbdfuse (libnbd-bin), python3,
# mkfs.ext4; the mount (step 5) needs root and FUSE or NBD in the kernel. Exits 0 when every
# check passed, 77 when a prerequisite is missing (the test suite turns that into a failure under
# CI=true), 1 on a failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

MOVER=target/debug/mover
KEEP=
while (($#)); do
    case $1 in
    --mover) MOVER=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) sed -n '4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

log() { echo "instant-recovery: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
missing() { log "cannot run: $*"; exit 77; }

for t in qemu-img qemu-io qemu-storage-daemon nbdfuse python3 mkfs.ext4 partx; do
    command -v "$t" >/dev/null || missing "$t is not installed (scripts/setup.sh)"
done
[[ -x $MOVER ]] || missing "$MOVER is not built (cargo build -p mover-cli)"
MOVER=$(realpath "$MOVER")

W=$(mktemp -d -t mover-recovery.XXXXXX)
SERVE= QSD= FUSE= MNT= LOOPDEV= NBDDEV=
cleanup() {
    local rc=$?
    [[ -n $MNT ]] && umount "$MNT" 2>/dev/null
    [[ -n $LOOPDEV ]] && losetup -d "$LOOPDEV" 2>/dev/null
    [[ -n $NBDDEV ]] && nbd-client -d "$NBDDEV" >/dev/null 2>&1
    [[ -n $FUSE ]] && { umount "$W/fuse" 2>/dev/null; kill "$FUSE" 2>/dev/null; wait "$FUSE" 2>/dev/null; }
    [[ -n $QSD ]] && { kill "$QSD" 2>/dev/null; wait "$QSD" 2>/dev/null; }
    [[ -n $SERVE ]] && { kill "$SERVE" 2>/dev/null; wait "$SERVE" 2>/dev/null; }
    if [[ -n $KEEP ]]; then log "kept $W"; else rm -rf "$W"; fi
    exit "$rc"
}
trap cleanup EXIT

# qmp SOCKET COMMAND [ARGUMENTS-JSON]: one QMP command; prints its return value as JSON.
qmp() {
    python3 - "$@" <<'PY'
import json, socket, sys
path, cmd = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rw")
def call(name, arguments):
    f.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if "error" in msg:
            sys.exit(f"QMP {name}: {msg['error']['desc']}")
        if "return" in msg:
            return msg["return"]
json.loads(f.readline())  # the greeting
call("qmp_capabilities", {})
print(json.dumps(call(cmd, args)))
PY
}

# wait_for TEST-ARGS…: waits up to 30 s for `test ARGS` to hold.
wait_for() {
    local i
    for i in $(seq 300); do
        test "$@" && return 0
        sleep 0.1
    done
    fail "timed out waiting for: test $*"
}

# --- 1. a disk with a file system, backed up -------------------------------------------------
DISK=$W/vm1.img
mkdir "$W/files"
echo "a file of the backed-up disk" >"$W/files/hello.txt"
head -c 6M /dev/urandom >"$W/files/data.bin"
truncate -s 64M "$DISK"
# One partition from sector 2048 (1 MiB) to 48 MiB, so that the last 16 MiB of the disk are
# outside the file system and the "guest" can write there without corrupting it.
PART_START=2048 PART_SECTORS=$(((47 << 20) / 512))
mkfs.ext4 -q -F -E offset=$((PART_START * 512)) -d "$W/files" "$DISK" 47M >/dev/null
python3 - "$DISK" "$PART_START" "$PART_SECTORS" <<'PY'
import struct, sys
path, start, sectors = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(446)  # the first MBR partition entry: Linux (0x83)
    f.write(bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", start, sectors))
    f.seek(510)
    f.write(b"\x55\xaa")
PY
"$MOVER" init -r "$W/repo" -q
"$MOVER" backup -r "$W/repo" -q --name vm1 --source "sda=$DISK" >/dev/null

# --- 2. served with an overlay, opened as a VM opens it ---------------------------------------
SOCK=$W/vm1-sda.sock
"$MOVER" serve -r "$W/repo" latest --name vm1 --disk sda \
    --socket "$SOCK" --overlay "$W/vm1-sda.overlay" >"$W/serve.out" 2>"$W/serve.log" &
SERVE=$!
wait_for -s "$W/serve.out"
URI=$(head -1 "$W/serve.out")
[[ $URI == "nbd+unix:///sda?socket=$SOCK" ]] || fail "mover serve printed $URI"

QMP=$W/qmp.sock GUEST=$W/guest.sock
qemu-storage-daemon \
    --chardev "socket,id=qmp0,path=$QMP,server=on,wait=off" --monitor chardev=qmp0 \
    --blockdev "driver=nbd,node-name=backup,server.type=unix,server.path=$SOCK,export=sda" \
    --nbd-server "addr.type=unix,addr.path=$GUEST" \
    --export type=nbd,id=guest,node-name=backup,name=vm1,writable=on \
    2>"$W/qsd.log" &
QSD=$!
wait_for -S "$QMP"
wait_for -S "$GUEST"
GUEST_URI="nbd+unix:///vm1?socket=$GUEST"

# guest_write NAME QEMU-IO-COMMANDS…: writes through the daemon's export (the running VM) and
# replays the same commands on the expected image $W/expect-NAME.img.
guest_write() {
    local name=$1 c args=()
    shift
    for c in "$@" flush; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$GUEST_URI" >/dev/null
    qemu-io -f raw "${args[@]}" "$W/expect.img" >/dev/null
    cp --sparse=always "$W/expect.img" "$W/expect-$name.img"
}
cp --sparse=always "$DISK" "$W/expect.img"
guest_write before "write -P 0x11 49M 1M" "write -P 0x12 512k 4k"

# --- 3. mirrored to production storage while it runs -----------------------------------------
PROD=$W/prod/vm1.img
mkdir "$W/prod"
qemu-img create -q -f raw "$PROD" 64M
qmp "$QMP" blockdev-add \
    "{\"driver\":\"raw\",\"node-name\":\"prod\",\"file\":{\"driver\":\"file\",\"filename\":\"$PROD\"}}" >/dev/null
# Throttled so that the guest's next writes land while the job is still copying.
qmp "$QMP" blockdev-mirror \
    '{"job-id":"m0","device":"backup","target":"prod","sync":"full","speed":524288}' >/dev/null
guest_write during "write -P 0x21 50M 3M" "write -P 0x22 60M 64k" "write -z 49M 128k"
jobs=$(qmp "$QMP" query-block-jobs)
progress=$(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
if j and not j[0]["ready"]:
    print(j[0]["offset"], "of", j[0]["len"])' "$jobs")
[[ -n $progress ]] || fail "the mirror was ready before the guest wrote; lower its speed ($jobs)"
log "the guest wrote while the mirror had copied $progress bytes"
qmp "$QMP" block-job-set-speed '{"device":"m0","speed":0}' >/dev/null
for i in $(seq 600); do
    jobs=$(qmp "$QMP" query-block-jobs)
    python3 -c 'import json, sys; j = json.loads(sys.argv[1]); sys.exit(not (j and j[0]["ready"]))' "$jobs" && break
    ((i < 600)) || fail "the mirror never became ready: $jobs"
    sleep 0.1
done
qmp "$QMP" job-complete '{"id":"m0"}' >/dev/null
for i in $(seq 600); do
    [[ $(qmp "$QMP" query-block-jobs) == "[]" ]] && break
    ((i < 600)) || fail "the mirror did not complete"
    sleep 0.1
done
# The VM now runs from production storage: this write does not reach the export.
guest_write after "write -P 0x31 62M 256k"
qmp "$QMP" quit >/dev/null || true
wait "$QSD" || true
QSD=

cmp "$PROD" "$W/expect-after.img" ||
    fail "the production image is not the backup plus every write of the guest"
qemu-img compare -q -f raw -F raw "$W/expect-during.img" "$URI" ||
    fail "the export is not the backup plus the writes made before the switch"
log "mirror: the production image is bit-exact (the backup and every guest write), the export holds the writes before the switch only"

# --- 4. the fallback without a VM: qemu-img convert ------------------------------------------
qemu-img convert -O qcow2 "$URI" "$W/vm1.qcow2"
qemu-img compare -q -F raw "$W/vm1.qcow2" "$W/expect-during.img" ||
    fail "qemu-img convert of the export differs"
log "qemu-img convert of the export to qcow2: identical"

# --- 5. files from the export -----------------------------------------------------------------
check_files() { # DIR
    cmp "$1/hello.txt" "$W/files/hello.txt" && cmp "$1/data.bin" "$W/files/data.bin" ||
        fail "the files mounted from the export differ from the originals"
}
[[ $(id -u) -eq 0 ]] || missing "mounting needs root (steps 1-4 passed)"
MNT=$W/mnt
mkdir "$MNT"
if [[ -b /dev/nbd0 ]] && command -v nbd-client >/dev/null; then
    NBDDEV=/dev/nbd0
    nbd-client -unix "$SOCK" -N sda "$NBDDEV" -readonly >/dev/null
    [[ -b ${NBDDEV}p1 ]] || fail "no partition device ${NBDDEV}p1"
    mount -o ro "${NBDDEV}p1" "$MNT"
    check_files "$MNT"
    log "mounted ${NBDDEV}p1 (kernel NBD client) read-only: the files are the originals"
else
    [[ -c /dev/fuse ]] || missing "neither /dev/nbd0 with nbd-client nor /dev/fuse (steps 1-4 passed)"
    mkdir "$W/fuse"
    nbdfuse -r "$W/fuse" "$URI" 2>"$W/nbdfuse.log" &
    FUSE=$!
    wait_for -f "$W/fuse/nbd"
    # The partition's start from its table; a loop mount at that offset works whether or not
    # the kernel scans loop devices for partitions.
    start=$(partx -g -o START -n 1 "$W/fuse/nbd" | tr -d ' ')
    [[ $start == "$PART_START" ]] || fail "partx found the partition at sector $start"
    mount -o ro,offset=$((start * 512)) "$W/fuse/nbd" "$MNT"
    check_files "$MNT"
    log "mounted the partition from nbdfuse (loop, read-only): the files are the originals"
fi
umount "$MNT"
MNT=
if [[ -n $FUSE ]]; then
    umount "$W/fuse"
    wait "$FUSE" || true
    FUSE=
fi
kill -TERM "$SERVE"
wait "$SERVE" || fail "mover serve exited with $? on SIGTERM"
SERVE=
log "all checks passed"
