#!/usr/bin/env bash
# Runs all the tests on a fresh machine: installs what is missing (tools/setup.sh),
# then formatting and lints, the native tests on the real models and on tiny
# random models with the wasm release build of the app beside them, and the
# browser tests with a bounded fuzz of the parsers and the Python package's
# tests beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_BROWSER=1 SETUP_PYTHON=1 bash tools/setup.sh
export PATH="$PWD/tools/node_modules/.bin:$PATH"
step() { echo; echo "== $* ($(date +%T))"; }

step "format and lints"
cargo fmt --all --check
# No two files of a crate import each other (ARCHITECTURE.md's invariant).
python3 tools/import-cycles.py
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p linear-lens-web -p lens-worker -- -D warnings

step "native tests, and the wasm release build (trunk) beside them"
# nextest runs every test binary's tests side by side (one process each), so
# one long test no longer holds back the rest; plain cargo test otherwise.
# trunk's build is mostly one core (LTO, wasm-opt), so it runs beside the
# tests, started once nextest has built them and let go of cargo's lock.
cargo fetch
trunk_log=$(mktemp)
native_log=$(mktemp)
trunk_build() {
  trunk build --release --offline >"$trunk_log" 2>&1 && touch "$trunk_log.ok"
  echo "   trunk finished ($(date +%T))"
}
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --final-status-level slow 2>&1 | tee "$native_log" &
  native=$!
  until grep -q '^ *Starting' "$native_log" || ! kill -0 "$native" 2>/dev/null; do sleep 1; done
  trunk_build &
  trunk=$!
  wait "$native" || native_failed=1
  wait "$trunk"
else
  cargo test --workspace || native_failed=1
  trunk_build
fi
echo; echo "== trunk build"; tail -n 3 "$trunk_log"
[ -f "$trunk_log.ok" ] || { cat "$trunk_log"; echo "error: trunk build failed"; exit 1; }
[ -z "${native_failed:-}" ] || { echo "error: native tests failed"; exit 1; }

step "browser end-to-end (headless Chromium), the bounded fuzz beside them"
log=$(mktemp)
tiny=$(mktemp -d)
# The CLI and the tiny-model writer as the native tests just built them
# (test profile, optimized): no second, release (LTO) build of the engine.
built="${CARGO_TARGET_DIR:-target}/debug"
bin="$built/linear-lens"
"$built/examples/tiny_model" qwen3 "$tiny" >/dev/null
"$bin" serve --port 0 --dist dist >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$tiny" "${logs:-}"' EXIT
for _ in $(seq 1 120); do grep -q '^serving ' "$log" && break; sleep 0.5; done
url=$(grep -m1 '^serving ' "$log" | cut -d' ' -f2)
[ -n "$url" ] || { cat "$log"; echo "error: the server did not start"; exit 1; }
# The explorer suite first, alone: it checks that the page answers a click
# within a second while its pool of workers (one per core) forms J, which
# holds on this machine only when no other suite's workers share the cores
# (two suites side by side: 1.5 s; alone: 0.1 s). Then two lanes side by
# side. Each suite's log is printed whole once all are done.
logs=$(mktemp -d)
# The layout and compare suites' screenshots (every size and mode) are kept as the
# run's artefacts: $SCREENSHOT_DIR when set, else target/artefacts/screenshots.
artefacts="${SCREENSHOT_DIR:-$PWD/target/artefacts/screenshots}"
suite() {
  local shots="${SCREENSHOT_DIR:-}"
  case "$1" in layout | compare) shots="$artefacts" ;; esac
  if LINEAR_LENS_BIN="$bin" TINY_QWEN3_DIR="$tiny" node "tests/e2e/$1.mjs" "$url" "$shots" \
    >"$logs/$1.log" 2>&1; then
    touch "$logs/$1.ok"
  fi
  echo "   $1 finished ($(date +%T))"
}
suite explorer
# The public site as tools/site.sh writes it, on a plain static server.
site="$logs/site"
SITE_PREBUILT=1 bash tools/site.sh "$site" >/dev/null
export SITE_DIR="$site"
# The fuzz (the regressions are replayed by lens-fuzz's replay test above):
# a bounded run of each harness from its seeds, fixed inputs and seed 1, the
# same run each time; a crash is kept under fuzz/regressions/ and fails. It
# takes one core for about two minutes (a third of it its build), after the
# analysis and layout suites: the lanes end within a minute of each other
# (measured: analysis 6:44 + layout 3:58; webgpu 2:44 + site 4:37 + compare 3:55).
fuzz() {
  if FUZZ_RUNS="${FUZZ_RUNS:-100000}" bash tools/fuzz.sh >"$logs/fuzz.log" 2>&1; then
    touch "$logs/fuzz.ok"
  fi
  echo "   fuzz finished ($(date +%T))"
}
# The Python package as a user installs it (`pip install ./python`, built in
# the pyext profile: optimized, no LTO), then
# its tests (python/tests: the Report against this CLI, batches on the tiny
# model, Ray included).
python_tests() {
  local venv="${LINEAR_LENS_VENV:-$HOME/.cache/linear-lens/venv}"
  if PATH="$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile pyext" "$venv/bin/pip" install -q --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall ./python >"$logs/python.log" 2>&1 &&
    LINEAR_LENS_BIN="$bin" TINY_QWEN3_DIR="$tiny" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      python/tests >>"$logs/python.log" 2>&1; then
    touch "$logs/python.ok"
  fi
  echo "   python finished ($(date +%T))"
}
{ suite webgpu; suite site; suite compare; python_tests; } &
lane=$!
{ suite analysis; suite layout; fuzz; }
wait "$lane"
failed=0
for s in explorer analysis webgpu site compare layout python fuzz; do
  case $s in fuzz) what="" ;; python) what="Python package: " ;; *) what="browser suite: " ;; esac
  echo; echo "== $what$s"; cat "$logs/$s.log"
  [ -f "$logs/$s.ok" ] || failed=1
done
echo; echo "screenshots of every size and mode: $artefacts"
[ "$failed" = 0 ] || { echo "error: a browser suite, the Python tests or the fuzz failed"; exit 1; }
