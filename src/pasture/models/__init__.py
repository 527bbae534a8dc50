"""Classifier registry. Importing this package registers every built-in model."""

from pasture.models import paper_cnn  # noqa: F401  (registers "paper-cnn")
from pasture.models.registry import Classifier, ModelSpec, create_model, get_spec, list_models, register_model

__all__ = ["Classifier", "ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
