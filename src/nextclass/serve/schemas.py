"""Pydantic models of the HTTP API (they also make the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

__all__ = ["TopK", "ImageResult", "PredictResponse", "ModelInfo", "ModelsResponse", "Health", "ErrorItem", "ErrorResponse"]


class TopK(BaseModel):
    label: str
    probability: float = Field(description="Calibrated probability (softmax of logits / temperature).")


class ImageResult(BaseModel):
    file: str = Field(description="The uploaded file name.")
    label: str = Field(description="Predicted class name.")
    index: int = Field(description="Predicted class index (the model's output order).")
    probability: float
    topk: list[TopK]


class PredictResponse(BaseModel):
    model: str = Field(description="NAME@vN for a store model, else the bundle's folder.")
    backend: str
    results: list[ImageResult]


class ModelInfo(BaseModel):
    name: str
    version: Optional[str] = None
    ref: str
    backend: str
    arch: Optional[str] = None
    classes: list[str]
    temperature: float
    preprocess: dict
    metrics: dict
    data_hash: str = ""
    created: Optional[str] = None
    explain: bool = Field(description="Whether POST /v1/explain (Grad-CAM) is available.")
    limits: dict


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    model: str
    backend: str
    uptime_seconds: float


class ErrorItem(BaseModel):
    file: str
    index: int
    reason: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[ErrorItem] = []
