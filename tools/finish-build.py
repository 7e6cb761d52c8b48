#!/usr/bin/env python3
"""Trunk's post_build hook (Trunk.toml): finishes a build in its staging
folder before it becomes dist/, for `linear-lens serve` and tools/site.sh
alike.

1. Trunk writes the page's boot script inline into index.html; it moves to
   its own file, boot-<hash>.js, so that the page's Content-Security-Policy
   (index.html's <meta>) allows no inline script at all.
2. The service worker's cache is named for the build, a hash of its files,
   so that a new build replaces the last one's cached files cleanly.
"""
import hashlib
import os
import pathlib
import re
import sys


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


staging = os.environ.get("TRUNK_STAGING_DIR") or fail("run by trunk as a post_build hook")
root = pathlib.Path(staging)
index = root / "index.html"
html = index.read_text(encoding="utf-8")
if "Content-Security-Policy" not in html:
    fail("index.html has no Content-Security-Policy")

inline = re.compile(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", re.S)
found = list(inline.finditer(html))
if len(found) != 1:
    fail(f"expected trunk's one inline boot script in index.html, found {len(found)}")
attrs, body = found[0].group(1), found[0].group(2)
if 'type="module"' not in attrs:
    fail("trunk's boot script is not a module")
name = f"boot-{hashlib.sha256(body.encode()).hexdigest()[:16]}.js"
(root / name).write_text(body.strip() + "\n", encoding="utf-8")
html = html[: found[0].start()] + f'<script type="module" src="./{name}"></script>' + html[found[0].end():]
index.write_text(html, encoding="utf-8")

sw = root / "sw.js"
if not sw.is_file():
    fail("no sw.js in the build")
digest = hashlib.sha256()
for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "sw.js"):
    digest.update(path.relative_to(root).as_posix().encode())
    digest.update(path.read_bytes())
version = digest.hexdigest()[:16]
text, n = re.subn(r'^const VERSION = "[^"]*";', f'const VERSION = "{version}";', sw.read_text(), flags=re.M)
if n != 1:
    fail("sw.js has no `const VERSION = \"…\";` line to stamp")
sw.write_text(text)
