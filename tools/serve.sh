#!/usr/bin/env bash
# Builds the app and serves it with the real default model (Gemma 3 270M) on
# http://127.0.0.1:${PORT:-8080}/ . Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/tools/node_modules/.bin:$PATH"
cargo fetch
trunk build --release --offline
exec cargo run -q --release -p lens-cli -- serve --port "${PORT:-8080}" --dist dist
