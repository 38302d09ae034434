#!/usr/bin/env bash
# Weir's load harness (docs/architecture.md, "Performance budgets"): throughput, latency and CPU per
# request of Weir against nginx as a reverse proxy, a bare hyper pass-through
# and the upstream served directly, in one interleaved run on this machine.
#
# Run with: benches/load/run.sh
#           ROUNDS=2 DURATION=3 benches/load/run.sh     (a quick check)
#
# It installs nginx and wrk from Debian's packages if missing, builds
# `bench-upstream`, `bare-proxy` and `weir` in release, starts everything on
# 127.0.0.1 only, then runs ROUNDS rounds of wrk against direct, nginx, bare
# and weir in turn, and prints a table per round and a summary of medians and
# ratios. Every process it starts is stopped on exit, whatever the exit.
# Knobs (environment) are listed in benches/load/README.md and under "usage".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
WARMUP=${WARMUP:-1}
WRK_THREADS=${WRK_THREADS:-1}
WEIR_RUNTIME=${WEIR_RUNTIME:-per-core}
BARE_RUNTIME=${BARE_RUNTIME:-$WEIR_RUNTIME}
WEIR_CONFIG_EXTRA=${WEIR_CONFIG_EXTRA:-}
WEIR_BIN=${WEIR_BIN:-}
WEIR_BASE_BIN=${WEIR_BASE_BIN:-}
WEIR_ARGS=${WEIR_ARGS:-'run --config {config}'}
PIN=${PIN:-auto}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NCPU=$(nproc 2>/dev/null || echo 1)
UPSTREAM_THREADS=${UPSTREAM_THREADS:-$(( NCPU > WORKERS + 1 ? NCPU - WORKERS - 1 : 1 ))}

