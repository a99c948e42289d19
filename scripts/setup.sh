#!/usr/bin/env bash
# Installs what building and testing mover needs on a fresh Debian machine. Idempotent: only
# missing packages are installed.
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
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
if [[ "${1:-}" == "--bench" ]]; then
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    command -v hyperfine >/dev/null || need+=(hyperfine)
    [[ -x /usr/bin/time ]] || need+=(time)
fi

if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup)" >&2; exit 1; }
