"""Type stubs of the compiled module (python/src/lib.rs). Use `linear_lens.Model`."""

from typing import Any, List, Optional, Protocol, Tuple

import numpy as np

__version__: str

class LensError(RuntimeError):
    """The engine could not finish a run: its one-line message says why."""

class _Watcher(Protocol):
    def progress(self, stage: str, done: int, total: int) -> None: ...
    def notice(self, text: str) -> None: ...

class Model:
    def __init__(self, model: str, precision: str = "f64", backend: str = "cpu") -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def adapter(self) -> Optional[str]: ...
    def config_json(self) -> str: ...
    def tokens(self, prompt: str) -> List[str]: ...
    def token_ids(self, prompt: str) -> List[int]: ...
    def predict_json(self, prompt: str, top: int) -> str: ...
    def analyze_json(
        self,
        prompt: str,
        *,
        top: int,
        svd: int,
        layers: List[int],
        target: Optional[str],
        decode: int,
        ordinary: bool,
        matrix_free: Optional[bool],
        columns: int,
        attention: bool,
        extent: str,
        steer: Optional[str],
        steer_lambda: Optional[float],
        steer_layer: Optional[int],
        steer_tokens: Optional[int],
        keep_jacobian: bool,
        watcher: Optional[_Watcher],
    ) -> Tuple[str, Optional[np.ndarray]]: ...
    def jacobian(self, prompt: str) -> np.ndarray: ...
    def contributions(self, prompt: str) -> np.ndarray: ...