usage() {
    cat <<'EOF'
usage: benches/load/run.sh
environment:
  ROUNDS=3            interleaved rounds (each: direct, nginx, bare, weir)
  DURATION=5          seconds of wrk per target per round
  CONNECTIONS=64      wrk connections
  WORKERS=1           proxy threads/processes (nginx workers, bare and weir threads)
  WARMUP=1            seconds of wrk per target before round 1 (0: none)
  WRK_THREADS=1       wrk threads
  UPSTREAM_THREADS=   bench-upstream threads (default: cores left after proxy and wrk, at least 1)
  UPSTREAM_ARGS=      extra bench-upstream flags, e.g. '--cache-control max-age=3600' (cache-hit runs)
  WEIR_RUNTIME=per-core   or multi-thread ([server] runtime in weir's config)
  BARE_RUNTIME=$WEIR_RUNTIME  bare-proxy's --runtime
  WEIR_CONFIG_EXTRA=  TOML appended to the generated weir config (e.g. a plugin chain)
  WEIR_BIN=           use this weir binary instead of building target/release/weir
  WEIR_BASE_BIN=      also measure this weir binary (target "base", same config) in the
                      same interleaved rounds: before/after figures of a change
  WEIR_ARGS='run --config {config}'  weir's arguments; {config} is the config path
  PIN=auto            auto: taskset proxies on cpus 0..WORKERS-1, wrk and upstream on the rest; 0: no pinning
  SKIP_BUILD=0        1: use the binaries already in $CARGO_TARGET_DIR/release
  KEEP_TMP=0          1: keep the temp dir (configs, logs, raw wrk output)
EOF
}
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    usage
    exit 0
fi

die() {
    echo "run.sh: $*" >&2
    exit 1
}
for knob in ROUNDS DURATION CONNECTIONS WORKERS WARMUP WRK_THREADS UPSTREAM_THREADS; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a whole number, got '${!knob}'"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && WORKERS >= 1 && WRK_THREADS >= 1)) ||
    die "ROUNDS, DURATION, CONNECTIONS, WORKERS and WRK_THREADS must be at least 1"
[[ $WEIR_RUNTIME == per-core || $WEIR_RUNTIME == multi-thread ]] ||
    die "WEIR_RUNTIME must be per-core or multi-thread"
[[ $BARE_RUNTIME == per-core || $BARE_RUNTIME == multi-thread ]] ||
    die "BARE_RUNTIME must be per-core or multi-thread"

# ---------------------------------------------------------------- cleanup --

PIDS=()   # every long-running process this script started
WRK_PID=""  # the wrk run under way, if any
TMP=""
POLICY_RC_CREATED=0

# Direct children of a process, from /proc (nginx's workers, say).
children_of() {
    local parent=$1 stat ppid rest f
    for f in /proc/[0-9]*/stat; do
        { stat=$(<"$f"); } 2>/dev/null || continue
        rest=${stat##*) }
        read -r _ ppid _ <<<"$rest"
        if [[ $ppid == "$parent" ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}

# A process and its direct children.
tree_of() {
    local pid=$1
    [[ -d /proc/$pid ]] || return 0
    echo "$pid"
    children_of "$pid"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local victims=() pid
    for pid in ${WRK_PID:+"$WRK_PID"} "${PIDS[@]}"; do
        # shellcheck disable=SC2207
        victims+=($(tree_of "$pid"))
    done
    if ((${#victims[@]})); then
        kill -TERM "${victims[@]}" 2>/dev/null || true
        local deadline=$((SECONDS + 5)) alive
        while ((SECONDS < deadline)); do
            alive=0
            for pid in "${victims[@]}"; do
                if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
                    alive=1
                fi
            done
            ((alive)) || break
            sleep 0.1
        done
        for pid in "${victims[@]}"; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        for pid in "${PIDS[@]}"; do
            wait "$pid" 2>/dev/null || true
        done
    fi
    if ((POLICY_RC_CREATED)); then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc == 0)) && [[ $KEEP_TMP != 1 ]]; then
            rm -rf "$TMP"
        else
            echo "run.sh: configs, logs and raw wrk output kept in $TMP" >&2
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weir-load.XXXXXX")

# ---------------------------------------------------------------- install --

NGINX=$(command -v nginx || true)
if [[ -z $NGINX && -x /usr/sbin/nginx ]]; then
    NGINX=/usr/sbin/nginx
fi
WRK=$(command -v wrk || true)
if [[ -z $NGINX || -z $WRK ]]; then
    missing=()
    if [[ -z $NGINX ]]; then missing+=(nginx-light); fi
    if [[ -z $WRK ]]; then missing+=(wrk); fi
    echo "== installing ${missing[*]} from Debian's packages"
    SUDO=()
    if (($(id -u) != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
        SUDO=(sudo -n)
    fi
    # Never let the package start a system nginx on port 80: deny service
    # starts for the duration of the install unless a policy is already set.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    timeout 300 "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${SUDO[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1; then
        # Newer Debian folds nginx-light into nginx.
        missing=("${missing[@]/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive timeout 600 "${SUDO[@]}" apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >>"$TMP/apt.log" 2>&1 ||
            { tail -20 "$TMP/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    if ((POLICY_RC_CREATED)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    WRK=$(command -v wrk || true)
    [[ -x $NGINX && -n $WRK ]] || die "nginx or wrk still missing after install"
fi

# ------------------------------------------------------------------ build --

BIN=$CARGO_TARGET_DIR/release
WEIR_SKIP=""   # why weir is not measured, if it is not
if [[ $SKIP_BUILD != 1 ]]; then
    echo "== building bench-upstream and bare-proxy (release; log: $TMP/build-benches.log)"
    (cd "$ROOT" && timeout 1800 cargo build --release -p weir-benches --bins) \
        >"$TMP/build-benches.log" 2>&1 ||
        { tail -30 "$TMP/build-benches.log" >&2; die "building weir-benches failed"; }
    if [[ -z $WEIR_BIN ]]; then
        echo "== building weir (release; log: $TMP/build-weir.log)"
        if ! (cd "$ROOT" && timeout 1800 cargo build --release -p weir-proxy --bin weir) \
            >"$TMP/build-weir.log" 2>&1; then
            tail -15 "$TMP/build-weir.log" >&2
            WEIR_SKIP="target/release/weir failed to build (log above)"
        fi
    fi
fi
WEIR_BIN=${WEIR_BIN:-$BIN/weir}
for b in bench-upstream bare-proxy; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (build it, or drop SKIP_BUILD=1)"
done
if [[ -z $WEIR_SKIP && ! -x $WEIR_BIN ]]; then
    WEIR_SKIP="$WEIR_BIN does not exist"
fi

# ------------------------------------------------------------------ ports --

free_ports() {  # N free loopback ports, distinct
    if command -v python3 >/dev/null; then
        python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    else
        local ports=() p
        while ((${#ports[@]} < $1)); do
            p=$((20000 + RANDOM % 30000))
            if [[ " ${ports[*]} " == *" $p "* ]]; then continue; fi
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || ports+=("$p")
        done
        echo "${ports[*]}"
    fi
}
read -r P_UP P_NGINX P_BARE P_WEIR P_ADMIN P_BASE P_BASE_ADMIN < <(free_ports 7)

# ---------------------------------------------------------------- pinning --

PROXY_PIN=()
LOAD_PIN=()
PIN_NOTE="not pinned"
if [[ $PIN != 0 ]] && command -v taskset >/dev/null && ((NCPU > WORKERS)); then
    PROXY_CPUS=0
    if ((WORKERS > 1)); then PROXY_CPUS="0-$((WORKERS - 1))"; fi
    LOAD_CPUS=$WORKERS
    if ((NCPU - 1 > WORKERS)); then LOAD_CPUS="$WORKERS-$((NCPU - 1))"; fi
    PROXY_PIN=(taskset -c "$PROXY_CPUS")
    LOAD_PIN=(taskset -c "$LOAD_CPUS")
    PIN_NOTE="proxies (nginx, bare, weir) on cpu $PROXY_CPUS; wrk and bench-upstream on cpu $LOAD_CPUS"
elif [[ $PIN != 0 ]]; then
    PIN_NOTE="not pinned (needs taskset and more cpus ($NCPU) than WORKERS ($WORKERS))"
fi

# ------------------------------------------------------------ processes --

# One GET over a fresh connection; prints the raw response.
http_get() {
    # shellcheck disable=SC2016 # $0 and $1 expand in the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3
        cat <&3' "$1" "$2" 2>/dev/null || true
}
http_status() {
    local line
    line=$(http_get "$1" "$2" | head -1)
    line=${line#* }
    echo "${line%% *}"
}

# Waits up to 10 s for a port to accept, while the process lives.
wait_port() {
    local port=$1 pid=$2 deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# A target passes if GET / through it answers 200 with the upstream's body.
serves_hello() {
    local resp
    resp=$(http_get "$1" /)
    [[ $resp == "HTTP/1.1 200"* && $resp == *hello* ]]
}

echo "== starting bench-upstream on 127.0.0.1:$P_UP ($UPSTREAM_THREADS thread(s))"
# shellcheck disable=SC2086 # UPSTREAM_ARGS is a list of words.
"${LOAD_PIN[@]}" "$BIN/bench-upstream" --listen "127.0.0.1:$P_UP" --threads "$UPSTREAM_THREADS" ${UPSTREAM_ARGS:-} \
    >"$TMP/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$P_UP" "$UP_PID" || { cat "$TMP/upstream.log" >&2; die "bench-upstream did not start"; }
serves_hello "$P_UP" || die "bench-upstream does not answer 200 hello"

TARGETS=(direct)
declare -A PORT_OF=([direct]=$P_UP) PID_OF=() SKIP_OF=()

echo "== starting nginx on 127.0.0.1:$P_NGINX ($WORKERS worker(s))"
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/client_body" "$TMP/nginx/proxy"
cat >"$TMP/nginx/nginx.conf" <<EOF
# Generated by benches/load/run.sh: nginx as a reverse proxy to bench-upstream.
worker_processes $WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    # Keep wrk's connections open as Weir and bare-proxy do (nginx's default
    # closes a client connection after 1000 requests).
    keepalive_requests 1000000;
    upstream bench {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"${PROXY_PIN[@]}" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx/stdout.log" 2>&1 &
PID_OF[nginx]=$!
PIDS+=("${PID_OF[nginx]}")
if wait_port "$P_NGINX" "${PID_OF[nginx]}" && serves_hello "$P_NGINX"; then
    TARGETS+=(nginx)
    PORT_OF[nginx]=$P_NGINX
else
    cat "$TMP/nginx/stdout.log" "$TMP/nginx/error.log" >&2 2>/dev/null || true
    SKIP_OF[nginx]="nginx did not start or does not proxy (log above)"
    echo "!! skipping nginx: ${SKIP_OF[nginx]}"
fi

echo "== starting bare-proxy on 127.0.0.1:$P_BARE ($WORKERS thread(s), $BARE_RUNTIME)"
"${PROXY_PIN[@]}" "$BIN/bare-proxy" --listen "127.0.0.1:$P_BARE" --upstream "127.0.0.1:$P_UP" \
    --threads "$WORKERS" --runtime "$BARE_RUNTIME" >"$TMP/bare.log" 2>&1 &
PID_OF[bare]=$!
PIDS+=("${PID_OF[bare]}")
if wait_port "$P_BARE" "${PID_OF[bare]}" && serves_hello "$P_BARE"; then
    TARGETS+=(bare)
    PORT_OF[bare]=$P_BARE
else
    cat "$TMP/bare.log" >&2
    SKIP_OF[bare]="bare-proxy did not start or does not proxy (log above)"
    echo "!! skipping bare: ${SKIP_OF[bare]}"
fi

# Writes a Weir config listening on $2 (admin $3) to $1.
weir_config() {
    cat >"$1" <<EOF
# Generated by benches/load/run.sh: Weir as a reverse proxy to bench-upstream.
[server]
workers = $WORKERS
runtime = "$WEIR_RUNTIME"

[admin]
address = "127.0.0.1:$3"

[[listeners]]
address = "127.0.0.1:$2"

[upstreams.bench]
endpoints = ["127.0.0.1:$P_UP"]

[[routes]]
path_prefix = "/"
upstream = "bench"
EOF
    if [[ -n $WEIR_CONFIG_EXTRA ]]; then
        printf '\n# WEIR_CONFIG_EXTRA\n%s\n' "$WEIR_CONFIG_EXTRA" >>"$1"
    fi
}

# Starts Weir binary $2 as target $1 on port $3 (admin $4); measures it if it
# comes up, else records why not ($5: a reason to skip it at once).
start_weir() {
    local name=$1 bin=$2 port=$3 admin=$4 skip=${5:-}
    local conf=$TMP/$name.toml
    weir_config "$conf" "$port" "$admin"
    if [[ -z $skip ]]; then
        echo "== starting $name ($bin) on 127.0.0.1:$port, admin 127.0.0.1:$admin ($WORKERS worker(s), $WEIR_RUNTIME)"
        read -r -a weir_args <<<"${WEIR_ARGS//\{config\}/$conf}"
        "${PROXY_PIN[@]}" "$bin" "${weir_args[@]}" >"$TMP/$name.log" 2>&1 &
        PID_OF[$name]=$!
        PIDS+=("${PID_OF[$name]}")
        # Ready when /readyz says 200; else, after 10 s, if the listener proxies.
        local deadline=$((SECONDS + 10)) ready=0
        while ((SECONDS < deadline)) && kill -0 "${PID_OF[$name]}" 2>/dev/null; do
            if [[ $(http_status "$admin" /readyz) == 200 ]]; then
                ready=1
                break
            fi
            sleep 0.1
        done
        if ((ready)) && serves_hello "$port"; then
            :
        elif kill -0 "${PID_OF[$name]}" 2>/dev/null && serves_hello "$port"; then
            echo "   ($name's /readyz never answered 200, but its listener proxies: measuring it)"
        elif ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            local rc=0
            wait "${PID_OF[$name]}" || rc=$?
            skip="$name exited at start with status $rc: $(tail -3 "$TMP/$name.log" | tr '\n' ' ')"
            if [[ ! -s $TMP/$name.log ]]; then skip+="(no output; is it still a stub?)"; fi
        else
            skip="$name was not ready within 10 s (see $TMP/$name.log)"
        fi
    fi
    if [[ -z $skip ]]; then
        TARGETS+=("$name")
        PORT_OF[$name]=$port
    else
        SKIP_OF[$name]=$skip
        echo "!! skipping $name: $skip"
    fi
}

start_weir weir "$WEIR_BIN" "$P_WEIR" "$P_ADMIN" "$WEIR_SKIP"
if [[ -n $WEIR_BASE_BIN ]]; then
    base_skip=""
    [[ -x $WEIR_BASE_BIN ]] || base_skip="$WEIR_BASE_BIN does not exist"
    start_weir base "$WEIR_BASE_BIN" "$P_BASE" "$P_BASE_ADMIN" "$base_skip"
fi

# ---------------------------------------------------------------- measure --

CLK_TCK=$(getconf CLK_TCK)

# utime+stime, in clock ticks, summed over the given pids (all their threads).
ticks() {
    local total=0 pid stat f
    for pid in "$@"; do
        { stat=$(<"/proc/$pid/stat"); } 2>/dev/null || continue
        read -r -a f <<<"${stat##*) }"
        # After "comm)": f[0] is field 3 (state); utime is field 14, stime 15.
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"

# Runs wrk against one target; appends a row to $RESULTS when $2 is a round.
measure() {
    local target=$1 round=$2 secs=$3 port=${PORT_OF[$1]} pids=() out
    if [[ $target != direct ]]; then
        # shellcheck disable=SC2207
        pids=($(tree_of "${PID_OF[$target]}"))
    fi
    local p0 u0 p1 u1 rc=0
    p0=$(ticks "${pids[@]}")
    u0=$(ticks "$UP_PID")
    # In the background and waited for, so that a signal stops the run at once.
    timeout $((secs + 30)) "${LOAD_PIN[@]}" "$WRK" -t"$WRK_THREADS" -c"$CONNECTIONS" \
        -d"${secs}s" --latency "http://127.0.0.1:$port/" >"$TMP/wrk-$round-$target.txt" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    p1=$(ticks "${pids[@]}")
    u1=$(ticks "$UP_PID")
    if [[ $round == warmup ]]; then return 0; fi
    out=$(<"$TMP/wrk-$round-$target.txt")
    if ((rc != 0)); then
        echo "!! wrk against $target failed (exit $rc): $(tail -2 <<<"$out" | tr '\n' ' ')" >&2
    fi
    awk -v round="$round" -v target="$target" -v rc="$rc" -v secs="$secs" -v hz="$CLK_TCK" \
        -v pticks=$((p1 - p0)) -v uticks=$((u1 - u0)) '
        function us(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000000 }
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { reqs = $1 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { v = $i; sub(/,/, "", v); errors += v }
        }
        END {
            if (rc != 0 || reqs + 0 == 0) {
                printf "%s\t%s\t-\t-\t-\t-\t-\t-\twrk failed\n", round, target
                exit
            }
            cpu = (target == "direct") ? "-" : sprintf("%.2f", pticks * 1000000 / hz / reqs)
            util = (target == "direct") ? "-" : sprintf("%.0f", pticks * 100 / hz / secs)
            origin = sprintf("%.2f", uticks * 1000000 / hz / reqs)
            printf "%s\t%s\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%d\n", round, target, rps, p50, p99, cpu, util, origin, errors
        }' <<<"$out" >>"$RESULTS"
}

# Aligns tab-separated lines into columns, indented (no dependency on column(1)).
table() {
    awk -F'\t' '{
        for (i = 1; i <= NF; i++) {
            cell[NR, i] = $i
            n = $i
            gsub(/µ|÷/, "x", n)   # one column wide, two bytes
            len[NR, i] = length(n)
            if (len[NR, i] > width[i]) width[i] = len[NR, i]
        }
        if (NF > cols) cols = NF
    } END {
        for (r = 1; r <= NR; r++) {
            line = "  "
            for (i = 1; i <= cols; i++) {
                s = cell[r, i]
                if (i < cols) for (pad = width[i] - len[r, i] + 2; pad > 0; pad--) s = s " "
                line = line s
            }
            print line
        }
    }'
}

print_round() {
    {
        printf 'target\treq/s\tp50 µs\tp99 µs\tcpu µs/req\tcpu %%\torigin µs/req\terrors\n'
        awk -F'\t' -v r="$1" 'BEGIN { OFS = "\t" } $1 == r { print $2, $3, $4, $5, $6, $7, $8, $9 }' "$RESULTS"
    } | table
}

median() {  # of the numbers on stdin ("-" and blanks ignored), printed with format $1
    { grep -E '^[0-9.]+$' || true; } | sort -g | awk -v fmt="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf fmt "\n", m }'
}
col_of() {  # column $2 of target $1's rows
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t { print $c }' "$RESULTS"
}

echo
echo "== Weir load harness: ${ROUNDS} round(s) × ${#TARGETS[@]} target(s) × ${DURATION}s," \
    "$CONNECTIONS connections, $WRK_THREADS wrk thread(s), loopback only"
echo "   targets: ${TARGETS[*]}   (order in each round: ${TARGETS[*]})"
echo "   proxies get WORKERS=$WORKERS thread(s)/process(es) so that wrk and the upstream" \
    "keep the other core(s); $NCPU cpu(s) here"
echo "   pinning: $PIN_NOTE"
echo "   cpu µs/req = the proxy's utime+stime (all threads; nginx: master+workers) ÷ requests;"
echo "   cpu % = the proxy's CPU over the run (100 = one core busy); origin = bench-upstream's µs/req"
for t in nginx bare weir base; do
    if [[ -n ${SKIP_OF[$t]:-} ]]; then echo "   skipped $t: ${SKIP_OF[$t]}"; fi
done
est=$(( (ROUNDS * DURATION + WARMUP) * ${#TARGETS[@]} + 2 * ROUNDS * ${#TARGETS[@]} ))
echo "   about ${est}s of measuring; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

if ((WARMUP > 0)); then
    for t in "${TARGETS[@]}"; do
        measure "$t" warmup "$WARMUP"
    done
fi
for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${TARGETS[@]}"; do
        measure "$t" "$r" "$DURATION"
    done
    echo
    echo "-- round $r/$ROUNDS"
    print_round "$r"
done

# ---------------------------------------------------------------- summary --

declare -A RPS=() CPU=() P50=() P99=()
echo
echo "== summary: medians over $ROUNDS round(s)"
SUMMARY=$'target\treq/s\tp50 µs\tp99 µs\tcpu µs/req\tcpu %\torigin µs/req\terrors (sum)\n'
for t in "${TARGETS[@]}"; do
    RPS[$t]=$(col_of "$t" 3 | median %.0f)
    P50[$t]=$(col_of "$t" 4 | median %.0f)
    P99[$t]=$(col_of "$t" 5 | median %.0f)
    CPU[$t]=$(col_of "$t" 6 | median %.2f)
    util=$(col_of "$t" 7 | median %.0f)
    origin=$(col_of "$t" 8 | median %.2f)
    errs=$(col_of "$t" 9 | awk '/^[0-9]+$/ { s += $1; next } { failed++ }
        END { printf "%d%s\n", s, failed ? " + " failed " failed wrk run(s)" : "" }')
    SUMMARY+="$t"$'\t'"${RPS[$t]}"$'\t'"${P50[$t]}"$'\t'"${P99[$t]}"$'\t'"${CPU[$t]}"$'\t'"$util"$'\t'"$origin"$'\t'"$errs"$'\n'
done
printf '%s' "$SUMMARY" | table

ratio() {  # a ÷ b, or "-" when either is missing
    awk -v a="${1:--}" -v b="${2:--}" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'
}
echo
echo "== ratios (req/s: higher is better for the left side; cpu µs/req: lower is better)"
{
    printf "ratio\treq/s\tcpu µs/req\n"
    for pair in weir:nginx weir:bare weir:direct weir:base base:nginx bare:nginx bare:direct nginx:direct; do
        a=${pair%%:*}
        b=${pair##*:}
        if [[ -z ${RPS[$a]:-} || -z ${RPS[$b]:-} ]]; then continue; fi
        cpu_ratio=-
        if [[ $b != direct ]]; then cpu_ratio=$(ratio "${CPU[$a]}" "${CPU[$b]}"); fi
        printf "%s÷%s\t%s\t%s\n" "${a^}" "$b" "$(ratio "${RPS[$a]}" "${RPS[$b]}")" "$cpu_ratio"
    done
} | table
if [[ -n ${SKIP_OF[weir]:-} ]]; then echo "  (Weir was skipped: ${SKIP_OF[weir]})"; fi
echo
echo "   note: if a proxy's cpu % stays well under 100 × WORKERS, the load side (wrk + upstream)"
echo "   was the bottleneck, or other processes took the proxy's cpu (load average now:"
echo "   $(cut -d' ' -f1-3 /proc/loadavg)); req/s then understates the proxy: compare cpu µs/req."
