#!/usr/bin/env bash
# The main job on an embedded default: build mover in release mode, generate a sample disk
# image (a real ext4 filesystem with files and free space), back it up into a local
# repository, back it up again (deduplicated), list snapshots, verify, restore and compare.
#
#   scripts/demo.sh [WORKDIR]    (default: a fresh temporary directory)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release -p mover-cli
mover="$root/target/release/mover"

work="${1:-$(mktemp -d -t mover-demo.XXXXXX)}"
mkdir -p "$work"
img="$work/disk.img"
repo="$work/repo"

echo "== generating a 512 MiB ext4 disk image with about 96 MiB of files in $img"
files="$work/files"
rm -rf "$files" "$repo" "$work/restored.img"
mkdir -p "$files/etc" "$files/bin" "$files/log" "$files/data"
cp -r /etc/. "$files/etc/" 2>/dev/null || true
for f in /usr/bin/*; do
    [[ -f "$f" ]] && cp "$f" "$files/bin/" 2>/dev/null || true
    (( $(du -sm "$files/bin" | cut -f1) > 48 )) && break
done
python3 - "$files" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
words = "disk block chunk snapshot backup restore volume extent mover proxy tape".split()
with open(os.path.join(root, "log", "app.log"), "w") as f:
    for i in range(200_000):
        f.write(f"2026-11-25T01:{i % 60:02d}:{i % 59:02d}Z host{i % 7} {' '.join(rnd.choice(words) for _ in range(8))}\n")
with open(os.path.join(root, "data", "random.bin"), "wb") as f:
    f.write(rnd.randbytes(16 << 20))
PY
cp "$files/log/app.log" "$files/data/app.log.copy"
rm -f "$img"
mkfs.ext4 -q -F -d "$files" "$img" 512M

echo "== init, backup (twice), snapshots, verify"
"$mover" init -r "$repo"
"$mover" backup -r "$repo" --source "$img" --name demo
"$mover" backup -r "$repo" --source "$img" --name demo
"$mover" snapshots -r "$repo"
"$mover" verify -r "$repo"

echo "== restore and compare"
"$mover" restore -r "$repo" latest --name demo --to "$work/restored.img"
cmp "$img" "$work/restored.img"
echo "restored image is identical to the source"
echo "image: $(du -h --apparent-size "$img" | cut -f1) (allocated $(du -h "$img" | cut -f1)); repository: $(du -sh "$repo" | cut -f1)"
echo "demo files are in $work"
