#!/usr/bin/env bash
# Builds a reproducible, realistic VM disk image for benchmarks: a sparse file holding a real
# ext4 filesystem (made with `mkfs.ext4 -d`, no mounting, no root needed beyond file access)
# filled with about DATA_MIB of mixed content; the rest of the SIZE_GIB image is free space.
#
#   scripts/make-bench-image.sh [--real] OUT.img [SIZE_GIB=4] [DATA_MIB=1024]
#
# --real: a VM root disk made of this machine's own files instead of generated ones (see
# scripts/bench-real-image.py: /etc, /usr/bin, /usr/sbin, samples of /usr/share and /usr/lib, a
# Rust toolchain, dpkg's database and logs), plus its "package upgrade" second version
# OUT.v2.img (some files rebuilt, replaced, added and removed through debugfs, the .deb files
# left in apt's cache) and OUT.v2.changes.json, the 4 KiB blocks that differ between the two as
# a changed-extent list (DiskChangeInfo). OUT.params says what was copied and changed.
#
# Content mix of the generated image (by bytes, approximate):
#   30% text         generated prose, logs, CSV and JSON lines (seeded PRNG)
#   25% binaries     copies of ELF files and libraries from /usr/bin and /usr/lib
#   15% compressed   existing .gz from /usr/share, gzip'd logs and a zstd'd "initrd" of binaries
#   15% random       seeded PRNG bytes (stand-in for encrypted or media data)
#   15% duplicates   copies of some of the above under other names
#
# Everything generated comes from fixed seeds, with fixed timestamps, UUID and hash seed, so the
# same parameters on the same machine give the same image. The binaries and the existing .gz
# files come from this machine's /usr, so images from different machines differ in those parts.
#
# Cache: when OUT.img exists and OUT.img.params matches the parameters, nothing is done.
set -euo pipefail

GEN_VERSION=1
SEED=20240601
FS_UUID=6d6f7665-722d-6265-6e63-682d696d6731
HASH_SEED=6d6f7665-722d-6861-7368-2d7365656431
EPOCH=1704067200 # 2024-01-01T00:00:00Z

