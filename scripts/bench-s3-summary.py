#!/usr/bin/env python3
"""Summary of scripts/bench-s3.sh: medians against the targets of issue 18, as Markdown.

usage: bench-s3-summary.py RAW.jsonl IMAGE_BYTES "RTT:MBIT ..."
"""
import json
import statistics
import sys

raw, img_bytes, links = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
recs = [json.loads(line) for line in open(raw) if line.strip()]


def med(tool, op, key):
    vals = [r[key] for r in recs if r["tool"] == tool and r["op"] == op and r.get(key) is not None
            and r.get("exit_code", 0) == 0]
    return statistics.median(vals) if vals else None


def cpu(tool, op):
    vals = [r["user_s"] + r["sys_s"] for r in recs if r["tool"] == tool and r["op"] == op
            and r.get("user_s") is not None and r.get("exit_code") == 0]
    return statistics.median(vals) if vals else None


def wire(tool, op, key):
    vals = [int(r[key]) for r in recs if r["tool"] == tool and r["op"] == op + "-wire"]
    return statistics.median(vals) if vals else None


def fmt(v, f):
    return "n/a" if v is None else f % v


def verdict(v, target, higher=True):
    if v is None:
        return "n/a"
    return "met" if (v >= target if higher else v <= target) else "**missed**"


checks = [r for r in recs if "check" in r]
bad = [r for r in checks if r["check"] != "identical"]
failed = [r for r in recs if r.get("exit_code", 0) != 0]
gb = img_bytes / 1e9

print(f"# Summary\n\nImage: {img_bytes / 2**30:.2f} GiB. Medians of every run. "
      f"{len(checks) - len(bad)} of {len(checks)} restores identical to the image; "
      f"{len(failed)} commands failed.\n")

print("## Through the emulated link\n")
print("Wire rate: the bytes the command sent (backup) or received (restore) through the link, "
      "over its wall time, against the link's cap. Image rate: the image's size over the wall "
      "time.\n")
print("| link | tool | op | wall s | wire MB | wire Mbit/s | × link | image MB/s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
rows = {}
for link in links:
    rtt, mbit = link.split(":")
    tag = f"rtt{rtt}ms-{mbit}mbit"
    for tool in ("mover", "restic"):
        for op, key in (("backup", "up_bytes"), ("restore", "down_bytes")):
            name = f"s3-{op}-{tag}"
            secs = med(tool, name, "seconds")
            w = wire(tool, name, key)
            rate = None if secs is None or w is None else w * 8 / secs / 1e6
            rows[(link, tool, op)] = (secs, rate)
            if secs is None:
                continue
            print(f"| {rtt} ms, {mbit} Mbit/s | {tool} | {op} | {secs:.1f} | {fmt(w and w / 1e6, '%.0f')} "
                  f"| {fmt(rate, '%.0f')} | {fmt(rate and rate / float(mbit), '%.2f')} "
                  f"| {gb * 1e3 / secs:.0f} | {fmt(cpu(tool, name), '%.1f')} |")

print("\n## Against the targets\n")
print("| link | measure | value | target | |")
print("|---|---|---|---|---|")
for link in links:
    rtt, mbit = link.split(":")
    label = f"{rtt} ms, {mbit} Mbit/s"
    for op in ("backup", "restore"):
        secs, rate = rows[(link, "mover", op)]
        x = None if rate is None else rate / float(mbit)
        print(f"| {label} | mover {op} wire rate / link rate | {fmt(x, '%.2f')} | ≥ 0.8 | {verdict(x, 0.8)} |")
    for op, target in (("backup", 2.0), ("restore", 3.0)):
        m, r = rows[(link, "mover", op)][0], rows[(link, "restic", op)][0]
        x = None if m is None or r is None else r / m
        print(f"| {label} | mover {op} speed / restic's (same image) | {fmt(x, '%.2f')} | ≥ {target:g} | {verdict(x, target)} |")

print("\n## mover's own CPU per GB of image\n")
print("user + system seconds of the mover process (all threads), per GB of image.\n")
print("| op | local s/GB | link | S3 s/GB | S3 / local | target ≤ 1.2 |")
print("|---|---|---|---|---|---|")
for op in ("backup", "restore"):
    local = cpu("mover", f"local-{op}")
    for link in links:
        rtt, mbit = link.split(":")
        s3 = cpu("mover", f"s3-{op}-rtt{rtt}ms-{mbit}mbit")
        x = None if local is None or s3 is None else s3 / local
        print(f"| {op} | {fmt(local and local / gb, '%.2f')} | {rtt} ms | {fmt(s3 and s3 / gb, '%.2f')} "
              f"| {fmt(x, '%.2f')} | {verdict(x, 1.2, higher=False)} |")
