#!/usr/bin/env bash
# Boots a small Linux guest from its backup: the guest's root disk is a `mover serve --overlay`
# export, run under qemu-system-x86_64 with TCG (no KVM needed).
#
#   scripts/instant-recovery-demo.sh [--mover PATH] [--kernel VMLINUZ --modules DIR] [--keep]
#
#  1. builds a tiny root disk: ext4 holding busybox, an /sbin/init script and a file;
#  2. backs it up with mover and serves it with --overlay;
#  3. boots Debian's kernel with an initramfs (busybox and the virtio and ext4 modules) that
#     mounts /dev/vda, the export, as the root file system and switches to it; the guest's
#     init reads the backed-up file, writes a new one, and powers off;
#  4. after the guest stops, serves the snapshot again with the same overlay and reads both
#     files back from the export (qemu-img convert and debugfs): the written file is there,
#     and the repository is unchanged.
#
# Needs qemu-system-x86_64, busybox-static, cpio and a kernel: by default the one that
# `scripts/setup.sh --demo` unpacks into ${MOVER_DEMO_DIR:-${XDG_CACHE_HOME:-~/.cache}/mover-demo}.
# Exits 0 when every check passed, 77 when a prerequisite is missing, 1 on a failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

MOVER=target/debug/mover
KERNEL= MODULES= KEEP=
BOOT_TIMEOUT_S=${BOOT_TIMEOUT_S:-300}
while (($#)); do
    case $1 in
    --mover) MOVER=$2; shift 2 ;;
    --kernel) KERNEL=$2; shift 2 ;;
    --modules) MODULES=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) sed -n '5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

