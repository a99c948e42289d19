#!/usr/bin/env bash
# Installs (cached), starts and stops the real S3-compatible servers the test suite runs
# against, all on loopback: Garage (single node, sqlite metadata), s3s-fs (S3 over a local
# directory), a three-node Garage cluster (replication factor 3) and moto's S3 server (which
# enforces Object Lock).
#
#   scripts/s3-servers.sh install            install the servers if missing
#   scripts/s3-servers.sh start STATE_DIR    install if needed, start all, write STATE_DIR/env
#   scripts/s3-servers.sh stop STATE_DIR     stop all (TERM, then KILL); idempotent
#   scripts/s3-servers.sh start-node STATE_DIR N   (re)start cluster node N (1-3), wait for it
#
# STATE_DIR/env holds `export MOVER_TEST_{GARAGE,S3S,CLUSTER,MOTO}_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY,REGION}=...`
# lines (and MOVER_TEST_CLUSTER_STATE, MOVER_TEST_MOTO_UNLOCKED_BUCKET); source it before
# `cargo test`. Every start begins from empty server state. See docs/S3-TESTING.md for the
# servers' quirks (conditional writes, part sizes, path style) and the cluster's files.
set -euo pipefail

GARAGE_VERSION=2.5.0
S3S_FS_VERSION=0.14.1
MOTO_VERSION=5.2.1
START_TIMEOUT_S=${S3_SERVERS_START_TIMEOUT:-60}
STOP_GRACE_S=5

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

