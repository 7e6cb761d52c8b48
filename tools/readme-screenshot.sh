#!/usr/bin/env bash
# Makes the README's picture, docs/screenshot.png: the page on the paper's
# prompt (Gemma 3 270M, "The bridge out of Marin is the"), 1000 px wide, as
# the layout browser suite draws it. Needs dist/ (trunk build --release) and
# the CLI (`linear-lens serve`) built; runs the whole layout suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tools/node_modules/.bin:$PATH"
bin="${LINEAR_LENS_BIN:-${CARGO_TARGET_DIR:-target}/debug/linear-lens}"
log=$(mktemp)
"$bin" serve --port 0 --dist dist >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 120); do grep -q '^serving ' "$log" && break; sleep 0.5; done
url=$(grep -m1 '^serving ' "$log" | cut -d' ' -f2)
[ -n "$url" ] || { cat "$log"; echo "error: the server did not start"; exit 1; }
README_SCREENSHOT="$PWD/docs/screenshot.png" node tests/e2e/layout.mjs "$url" "${SCREENSHOT_DIR:-}"
ls -l docs/screenshot.png
