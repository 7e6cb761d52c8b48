"""Linear Lens from Python: a language model's equivalent linear mapping.

Freeze every input-dependent coefficient of the network (norm scales, gate
activations, attention probabilities) at its value for a prompt; what remains
is a linear map whose Jacobian, the *detached Jacobian* ``J``, reconstructs
the model's output exactly (J. R. Golden, "Equivalent Linear Mappings of
Large Language Models", TMLR 2025). ``Model`` runs the engine of the Linear
Lens page and CLI on this machine:

>>> import linear_lens
>>> m = linear_lens.Model("gemma-3-270m")
>>> r = m.analyze("The bridge out of Marin is the")
>>> r["top"][0]["token"], r["reconstruction"]["detached_rel_error"]
>>> J = m.jacobian("The bridge out of Marin is the")      # (n, d, d)

Batches of prompts on this machine's cores or on a Ray cluster:
``linear_lens.batch.run`` and ``python -m linear_lens.batch``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ._native import LensError, __version__
from ._native import Model as _Native

__all__ = ["Model", "LensError", "__version__", "report_arrays"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _array(x: list) -> Optional[np.ndarray]:
    """``x`` as an array when it is a non-empty rectangular list of numbers."""
    if not x:
        return None
    if all(_is_number(v) for v in x):
        return np.asarray(x, dtype=np.int64 if all(isinstance(v, int) for v in x) else np.float64)
    if all(isinstance(v, list) for v in x):
        inner = [_array(v) for v in x]
        if all(a is not None for a in inner) and len({(a.shape, a.dtype) for a in inner}) == 1:
            return np.stack(inner)
    return None


def report_arrays(value: Any) -> Any:
    """A Report as parsed from JSON, with every vector and matrix of numbers
    (singular values, shares, attention, token ids) made a NumPy array; the
    rest (dicts, lists of tokens or records, numbers) stays as it is."""
    if isinstance(value, dict):
        return {k: report_arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        a = _array(value)
        return a if a is not None else [report_arrays(v) for v in value]
    return value


class _Watcher:
    """Progress of one run as tqdm bars (where tqdm is installed), shown only
    for a stage that takes longer than a second; notices to stderr."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.stage = None
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:
                pass

    def progress(self, stage: str, done: int, total: int) -> None:
        if self.tqdm is None:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = self.tqdm(total=total, desc=stage, delay=1.0, leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def notice(self, text: str) -> None:
        print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Model:
    """A language model loaded by the Linear Lens engine.

    Parameters
    ----------
    model:
        As the CLI's ``--model`` takes it: a GGUF file, a Hugging Face
        directory (``config.json``, ``tokenizer.json``, safetensors), or a
        known id (``gemma-3-270m``, ``smollm2-135m``) fetched into the cache
        (``$LINEAR_LENS_MODELS``, default ``~/.cache/linear-lens``).
    precision:
        ``"f64"`` (exact to ~1e-15) or ``"f32"``.
    backend:
        ``"cpu"``, or ``"gpu"``: wgpu's first adapter (Vulkan, Metal, DX12),
        which computes in f32, certified against an f64 CPU pass.

    Raises ``ValueError`` with the CLI's words for a bad argument (an unknown
    model id, a bad precision). Runs release the GIL; Ctrl-C stops a run.
    """

    def __init__(self, model: str, precision: str = "f64", backend: str = "cpu"):
        self._m = _Native(str(model), precision, backend)

    @property
    def name(self) -> str:
        """The model as named (its reports' ``model``)."""
        return self._m.name

    @property
    def precision(self) -> str:
        """``"f64"`` or ``"f32"`` (the GPU computes in f32)."""
        return self._m.precision

    @property
    def backend(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return self._m.backend

    @property
    def adapter(self) -> Optional[str]:
        """The GPU adapter, with ``backend="gpu"``."""
        return self._m.adapter

    @property
    def config(self) -> Dict[str, Any]:
        """Architecture and sizes: ``arch``, ``layers``, ``hidden`` (d),
        ``ffn``, ``heads``, ``kv_heads``, ``head_dim``, ``vocab``,
        ``context_length``."""
        return json.loads(self._m.config_json())

    def tokens(self, prompt: str) -> List[str]:
        """The prompt's tokens as the model reads them (``<bos>`` included)."""
        return self._m.tokens(prompt)

    def token_ids(self, prompt: str) -> List[int]:
        """The prompt's token ids."""
        return self._m.token_ids(prompt)

    def predict(self, prompt: str, top: int = 5) -> Dict[str, Any]:
        """The ``top`` most likely next tokens, as ``predict --json`` gives
        them: ``{"model", "precision", "token_ids", "tokens", "top": [{"id",
        "token", "logit", "prob"}, ...]}`` (an ordinary forward pass)."""
        return json.loads(self._m.predict_json(prompt, top))

    def analyze(
        self,
        prompt: str,
        *,
        svd: int = 16,
        layers: Optional[Sequence[int]] = None,
        target: Optional[str] = None,
        decode: int = 5,
        ordinary: bool = True,
        matrix_free: Optional[bool] = None,
        top: int = 5,
        columns: int = 5,
        attention: bool = True,
        extent: str = "full",
        steer: Optional[str] = None,
        steer_lambda: Optional[float] = None,
        steer_layer: Optional[int] = None,
        steer_tokens: Optional[int] = None,
        progress: bool = True,
        arrays: bool = True,
    ) -> Dict[str, Any]:
        """The analysis of ``prompt``: the Report ``analyze --json`` writes,
        as a dict whose vectors and matrices are NumPy arrays.

        Options (the CLI's ``analyze`` flags):

        - ``svd``: singular values kept per spectrum (J_cat and each J_i); 0 skips the SVD.
        - ``layers``: 1-based layers whose taps (layer/attn/mlp, cumulative and layerwise) to compute.
        - ``target``: the token whose logit is split among the prompt's tokens
          (``" Paris"`` or ``"id:123"``; default the predicted one).
        - ``decode``: singular pairs decoded into tokens (J_cat and the last token's J_i).
        - ``ordinary``: also the ordinary Jacobian (nothing frozen), for contrast.
        - ``matrix_free``: None decides by the prompt's length; True finds the top
          of J_cat's spectrum by block Lanczos without forming J; False forms J.
        - ``top``: next-token predictions listed. ``columns``: largest columns and
          rows of the last J_i, decoded. ``attention``: the attention probabilities.
        - ``extent``: ``"shares"`` (the prediction and each token's share, one
          transpose pass), ``"contributions"`` (the c_i too) or ``"full"``.
        - ``steer`` (a source prompt), ``steer_lambda``, ``steer_layer``,
          ``steer_tokens``: steer this prompt's continuation with the source's operator.
        - ``progress``: tqdm bars (where installed) for stages longer than a second.
        - ``arrays``: False keeps the JSON's plain lists.

        What the Report holds: ``tokens``, ``token_ids``, ``top`` (predictions);
        ``reconstruction`` (``detached_rel_error``: ‖Σ J_i x_i − y‖/‖y‖, ~1e-15 in
        f64; ``ordinary_rel_error``; ``contributions_rel_error``;
        ``other_precision_rel_error``); ``per_token`` (‖x_i‖, ‖J_i‖_F, ‖c_i‖, c_i·y/‖y‖);
        ``svd`` (``concat``: J_cat's singular values, stable rank, ‖·‖_F;
        ``per_token``); ``matrix_free`` (its spectrum when J was not formed);
        ``decode`` (singular vectors as the tokens they point to); ``attribution``
        (each token's exact share of the target's logit, summing to it);
        ``attribution_predicted``; ``columns``; ``layers`` (taps); ``attention``;
        ``steering``; ``timings_ms``.
        """
        watcher = _Watcher(progress)
        try:
            text, _ = self._m.analyze_json(
                prompt,
                top=top,
                svd=svd,
                layers=list(layers or []),
                target=target,
                decode=decode,
                ordinary=ordinary,
                matrix_free=matrix_free,
                columns=columns,
                attention=attention,
                extent=extent,
                steer=steer,
                steer_lambda=steer_lambda,
                steer_layer=steer_layer,
                steer_tokens=steer_tokens,
                keep_jacobian=False,
                watcher=watcher,
            )
        finally:
            watcher.close()
        report = json.loads(text)
        return report_arrays(report) if arrays else report

    def jacobian(self, prompt: str) -> np.ndarray:
        """The full detached Jacobian, ``(n, d, d)`` in the run's precision:
        ``J[i, o, c] = ∂y_o/∂x_ic`` for the final-normed last position ``y``
        and the input embeddings ``x_i``; ``Σ_i J[i] @ x_i = y`` exactly. The
        same numbers as ``linear-lens bench --save-jacobian``."""
        return self._m.jacobian(prompt)

    def contributions(self, prompt: str) -> np.ndarray:
        """Each token's contribution ``c_i = J_i x_i``, ``(n, d)``: they sum
        to ``y``, and ``w_t · c_i`` is token i's exact share of token t's logit."""
        return self._m.contributions(prompt)

    def __repr__(self) -> str:
        return repr(self._m)