usage() { echo "usage: $0 [--real] OUT.img [SIZE_GIB=4] [DATA_MIB=1024]" >&2; exit 2; }
REAL=0
if [[ ${1:-} == --real ]]; then REAL=1; shift; fi
[[ $# -ge 1 && $# -le 3 ]] || usage
OUT=$1
SIZE_GIB=${2:-4}
DATA_MIB=${3:-1024}
[[ $SIZE_GIB =~ ^[0-9]+(\.[0-9]+)?$ && $DATA_MIB =~ ^[0-9]+$ ]] || usage
# SIZE_GIB may be fractional (0.25 for a quick smoke image).
SIZE_MIB=$(awk -v g="$SIZE_GIB" 'BEGIN { printf "%d", g * 1024 }')
if ((SIZE_MIB < 64)); then
    echo "make-bench-image: the image must be at least 64 MiB" >&2
    exit 2
fi
if ((DATA_MIB * 100 > SIZE_MIB * 80)); then
    echo "make-bench-image: DATA_MIB=$DATA_MIB does not fit in ${SIZE_MIB} MiB (max 80%)" >&2
    exit 2
fi

# The generator's own hash is part of the parameters: any change to it rebuilds cached images.
HELPER=$(dirname "$0")/bench-real-image.py
if ((REAL)); then
    GEN_HASH=$(cat "$0" "$HELPER" | sha256sum | cut -c1-12)
    PARAMS="kind=real gen=$GEN_VERSION-$GEN_HASH size_gib=$SIZE_GIB data_mib=$DATA_MIB seed=$SEED"
else
    GEN_HASH=$(sha256sum "$0" | cut -c1-12)
    PARAMS="gen=$GEN_VERSION-$GEN_HASH size_gib=$SIZE_GIB data_mib=$DATA_MIB seed=$SEED"
fi
# The first line of OUT.params is the cache key; a real image's next lines say what it holds.
if [[ -f $OUT && -f $OUT.params && "$(head -1 "$OUT.params")" == "$PARAMS" ]] &&
    { ((!REAL)) || [[ -f ${OUT%.img}.v2.img && -f ${OUT%.img}.v2.changes.json ]]; }; then
    echo "make-bench-image: $OUT is up to date ($PARAMS)" >&2
    exit 0
fi

for tool in python3 mkfs.ext4 zstd; do
    command -v "$tool" >/dev/null || { echo "make-bench-image: $tool not found" >&2; exit 1; }
done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/mover-bench-image.XXXXXX")
[[ -n ${KEEP_STAGE:-} ]] || trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT"

start=$(date +%s)
if ((REAL)); then
    python3 "$HELPER" stage "$ROOT" "$DATA_MIB" "$SEED" "$EPOCH" >"$STAGE/areas.txt"
else
python3 - "$ROOT" "$DATA_MIB" "$SEED" "$EPOCH" <<'PY'
import gzip, hashlib, io, os, random, shutil, stat, subprocess, sys

root, data_mib, seed, epoch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
MiB = 1 << 20
total = data_mib * MiB
budget = {
    "text": total * 30 // 100,
    "bin": total * 25 // 100,
    "comp": total * 15 // 100,
    "rand": total * 15 // 100,
}
budget["dup"] = total - sum(budget.values())
rng = random.Random(seed)
written = []  # (relative path, size) of every non-duplicate file, in creation order
bytes_by_kind = {k: 0 for k in budget}


def put(kind, rel, data=None, src=None, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if src is not None:
        shutil.copyfile(src, path)
        size = os.path.getsize(path)
    else:
        with open(path, "wb") as f:
            f.write(data)
        size = len(data)
    os.chmod(path, mode)
    bytes_by_kind[kind] += size
    if kind != "dup":
        written.append((rel, size, kind))
    return size


def file_size(lo, hi):
    """Log-uniform size between lo and hi bytes: many small files, some large ones."""
    return int(lo * (hi / lo) ** rng.random())


# ---- text: prose, logs, csv, json lines --------------------------------------------------
letters = "etaoinshrdlcumwfgypbvkjxqz"
lw = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
      2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
vocab = sorted({"".join(rng.choices(letters, weights=lw, k=rng.randint(1, 11))) for _ in range(30000)})
rng.shuffle(vocab)
cw, s = [], 0.0
for i in range(len(vocab)):
    s += 1.0 / (i + 1) ** 1.05
    cw.append(s)
# Phrases of 1-4 words, themselves Zipf-sampled: natural-looking repetition, and fast to emit.
phrases = [" ".join(rng.choices(vocab, cum_weights=cw, k=rng.randint(1, 4))) for _ in range(60000)]
pcw, s = [], 0.0
for i in range(len(phrases)):
    s += 1.0 / (i + 1) ** 0.9
    pcw.append(s)


def prose(n):
    out, size = [], 0
    while size < n:
        k = 4096
        ps = rng.choices(phrases, cum_weights=pcw, k=k)
        i = 0
        while i < k:
            j = i + rng.randint(3, 9)
            line = " ".join(ps[i:j])
            out.append(line[:1].upper() + line[1:] + (".\n" if rng.random() < 0.8 else ".\n\n"))
            size += len(out[-1])
            i = j
    return "".join(out).encode()[:n]


hosts = ["web-%02d" % i for i in range(12)] + ["db-01", "db-02", "cache-01", "lb-01"]
procs = ["sshd", "nginx", "postgres", "kernel", "systemd", "cron", "dockerd", "app"]
users = [rng.choice(vocab) + str(rng.randint(1, 99)) for _ in range(300)]
paths = ["/" + "/".join(rng.choices(vocab[:3000], k=rng.randint(1, 4))) for _ in range(2000)]
levels = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]


def logs(n, t0):
    out, size, t = [], 0, t0
    r = rng.random
    while size < n:
        t += r() * 2.0
        ts = "%d.%06d" % (t, int((t % 1) * 1e6))
        kind = r()
        h = hosts[int(r() * len(hosts))]
        if kind < 0.4:
            line = '%s %s nginx: 10.%d.%d.%d - - "GET %s HTTP/1.1" %d %d "-" "curl/8.%d"\n' % (
                ts, h, int(r() * 255), int(r() * 255), int(r() * 255), paths[int(r() * 2000)],
                rng.choice((200, 200, 200, 304, 404, 500)), int(r() * 90000), int(r() * 9))
        elif kind < 0.6:
            line = "%s %s sshd[%d]: Accepted publickey for %s from 192.168.%d.%d port %d ssh2\n" % (
                ts, h, int(r() * 65535), users[int(r() * 300)], int(r() * 255), int(r() * 255),
                int(r() * 65535))
        else:
            line = "%s %s %s[%d]: %s %s: %s\n" % (
                ts, h, procs[int(r() * len(procs))], int(r() * 65535), levels[int(r() * len(levels))],
                paths[int(r() * 2000)], " ".join(rng.choices(phrases, cum_weights=pcw, k=3)))
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def csv(n):
    out, size, i = ["id,user,amount,currency,created,status,note\n"], 0, 0
    r = rng.random
    while size < n:
        i += 1
        line = "%d,%s,%.2f,%s,2023-%02d-%02dT%02d:%02d:%02dZ,%s,%s\n" % (
            i, users[int(r() * 300)], r() * 5000, rng.choice(("EUR", "USD", "GBP")),
            1 + int(r() * 12), 1 + int(r() * 28), int(r() * 24), int(r() * 60), int(r() * 60),
            rng.choice(("paid", "open", "void")), rng.choice(phrases))
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def jsonl(n):
    out, size = [], 0
    r = rng.random
    while size < n:
        line = '{"ts":%d,"host":"%s","event":"%s","user":"%s","latency_ms":%.3f,"ok":%s}\n' % (
            epoch + int(r() * 3e7), hosts[int(r() * len(hosts))], rng.choice(phrases),
            users[int(r() * 300)], r() * 400, "true" if r() < 0.97 else "false")
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


text_files = []  # generated log texts, reused (gzip'd) as rotated logs
i = 0
while bytes_by_kind["text"] < budget["text"]:
    left = budget["text"] - bytes_by_kind["text"]
    kind = rng.random()
    n = min(left, file_size(4096, 24 * MiB))
    if kind < 0.40:
        rel, data = "home/user/docs/%s/%s-%04d.txt" % (rng.choice(vocab[:40]), rng.choice(vocab[:2000]), i), prose(n)
    elif kind < 0.75:
        rel, data = "var/log/%s/%s.log.%d" % (rng.choice(procs), rng.choice(hosts), i), logs(n, epoch + i * 86400)
        text_files.append(rel)
    elif kind < 0.88:
        rel, data = "srv/data/export-%04d.csv" % i, csv(n)
    else:
        rel, data = "var/lib/app/events-%04d.jsonl" % i, jsonl(n)
    put("text", rel, data)
    i += 1

# ---- binaries: ELF executables and libraries from this machine ----------------------------
def regular_files(top, pred):
    found = []
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and pred(p, st):
                found.append((p, st.st_size))
    return found


def is_elf(p, st):
    if st.st_size < 8192 or st.st_size > 64 * MiB:
        return False
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


bins = regular_files("/usr/bin", is_elf) + regular_files("/usr/lib", is_elf)
rng.shuffle(bins)
bin_used = []
for p, size in bins:
    if bytes_by_kind["bin"] >= budget["bin"]:
        break
    if bytes_by_kind["bin"] + size > budget["bin"] * 1.02:
        continue
    put("bin", "usr/" + os.path.relpath(p, "/usr"), src=p, mode=0o755)
    bin_used.append(p)

# ---- compressed: existing .gz, rotated logs, a zstd initrd --------------------------------
gz = regular_files("/usr/share/doc", lambda p, st: p.endswith(".gz")) + regular_files(
    "/usr/share/man", lambda p, st: p.endswith(".gz"))
rng.shuffle(gz)
cap = budget["comp"] // 4
for p, size in gz:
    if bytes_by_kind["comp"] + size > cap:
        continue
    put("comp", "usr/share/" + os.path.relpath(p, "/usr/share"), src=p)
k = 0
while bytes_by_kind["comp"] < budget["comp"] * 6 // 10 and k < len(text_files):
    rel = text_files[k]
    with open(os.path.join(root, rel), "rb") as f:
        raw = f.read()
    z = gzip.compress(raw, 6, mtime=0)
    left = budget["comp"] * 6 // 10 - bytes_by_kind["comp"]
    if len(z) > left:  # rotate a shorter log so the part stays near its share
        z = gzip.compress(raw[: len(raw) * left // len(z) + 1], 6, mtime=0)
    put("comp", rel.replace(".log.", ".log.old.") + ".gz", z)
    k += 1
def zstd(raw):
    return subprocess.run(["zstd", "-q", "-9", "-c", "-T1"], input=raw, capture_output=True,
                          check=True).stdout


# The rest: zstd (level 9, like an initramfs) of concatenated binaries, in 64 MiB pieces.
piece = 0
src_iter = iter(bin_used * 4)
while bytes_by_kind["comp"] < budget["comp"]:
    left = budget["comp"] - bytes_by_kind["comp"]
    raw = io.BytesIO()
    while raw.tell() < min(64 * MiB, left * 3):
        p = next(src_iter, None)
        if p is None:
            break
        with open(p, "rb") as f:
            raw.write(f.read())
    if raw.tell() == 0:
        break
    raw = raw.getvalue()
    z = zstd(raw)
    if len(z) > left:
        z = zstd(raw[: len(raw) * left // len(z) + 1])
    put("comp", "boot/initrd.img-6.1.%d-amd64" % piece, z)
    piece += 1

# ---- random: encrypted volumes, media ------------------------------------------------------
i = 0
while bytes_by_kind["rand"] < budget["rand"]:
    left = budget["rand"] - bytes_by_kind["rand"]
    n = min(left, file_size(64 * 1024, 48 * MiB))
    ext = rng.choice(("jpg", "mp4", "gpg", "bin"))
    put("rand", "home/user/media/%s-%04d.%s" % (rng.choice(vocab[:500]), i, ext), rng.randbytes(n))
    i += 1

# ---- duplicates: copies of earlier files under other names --------------------------------
pool = [w for w in written if w[1] >= 64 * 1024]
rng.shuffle(pool)
i = 0
for rel, size, kind in pool:
    if bytes_by_kind["dup"] >= budget["dup"]:
        break
    if bytes_by_kind["dup"] + size > budget["dup"] * 1.02:
        continue
    base = os.path.basename(rel)
    put("dup", "home/user/backup/%02d/%s" % (i % 17, base), src=os.path.join(root, rel))
    i += 1

# Fixed times on everything (mkfs.ext4 -d copies atime and mtime).
for d, dirs, files in os.walk(root):
    for f in files + dirs:
        os.utime(os.path.join(d, f), (epoch, epoch), follow_symlinks=False)
os.utime(root, (epoch, epoch))
print("make-bench-image: content MiB " + " ".join(
    "%s=%.0f" % (k, v / MiB) for k, v in bytes_by_kind.items()), file=sys.stderr)
PY
fi

tmp_img="$OUT.tmp.$$"
rm -f "$tmp_img"
truncate -s "${SIZE_MIB}M" "$tmp_img"
# E2FSPROGS_FAKE_TIME and SOURCE_DATE_EPOCH pin the superblock and inode times (ctime included).
E2FSPROGS_FAKE_TIME=$EPOCH SOURCE_DATE_EPOCH=$EPOCH mkfs.ext4 -q -F -b 4096 -L benchroot \
    -U "$FS_UUID" -E "hash_seed=$HASH_SEED,root_owner=0:0,lazy_itable_init=1,nodiscard" \
    -d "$ROOT" "$tmp_img" >/dev/null
# mkfs.ext4 -d copies ctime (and atime, which reading the staging tree moved) from the staging
# files; pin them on every used inode (mkfs -d allocates inodes 1..used in order).
used=$(dumpe2fs -h "$tmp_img" 2>/dev/null | awk -F: '
    /^Inode count/ { n = $2 } /^Free inodes/ { f = $2 } END { print n - f }')
awk -v n="$used" -v e="$EPOCH" 'BEGIN { for (i = 1; i <= n; i++) {
    printf "sif <%d> ctime @%d\nsif <%d> atime @%d\n", i, e, i, e } }' \
    >"$STAGE/pin-times.debugfs"
E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$STAGE/pin-times.debugfs" "$tmp_img" >/dev/null 2>&1
e2fsck -fn "$tmp_img" >/dev/null 2>&1 || { echo "make-bench-image: e2fsck failed on $tmp_img" >&2; exit 1; }
if ((REAL)); then
    # The package upgrade: planned on the staging tree, applied to a copy of the image.
    V2=${OUT%.img}.v2.img
    python3 "$HELPER" upgrade "$ROOT" "$STAGE/new" "$STAGE/upgrade.debugfs" "$SEED" "$EPOCH" \
        >"$STAGE/upgrade.txt"
    cp --sparse=always "$tmp_img" "$V2.tmp.$$"
    # Removals first, in their own session, then the writes into the freed blocks.
    grep '^rm ' "$STAGE/upgrade.debugfs" >"$STAGE/upgrade-rm.debugfs" || true
    grep -v '^rm ' "$STAGE/upgrade.debugfs" >"$STAGE/upgrade-write.debugfs"
    for step in rm write; do
        E2FSPROGS_FAKE_TIME=$((EPOCH + 86400)) debugfs -w -f "$STAGE/upgrade-$step.debugfs" \
            "$V2.tmp.$$" >/dev/null 2>>"$STAGE/upgrade.err" || true
        if [[ -n ${KEEP_STAGE:-} ]]; then e2fsck -fn "$V2.tmp.$$" >&2 || true; fi
    done
    e2fsck -fn "$V2.tmp.$$" >/dev/null 2>&1 || {
        echo "make-bench-image: e2fsck failed on the upgraded image" >&2
        exit 1
    }
    python3 "$HELPER" changes "$tmp_img" "$V2.tmp.$$" "${OUT%.img}.v2.changes.json" >"$STAGE/changes.txt"
    mv -f "$V2.tmp.$$" "$V2"
fi
mv -f "$tmp_img" "$OUT"
{
    echo "$PARAMS"
    if ((REAL)); then cat "$STAGE/areas.txt" "$STAGE/upgrade.txt" "$STAGE/changes.txt"; fi
} >"$OUT.params"
end=$(date +%s)
alloc=$(du -B1 "$OUT" | cut -f1)
echo "make-bench-image: $OUT: ${SIZE_MIB} MiB image, $((alloc >> 20)) MiB allocated, $((end - start)) s" >&2
