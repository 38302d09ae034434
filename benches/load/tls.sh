#!/usr/bin/env bash
# TLS rows of the load harness: Weir against nginx terminating TLS with the
# same certificate (ECDSA P-256, made here with openssl), proxying to
# bench-upstream, in one interleaved run. Three modes per round:
#   plain      — wrk over plain HTTP keep-alive (the same proxies, a second
#                listener): the baseline that shows what TLS itself adds;
#   keepalive  — wrk over HTTPS keep-alive connections: requests/s and
#                proxy CPU per request;
#   handshake  — wrk with `Connection: close`: every request a new TCP
#                connection and a full TLS handshake: handshakes/s and proxy
#                CPU per handshake.
# Everything listens on 127.0.0.1; every process started is stopped on exit.
#
# Run with: benches/load/tls.sh
#           ROUNDS=2 DURATION=3 benches/load/tls.sh      (a quick check)
# Knobs: ROUNDS=3 DURATION=5 CONNECTIONS=64 (keep-alive) HS_CONNECTIONS=16
# (handshakes) SKIP_BUILD=0. Needs nginx, wrk and openssl (Debian packages;
# benches/load/run.sh installs nginx and wrk).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
HS_CONNECTIONS=${HS_CONNECTIONS:-16}
SKIP_BUILD=${SKIP_BUILD:-0}
BIN=$CARGO_TARGET_DIR/release
for tool in nginx wrk openssl taskset python3; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "tls.sh: $tool is missing" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/weir-tls.XXXXXX")
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [[ -f $TMP/nginx.pid ]] && kill -TERM "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    ((rc == 0)) && rm -rf "$TMP" || echo "tls.sh: logs kept in $TMP" >&2
    exit "$rc"
}
trap cleanup EXIT

if [[ $SKIP_BUILD != 1 ]]; then
    echo "== building bench-upstream and weir (release)"
    (cd "$ROOT" && cargo build --release -p weir-benches --bin bench-upstream -p weir-proxy --bin weir) \
        >"$TMP/build.log" 2>&1 || { tail -20 "$TMP/build.log" >&2; exit 1; }
fi

read -r P_UP P_NGINX P_WEIR P_ADMIN P_NGINX_PLAIN P_WEIR_PLAIN < <(python3 -c '
import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
    -keyout "$TMP/site.key" -out "$TMP/site.pem" 2>/dev/null

# Proxies on cpu 0; wrk and the upstream on cpu 1.
taskset -c 1 "$BIN/bench-upstream" --listen "127.0.0.1:$P_UP" --threads 1 >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)

mkdir -p "$TMP/nginx-tmp"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-tmp;
    proxy_temp_path $TMP/nginx-tmp;
    keepalive_requests 1000000;
    ssl_session_cache shared:SSL:10m;
    upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
    server {
        listen 127.0.0.1:$P_NGINX_PLAIN;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$P_NGINX ssl http2;
        ssl_certificate $TMP/site.pem;
        ssl_certificate_key $TMP/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
taskset -c 0 "$NGINX" -c "$TMP/nginx.conf" -p "$TMP" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

cat >"$TMP/weir.toml" <<EOF
[server]
workers = 1
access_log = false
[admin]
address = "127.0.0.1:$P_ADMIN"
[[listeners]]
address = "127.0.0.1:$P_WEIR"
tls = { certificates = [{ cert = "site.pem", key = "site.key" }] }
[[listeners]]
address = "127.0.0.1:$P_WEIR_PLAIN"
[upstreams.up]
endpoints = ["127.0.0.1:$P_UP"]
[[routes]]
upstream = "up"
EOF
taskset -c 0 "$BIN/weir" run --config "$TMP/weir.toml" >"$TMP/weir.log" 2>&1 &
WEIR_PID=$!
PIDS+=("$WEIR_PID")
sleep 1.5
for port in "$P_NGINX" "$P_WEIR"; do
    curl -sk --max-time 3 "https://127.0.0.1:$port/" | grep -q hello ||
        { echo "tls.sh: nothing serves on $port" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

# utime+stime ticks of a process and its children (nginx's worker).
ticks() {
    local total=0 pid
    for pid in "$@" $(pgrep -P "$1" || true); do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# run TARGET PORT PID MODE: wrk for DURATION s; prints "requests/s  µs CPU per request".
run() {
    local port=$2 pid=$3 mode=$4 conns=$CONNECTIONS extra=() scheme=https
    if [[ $mode == plain ]]; then
        scheme=http
    fi
    if [[ $mode == handshake ]]; then
        conns=$HS_CONNECTIONS
        extra=(-H "Connection: close")
    fi
    local t0 t1
    t0=$(ticks "$pid")
    taskset -c 1 wrk -t1 -c"$conns" -d"${DURATION}s" "${extra[@]}" "$scheme://127.0.0.1:$port/" >"$TMP/wrk.out" 2>&1
    t1=$(ticks "$pid")
    local reqs
    reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
    awk -v r="$reqs" -v t=$((t1 - t0)) -v hz="$HZ" -v d="$DURATION" \
        'BEGIN { printf "%10.0f %10.1f", r / d, (r > 0 ? t * 1000000 / hz / r : 0) }'
}

printf '%-6s %-9s %-6s %10s %10s\n' round mode proxy "per s" "µs CPU"
declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
    for mode in plain keepalive handshake; do
        for target in nginx weir; do
            if [[ $target == nginx ]]; then port=$P_NGINX pid=$NGINX_PID; else port=$P_WEIR pid=$WEIR_PID; fi
            if [[ $mode == plain && $target == nginx ]]; then port=$P_NGINX_PLAIN; fi
            if [[ $mode == plain && $target == weir ]]; then port=$P_WEIR_PLAIN; fi
            line=$(run "$target" "$port" "$pid" "$mode")
            printf '%-6s %-9s %-6s %s\n' "$round" "$mode" "$target" "$line"
            echo "$mode $target $line" >>"$TMP/all"
        done
    done
done
echo
echo "medians (Weir ÷ nginx):"
for mode in plain keepalive handshake; do
    awk -v m="$mode" '$1 == m { r[$2] = r[$2] " " $3; c[$2] = c[$2] " " $4 }
        function median(s,   a, n, i, j, t) {
            n = split(s, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            wr = median(r["weir"]); nr = median(r["nginx"]); wc = median(c["weir"]); nc = median(c["nginx"])
            printf "  %-9s weir %.0f/s, %.1f µs CPU; nginx %.0f/s, %.1f µs CPU; throughput %.2f×, CPU %.2f×\n", m, wr, wc, nr, nc, wr / nr, wc / nc
        }' "$TMP/all"
done
