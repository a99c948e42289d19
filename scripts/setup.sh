#!/usr/bin/env bash
# Installs what building and testing mover needs on a fresh Debian machine. Idempotent: only
# missing packages are installed.
#
#   scripts/setup.sh            build and test
#   scripts/setup.sh --bench    also the benchmarks' peers and tools (restic, borg, hyperfine)
#   scripts/setup.sh --demo     also what scripts/instant-recovery-demo.sh boots: QEMU for
#                               x86-64, busybox-static, cpio, and a Debian kernel unpacked
#                               (not installed) into $MOVER_DEMO_DIR
#                               (default ${XDG_CACHE_HOME:-~/.cache}/mover-demo)
set -euo pipefail

flag=${1:-}
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# moto's S3 server (Object Lock tests) is installed with pip into a virtual environment.
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v curl >/dev/null || need+=(curl)
# NBD sources and incrementals are tested against the real QEMU and nbdkit tools.
command -v qemu-nbd >/dev/null || need+=(qemu-utils)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
# File-level restore is tested on images made with the real partitioning and mkfs tools.
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v sgdisk >/dev/null || need+=(gdisk)
command -v sfdisk >/dev/null || need+=(fdisk)
# NTFS images are made with mkntfs and filled through ntfs-3g (FUSE; the test runs as root).
command -v mkntfs >/dev/null || need+=(ntfs-3g)
if [[ $flag == --bench ]]; then
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    command -v hyperfine >/dev/null || need+=(hyperfine)
    [[ -x /usr/bin/time ]] || need+=(time)
fi
# The demo's packages go in without their recommendations (qemu-system-x86 recommends a GUI).
demo=()
if [[ $flag == --demo ]]; then
    command -v qemu-system-x86_64 >/dev/null || demo+=(qemu-system-x86)
    dpkg -s busybox-static >/dev/null 2>&1 || demo+=(busybox-static)
    command -v cpio >/dev/null || demo+=(cpio)
fi

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
apt_install() {
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "$@" >/dev/null
}
if ((${#need[@]} + ${#demo[@]})); then
    echo "setup: installing ${need[*]} ${demo[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
fi
if ((${#need[@]})); then apt_install "${need[@]}"; fi
if ((${#demo[@]})); then
    # QEMU's system emulator must come from the same release as the installed qemu-utils (a
    # backport of qemu-utils would otherwise be replaced by the older release's version).
    release=()
    if [[ " ${demo[*]} " == *" qemu-system-x86 "* ]] &&
        [[ $(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null) == *~bpo* ]]; then
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        if ! apt-cache policy | grep -q "$codename-backports"; then
            echo "setup: adding $codename-backports to the package sources" >&2
            # The same mirror as the release's own sources (deb822 or one-line format).
            mirror=$(awk -v s="$codename" '/^URIs:/ { u = $2 } /^Suites:/ && $2 == s { print u; exit }' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
            [[ -n $mirror ]] || mirror=$(awk -v s="$codename" '$1 == "deb" && $3 == s { print $2; exit }' \
                /etc/apt/sources.list 2>/dev/null || true)
            [[ -n $mirror ]] || {
                echo "setup: cannot tell this machine's Debian mirror; add $codename-backports to the package sources by hand" >&2
                exit 1
            }
            printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$mirror" "$codename" | "${sudo_cmd[@]}" tee /etc/apt/sources.list.d/backports.sources >/dev/null
            "${sudo_cmd[@]}" apt-get update -qq
        fi
        release=(-t "$codename-backports")
    fi
    apt_install --no-install-recommends "${release[@]}" "${demo[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup)" >&2; exit 1; }

if [[ $flag == --demo ]]; then
    # The guest's kernel and its modules, unpacked from Debian's package without installing it
    # (no initramfs generation, nothing under /boot or /lib/modules of this machine).
    dir=${MOVER_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mover-demo}
    if ! compgen -G "$dir/kernel/boot/vmlinuz-*" >/dev/null; then
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
        [[ -n $pkg ]] || { echo "setup: no Debian kernel package found (linux-image-amd64)" >&2; exit 1; }
        echo "setup: unpacking $pkg into $dir/kernel" >&2
        mkdir -p "$dir"
        (cd "$dir" && rm -f ./*.deb && apt-get download -qq "$pkg")
        rm -rf "$dir/kernel.tmp"
        dpkg-deb -x "$dir"/*.deb "$dir/kernel.tmp"
        rm -f "$dir"/*.deb
        mv "$dir/kernel.tmp" "$dir/kernel"
    fi
fi
