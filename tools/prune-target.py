#!/usr/bin/env python3
"""Removes the workspace's own build outputs from the shared build cache.

CI builds each fresh clone with the cache kept outside it ($CARGO_TARGET_DIR):
the dependencies are reused, but the workspace's crates are rebuilt for every
clone (their fingerprints hold the clone's path and its files' times), and
each build leaves 2-3 GB of test binaries and incremental state behind that
no later run reads. Over a few dozen stops that fills the disk. This removes
those outputs (every profile and target, the wasm build's too), keeping the
dependencies, so the cache stays the size of one build.

    python3 tools/prune-target.py [TARGET_DIR] [--older-than-minutes M]

With --older-than-minutes, only outputs older than M minutes go (a build in
progress elsewhere keeps its own).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def workspace_names():
    """The workspace's package names and target names (as cargo writes them)."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    names = set()
    for p in meta["packages"]:
        names.add(p["name"])
        names.add(p["name"].replace("-", "_"))
        for t in p["targets"]:
            if t["name"] != "build-script-build":
                names.add(t["name"].replace("-", "_"))
    return names


def stem(entry):
    """`lens_engine-3a8c1b7ea2eb8546.d` -> `lens_engine`; `liblens_engine-….rlib` too."""
    base = entry.split(".", 1)[0]
    if "-" not in base:
        return None
    name = base.rsplit("-", 1)[0]
    return name[3:] if name.startswith("lib") and entry.endswith((".rlib", ".rmeta", ".so")) else name


def main():
    args = sys.argv[1:]
    older = None
    if "--older-than-minutes" in args:
        i = args.index("--older-than-minutes")
        older = float(args[i + 1])
        del args[i : i + 2]
    target = Path(
        args[0] if args else os.environ.get("CARGO_TARGET_DIR", "target")
    ).expanduser()
    if not target.is_dir():
        return
    names = workspace_names()
    cutoff = time.time() - older * 60 if older is not None else None
    freed = 0
    count = 0
    profiles = [p for p in target.iterdir() if p.is_dir()]
    # Cross builds (wasm32-unknown-unknown/release, …) sit one level deeper.
    profiles += [q for p in list(profiles) for q in p.iterdir() if q.is_dir() and (q / "deps").is_dir()]
    for profile in profiles:
        for sub in ("deps", "examples", "incremental", ".fingerprint", "build"):
            d = profile / sub
            if not d.is_dir():
                continue
            for e in d.iterdir():
                if stem(e.name) not in names:
                    continue
                if cutoff is not None and e.lstat().st_mtime > cutoff:
                    continue
                if e.is_dir() and not e.is_symlink():
                    size = sum(f.stat().st_size for f in e.rglob("*") if f.is_file())
                    shutil.rmtree(e, ignore_errors=True)
                else:
                    size = e.lstat().st_size
                    e.unlink(missing_ok=True)
                freed += size
                count += 1
    print(f"prune-target: removed {count} outputs of the workspace's crates ({freed / 2**30:.1f} GiB) from {target}")


if __name__ == "__main__":
    main()
