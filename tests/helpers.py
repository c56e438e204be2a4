"""Small helpers several test files share."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from knowshift.cli import main

# A minimal valid study document (no grid): the parser's tests extend or damage it.
TOY_STUDY = {
    "name": "toy",
    "model": {"name": "some-model"},
    "facts": {"source": "jsonl:facts.jsonl"},
    "probe": {"limit": 32},
    "build": {"recipe": "unknown-ratio", "size": 8, "split": "test"},
    "train": {"epochs": 2, "lr": 1e-3},
}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main() in-process, with SystemExit (argparse) read as a status like a shell would.
    Returns (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, stdout.getvalue(), stderr.getvalue()


def run_ok(argv: list[str]) -> str:
    """main() in-process, which must succeed; returns its stdout."""
    status, stdout, stderr = run_cli(argv)
    assert status == 0, stderr
    return stdout


def fitted_shares_have_full_rank(store, run_ids) -> bool:
    """Whether the regression of accuracy on fitted Known / Unknown shares is defined over these
    runs' epochs: its design [1, Known fitted, Unknown fitted] has full column rank. Fitting is
    up to training (Known examples fitted from the first epoch, Unknown ones never, make the
    columns collinear), so tests of the regression stages assert what happens either way."""
    import numpy as np

    rows = [(1.0, r["accuracy"]["train/Known"], r["accuracy"]["train/Unknown"])
            for run_id in run_ids for r in store.train_records(run_id)]  # fmt: skip
    return int(np.linalg.matrix_rank(np.array(rows))) == 3


def fact_source_error(spec) -> str:
    """The one-line error that loading the fact source `spec` raises."""
    import pytest

    from knowshift.errors import KnowshiftError
    from knowshift.facts import load_facts

    with pytest.raises(KnowshiftError) as caught:
        load_facts(str(spec))
    message = str(caught.value)
    assert "\n" not in message
    return message
