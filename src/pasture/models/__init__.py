"""Classifier registry. Importing this package registers every built-in model."""

from pasture.models import paper_cnn, pretrained, resnet  # noqa: F401  (each registers its models)
from pasture.models.ema import WeightEMA
from pasture.models.registry import (
    Classifier,
    Ensemble,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = [
    "Classifier",
    "Ensemble",
    "ModelSpec",
    "WeightEMA",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