log() { echo "s3-servers: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '7,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- installation --------------------------------------------------------------------------

# find_bin BIN VERSION: prints the path of a BIN that reports VERSION (`BIN --version`),
# looking on PATH first, then in $CARGO_HOME/bin.
find_bin() {
    local c
    for c in "$(command -v "$1" 2>/dev/null)" "$CARGO_BIN/$1"; do
        [[ -n $c && -x $c ]] || continue
        if "$c" --version 2>/dev/null | grep -qE "(^|[^0-9.])$2([^0-9.]|\$)"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

install_one() { # BIN VERSION CARGO_INSTALL_ARGS...
    local bin=$1 version=$2 path
    shift 2
    if path=$(find_bin "$bin" "$version"); then
        log "$bin $version already installed ($path)"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo not found; install a Rust toolchain (rustup)"
    # A concurrent `cargo install` of the same crate just makes this one wait on cargo's lock.
    log "installing $bin $version: cargo install $* (Garage takes ~30 min on 2 cores)"
    local t0=$SECONDS
    cargo install "$@"
    find_bin "$bin" "$version" >/dev/null || die "$bin $version still not found after cargo install"
    log "installed $bin $version in $((SECONDS - t0)) s"
}

cmd_install() {
    install_one garage "$GARAGE_VERSION" garage --version "$GARAGE_VERSION" --locked
    install_one s3s-fs "$S3S_FS_VERSION" s3s-fs --version "$S3S_FS_VERSION" --features binary --locked
    GARAGE_BIN=$(find_bin garage "$GARAGE_VERSION")
    S3S_FS_BIN=$(find_bin s3s-fs "$S3S_FS_VERSION")
    install_moto
}

# --- helpers -------------------------------------------------------------------------------

rand_hex() { # number of random bytes -> 2*N lowercase hex chars
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a TCP port on 127.0.0.1 that is free right now and was not handed out before by
# this script run.
USED_PORTS=" "
free_port() {
    local p i
    for i in $(seq 1 50); do
        if command -v python3 >/dev/null; then
            p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        else
            p=$((20000 + RANDOM % 40000))
        fi
        if [[ $USED_PORTS != *" $p "* ]] && ! port_in_use "$p"; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "could not find a free TCP port"
}

curl_has_sigv4() {
    curl --help all 2>/dev/null | grep -q -- '--aws-sigv4'
}

# s3_status URL REGION KEY SECRET: prints the HTTP status of a SigV4-signed GET (000 when
# nothing answered). Garage rejects requests without x-amz-content-sha256 (400), which curl
# before 8.x does not add by itself; the header given here is also signed by curl.
s3_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:$2:s3" --user "$3:$4" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$1" || true
}

# wait_ready NAME PID LOGFILE URL REGION KEY SECRET BUCKET: waits until a signed ListObjectsV2
# on the bucket returns 200 (or, with a curl lacking --aws-sigv4, until the port answers HTTP).
wait_ready() {
    local name=$1 pid=$2 logfile=$3 url=$4 region=$5 key=$6 secret=$7 bucket=$8
    local deadline=$((SECONDS + START_TIMEOUT_S)) code=000
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during startup; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        if curl_has_sigv4; then
            code=$(s3_status "$url/$bucket?list-type=2" "$region" "$key" "$secret")
            [[ $code == 200 ]] && return 0
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/" || true)
            [[ $code != 000 ]] && return 0
        fi
        sleep 0.5
    done
    log "$name did not become ready within ${START_TIMEOUT_S} s (last HTTP status $code); last lines of $logfile:"
    tail -n 30 "$logfile" >&2 || true
    return 1
}

# --- start / stop --------------------------------------------------------------------------

start_garage() { # STATE_DIR
    local state=$1 dir="$1/garage"
    rm -rf "$dir"
    mkdir -p "$dir/meta" "$dir/data"
    local rpc_port s3_port
    rpc_port=$(free_port)
    s3_port=$(free_port)
    GARAGE_KEY="GK$(rand_hex 12)"
    GARAGE_SECRET=$(rand_hex 32)
    GARAGE_BUCKET=mover-test
    GARAGE_REGION=garage
    GARAGE_ENDPOINT="http://127.0.0.1:$s3_port"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
# mover's packs are compressed already: Garage's own zstd pass would only burn CPU.
compression_level = "none"

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(rand_hex 32)"

[s3_api]
api_bind_addr = "127.0.0.1:$s3_port"
s3_region = "$GARAGE_REGION"
EOF
    chmod 600 "$dir/garage.toml"
    log "starting garage on $GARAGE_ENDPOINT (rpc 127.0.0.1:$rpc_port), log $dir/garage.log"
    GARAGE_DEFAULT_ACCESS_KEY=$GARAGE_KEY GARAGE_DEFAULT_SECRET_KEY=$GARAGE_SECRET \
        GARAGE_DEFAULT_BUCKET=$GARAGE_BUCKET RUST_LOG=${RUST_LOG:-garage=info} NO_COLOR=1 \
        nohup "$GARAGE_BIN" -c "$dir/garage.toml" server --single-node --default-bucket \
        </dev/null >"$dir/garage.log" 2>&1 &
    local pid=$!
    disown "$pid" # no "Killed" job notices from this shell
    echo "$pid" >"$state/garage.pid"
    wait_ready garage "$pid" "$dir/garage.log" "$GARAGE_ENDPOINT" "$GARAGE_REGION" \
        "$GARAGE_KEY" "$GARAGE_SECRET" "$GARAGE_BUCKET"
}

start_s3s() { # STATE_DIR
    local state=$1 dir="$1/s3s"
    rm -rf "$dir"
    mkdir -p "$dir/root"
    local port
    port=$(free_port)
    S3S_KEY="S3S$(rand_hex 10)"
    S3S_SECRET=$(rand_hex 32)
    S3S_BUCKET=mover-test
    S3S_REGION=us-east-1
    S3S_ENDPOINT="http://127.0.0.1:$port"
    # s3s-fs maps bucket NAME to the directory ROOT/NAME, so the bucket is just a directory.
    mkdir "$dir/root/$S3S_BUCKET"
    log "starting s3s-fs on $S3S_ENDPOINT, root $dir/root, log $dir/s3s-fs.log"
    # The secret goes on the command line (s3s-fs has no other way); loopback test use only.
    RUST_LOG=${RUST_LOG:-s3s_fs=info} NO_COLOR=1 nohup "$S3S_FS_BIN" --host 127.0.0.1 --port "$port" \
        --access-key "$S3S_KEY" --secret-key "$S3S_SECRET" "$dir/root" \
        </dev/null >"$dir/s3s-fs.log" 2>&1 &
    local pid=$!
    disown "$pid" # no "Killed" job notices from this shell
    echo "$pid" >"$state/s3s-fs.pid"
    wait_ready s3s-fs "$pid" "$dir/s3s-fs.log" "$S3S_ENDPOINT" "$S3S_REGION" \
        "$S3S_KEY" "$S3S_SECRET" "$S3S_BUCKET"
}

# --- the three-node Garage cluster ----------------------------------------------------------
# STATE_DIR/cluster/nodeN/ (N = 1..3) holds node N's garage.toml, metadata, data and log;
# STATE_DIR/cluster/nodeN.pid its PID and STATE_DIR/cluster/nodeN.ports "S3_PORT RPC_PORT";
# STATE_DIR/cluster/garage the binary's path. Tests kill nodes by PID and restart them with
# `start-node`. Every node serves S3 for the whole cluster; the tests talk to node 1.

CLUSTER_NODES=3

# alive PID: whether PID runs (a killed process whose parent has not reaped it yet is not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $(awk '{print $3}' <<<"$stat") != Z ]]
}

# start_cluster_node STATE_DIR N: starts node N from its existing config (no wait).
start_cluster_node() {
    local dir="$1/cluster/node$2" pid
    RUST_LOG=${RUST_LOG:-garage=info} NO_COLOR=1 \
        nohup "$(<"$1/cluster/garage")" -c "$dir/garage.toml" server \
        </dev/null >>"$dir/garage.log" 2>&1 &
    pid=$!
    disown "$pid" # no "Killed" job notices from this shell
    echo "$pid" >"$1/cluster/node$2.pid"
}

# node_cli STATE_DIR N ARGS...: a garage CLI command through node N's RPC.
node_cli() {
    local state=$1 n=$2
    shift 2
    "$(<"$state/cluster/garage")" -c "$state/cluster/node$n/garage.toml" "$@"
}

# wait_node STATE_DIR N: waits until node N answers on its RPC port.
wait_node() {
    local dir="$1/cluster/node$2" deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if ! alive "$(<"$1/cluster/node$2.pid")"; then
            log "cluster node $2 exited; last lines of $dir/garage.log:"
            tail -n 30 "$dir/garage.log" >&2 || true
            return 1
        fi
        node_cli "$1" "$2" node id -q >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    log "cluster node $2 did not answer within ${START_TIMEOUT_S} s"
    return 1
}

start_cluster() { # STATE_DIR
    local state=$1 dir="$1/cluster" i secret ids=()
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$GARAGE_BIN" >"$dir/garage"
    secret=$(rand_hex 32)
    for i in $(seq 1 $CLUSTER_NODES); do
        local rpc_port s3_port
        rpc_port=$(free_port)
        s3_port=$(free_port)
        mkdir -p "$dir/node$i/meta" "$dir/node$i/data"
        echo "$s3_port $rpc_port" >"$dir/node$i.ports"
        cat >"$dir/node$i/garage.toml" <<EOF
metadata_dir = "$dir/node$i/meta"
data_dir = "$dir/node$i/data"
db_engine = "sqlite"
replication_factor = $CLUSTER_NODES
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$secret"

[s3_api]
api_bind_addr = "127.0.0.1:$s3_port"
s3_region = "garage"
EOF
        chmod 600 "$dir/node$i/garage.toml"
        start_cluster_node "$state" "$i"
    done
    for i in $(seq 1 $CLUSTER_NODES); do
        wait_node "$state" "$i" || return 1
        ids+=("$(node_cli "$state" "$i" node id -q 2>/dev/null)")
    done
    for i in $(seq 2 $CLUSTER_NODES); do
        node_cli "$state" 1 node connect "${ids[$((i - 1))]}" >/dev/null
    done
    # The layout: every node in one zone, replication factor 3, so each object is on all three
    # and a write or read needs two of them (Garage's quorum).
    node_cli "$state" 1 layout assign -z dc1 -c 1G "${ids[@]%%@*}" >/dev/null
    node_cli "$state" 1 layout apply --version 1 >/dev/null
    CLUSTER_KEY="GK$(rand_hex 12)"
    CLUSTER_SECRET=$(rand_hex 32)
    CLUSTER_BUCKET=mover-test
    CLUSTER_REGION=garage
    CLUSTER_ENDPOINT="http://127.0.0.1:$(cut -d' ' -f1 "$dir/node1.ports")"
    node_cli "$state" 1 key import --yes -n mover "$CLUSTER_KEY" "$CLUSTER_SECRET" >/dev/null
    node_cli "$state" 1 bucket create "$CLUSTER_BUCKET" >/dev/null
    node_cli "$state" 1 bucket allow --read --write --owner "$CLUSTER_BUCKET" \
        --key "$CLUSTER_KEY" >/dev/null
    log "garage cluster of $CLUSTER_NODES nodes, S3 on $CLUSTER_ENDPOINT (node 1), state $dir"
    wait_ready garage-cluster "$(<"$dir/node1.pid")" "$dir/node1/garage.log" "$CLUSTER_ENDPOINT" \
        "$CLUSTER_REGION" "$CLUSTER_KEY" "$CLUSTER_SECRET" "$CLUSTER_BUCKET"
}

cmd_start_node() { # STATE_DIR N
    local state=$1 n=$2
    [[ -f $state/cluster/node$n/garage.toml ]] || die "no cluster node $n in $state"
    if [[ -f $state/cluster/node$n.pid ]] && alive "$(<"$state/cluster/node$n.pid")"; then
        die "cluster node $n is running already"
    fi
    start_cluster_node "$state" "$n"
    wait_node "$state" "$n"
    # Tell node 1 at once (it would find the node again by itself, but only after a while),
    # then wait until it sees every node healthy. The node may answer its CLI a moment before
    # it accepts peers (a refused connection): ask again until the deadline; the status loop
    # below is what decides.
    local deadline=$((SECONDS + START_TIMEOUT_S)) id
    if ((n != 1)); then
        id=$(node_cli "$state" "$n" node id -q)
        until node_cli "$state" 1 node connect "$id" >/dev/null 2>&1; do
            ((SECONDS < deadline)) || break
            sleep 0.3
        done
    fi
    until ! node_cli "$state" 1 status 2>/dev/null | grep -q 'FAILED NODES'; do
        ((SECONDS < deadline)) || die "cluster node $n did not rejoin within ${START_TIMEOUT_S} s"
        sleep 0.3
    done
}

# --- moto's S3 server (Object Lock) ----------------------------------------------------------
# moto enforces Object Lock (a locked version cannot be deleted, a retention not shortened),
# which neither Garage nor s3s-fs implements. Installed with pip into a virtual environment
# under the cache directory unless a moto_server of that version is on PATH.

MOTO_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/mover-test/moto-$MOTO_VERSION"

find_moto() {
    local c
    for c in "$MOTO_VENV/bin/moto_server" "$(command -v moto_server 2>/dev/null)"; do
        [[ -n $c && -x $c ]] || continue
        local py
        py=$(head -n1 "$c" | sed 's/^#!//')
        if [[ -x $py ]] && "$py" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

install_moto() {
    if MOTO_BIN=$(find_moto); then
        log "moto $MOTO_VERSION already installed ($MOTO_BIN)"
        return 0
    fi
    command -v python3 >/dev/null || die "python3 not found; run scripts/setup.sh"
    log "installing moto[server] $MOTO_VERSION into $MOTO_VENV (pip)"
    rm -rf "$MOTO_VENV"
    python3 -m venv "$MOTO_VENV" || die "python3 -m venv failed; install python3-venv (scripts/setup.sh)"
    "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION"
    MOTO_BIN=$(find_moto) || die "moto $MOTO_VERSION still not found after pip install"
}

# s3_put URL REGION KEY SECRET [HEADER]: a signed PUT without a body; prints the HTTP status.
s3_put() {
    local extra=()
    [[ -n ${5:-} ]] && extra=(-H "$5")
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT \
        --aws-sigv4 "aws:amz:$2:s3" --user "$3:$4" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "${extra[@]}" "$1" || true
}

start_moto() { # STATE_DIR
    local state=$1 dir="$1/moto" port pid
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    MOTO_KEY="MOTO$(rand_hex 8)"
    MOTO_SECRET=$(rand_hex 32)
    MOTO_BUCKET=mover-lock
    MOTO_UNLOCKED_BUCKET=mover-plain
    MOTO_REGION=us-east-1
    MOTO_ENDPOINT="http://127.0.0.1:$port"
    log "starting moto on $MOTO_ENDPOINT, log $dir/moto.log"
    nohup "$MOTO_BIN" -H 127.0.0.1 -p "$port" </dev/null >"$dir/moto.log" 2>&1 &
    pid=$!
    disown "$pid"
    echo "$pid" >"$state/moto.pid"
    local deadline=$((SECONDS + START_TIMEOUT_S)) code=000
    while ((SECONDS < deadline)); do
        alive "$pid" || break
        code=$(s3_put "$MOTO_ENDPOINT/$MOTO_BUCKET" "$MOTO_REGION" "$MOTO_KEY" "$MOTO_SECRET" \
            'x-amz-bucket-object-lock-enabled: true')
        [[ $code == 200 ]] && break
        sleep 0.3
    done
    if [[ $code != 200 ]]; then
        log "moto did not start (last HTTP status $code); last lines of $dir/moto.log:"
        tail -n 30 "$dir/moto.log" >&2 || true
        return 1
    fi
    code=$(s3_put "$MOTO_ENDPOINT/$MOTO_UNLOCKED_BUCKET" "$MOTO_REGION" "$MOTO_KEY" "$MOTO_SECRET")
    [[ $code == 200 ]] || { log "moto: creating $MOTO_UNLOCKED_BUCKET gave HTTP $code"; return 1; }
    wait_ready moto "$pid" "$dir/moto.log" "$MOTO_ENDPOINT" "$MOTO_REGION" \
        "$MOTO_KEY" "$MOTO_SECRET" "$MOTO_BUCKET"
}

write_env() { # STATE_DIR
    local tmp="$1/env.tmp"
    {
        echo "# Written by scripts/s3-servers.sh start; source before running the tests."
        for s in GARAGE S3S CLUSTER MOTO; do
            for v in ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION; do
                local src
                case $v in
                    ACCESS_KEY) src=${s}_KEY ;;
                    SECRET_KEY) src=${s}_SECRET ;;
                    *) src=${s}_$v ;;
                esac
                printf 'export MOVER_TEST_%s_%s=%q\n' "$s" "$v" "${!src}"
            done
        done
        printf 'export MOVER_TEST_CLUSTER_STATE=%q\n' "$1/cluster"
        printf 'export MOVER_TEST_MOTO_UNLOCKED_BUCKET=%q\n' "$MOTO_UNLOCKED_BUCKET"
        # moto's Python has boto3: the lock tests play an attacker with it.
        printf 'export MOVER_TEST_MOTO_PYTHON=%q\n' "$(head -n1 "$MOTO_BIN" | sed 's/^#!//')"
    } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$1/env"
}

