"""Load a model by embedded name, Hugging Face id or local path, with its fingerprint."""

from knowshift.models.embedded import EMBEDDED_MODELS, EmbeddedModel
from knowshift.models.loader import LoadedModel, load_model, resolve_device, resolve_dtype

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LoadedModel",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
