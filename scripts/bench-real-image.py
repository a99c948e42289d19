#!/usr/bin/env python3
"""Staging trees for the real-content benchmark image (scripts/make-bench-image.sh --real).

    bench-real-image.py stage ROOT DATA_MIB SEED EPOCH      copies this machine's files into ROOT
    bench-real-image.py upgrade ROOT NEW DEBUGFS SEED EPOCH  plans a package upgrade of ROOT
    bench-real-image.py changes V1 V2 OUT.json              the blocks that differ, as JSON

`stage` lays out a VM root disk from real files: /etc, /usr/bin and /usr/sbin whole, then
/usr/share, /usr/lib and a Rust toolchain (the active rustup toolchain, or /usr/lib/rustlib),
each sampled to its share of DATA_MIB by a hash of the path (a fixed, spread-out choice), plus
/var/lib/dpkg and /var/log. It prints one line, "areas ...", that says what was copied.

`upgrade` plans what an `apt upgrade` of about 5 % of the data does: new versions of some
libraries and executables (the old bytes with a few insertions and scattered changes, as a
rebuild moves code), replaced compressed files, new files of added packages, removed files, the
downloaded .deb files in /var/cache/apt/archives and an appended dpkg status and apt log. New
contents go under NEW; DEBUGFS gets the debugfs commands that apply it to the image (remove,
then write into freed and new blocks, as the package manager does).

`changes` compares two images 4 KiB block by block and writes the differing areas as a VMware
DiskChangeInfo document (what a changed-block tracker reports for this upgrade).
"""
import hashlib
import json
import lzma
import os
import random
import shutil
import stat
import subprocess
import sys

MiB = 1 << 20


def walk(top):
    """(path, lstat) of every regular file and symlink under top, sorted; unreadable ones skipped."""
    out = []
    for d, dirs, files in os.walk(top, onerror=lambda e: None):
        dirs.sort()
        # Symlinked directories are listed as symlinks, not followed.
        for f in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and os.access(p, os.R_OK)):
                out.append((p, st))
    return out


def key(path):
    return hashlib.sha1(path.encode()).digest()


def toolchain():
    """The Rust toolchain to copy: rustc's sysroot when it is a rustup toolchain, else rustlib."""
    try:
        root = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = ""
    if root and "/toolchains/" in root and os.path.isdir(root):
        return root, "home/user/.rustup/toolchains/" + os.path.basename(root)
    if os.path.isdir("/usr/lib/rustlib"):
        return "/usr/lib/rustlib", "usr/lib/rustlib"
    return None, None


