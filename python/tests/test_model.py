"""`linear_lens.Model` against the CLI on the real Gemma 3 270M (f64): the
same Report, the same J bit for bit, the CLI's words for bad arguments."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import linear_lens

PROMPT = "The capital of France is"


def test_report_equals_analyze_json(gemma, cli_json):
    want = cli_json("analyze", "--model", "gemma-3-270m", "--prompt", PROMPT, "--json", "-")
    got = gemma.analyze(PROMPT, progress=False)
    assert got["tokens"] == want["tokens"]
    assert isinstance(got["svd"]["concat"]["singular_values"], np.ndarray)
    tol = dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["svd"]["concat"]["singular_values"],
                               want["svd"]["concat"]["singular_values"], **tol)
    for key in ("detached_rel_error", "ordinary_rel_error", "contributions_rel_error"):
        # Errors near 1e-15 are round-off: equal to 1e-12 of the output's scale.
        assert abs(got["reconstruction"][key] - want["reconstruction"][key]) <= 1e-12 * max(
            1.0, abs(want["reconstruction"][key])), key
    assert got["reconstruction"]["detached_rel_error"] < 1e-13
    np.testing.assert_allclose(got["attribution"]["per_token"], want["attribution"]["per_token"], **tol)
    assert got["attribution"]["target_token"] == want["attribution"]["target_token"]
    # The shares sum to the logit: the exactness a reader relies on.
    assert abs(got["attribution"]["per_token"].sum() - got["attribution"]["logit"]) < 1e-10
    words = lambda r: [[t["token"] for t in p["u_tokens"]] for p in r["decode"]["concat"]]
    assert words(got) == words(want)
    assert got["top"][0]["token"] == want["top"][0]["token"]
    np.testing.assert_allclose([t["prob"] for t in got["top"]], [t["prob"] for t in want["top"]], **tol)
    assert got["attention"].shape == (18, 4, 6, 6)  # layers, heads, queries, keys


def test_jacobian_equals_bench_save_jacobian(gemma, cli, tmp_path):
    prompt = "Marin is"
    path = tmp_path / "j.npy"
    subprocess.run([str(cli), "bench", "--model", "gemma-3-270m", "--prompt", prompt,
                    "--save-jacobian", str(path)], check=True, capture_output=True)
    want = np.load(path)
    got = gemma.jacobian(prompt)
    assert got.dtype == np.float64 and got.shape == want.shape == (len(gemma.tokens(prompt)), 640, 640)
    assert np.array_equal(got, want), f"max |ΔJ| {np.abs(got - want).max()}"
    # J reconstructs the output: Σ_i J_i x_i = y, through the contributions.
    c = gemma.contributions(prompt)
    assert c.shape == (got.shape[0], 640)


def test_predict_and_tokens(gemma, cli_json):
    want = cli_json("predict", "--model", "gemma-3-270m", "--prompt", PROMPT, "--json")
    got = gemma.predict(PROMPT)
    assert got["tokens"] == want["tokens"] == gemma.tokens(PROMPT)
    assert got["token_ids"] == want["token_ids"] == gemma.token_ids(PROMPT)
    assert [t["token"] for t in got["top"]] == [t["token"] for t in want["top"]]
    assert gemma.config["hidden"] == 640 and gemma.config["layers"] == 18


def test_bad_arguments_raise_value_error_with_the_cli_words(cli):
    def cli_error(*args):
        out = subprocess.run([str(cli), *args], capture_output=True, text=True)
        assert out.returncode != 0
        return out.stderr.strip()

    with pytest.raises(ValueError) as e:
        linear_lens.Model("no-such-model")
    assert str(e.value) in cli_error("predict", "--model", "no-such-model", "--prompt", "x")
    with pytest.raises(ValueError) as e:
        linear_lens.Model("gemma-3-270m", precision="f16")
    assert str(e.value) in cli_error("predict", "--model", "gemma-3-270m", "--prompt", "x", "--precision", "f16")
    with pytest.raises(ValueError, match="unknown backend"):
        linear_lens.Model("gemma-3-270m", backend="tpu")


def test_engine_errors_carry_the_engine_message(gemma, cli):
    with pytest.raises(ValueError) as e:
        gemma.analyze("", progress=False)
    out = subprocess.run([str(cli), "analyze", "--model", "gemma-3-270m", "--prompt", ""],
                         capture_output=True, text=True)
    assert out.stderr.strip() == f"error: {e.value}"
    with pytest.raises(ValueError, match="not one of shares"):
        gemma.analyze(PROMPT, extent="most")


def test_ctrl_c_stops_a_run_at_once():
    # A full analysis takes several seconds: Ctrl-C one second in returns at once.
    # Python's own Ctrl-C handler, as in a terminal (a CI job started in the
    # background inherits SIGINT ignored, and Python then keeps it ignored).
    code = ("import linear_lens, signal, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "m = linear_lens.Model('gemma-3-270m')\n"
            "print('ready', flush=True)\n"
            "t = time.time()\n"
            "try:\n"
            "    m.analyze('The bridge out of Marin is the', progress=False)\n"
            "    print('finished')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted %.2f' % (time.time() - t), flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert out.startswith("interrupted"), out
    assert time.time() - sent < 5.0


def test_gpu_backend_computes_in_f32_and_agrees(tiny_dir):
    # wgpu's first adapter (lavapipe on a machine without a GPU).
    cpu = linear_lens.Model(tiny_dir)
    gpu = linear_lens.Model(tiny_dir, backend="gpu")
    assert (gpu.backend, gpu.precision) == ("gpu", "f32") and gpu.adapter
    prompt = "w3 w9 w14 w5"
    want = cpu.analyze(prompt, progress=False)
    got = gpu.analyze(prompt, progress=False)
    assert got["precision"] == "f32"
    assert got["top"][0]["id"] == want["top"][0]["id"]
    assert got["reconstruction"]["detached_rel_error"] < 1e-5
    np.testing.assert_allclose(got["svd"]["concat"]["singular_values"],
                               want["svd"]["concat"]["singular_values"], rtol=1e-4)
    j = gpu.jacobian(prompt)
    assert j.dtype == np.float32 and j.shape == cpu.jacobian(prompt).shape
