#!/usr/bin/env bash
# The load harness with a 6-plugin chain (the budget for six plugins): the test
# plugins `realistic` and `counter`, three copies each, alternating, on
# Weir's route. Knobs are run.sh's (ROUNDS, DURATION, ...).
#
# Run with: benches/load/chain6.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# tests/build.rs builds every test plugin to wasm when weir-tests builds.
(cd "$ROOT" && cargo build --quiet -p weir-tests)
BUILT="$CARGO_TARGET_DIR/test-plugins/wasm32-unknown-unknown/plugin"

PLUGINS=$(mktemp -d "${TMPDIR:-/tmp}/weir-chain6.XXXXXX")
trap 'rm -rf "$PLUGINS"' EXIT
chain=()
for i in 1 2 3; do
    cp "$BUILT/weir_test_plugin_realistic.wasm" "$PLUGINS/realistic-$i.wasm"
    cp "$BUILT/weir_test_plugin_counter.wasm" "$PLUGINS/counter-$i.wasm"
    chain+=("{ name = \"realistic-$i\" }" "{ name = \"counter-$i\" }")
done
list=$(IFS=,; echo "${chain[*]}")

# Appended to the harness's last [[routes]] table, then a [plugins] table.
export WEIR_CONFIG_EXTRA="plugins = [${list//,/, }]
[plugins]
dir = \"$PLUGINS\""
"$HERE/run.sh" "$@"
