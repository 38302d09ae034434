#!/usr/bin/env bash
# The quickstart: builds Weir and the demo service, starts two demo
# instances on 127.0.0.1:3001 and :3002, and runs Weir on 127.0.0.1:8080
# (admin API on 127.0.0.1:9901). Ctrl-C stops everything.
#
# Run with: examples/quickstart/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p weir-proxy -p weir-examples

# The example plugin, built to wasm and dropped into the plugins directory.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
cargo build -p weir-example-hello-plugin --target wasm32-unknown-unknown --profile plugin
mkdir -p examples/quickstart/plugins
cp target/wasm32-unknown-unknown/plugin/weir_example_hello_plugin.wasm examples/quickstart/plugins/.hello.wasm.tmp
mv examples/quickstart/plugins/.hello.wasm.tmp examples/quickstart/plugins/hello.wasm

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
