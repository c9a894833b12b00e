"""Test backends: LoadedModel-compatible objects whose ``predict`` raises or hangs.

They wrap a real loaded model (same name, version, metadata) so everything but the call
itself is real, and they are swapped into the model cache's published view the way the
cache actor publishes a load (a new view object, never mutated in place).
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import numpy as np

from actors.storage.tflite_backend import LoadedModel
from actors.web.service import Service


class FaultyModel:
    """Delegates to a real model; ``predict`` raises (``raises``) or blocks until ``release``."""

    def __init__(self, real: LoadedModel, *, raises: bool = False, hangs: bool = False) -> None:
        self.real = real
        self.raises = raises
        self.hangs = hangs
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.calls = 0
        self.idle = threading.Event()
        self.idle.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.idle.clear()
        try:
            if self.raises:
                raise RuntimeError("injected fault: the interpreter raised")
            if self.hangs:
                self.release.wait(timeout=30)  # bounded, so a broken test cannot leak a thread forever
            return self.real.predict(batch)
        finally:
            with self.lock:
                self.active -= 1
                if self.active == 0:
                    self.idle.set()


def install(service: Service, model: FaultyModel) -> None:
    """Publish ``model`` in place of the real one, as the cache actor publishes a load."""
    view = service.cache.view
    key = (model.real.name, model.real.version)
    service.cache.view = attrs.evolve(view, models={**view.models, key: model})
