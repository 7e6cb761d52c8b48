"""Batches of prompts: one Parquet row per prompt, on this machine's cores
(``executor="local"``) or on a Ray cluster (``executor="ray"``).

Each worker loads the model once and takes prompts one at a time; rows are
written as they arrive (the file is replaced whole, at most every couple of
seconds, so an interrupted batch leaves every row done until then), and a
rerun with the same ``out`` computes only the prompts without a row. A prompt
the engine refuses (empty, too long) gets a row with its ``error``; the
others still run. On Ray, an actor whose process dies is restarted and its
prompt retried, so that every prompt ends with exactly one row.

    python -m linear_lens.batch --prompts prompts.jsonl --model gemma-3-270m \\
        --out runs.parquet [--executor local|ray] [--address auto] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

Prompt = Union[str, Dict[str, Any]]

#: The columns of a batch's Parquet file, in order.
COLUMNS = [
    "id", "prompt", "model", "precision", "tokens", "top_token", "top_prob",
    "detached_rel_error", "ordinary_rel_error", "singular_values", "stable_rank",
    "attribution", "u1_tokens", "jacobian_file", "ms", "error",
]

#: The least seconds between rewrites of the output file while results
#: arrive; a large file waits longer (twenty times its last write), so that
#: rewriting it never takes more than a twentieth of the batch's time.
FLUSH_SECONDS = 0.25


def _schema():
    import pyarrow as pa

    s, f, ls, lf = pa.string(), pa.float64(), pa.list_(pa.string()), pa.list_(pa.float64())
    types = {
        "id": s, "prompt": s, "model": s, "precision": s, "tokens": ls, "top_token": s,
        "top_prob": f, "detached_rel_error": f, "ordinary_rel_error": f, "singular_values": lf,
        "stable_rank": f, "attribution": lf, "u1_tokens": ls, "jacobian_file": s, "ms": f,
        "error": s,
    }
    return pa.schema([(c, types[c]) for c in COLUMNS])


def read_prompts(prompts: Union[str, os.PathLike, Iterable[Prompt]]) -> List[Dict[str, str]]:
    """``prompts`` as ``[{"id", "prompt"}]``: a list of strings (ids are
    their positions), of ``{"id", "prompt"}`` objects, or a JSONL file of such
    objects (or of strings). Ids must be unique."""
    if isinstance(prompts, (str, os.PathLike)):
        with open(prompts, encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
    else:
        items = list(prompts)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append({"id": str(i), "prompt": item})
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            out.append({"id": str(item.get("id", i)), "prompt": item["prompt"]})
        else:
            raise ValueError(f"prompt {i} is neither a string nor an object with a \"prompt\" string: {item!r}")
    seen = set()
    for item in out:
        if item["id"] in seen:
            raise ValueError(f"the id {item['id']!r} is given to more than one prompt")
        seen.add(item["id"])
    return out


def row(report: Optional[Dict[str, Any]], item: Dict[str, str], model: str, precision: str,
        ms: float, error: Optional[str] = None, jacobian_file: Optional[str] = None) -> Dict[str, Any]:
    """One prompt's row, from its Report as parsed from JSON (None when the
    engine refused the prompt: ``error`` says why)."""
    out = {c: None for c in COLUMNS}
    out.update(id=item["id"], prompt=item["prompt"], model=model, precision=precision, ms=ms,
               error=error, jacobian_file=jacobian_file)
    if report is None:
        return out
    rec = report["reconstruction"]
    top = report["top"][0] if report["top"] else {}
    svd = (report.get("svd") or {}).get("concat") or {}
    mf = report.get("matrix_free") or {}
    # The predicted token's shares: `attribution` is the predicted token's
    # unless a target was named (then `attribution_predicted` is).
    shares = report.get("attribution_predicted") or report.get("attribution") or {}
    decoded = (report.get("decode") or {}).get("concat") or []
    out.update(
        tokens=report["tokens"],
        top_token=top.get("token"),
        top_prob=top.get("prob"),
        detached_rel_error=rec.get("detached_rel_error"),
        ordinary_rel_error=rec.get("ordinary_rel_error"),
        singular_values=svd.get("singular_values") or mf.get("singular_values"),
        stable_rank=svd.get("stable_rank"),
        attribution=shares.get("per_token"),
        u1_tokens=[t["token"] for t in decoded[0]["u_tokens"]] if decoded else None,
    )
    return out


class Analyst:
    """One worker's model, loaded once, and the batch's options: prompts in,
    rows out. ``threads`` caps the engine's threads in this process (set
    before the model is loaded: the engine's thread pool starts once)."""

    def __init__(self, model: str, precision: str = "f64", backend: str = "cpu",
                 threads: Optional[int] = None, options: Optional[Dict[str, Any]] = None,
                 jacobian_dir: Optional[str] = None):
        if threads:
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        from . import Model

        self.model = Model(model, precision=precision, backend=backend)
        self.options = dict(options or {})
        self.jacobian_dir = jacobian_dir

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def analyze(self, item: Dict[str, str]) -> Dict[str, Any]:
        import numpy as np

        t0 = time.perf_counter()
        m = self.model
        try:
            text, j = m._m.analyze_json(
                item["prompt"], keep_jacobian=self.jacobian_dir is not None, watcher=None,
                **_native_options(self.options),
            )
        except (ValueError, RuntimeError) as e:
            # The engine's one-line message (an empty or over-long prompt, ...).
            return row(None, item, m.name, m.precision, (time.perf_counter() - t0) * 1e3, str(e))
        jfile = None
        if j is not None:
            jfile = os.path.join(self.jacobian_dir, f"{_safe(item['id'])}.npy")
            np.save(jfile, j)
        return row(json.loads(text), item, m.name, m.precision, (time.perf_counter() - t0) * 1e3,
                   jacobian_file=jfile)


