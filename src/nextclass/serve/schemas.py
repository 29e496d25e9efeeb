"""Pydantic models of the HTTP API (they also make the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, Field

__all__ = ["TopK", "NeighborResult", "ImageResult", "LabelsResult", "PredictResponse", "ModelInfo", "ModelsResponse",
           "Health", "ErrorItem", "ErrorResponse"]


class TopK(BaseModel):
    label: str
    probability: float = Field(description="Calibrated probability (softmax of logits / temperature).")


class NeighborResult(BaseModel):
    id: str = Field(description="The training image's id: its path relative to the training data's root (never an "
                    "absolute path).")
    label: str
    index: int = Field(description="Its class index.")
    distance: float = Field(description="Euclidean distance of the unit feature vectors (0 = same direction, 2 = opposite).")
    thumbnail: Optional[str] = Field(description="A small copy of the training image, data:image/png;base64,...; "
                                     "null when the model was trained with --no-neighbor-thumbnails.")


class ImageResult(BaseModel):
    file: str = Field(description="The uploaded file name.")
    error: Optional[str] = Field(None, description="Why this file could not be used as an image (then label, index "
                                 "and probability are None); the other files of the request are still predicted.")
    label: Optional[str] = Field(description="Predicted class name (when abstained: the best guess).")
    index: Optional[int] = Field(description="Predicted class index (the model's output order).")
    probability: Optional[float]
    abstained: bool = Field(False, description="The confidence is below the abstain threshold: do not trust the label.")
    unfamiliar: Optional[bool] = Field(None, description=(
        "Farther from every training image than 95% of the validation images were: maybe a class or kind of image "
        "the model never saw. None: the model keeps no such threshold."))
    topk: list[TopK]
    set: Optional[list[str]] = Field(None, description=(
        "The prediction set, most probable first: the classes that hold the true class with the promised coverage "
        "(split conformal on validation; empty when the model is more accurate than the coverage asks for). None: "
        "no coverage asked for."))
    neighbors: Optional[list[NeighborResult]] = Field(None, description="The nearest training images (when asked for).")


class LabelProbability(BaseModel):
    label: str
    probability: float = Field(description="Calibrated probability of this label: sigmoid(logit / its temperature).")


class LabelsResult(BaseModel):
    """One image's answer from a multi-label model (no single label: an image may carry none, one or several)."""

    file: str = Field(description="The uploaded file name.")
    error: Optional[str] = Field(None, description="Why this file could not be used as an image (then labels and "
                                 "probabilities are None); the other files of the request are still predicted.")
    labels: Optional[list[LabelProbability]] = Field(description=(
        "The labels whose calibrated probability is at or above their threshold, most probable first (empty: no "
        "label)."))
    probabilities: Optional[dict[str, float]] = Field(description="Every label's calibrated probability.")
    unfamiliar: Optional[bool] = Field(None, description="As for a single-label model (None: not checked).")
    neighbors: Optional[list[NeighborResult]] = Field(None, description="The nearest training images (when asked for).")


class PredictResponse(BaseModel):
    model: str = Field(description="NAME@vN for a store model, else the model's run name.")
    backend: str
    task: str = Field("single-label", description=(
        "single-label: each result has label, probability, topk; multi-label: each result has labels (those at or "
        "above their threshold) and probabilities (every label's)."))
    threshold: Optional[float] = Field(None, description="The abstain threshold in use (None: never abstain).")
    coverage: Optional[dict] = Field(None, description=(
        "The prediction sets' promise: coverage, threshold (None with too_small: too few validation images for "
        "it, every set is every class), val_n and score. None: no sets."))
    results: list[Union[ImageResult, LabelsResult]]


class ModelInfo(BaseModel):
    name: str
    version: Optional[str] = None
    ref: str
    backend: str
    arch: Optional[str] = None
    classes: list[str]
    task: str = Field("single-label", description="single-label (one class per image) or multi-label.")
    multilabel: Optional[dict] = Field(None, description=(
        "A multi-label model's decision rule: rule (how the thresholds were chosen, e.g. max-f1), thresholds "
        "{label: t} (a label is predicted when its probability >= t) and temperatures {label: T}. None: single-label."))
    temperature: float
    preprocess: dict
    metrics: dict
    data_hash: str = ""
    created: Optional[str] = None
    explain: bool = Field(description="Whether POST /v1/explain (Grad-CAM) is available.")
    abstain: Optional[dict] = Field(None, description="Abstain score, threshold in use and its validation coverage.")
    sets: Optional[dict] = Field(None, description="The server's default prediction sets (as PredictResponse.coverage).")
    neighbors: Optional[dict] = Field(None, description="The nearest-training-images index (None: the bundle has none).")
    headline: Optional[dict] = Field(None, description=(
        "The accuracy the web page shows: split ('test', else 'val' when the bundle has no test number), accuracy, "
        "n and ci (its 95% Wilson interval [lo, hi]). None: the bundle keeps no accuracy."))
    limits: dict


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    model: str = Field(description="NAME@vN for a store model, else the model's run name (never a filesystem path).")
    name: str
    version: Optional[str] = None
    backend: str
    uptime_seconds: float


class ErrorItem(BaseModel):
    file: str
    index: int
    reason: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[ErrorItem] = []
