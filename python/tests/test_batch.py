"""Batches on the tiny random Qwen 3 (real engine, fast runs): Ray against
the local pool against one `analyze` per prompt; a Ray worker killed in the
middle; an interrupted batch resumed; prompts the engine refuses."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import linear_lens
from linear_lens import batch

# Twelve prompts of the tiny model's words (its tokenizer splits on spaces).
PROMPTS = [{"id": f"p{i}", "prompt": " ".join(f"w{3 + (i * 7 + k * 5) % 40}" for k in range(3 + i % 5))}
           for i in range(12)]
OPTIONS = dict(svd=8, decode=2)
NUMBERS = ["top_prob", "detached_rel_error", "ordinary_rel_error", "stable_rank"]
LISTS = ["singular_values", "attribution"]


def rows_by_id(path):
    rows = pq.read_table(path).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "one row per prompt"
    return {r["id"]: r for r in rows}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        ra, rb = a[k], b[k]
        assert (ra["error"], ra["tokens"], ra["top_token"], ra["u1_tokens"]) == \
               (rb["error"], rb["tokens"], rb["top_token"], rb["u1_tokens"]), k
        for c in NUMBERS:
            assert ra[c] == rb[c], (k, c)  # the same engine, the same numbers
        for c in LISTS:
            assert ra[c] == rb[c], (k, c)


@pytest.fixture(scope="module")
def local_rows(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    s = batch.run(PROMPTS, tiny_dir, out, executor="local", workers=2, progress=False, **OPTIONS)
    assert s["rows"] == s["computed"] == 12 and s["failed"] == 0
    return rows_by_id(out)


def test_local_batch_equals_analyze_per_prompt(tiny_dir, local_rows):
    m = linear_lens.Model(tiny_dir)
    assert set(local_rows) == {p["id"] for p in PROMPTS}
    for p in PROMPTS:
        r = m.analyze(p["prompt"], progress=False, arrays=False, **OPTIONS)
        want = batch.row(r, p, m.name, m.precision, 0.0)
        got = local_rows[p["id"]]
        for c in ["tokens", "top_token", "u1_tokens"]:
            assert got[c] == want[c], (p["id"], c)
        # The batch's workers run one thread each, this process all cores:
        # the same numbers to rounding.
        for c in NUMBERS + LISTS:
            np.testing.assert_allclose(got[c], want[c], rtol=1e-12, atol=1e-15, err_msg=f"{p['id']} {c}")
        assert got["detached_rel_error"] < 1e-13
        assert abs(sum(got["attribution"]) - r["attribution"]["logit"]) < 1e-10


def test_ray_batch_equals_local(tiny_dir, local_rows, tmp_path):
    out = tmp_path / "ray.parquet"
    s = batch.run(PROMPTS, tiny_dir, out, executor="ray", workers=2, progress=False, **OPTIONS)
    assert s["rows"] == 12 and s["failed"] == 0
    assert_same(rows_by_id(out), local_rows)


def _ray_workers():
    """Pids of the batch's Ray actors (their processes are titled after the class)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ray::Analyst" in f.read():
                    pids.append(int(pid))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            pass
    return pids


def test_ray_worker_killed_mid_batch(tiny_dir, local_rows, tmp_path):
    out = tmp_path / "killed.parquet"
    killed = []

    def kill_one(row):
        # After the second row: kill a worker while the others are running.
        if len(killed) == 0 and row is not None:
            kill_one.rows += 1
            if kill_one.rows == 2:
                pids = _ray_workers()
                assert pids, "no Ray actor process found"
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
    kill_one.rows = 0
    s = batch.run(PROMPTS, tiny_dir, out, executor="ray", workers=2, progress=False,
                  on_row=kill_one, **OPTIONS)
    assert killed, "a worker was killed"
    assert s["rows"] == 12
    assert_same(rows_by_id(out), local_rows)


