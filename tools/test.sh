#!/usr/bin/env bash
# Runs all the tests on a fresh machine: installs what is missing (tools/setup.sh),
# then formatting and lints, the native tests on the real models and on tiny
# random models, the wasm release build of the app, and the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_BROWSER=1 bash tools/setup.sh
export PATH="$PWD/tools/node_modules/.bin:$PATH"
step() { echo; echo "== $* ($(date +%T))"; }

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p linear-lens-web -p lens-worker -- -D warnings

step "native tests"
# nextest runs every test binary's tests side by side (one process each), so
# one long test no longer holds back the rest; plain cargo test otherwise.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --final-status-level slow
else
  cargo test --workspace
fi

step "wasm release build (trunk)"
cargo fetch
trunk build --release --offline

step "browser end-to-end (headless Chromium)"
log=$(mktemp)
tiny=$(mktemp -d)
cargo build --release -p lens-cli
cargo run -q --release --example tiny_model -- qwen3 "$tiny" >/dev/null
bin="${CARGO_TARGET_DIR:-target}/release/linear-lens"
"$bin" serve --port 0 --dist dist >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$tiny"' EXIT
for _ in $(seq 1 120); do grep -q '^serving ' "$log" && break; sleep 0.5; done
url=$(grep -m1 '^serving ' "$log" | cut -d' ' -f2)
[ -n "$url" ] || { cat "$log"; echo "error: the server did not start"; exit 1; }
LINEAR_LENS_BIN="$bin" TINY_QWEN3_DIR="$tiny" node tests/e2e/explorer.mjs "$url" "${SCREENSHOT_DIR:-}"
LINEAR_LENS_BIN="$bin" node tests/e2e/analysis.mjs "$url" "${SCREENSHOT_DIR:-}"
LINEAR_LENS_BIN="$bin" TINY_QWEN3_DIR="$tiny" node tests/e2e/webgpu.mjs "$url" "${SCREENSHOT_DIR:-}"