def _analyze_defaults() -> Dict[str, Any]:
    """`Model.analyze`'s run options and their defaults (its signature is the one list)."""
    import inspect

    from . import Model

    params = inspect.signature(Model.analyze).parameters.values()
    return {p.name: p.default for p in params
            if p.kind == p.KEYWORD_ONLY and p.name not in ("progress", "arrays")}


ANALYZE_DEFAULTS = _analyze_defaults()


def _native_options(options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = set(options) - set(ANALYZE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown analyze option(s): {', '.join(sorted(unknown))}")
    out = dict(ANALYZE_DEFAULTS, **options)
    out["layers"] = list(out["layers"] or [])
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# The local executor's per-process worker.
_worker: Optional[Analyst] = None


def _local_init(*args) -> None:
    global _worker
    _worker = Analyst(*args)


def _local_analyze(item: Dict[str, str]) -> Dict[str, Any]:
    assert _worker is not None
    return _worker.analyze(item)


def _local(todo: List[Dict[str, str]], workers: int, init: tuple) -> Iterator[Dict[str, Any]]:
    """Rows from a pool of processes on this machine, as they finish."""
    import concurrent.futures as cf
    import multiprocessing as mp

    # "spawn": a fresh interpreter per worker (no engine threads copied by fork).
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                initializer=_local_init, initargs=init) as pool:
        futures = [pool.submit(_local_analyze, item) for item in todo]
        try:
            for f in cf.as_completed(futures):
                yield f.result()
        finally:
            for f in futures:
                f.cancel()


def _ray(todo: List[Dict[str, str]], workers: Optional[int], threads: int, address: Optional[str],
         init: tuple) -> Iterator[Dict[str, Any]]:
    """Rows from Ray actors, each loading the model once and taking one prompt
    at a time; a dead actor is restarted and its prompt retried (Ray's actor
    restarts and task retries)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    actors = []
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        remote = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=-1)(Analyst)
        actors = [remote.remote(*init) for _ in range(min(workers, max(1, len(todo))))]
        queue = list(reversed(todo))
        pending = {}

        def give(actor):
            if queue:
                item = queue.pop()
                pending[actor.analyze.remote(item)] = actor

        for a in actors:
            give(a)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done[0])
            yield ray.get(done[0])
            give(actor)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _read_rows(out: str) -> List[Dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(out, schema=_schema()).to_pylist() if os.path.exists(out) else []


def _write_rows(out: str, rows: List[Dict[str, Any]]) -> None:
    """The whole table to ``out``, replacing it at once (never half-written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = f"{out}.partial"
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)
    os.replace(tmp, out)


class _Flusher:
    """Rewrites ``out`` as rows arrive, no more often than :data:`FLUSH_SECONDS`
    nor than twenty times the last write's own time."""

    def __init__(self, out: str):
        self.out, self.last, self.cost = out, time.perf_counter(), 0.0

    def __call__(self, rows: List[Dict[str, Any]], force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= max(FLUSH_SECONDS, 20 * self.cost):
            _write_rows(self.out, rows)
            self.last = time.perf_counter()
            self.cost = self.last - now


def run(prompts: Union[str, os.PathLike, Iterable[Prompt]], model: str, out: Union[str, os.PathLike],
        executor: str = "local", workers: Optional[int] = None, *, address: Optional[str] = None,
        precision: str = "f64", backend: str = "cpu", threads: Optional[int] = None,
        jacobians: bool = False, progress: bool = True,
        on_row: Optional[Callable[[Dict[str, Any]], None]] = None, **analyze_options: Any) -> Dict[str, Any]:
    """Analyze every prompt of ``prompts`` with ``model``; one row per prompt
    in the Parquet file ``out`` (columns: :data:`COLUMNS`).

    - ``prompts``: strings, ``{"id", "prompt"}`` objects, or a JSONL file of them.
    - ``executor``: ``"local"`` (a pool of processes here) or ``"ray"``
      (actors on the cluster at ``address``; None starts a local one,
      ``"auto"`` joins the running one).
    - ``workers``: processes / actors (default: the cores / ``threads``).
    - ``threads``: the engine's threads per worker (default: the cores
      divided among the workers; on Ray 1).
    - ``jacobians``: also each prompt's J as ``<out stem>.jacobians/<id>.npy``.
    - ``analyze_options``: as ``Model.analyze`` (``svd``, ``layers``, ``target``, ...).

    A rerun with the same ``out`` computes only the prompts without a row.
    Returns ``{"rows", "computed", "skipped", "failed", "seconds", "prompts_per_second"}``.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor `{executor}` (use local or ray)")
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    _native_options(analyze_options)  # bad options fail before anything starts
    _need("pyarrow", "parquet")
    if executor == "ray":
        _need("ray", "ray")
    items = read_prompts(prompts)
    out = os.fspath(out)
    # The model and precision are checked here, once, with the CLI's words.
    from . import Model

    probe = Model(model, precision=precision, backend=backend)
    rows = _read_rows(out)
    for r in rows:
        if (r["model"], r["precision"]) != (probe.name, probe.precision):
            raise ValueError(f"{out} holds rows of {r['model']} ({r['precision']}), not of "
                             f"{probe.name} ({probe.precision}): give another out file")
    del probe
    have = {r["id"] for r in rows}
    todo = [it for it in items if it["id"] not in have]
    jdir = None
    if jacobians:
        jdir = os.path.splitext(out)[0] + ".jacobians"
        os.makedirs(jdir, exist_ok=True)
    cores = os.cpu_count() or 1
    if executor == "local":
        workers = workers or max(1, min(cores // (threads or 1), len(todo) or 1))
        threads = threads or max(1, cores // workers)
    else:
        threads = threads or 1
    init = (model, precision, backend, threads, analyze_options, jdir)
    t0 = time.perf_counter()
    flush = _Flusher(out)
    failed = 0
    bar = _bar(len(todo), progress)
    stream = _local(todo, workers, init) if executor == "local" else _ray(todo, workers, threads, address, init)
    try:
        for r in stream:
            rows.append(r)
            failed += r["error"] is not None
            if on_row is not None:
                on_row(r)
            bar(len(rows) - len(have), time.perf_counter() - t0)
            flush(rows)
    finally:
        stream.close()  # the workers stopped (a Ray cluster this batch started, shut down)
        flush(rows, force=True)
        bar(None, 0)
    secs = time.perf_counter() - t0
    return {"rows": len(rows), "computed": len(todo), "skipped": len(have), "failed": failed,
            "seconds": secs, "prompts_per_second": len(todo) / secs if secs > 0 else 0.0}


def _need(module: str, extra: str) -> None:
    """An ImportError that says which extra to install, before anything runs."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"this needs {module}: pip install 'linear-lens[{extra}]' (or pip install {module})")


def _bar(total: int, enabled: bool) -> Callable[[Optional[int], float], None]:
    """Progress with prompts per second: tqdm where installed, else a line on stderr."""
    if not enabled or total == 0:
        return lambda done, secs: None
    try:
        from tqdm.auto import tqdm

        t = tqdm(total=total, unit="prompt")

        def update(done, secs):
            if done is None:
                t.close()
            else:
                t.update(done - t.n)  # tqdm's rate: prompts per second

        return update
    except ImportError:
        def line(done, secs):
            if done is None:
                print(file=sys.stderr)
            else:
                print(f"\r{done}/{total} prompts, {done / max(secs, 1e-9):.2f}/s", end="",
                      file=sys.stderr, flush=True)

        return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linear_lens.batch",
                                description="Analyze a file of prompts; one Parquet row per prompt.")
    p.add_argument("--prompts", required=True, help="a JSONL file of {\"id\", \"prompt\"} objects (or strings)")
    p.add_argument("--model", required=True, help="a GGUF file, a Hugging Face directory, or a known id")
    p.add_argument("--out", required=True, help="the Parquet file (rerun: only prompts without a row run)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="the Ray cluster (auto: the running one)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="engine threads per worker")
    p.add_argument("--precision", default="f64")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--jacobians", action="store_true", help="also each J as .npy beside the file")
    p.add_argument("--svd", type=int, default=16)
    p.add_argument("--decode", type=int, default=5)
    p.add_argument("--layers", default="", help="1-based layers, e.g. 1,6,12")
    p.add_argument("--target", default=None)
    p.add_argument("--no-ordinary", action="store_true")
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--matrix-free", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        summary = run(a.prompts, a.model, a.out, executor=a.executor, workers=a.workers, address=a.address,
                      precision=a.precision, backend=a.backend, threads=a.threads, jacobians=a.jacobians,
                      progress=not a.no_progress, svd=a.svd, decode=a.decode,
                      layers=[int(x) for x in a.layers.split(",") if x.strip()], target=a.target,
                      ordinary=not a.no_ordinary, attention=not a.no_attention,
                      matrix_free=True if a.matrix_free else None)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
