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


# The packages come first: importing a package sets it as an attribute of its parent, so
# once they are loaded the stages can take their names for good (a later `import
# knowshift.probe.run` sets attributes on knowshift.probe, not on knowshift). Both are light.
import knowshift.probe  # noqa: E402, F401
import knowshift.train  # noqa: E402, F401

probe = _Stage("probe")  # noqa: F811
train = _Stage("train")  # noqa: F811

__all__ = [
    "BuildRequest", "BuiltSet", "FieldError", "ProbeRequest", "ProbeResults", "TrainRequest",
    "TrainedRun", "__version__", "analyses", "build", "probe", "records_frame", "train",
    "training_records",
]  # fmt: skip
