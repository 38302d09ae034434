#!/usr/bin/env bash
# The resilience example: builds Weir, the demo service and the six shipped
# policy plugins, starts three demo instances on 127.0.0.1:3001-3003 and
# runs Weir on 127.0.0.1:8080 with the full chain (admin on 127.0.0.1:9901).
# Ctrl-C stops everything. Walkthrough: examples/resilience/README.md
#
# Run with: examples/resilience/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p weir-proxy -p weir-examples
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
plugins=(timeout throttle breaker retry cache balancer)
packages=()
for name in "${plugins[@]}"; do packages+=(-p "weir-plugin-$name"); done
cargo build --target wasm32-unknown-unknown --profile plugin "${packages[@]}"
mkdir -p examples/resilience/plugins
for name in "${plugins[@]}"; do
    cp "target/wasm32-unknown-unknown/plugin/weir_plugin_${name}.wasm" "examples/resilience/plugins/.${name}.wasm.tmp"
    mv "examples/resilience/plugins/.${name}.wasm.tmp" "examples/resilience/plugins/${name}.wasm"
done

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
    target/release/demo-upstream --listen "127.0.0.1:300$i" --name "demo-$i" & pids+=($!)
done
echo
echo "Weir is starting on http://127.0.0.1:8080 with the full chain; see examples/resilience/README.md"
echo
target/release/weir run --config examples/resilience/weir.toml & pids+=($!)
wait "${pids[-1]}"
