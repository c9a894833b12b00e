"""The peer: a minimal FastAPI + pydantic ML-serving service, written the usual way.

``POST /predict`` takes ``{"model_name", "features": {name: [floats]}, "correlation_id"}`` and
answers ``{"prediction", "confidence", "probabilities", "correlation_id", "model_version",
"latency_ms"}``. Models come from the same repository layout model-router reads
(``models/<name>/<version>/model.tflite`` + ``metadata.yml``); each model's newest version is
loaded at start into a ``tflite_runtime`` interpreter. No routing, versions, health or hot reload:
this is the baseline a plain FastAPI service gives for the same inference.

    MODEL_REPOSITORY=models PEER_MODELS=tlob_tiny uvicorn bench.peer.app:app --port 8100
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import yaml
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

try:
    from tflite_runtime.interpreter import Interpreter
except ImportError:  # pragma: no cover - the LiteRT package instead of tflite-runtime
    from ai_edge_litert.interpreter import Interpreter

MODEL_REPOSITORY = Path(os.environ.get("MODEL_REPOSITORY", Path(__file__).resolve().parents[2] / "models"))
MODEL_NAMES = [n.strip() for n in os.environ.get("PEER_MODELS", "tlob_tiny").split(",") if n.strip()]


class PredictionRequest(BaseModel):
    model_name: str
    features: dict[str, list[float]]
    correlation_id: str | None = None


class PredictionResponse(BaseModel):
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    correlation_id: str
    model_version: str
    latency_ms: float = Field(description="server-side time from request parsed to answer built")


class TFLiteModel:
    def __init__(self, version_dir: Path) -> None:
        meta = yaml.safe_load((version_dir / "metadata.yml").read_text())
        self.version = version_dir.name
        self.feature_names: list[str] = list(meta["features"])
        self.window = int(meta.get("window", 1))
        self.labels: list[str] = list(meta["labels"])
        self.interpreter = Interpreter(model_path=str(version_dir / "model.tflite"), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def predict(self, features: dict[str, list[float]]) -> np.ndarray:
        missing = [n for n in self.feature_names if n not in features]
        if missing:
            raise HTTPException(status_code=422, detail=f"missing features: {missing}")
        row = []
        for name in self.feature_names:  # feature-major: all of feature 0's window, then feature 1's, ...
            values = features[name]
            if len(values) != self.window:
                raise HTTPException(status_code=422, detail=f"{name}: expected {self.window} values")
            row.extend(values)
        batch = np.asarray([row], dtype=np.float32)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)[0]


def load_models(root: Path, names: list[str]) -> dict[str, TFLiteModel]:
    models = {}
    for name in names:
        versions = sorted((p for p in (root / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        models[name] = TFLiteModel(versions[-1])
    return models


app = FastAPI(title="peer ML service")
MODELS = load_models(MODEL_REPOSITORY, MODEL_NAMES)


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "ok", "models": sorted(MODELS)}


@app.post("/predict", response_model=PredictionResponse)
async def predict(request: PredictionRequest) -> PredictionResponse:
    started = time.perf_counter()
    model = MODELS.get(request.model_name)
    if model is None:
        raise HTTPException(status_code=404, detail=f"unknown model {request.model_name!r}")
    probabilities = model.predict(request.features)
    best = int(np.argmax(probabilities))
    return PredictionResponse(
        prediction=model.labels[best],
        confidence=float(probabilities[best]),
        probabilities={label: float(p) for label, p in zip(model.labels, probabilities, strict=True)},
        correlation_id=request.correlation_id or str(uuid.uuid4()),
        model_version=model.version,
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
