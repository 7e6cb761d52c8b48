"""Fixtures for the Python package's tests: the CLI (the golden side of the
Report's equality), the real Gemma 3 270M, and a tiny random Qwen 3 written by
the repository's `tiny_model` example (batches: fast runs, real engine)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def _built(name: str, env: str) -> Path:
    """A binary as the native tests built it (test profile, optimized), or $env."""
    path = Path(os.environ[env]) if env in os.environ else TARGET / "debug" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: cargo build --profile test -p lens-cli --examples (or set {env})")
    return path


@pytest.fixture(scope="session")
def cli() -> Path:
    return _built("linear-lens", "LINEAR_LENS_BIN")


@pytest.fixture(scope="session")
def cli_json(cli):
    def run(*args: str):
        out = subprocess.run([str(cli), *args], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    return run


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny random Qwen 3 as Hugging Face files ($TINY_QWEN3_DIR when set)."""
    if os.environ.get("TINY_QWEN3_DIR"):
        return os.environ["TINY_QWEN3_DIR"]
    d = tmp_path_factory.mktemp("tiny-qwen3")
    subprocess.run([str(_built("examples/tiny_model", "TINY_MODEL_BIN")), "qwen3", str(d)],
                   check=True, capture_output=True)
    return str(d)


@pytest.fixture(scope="session")
def gemma():
    import linear_lens

    return linear_lens.Model("gemma-3-270m")
