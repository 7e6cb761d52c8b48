#!/usr/bin/env bash
# Serves the built page (dist/, from trunk) and times each stage on it in
# headless Chromium against the CLI's own times, in one run (one JSON object
# on stdout). Options go to tools/bench-page.mjs:
#   bash tools/bench-page.sh [--model gemma-3-270m] [--prompt "…"] \
#     [--backend cpu|webgpu] [--precision f64|f32] [--threads 2] [--svd auto|full|krylov]
# The CLI is $LINEAR_LENS_BIN, else the release build (built when missing):
# ratios are against `cargo build --release`, never a test-profile binary.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="${LINEAR_LENS_BIN:-$target/release/linear-lens}"
[ -x "$bin" ] || cargo build --release -p lens-cli >&2
[ -f dist/index.html ] || { echo "error: no dist/: trunk build --release" >&2; exit 1; }
[ -d tests/e2e/node_modules/playwright-core ] || SETUP_BROWSER=1 bash tools/setup.sh >&2
log=$(mktemp)
"$bin" serve --port 0 --dist dist >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 120); do grep -q '^serving ' "$log" && break; sleep 0.5; done
url=$(grep -m1 '^serving ' "$log" | cut -d' ' -f2)
[ -n "$url" ] || { cat "$log" >&2; echo "error: the server did not start" >&2; exit 1; }
LINEAR_LENS_BIN="$bin" node tools/bench-page.mjs "$url" "$@"