def test_interrupted_batch_resumes_only_missing(tiny_dir, local_rows, tmp_path):
    out = tmp_path / "resume.parquet"
    first = [p for p in PROMPTS if p["id"] in ("p0", "p1", "p2", "p3", "p4")]
    # One thread per worker throughout: the SVD's last bits follow the threads.
    batch.run(first, tiny_dir, out, executor="local", workers=1, threads=1, progress=False, **OPTIONS)
    assert set(rows_by_id(out)) == {p["id"] for p in first}
    seen = []
    s = batch.run(PROMPTS, tiny_dir, out, executor="local", workers=2, progress=False,
                  on_row=lambda r: seen.append(r["id"]), **OPTIONS)
    assert s["skipped"] == 5 and s["computed"] == 7
    assert sorted(seen) == sorted(p["id"] for p in PROMPTS[5:])
    assert_same(rows_by_id(out), local_rows)
    # And the CLI's batch, killed in the middle (its whole process group),
    # then run again: the rows done stay, the rest are computed, once each.
    more = PROMPTS + [{"id": f"q{i}", "prompt": f"w{3 + i % 40} w{4 + i % 30} w5"} for i in range(36)]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps(p) + "\n" for p in more))
    out2 = tmp_path / "killed-cli.parquet"
    cmd = [sys.executable, "-m", "linear_lens.batch", "--prompts", str(jsonl), "--model", tiny_dir,
           "--out", str(out2), "--workers", "1", "--threads", "1", "--svd", "8", "--decode", "2", "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not out2.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = rows_by_id(out2)
    assert 0 < len(partial) < len(more), f"killed in the middle ({len(partial)} rows)"
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout)
    assert summary["skipped"] == len(partial) and summary["computed"] == len(more) - len(partial)
    rows = rows_by_id(out2)
    assert set(rows) == {p["id"] for p in more}
    assert_same({k: rows[k] for k in local_rows}, local_rows)


def test_refused_prompts_get_their_error(tiny_dir, tmp_path):
    out = tmp_path / "errors.parquet"
    prompts = [PROMPTS[0], {"id": "empty", "prompt": ""},
               {"id": "long", "prompt": " ".join(f"w{3 + k % 40}" for k in range(80))}, PROMPTS[1]]
    s = batch.run(prompts, tiny_dir, out, executor="local", workers=2, progress=False, **OPTIONS)
    assert s["rows"] == 4 and s["failed"] == 2
    rows = rows_by_id(out)
    assert rows["empty"]["error"] == "the prompt is empty: type some text first"
    assert "tokens" in rows["long"]["error"] and rows["long"]["top_token"] is None
    assert rows["p0"]["error"] is None and rows["p1"]["error"] is None
    assert rows["p0"]["detached_rel_error"] < 1e-13


def test_jacobians_beside_the_file(tiny_dir, tmp_path):
    out = tmp_path / "j.parquet"
    batch.run(PROMPTS[:2], tiny_dir, out, executor="local", workers=1, progress=False,
              jacobians=True, **OPTIONS)
    m = linear_lens.Model(tiny_dir)
    for r in rows_by_id(out).values():
        j = np.load(r["jacobian_file"])
        assert np.array_equal(j, m.jacobian(r["prompt"]))


def test_bad_batch_arguments(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="neither a file, a directory, nor a known id"):
        batch.run(PROMPTS, "no-such-model", tmp_path / "x.parquet", progress=False)
    with pytest.raises(ValueError, match="unknown precision"):
        batch.run(PROMPTS, tiny_dir, tmp_path / "x.parquet", precision="f16", progress=False)
    with pytest.raises(ValueError, match="unknown analyze option"):
        batch.run(PROMPTS, tiny_dir, tmp_path / "x.parquet", progress=False, svds=3)
    with pytest.raises(ValueError, match="unknown executor"):
        batch.run(PROMPTS, tiny_dir, tmp_path / "x.parquet", executor="dask", progress=False)
    with pytest.raises(ValueError, match="more than one prompt"):
        batch.run([{"id": 1, "prompt": "w3"}, {"id": 1, "prompt": "w4"}], tiny_dir,
                  tmp_path / "x.parquet", progress=False)
