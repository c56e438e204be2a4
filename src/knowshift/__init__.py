"""knowshift: what fine-tuning does to what a language model knows.

    import knowshift as ks

    probed = ks.probe(ks.ProbeRequest(model="smollm2-135m", facts="geo", limit=200))
    probed.category_shares()

The stage functions and their request and result types are those of `knowshift.api`
(`import knowshift` imports no torch). `ks.probe` and `ks.train` share their names with the
packages knowshift.probe and knowshift.train: called, they are the stage; their attributes are
the package's (`ks.probe.run` is the module knowshift.probe.run).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from knowshift._version import __version__
from knowshift.api import (
    BuildRequest,
    BuiltSet,
    FieldError,
    ProbeRequest,
    ProbeResults,
    TrainedRun,
    TrainRequest,
    analyses,
    build,
    records_frame,
    training_records,
)


class _Stage:
    """A stage function that shares its name with a package of knowshift."""

    def __init__(self, name: str):
        self._name = name
        self._function = getattr(importlib.import_module("knowshift.api"), name)
        self.__doc__ = self._function.__doc__
        self.__wrapped__ = self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(f"knowshift.{self._name}"), attribute)

    def __repr__(self) -> str:
        return f"<knowshift stage {self._name} (and package knowshift.{self._name})>"


class _Package(types.ModuleType):
    """knowshift itself: importing knowshift.probe or knowshift.train does not replace the
    stage functions of the same name (the packages stay in sys.modules and behind the stages)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STAGES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_STAGES = ("probe", "train")
probe = _Stage("probe")
train = _Stage("train")
sys.modules[__name__].__class__ = _Package

__all__ = [
    "BuildRequest", "BuiltSet", "FieldError", "ProbeRequest", "ProbeResults", "TrainRequest",
    "TrainedRun", "__version__", "analyses", "build", "probe", "records_frame", "train",
    "training_records",
]  # fmt: skip
