#!/usr/bin/env python3
"""Random 4 KiB reads from an NBD export over a unix socket, one at a time, timed.

    nbd-random-read.py SOCKET EXPORT COUNT SEED [SPAN_BYTES [MAP [BLOCK]]]

With MAP (the output of `nbdinfo --map`), offsets fall only in data runs, so that every read
fetches a chunk instead of answering a hole. With BLOCK (the chunk size) as well, every read
falls in a different block, chosen at random among those holding data (never the first,
which the server may have read already), so that on a fresh server no read finds its chunk
cached; COUNT is then at most the number of such blocks.

Prints "p50_ms X" and "p99_ms Y" (with COUNT 1 and SEED 0: reads offset 0 once, to tell that
the server answers). Simple replies only (no structured-reply negotiation), so it is small.
"""
import random
import socket
import struct
import sys
import time


def recv(s, n):
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise EOFError("server closed the connection")
        buf += got
    return buf


def connect(path, export):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    recv(s, 18)
    s.sendall(struct.pack(">I", 3))
    name = export.encode()
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 4 + len(name) + 2)
              + struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = None
    while True:
        _, _, kind, length = struct.unpack(">QIII", recv(s, 20))
        data = recv(s, length)
        if kind == 3 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        if kind == 1:
            return s, size
        if kind & (1 << 31):
            raise RuntimeError(f"NBD_OPT_GO failed: {data!r}")


def distinct_blocks(runs, block, count, rng):
    """One 4 KiB-aligned offset in each of COUNT different blocks holding data."""
    spans = {}
    for start, length in runs:
        b = start // block
        while b * block < start + length:
            lo, hi = max(start, b * block), min(start + length, (b + 1) * block)
            if b > 0 and hi - lo >= 4096:
                spans.setdefault(b, (lo, hi))
            b += 1
    if count > len(spans):
        raise SystemExit(f"only {len(spans)} blocks hold data; asked for {count} reads")
    offsets = []
    for b in rng.sample(sorted(spans), count):
        lo, hi = spans[b]
        first = -(-lo // 4096) * 4096
        offsets.append(first + rng.randrange(max(1, (hi - first) // 4096)) * 4096)
    return offsets


def main():
    path, export, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s, size = connect(path, export)
    if len(sys.argv) > 5:
        size = min(size, int(sys.argv[5]))
    runs = [(0, size)]
    if len(sys.argv) > 6:
        runs = []
        for line in open(sys.argv[6]):
            off, length, kind = line.split()[:3]
            if kind == "0" and int(off) + int(length) <= size:
                runs.append((int(off), int(length)))
    rng = random.Random(seed)
    if len(sys.argv) > 7:
        offsets = distinct_blocks(runs, int(sys.argv[7]), count, rng)
    else:
        offsets = []
        for _ in range(count):
            start, length = rng.choice(runs)
            offsets.append(0 if seed == 0 else start + rng.randrange(max(1, length // 4096)) * 4096)
    times = []
    for i, off in enumerate(offsets):
        t0 = time.perf_counter()
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, off, 4096))
        magic, err, _ = struct.unpack(">IIQ", recv(s, 16))
        if magic != 0x67446698 or err:
            raise RuntimeError(f"read at {off} failed: error {err}")
        recv(s, 4096)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(f"p50_ms {times[len(times) // 2]:.4f}")
    print(f"p99_ms {times[min(len(times) - 1, len(times) * 99 // 100)]:.4f}")


if __name__ == "__main__":
    main()
