#!/usr/bin/env bash
# The quickstart: builds Weir and the demo service, starts two demo
# instances on 127.0.0.1:3001 and :3002, and runs Weir on 127.0.0.1:8080
# (admin API on 127.0.0.1:9901). Ctrl-C stops everything.
#
# Run with: examples/quickstart/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p weir-proxy -p weir-examples

# The example plugin, built to wasm (adding the target if missing) and
# installed into the plugins directory by write-then-rename.
mkdir -p examples/quickstart/plugins
target/release/weir plugin build --path examples/hello-plugin \
    --install examples/quickstart/plugins --name hello

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

target/release/demo-upstream --listen 127.0.0.1:3001 --name demo-1 & pids+=($!)
target/release/demo-upstream --listen 127.0.0.1:3002 --name demo-2 & pids+=($!)

cat <<'MSG'

Weir is starting on http://127.0.0.1:8080 — try:
  curl -i http://127.0.0.1:8080/hello
  curl http://127.0.0.1:9901/admin/routes
  curl http://127.0.0.1:9901/metrics
  curl http://127.0.0.1:9901/admin/plugins     # the hello plugin's state
Edit examples/quickstart/weir.toml while it runs: valid changes apply at once.

MSG
target/release/weir run --config examples/quickstart/weir.toml & pids+=($!)
wait "${pids[-1]}"