log() { echo "demo: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
missing() { log "cannot run: $*"; exit 77; }

for t in qemu-system-x86_64 qemu-img cpio gzip mkfs.ext4 debugfs python3 file; do
    command -v "$t" >/dev/null || missing "$t is not installed (scripts/setup.sh --demo)"
done
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
    missing "no static busybox at $BUSYBOX (scripts/setup.sh --demo)"
[[ -x $MOVER ]] || missing "$MOVER is not built (cargo build -p mover-cli)"
MOVER=$(realpath "$MOVER")
if [[ -z $KERNEL ]]; then
    demo=${MOVER_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mover-demo}
    KERNEL=$(compgen -G "$demo/kernel/boot/vmlinuz-*" | sort -V | tail -1) ||
        missing "no kernel in $demo (scripts/setup.sh --demo)"
    MODULES=$demo/kernel/lib/modules/${KERNEL##*/vmlinuz-}
fi
[[ -r $KERNEL && -d $MODULES ]] || missing "kernel $KERNEL or its modules $MODULES not readable"

W=$(mktemp -d -t mover-demo.XXXXXX)
SERVE=
cleanup() {
    local rc=$?
    [[ -n $SERVE ]] && { kill "$SERVE" 2>/dev/null; wait "$SERVE" 2>/dev/null; }
    if [[ -n $KEEP ]]; then log "kept $W"; else rm -rf "$W"; fi
    exit "$rc"
}
trap cleanup EXIT

# --- 1. the guest's root disk ----------------------------------------------------------------
R=$W/rootfs
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,mnt}
cp "$BUSYBOX" "$R/bin/busybox"
echo "read from the backup by the guest" >"$R/etc/from-backup.txt"
cat >"$R/sbin/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "guest: root is $(awk '$2 == "/" { print $1, $3 }' /proc/mounts)"
echo "guest: /etc/from-backup.txt says: $(cat /etc/from-backup.txt)"
echo "written by the guest after reading: $(cat /etc/from-backup.txt)" >/written-by-guest.txt
sync
mount -o remount,ro /
echo "guest: wrote /written-by-guest.txt; powering off"
poweroff -f
INIT
chmod +x "$R/sbin/init"
DISK=$W/guest.img
mkfs.ext4 -q -F -L guestroot -d "$R" "$DISK" 32M >/dev/null
"$MOVER" init -r "$W/repo" -q
"$MOVER" backup -r "$W/repo" -q --name guest --source "vda=$DISK" >/dev/null
repo_state() { find "$W/repo" -type f -exec sha256sum {} + | sort; }
repo_state >"$W/repo.before"

# --- 2. the initramfs: busybox, the modules for a virtio disk and ext4 -------------------------
I=$W/initramfs
mkdir -p "$I"/{bin,proc,sys,dev,newroot,modules}
cp "$BUSYBOX" "$I/bin/busybox"
# Each module after the ones it depends on (read from the modules themselves: the package has
# no modules.dep).
python3 - "$MODULES" "$I/modules" virtio_pci virtio_blk crc32c_generic ext4 <<'PY' >"$I/modules/order"
import os, re, shutil, sys
root, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = {}
for d, _, files in os.walk(root):
    for f in files:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(d, f)
order = []
def add(name):
    if name in order:
        return
    data = open(paths[name], "rb").read()
    m = re.search(rb"\0depends=([^\0]*)\0", data)
    for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
        add(dep.replace("-", "_"))
    order.append(name)
for w in wanted:
    add(w)
for name in order:
    shutil.copy(paths[name], os.path.join(dest, name + ".ko"))
    print(name)
PY
cat >"$I/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || echo "initramfs: insmod $m failed"; done
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$W/initrd.gz"

# --- 3. served with an overlay and booted -----------------------------------------------------
SOCK=$W/guest.sock OVERLAY=$W/guest.overlay
serve() {
    rm -f "$W/serve.out"
    "$MOVER" serve -r "$W/repo" latest --name guest --socket "$SOCK" --overlay "$OVERLAY" \
        >"$W/serve.out" 2>>"$W/serve.log" &
    SERVE=$!
    for _ in $(seq 300); do [[ -s $W/serve.out ]] && return; sleep 0.1; done
    fail "mover serve did not start: $(cat "$W/serve.log")"
}
stop_serve() {
    kill -TERM "$SERVE"
    wait "$SERVE" || fail "mover serve exited with $? on SIGTERM"
    SERVE=
}
serve
log "booting $(basename "$KERNEL") under TCG from $(head -1 "$W/serve.out")"
t0=$SECONDS
timeout "$BOOT_TIMEOUT_S" qemu-system-x86_64 -accel tcg -m 256M -smp 1 -nographic -no-reboot \
    -nic none -kernel "$KERNEL" -initrd "$W/initrd.gz" \
    -append "console=ttyS0 panic=-1 loglevel=3" \
    -blockdev "driver=nbd,node-name=root,server.type=unix,server.path=$SOCK,export=vda" \
    -device virtio-blk-pci,drive=root \
    </dev/null >"$W/console.log" 2>&1 || {
    tail -30 "$W/console.log" >&2
    fail "the guest did not power off within $BOOT_TIMEOUT_S s"
}
log "the guest ran and powered off in $((SECONDS - t0)) s; its console:"
grep -aoE "(guest|initramfs): .*" "$W/console.log" | sed 's/^/    /' >&2
grep -q "guest: /etc/from-backup.txt says: read from the backup by the guest" "$W/console.log" ||
    fail "the guest did not read the backed-up file (console: $W/console.log)"
stop_serve

# --- 4. the guest's write, read back through the overlay ------------------------------------
serve
qemu-img convert -O raw "$(head -1 "$W/serve.out")" "$W/after.img"
stop_serve
written=$(debugfs -R "cat /written-by-guest.txt" "$W/after.img" 2>/dev/null)
[[ $written == "written by the guest after reading: read from the backup by the guest" ]] ||
    fail "the overlay does not hold the guest's file (got: $written)"
backed=$(debugfs -R "cat /etc/from-backup.txt" "$W/after.img" 2>/dev/null)
[[ $backed == "read from the backup by the guest" ]] || fail "the backed-up file changed"
repo_state | cmp -s - "$W/repo.before" || fail "the repository was written"
log "the file the guest wrote is in the overlay, read back after a restart of mover serve:"
log "    /written-by-guest.txt: $written"
log "the repository is unchanged; all checks passed"
