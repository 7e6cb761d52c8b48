#!/usr/bin/env bash
# Fuzzes the parsers (the harnesses of crates/lens-fuzz) with libFuzzer,
# coverage-guided, on stable Rust: cargo-fuzz's `--sanitizer none` needs no
# nightly, and safe Rust's faults are what is looked for (panics, overflow
# checks, hangs, a huge allocation: -malloc_limit_mb makes one a crash).
#
#   bash tools/fuzz.sh [SECONDS] [HARNESS...]   # each harness for SECONDS (60)
#   FUZZ_RUNS=N bash tools/fuzz.sh              # N inputs each, seed 1 (CI)
#
# Starts from the seeds (examples/fuzz_seeds.rs: tiny models of the three
# families, the real GGUF's head, links, the catalog, messages) and the
# corpus the fuzzer kept, outside the repository ($FUZZ_CORPUS, default
# ~/.cache/linear-lens/fuzz-corpus/<harness>/), minimised after each timed
# run by `cargo fuzz cmin`. An input that crashes a harness is copied to
# fuzz/regressions/<harness>/ (commit it: the replay test,
# crates/lens-fuzz/tests/replay.rs, runs it from then on) and the script
# fails. Only the regressions are in git; the corpus is rebuilt from the
# seeds by fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
[ $# -gt 0 ] && shift
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(gguf hf_files tokenizer_json link_text pool_block)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
main_target="${CARGO_TARGET_DIR:-$PWD/target}"
fuzz_target="${FUZZ_TARGET_DIR:-$HOME/.cache/linear-lens/fuzz-target}"
corpora="${FUZZ_CORPUS:-$HOME/.cache/linear-lens/fuzz-corpus}"
CARGO_TARGET_DIR="$main_target" cargo build -q --example fuzz_seeds --profile test
rm -rf fuzz/seeds
"$main_target/debug/examples/fuzz_seeds" fuzz/seeds
cargo fuzz build --sanitizer none --target-dir "$fuzz_target" >/dev/null
max_len() {
  case "$1" in
    gguf) echo 1100000 ;;            # the real GGUF's first MiB
    hf_files | tokenizer_json) echo 65536 ;;
    *) echo 8192 ;;
  esac
}
if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS" -seed=1); else limit=(-max_total_time="$secs"); fi
failed=0
for h in "${harnesses[@]}"; do
  corpus="$corpora/$h"
  artifacts="fuzz/artifacts/$h"
  mkdir -p "$corpus" "$artifacts"
  # libFuzzer adds new inputs to its first folder: a bounded run (CI) only
  # reads the kept corpus.
  fresh=$(mktemp -d)
  first="$corpus"
  [ -z "${FUZZ_RUNS:-}" ] || first="$fresh"
  echo "== fuzz $h (${FUZZ_RUNS:-$secs s}${FUZZ_RUNS:+ inputs, seed 1})"
  log=$(mktemp)
  crashed=0
  if ! cargo fuzz run --sanitizer none --target-dir "$fuzz_target" "$h" "$first" "$corpus" "fuzz/seeds/$h" -- \
      "${limit[@]}" -max_len="$(max_len "$h")" -malloc_limit_mb=1024 -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    crashed=1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)|^Done|ERROR|panicked" "$log" | head -8 || true
  for a in "$artifacts"/*; do
    [ -f "$a" ] || continue
    mkdir -p "fuzz/regressions/$h"
    cp "$a" "fuzz/regressions/$h/"
    echo "   kept $(basename "$a") as a regression test (fuzz/regressions/$h/)"
    crashed=1
  done
  rm -rf "$artifacts" "$fresh"
  if [ -z "${FUZZ_RUNS:-}" ]; then
    # Keep only the inputs that reach code no other input reaches.
    cargo fuzz cmin --sanitizer none --target-dir "$fuzz_target" "$h" "$corpus" -- \
      -max_len="$(max_len "$h")" >/dev/null 2>&1 || true
    echo "   corpus ($corpus): $(ls "$corpus" | wc -l) inputs, $(du -sh --apparent-size "$corpus" | cut -f1)"
  fi
  if [ "$crashed" = 1 ]; then
    failed=1
    grep -B2 -A12 -m1 "panicked\|ERROR" "$log" || tail -n 20 "$log"
    echo "   whole log: $log"
  else
    rm -f "$log"
  fi
done
[ "$failed" = 0 ] || { echo "error: a harness crashed; see fuzz/regressions/"; exit 1; }
