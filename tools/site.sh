#!/usr/bin/env bash
# Writes the whole public site into DIR: static files only (the page, its
# two wasm builds, the styles; the model catalog is compiled in), no server
# logic and no ./models/ (the catalog's models come from their Hugging Face
# sources). It works unchanged on any static host (GitHub Pages, a Hugging
# Face static Space, Netlify-style hosts), at the root or under a sub-path:
# every URL in it is relative, and it needs no special header and no
# cross-origin isolation.
#   bash tools/site.sh DIR              # builds the wasm (trunk), then copies
#   SITE_PREBUILT=1 bash tools/site.sh DIR   # copies dist/ as built
set -euo pipefail
out="${1:?usage: bash tools/site.sh DIR}"
cd "$(dirname "$0")/.."
if [ "${SITE_PREBUILT:-0}" != 1 ]; then
  export PATH="$PWD/tools/node_modules/.bin:$PATH"
  trunk build --release
fi
[ -f dist/index.html ] || { echo "error: no dist/index.html (trunk build --release)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
cp -R dist/. "$out/"
rm -rf "$out/models"
# The build named the service worker's cache for itself (tools/finish-build.py).
grep -q '^const VERSION = "[0-9a-f]\{16\}";' "$out/sw.js" || { echo "error: sw.js is not stamped (an old build? trunk build --release)" >&2; exit 1; }
# GitHub Pages: serve the files as they are (no Jekyll). A Hugging Face
# static Space: its metadata in README.md.
touch "$out/.nojekyll"
cp web/space-README.md "$out/README.md"
echo "site written to $out ($(du -sh "$out" | cut -f1))"