def stage(root, data_mib, seed, epoch):
    total = data_mib * MiB
    used = set()
    copied = {}

    def copy(src, rel, st):
        dst = os.path.join(root, rel)
        if rel in used:
            return 0
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            used.add(rel)
            return 0
        try:
            shutil.copyfile(src, dst)
        except OSError:
            return 0
        os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o7755)
        used.add(rel)
        return st.st_size

    def area(name, src, dst, budget, exclude=None):
        files = [(p, st) for p, st in walk(src) if not (exclude and p.startswith(exclude))]
        files.sort(key=lambda f: key(f[0]))
        got = 0
        for p, st in files:
            if got >= budget:
                break
            if got + st.st_size > budget * 1.01 and st.st_size > 0:
                continue
            got += copy(p, os.path.join(dst, os.path.relpath(p, src)), st)
        copied[name] = (src, got)
        return got

    tc_src, tc_dst = toolchain()
    left = total
    for name, src, dst in (("etc", "/etc", "etc"), ("dpkg", "/var/lib/dpkg", "var/lib/dpkg"),
                           ("log", "/var/log", "var/log"), ("bin", "/usr/bin", "usr/bin"),
                           ("sbin", "/usr/sbin", "usr/sbin")):
        left -= area(name, src, dst, min(left, total * 35 // 100))
    shares = [("toolchain", tc_src, tc_dst, 30), ("share", "/usr/share", "usr/share", 30),
              ("lib", "/usr/lib", "usr/lib", 100)]
    base = left
    for name, src, dst, pct in shares:
        if src is None:
            continue
        exclude = tc_src if name == "lib" and tc_src and tc_src.startswith("/usr/lib/") else None
        left -= area(name, src, dst, min(left, base * pct // 100), exclude)
    for d, dirs, files in os.walk(root):
        for f in files + dirs:
            os.utime(os.path.join(d, f), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))
    home = os.path.expanduser("~")
    print("areas " + " ".join("%s=%s:%dMiB" % (n, s.replace(home, "~", 1), b // MiB)
                               for n, (s, b) in copied.items()))


def mutate(data, rng):
    """A rebuilt version of data: a few insertions, and scattered bytes changed (moved code)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(0, len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(16, 4096))
    step = rng.choice((256, 1024, 4096))
    for at in range(rng.randrange(step), len(out), step):
        out[at] ^= 1 + rng.randrange(255)
    return bytes(out)


def compressed(p):
    return p.endswith((".gz", ".xz", ".zst", ".bz2", ".png", ".jpg", ".zip", ".jar", ".woff2"))


def upgrade(root, new, cmds, seed, epoch):
    rng = random.Random(seed + 1)
    files = [(os.path.relpath(p, root), st.st_size) for p, st in walk(root)
             if stat.S_ISREG(st.st_mode) and st.st_size > 0]
    data = sum(s for _, s in files)
    rng.shuffle(files)
    cand = [f for f in files if f[0].startswith(("usr/", "home/user/.rustup/"))]
    os.makedirs(new, exist_ok=True)
    lines, debs, n = [], [], 0
    dirs = set()

    def mkdirs(rel):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            # Only missing ones: debugfs leaks an inode on a mkdir of an existing directory.
            if d not in dirs and not os.path.isdir(os.path.join(root, d)):
                dirs.add(d)
                lines.append("mkdir /%s" % d)

    def write(rel, content, mode=0o644):
        nonlocal n
        n += 1
        src = os.path.join(new, "%06d" % n)
        with open(src, "wb") as f:
            f.write(content)
        mkdirs(rel)
        lines.append('write %s "/%s"' % (src, rel))
        lines.append('sif "/%s" mode 0%o' % (rel, 0o100000 | mode))
        debs.append(content)

    budget = {"replaced": data * 4 // 100, "added": data // 100, "removed": data // 200}
    done = {k: 0 for k in budget}
    for rel, size in cand:
        if done["replaced"] >= budget["replaced"]:
            break
        if size > budget["replaced"] // 4 or '"' in rel:
            continue
        with open(os.path.join(root, rel), "rb") as f:
            old = f.read()
        body = rng.randbytes(len(old)) if compressed(rel) else mutate(old, rng)
        lines.append('rm "/%s"' % rel)
        write(rel, body, 0o755 if os.access(os.path.join(root, rel), os.X_OK) else 0o644)
        done["replaced"] += size
    taken = {l.split('"')[1].lstrip("/") for l in lines if l.startswith("rm ")}
    for rel, size in cand:
        if done["added"] >= budget["added"]:
            break
        if rel in taken or size > budget["added"] // 4 or '"' in rel:
            continue
        with open(os.path.join(root, rel), "rb") as f:
            body = mutate(f.read(), rng)
        d, b = os.path.split(rel)
        write("%s/new-%s" % (d, b), body)
        done["added"] += size
        taken.add(rel)
    for rel, size in reversed(cand):
        if done["removed"] >= budget["removed"]:
            break
        if rel in taken or '"' in rel:
            continue
        lines.append('rm "/%s"' % rel)
        done["removed"] += size
        taken.add(rel)
    # The downloaded packages stay in apt's cache (xz, as .deb members are).
    blob = b"".join(debs)
    piece = max(1, len(blob) // 40)
    cache = []
    for i in range(0, len(blob), piece):
        cache.append(lzma.compress(blob[i:i + piece], preset=1))
    for i, c in enumerate(cache):
        write("var/cache/apt/archives/pkg%02d_1.%d-1_amd64.deb" % (i, rng.randint(2, 9)), c)
    status = os.path.join(root, "var/lib/dpkg/status")
    old = open(status, "rb").read() if os.path.exists(status) else b""
    if old:
        lines.append('rm "/var/lib/dpkg/status"')
    write("var/lib/dpkg/status", old + b"".join(
        b"Package: pkg%02d\nStatus: install ok installed\nVersion: 1.%d-1\n\n" % (i, i)
        for i in range(len(cache))))
    write("var/log/apt/history.log", b"Start-Date: 2024-01-02  00:00:00\nCommandline: apt upgrade\n"
          b"Upgrade: " + b", ".join(b"pkg%02d:amd64" % i for i in range(len(cache))) + b"\n")
    with open(cmds, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("upgrade replaced=%dMiB added=%dMiB removed=%dMiB debs=%dMiB" % (
        done["replaced"] // MiB, done["added"] // MiB, done["removed"] // MiB,
        sum(len(c) for c in cache) // MiB))


def changes(v1, v2, out):
    size = os.path.getsize(v1)
    assert size == os.path.getsize(v2), "the two images differ in size"
    areas, blk, step = [], 4096, 4 * MiB
    with open(v1, "rb") as a, open(v2, "rb") as b:
        off = 0
        while off < size:
            x, y = a.read(step), b.read(step)
            if x != y:
                for i in range(0, len(x), blk):
                    if x[i:i + blk] != y[i:i + blk]:
                        s = off + i
                        if areas and areas[-1][0] + areas[-1][1] == s:
                            areas[-1][1] += blk
                        else:
                            areas.append([s, blk])
            off += len(x)
    with open(out, "w") as f:
        json.dump({"startOffset": 0, "length": size,
                   "changedArea": [{"start": s, "length": n} for s, n in areas]}, f)
    print("changes areas=%d bytes=%d" % (len(areas), sum(n for _, n in areas)))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "stage":
        stage(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "upgrade":
        upgrade(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "changes":
        changes(args[0], args[1], args[2])
    else:
        sys.exit("unknown command " + cmd)