stop_pidfile() { # PIDFILE NAME
    local pidfile=$1 name=$2 pid i
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_GRACE_S * 10; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "$name (pid $pid) ignored TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

cmd_stop() { # STATE_DIR
    local state=$1
    [[ -d $state ]] || return 0
    stop_pidfile "$state/garage.pid" garage
    stop_pidfile "$state/s3s-fs.pid" s3s-fs
    stop_pidfile "$state/moto.pid" moto
    local i
    for i in $(seq 1 $CLUSTER_NODES); do
        stop_pidfile "$state/cluster/node$i.pid" "cluster node $i"
    done
    rm -f "$state/env"
}

cmd_start() { # STATE_DIR
    local state=$1
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    cmd_install
    cmd_stop "$state" # servers left over from an earlier start in the same STATE_DIR
    local t0=$SECONDS
    if ! start_garage "$state"; then
        cmd_stop "$state"
        die "garage failed to start"
    fi
    if ! start_s3s "$state"; then
        cmd_stop "$state"
        die "s3s-fs failed to start"
    fi
    if ! start_cluster "$state"; then
        cmd_stop "$state"
        die "the garage cluster failed to start"
    fi
    if ! start_moto "$state"; then
        cmd_stop "$state"
        die "moto failed to start"
    fi
    write_env "$state"
    log "all servers ready in $((SECONDS - t0)) s; environment in $state/env"
    log "stop them with: $0 stop $state"
}

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -eq 2 ]] || usage; cmd_start "$2" ;;
    stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
    start-node) [[ $# -eq 3 ]] || usage; cmd_start_node "$(cd "$2" && pwd)" "$3" ;;
    *) usage ;;
esac
