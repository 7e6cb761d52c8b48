"""Batch throughput (issue 31): prompts per minute for 24 eight-token
prompts on a model (default Gemma 3 270M, f64, the full analysis), for the
CLI in a shell loop (one process per prompt: the model parsed each time),
then `linear_lens.batch` local with 1 and 2 workers and Ray with 2 workers.
Prints one JSON object.

    $LINEAR_LENS_VENV/bin/python tools/bench-batch.py [--model gemma-3-270m] [--cli PATH]

The CLI is the release build (`cargo build --release -p lens-cli`), the
package as `pip install ./python` builds it (release): compare only these.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import linear_lens
from linear_lens import batch

NOUNS = ["bridge", "river", "tower", "market", "garden", "harbor", "castle", "station",
         "church", "library", "school", "forest", "valley", "museum", "palace", "island",
         "village", "road", "lake", "mountain", "temple", "theater", "prison", "factory"]
PLACES = ["Paris", "London", "Rome", "Berlin", "Madrid", "Vienna", "Prague", "Dublin"]


def prompts(m, n=24, tokens=8):
    out = []
    for i, noun in enumerate(NOUNS):
        p = f"The old {noun} of {PLACES[i % len(PLACES)]} is the"
        if len(m.tokens(p)) == tokens:
            out.append({"id": str(i), "prompt": p})
    if len(out) < n:
        sys.exit(f"only {len(out)} prompts of {tokens} tokens")
    return out[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--cli", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "linear-lens"))
    ap.add_argument("--skip", default="", help="comma-separated runs to skip (cli, local1, local1x2, local2, ray2)")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    m = linear_lens.Model(a.model)
    items = prompts(m)
    del m
    result = {"model": a.model, "precision": "f64", "prompts": len(items), "tokens": 8,
              "cores": os.cpu_count(), "cli": a.cli, "per_minute": {}, "seconds": {}}

    def record(name, secs):
        result["seconds"][name] = round(secs, 1)
        result["per_minute"][name] = round(60 * len(items) / secs, 2)
        print(f"{name}: {secs:.1f} s, {60 * len(items) / secs:.2f} prompts/min", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        if "cli" not in skip:
            t = time.perf_counter()
            for it in items:
                subprocess.run([a.cli, "analyze", "--model", a.model, "--prompt", it["prompt"],
                                "--json", os.path.join(tmp, f"{it['id']}.json")], check=True)
            record("cli_loop", time.perf_counter() - t)
        runs = [("local1", dict(executor="local", workers=1, threads=1)),
                ("local1x2", dict(executor="local", workers=1, threads=2)),
                ("local2", dict(executor="local", workers=2, threads=1)),
                ("ray2", dict(executor="ray", workers=2, threads=1))]
        for name, kw in runs:
            if name in skip:
                continue
            out = os.path.join(tmp, f"{name}.parquet")
            t = time.perf_counter()
            s = batch.run(items, a.model, out, progress=False, **kw)
            assert s["computed"] == len(items) and s["failed"] == 0, s
            record(name, time.perf_counter() - t)
    pm = result["per_minute"]
    if "local1" in pm and "local2" in pm:
        result["two_workers_over_one"] = round(pm["local2"] / pm["local1"], 2)
    if "cli_loop" in pm and "local2" in pm:
        result["batch_over_loop"] = round(pm["local2"] / pm["cli_loop"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
