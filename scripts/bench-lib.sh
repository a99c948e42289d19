#!/usr/bin/env bash
# Shared by the benchmark scripts (sourced, not run): messages, and `measure`/`record`, which
# append one JSON line per timed command or checked fact to $RAW. The caller sets RAW (the
# raw.jsonl file), WORK (a scratch directory) and ROOT (the checkout, stripped from commands).

note() { echo "bench: $*" >&2; }

# The "## Machine" and "## Software" sections of a results README (their first lines: the
# machine, the load at the start, mover's commit and version; $MOVER is the binary).
machine_and_mover() {
    echo "## Machine"
    echo
    echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores online"
    echo "- Memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "## Software"
    echo
    echo "- mover commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo ' (with uncommitted changes)')"
    echo "- $("$MOVER" --version)"
}
loud() {
    echo "" >&2
    echo "################################################################" >&2
    echo "# bench: $*" >&2
    echo "################################################################" >&2
}

# measure TOOL OP RUN REPO_OR_- STDIN_OR_- STDOUT_OR_- -- COMMAND...
# Runs COMMAND under /usr/bin/time -v and appends one JSON line to raw.jsonl: wall seconds,
# peak RSS, user and system CPU seconds of COMMAND and its children (the rusage wait4 returns:
# the utime and stime of /proc/PID/stat, all threads, at exit), exit code, the last line of its stdout (when captured) and the repository size.
# mover writes packs with direct I/O, past the page cache: read a repository once so that
# restores run on a warm cache, as the peers' restores do after their backups.
warm() {
    find "$1" -type f -exec cat {} + >/dev/null
}

measure() {
    local tool=$1 op=$2 run=$3 repo=$4 in=$5 out=$6
    shift 7
    local tfile=$WORK/time.txt ofile=$WORK/stdout.txt efile=$WORK/stderr.txt
    [[ $in == - ]] && in=/dev/null
    [[ $out == - ]] && out=$ofile
    local t0 t1 rc=0
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$tfile" "$@" <"$in" >"$out" 2>"$efile" || rc=$?
    t1=$(date +%s%N)
    local repo_bytes=null
    [[ $repo != - && -e $repo ]] && repo_bytes=$(du -sb "$repo" | cut -f1)
    [[ $out == "$ofile" ]] || : >"$ofile"
    python3 - "$tool" "$op" "$run" "$(((t1 - t0) / 1000))" "$rc" "$repo_bytes" "$tfile" "$ofile" \
        "$efile" "$*" "$ROOT/" >>"$RAW" <<'PY'
import json, sys
tool, op, run, us, rc, repo, tfile, ofile, efile, cmd, root = sys.argv[1:]
cmd = cmd.replace(root, "")  # no paths of this machine in results
rss = user = sys_ = None
for line in open(tfile, errors="replace"):
    if "Maximum resident set size" in line:
        rss = int(line.rsplit(":", 1)[1])
    elif "User time (seconds)" in line:
        user = float(line.rsplit(":", 1)[1])
    elif "System time (seconds)" in line:
        sys_ = float(line.rsplit(":", 1)[1])
# No paths of this machine in results: the summaries name their sources.
last = [l.replace(root, "") for l in open(ofile, errors="replace").read().splitlines() if l.strip()]
stdout = None
if last:
    try:
        stdout = json.loads(last[-1])
    except ValueError:
        stdout = last[-1][:500]
rec = {"tool": tool, "op": op, "run": int(run), "seconds": int(us) / 1e6, "max_rss_kib": rss,
       "user_s": user, "sys_s": sys_, "exit_code": int(rc), "repo_bytes": None if repo == "null" else int(repo),
       "command": cmd, "stdout_last": stdout}
if int(rc) != 0:
    rec["stderr_tail"] = open(efile, errors="replace").read()[-2000:].replace(root, "")
print(json.dumps(rec, sort_keys=True))
PY
    if ((rc != 0)); then
        note "FAILED ($rc): $*"
        tail -5 "$efile" >&2
    fi
    return 0
}

# record TOOL OP RUN KEY=VALUE... : a non-timed fact (a check result) as a JSON line.
record() {
    python3 -c 'import json,sys; t,o,r=sys.argv[1:4]; d=dict(a.split("=",1) for a in sys.argv[4:]);
print(json.dumps({"tool":t,"op":o,"run":int(r),**d}, sort_keys=True))' "$@" >>"$RAW"
}

