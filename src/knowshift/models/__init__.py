"""Load a model by embedded name, Hugging Face id or local path, with its fingerprint.

The loader imports torch, so it is imported on first use: `knowshift models` and `--help`
start without it.
"""

from typing import TYPE_CHECKING

from knowshift.models.embedded import EMBEDDED_MODELS, EmbeddedModel

if TYPE_CHECKING:
    from knowshift.models.loader import LoadedModel, load_model, resolve_device, resolve_dtype

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LoadedModel",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
_LOADER_NAMES = frozenset(__all__[2:])


def __getattr__(name: str):
    if name in _LOADER_NAMES:
        from knowshift.models import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
