"""The per-epoch measurements of a training run as a text table (the CLI and studies print it)."""

from __future__ import annotations


def format_records(records) -> str:
    """Per measurement: loss, fitted Known / Unknown, dev, and test per category."""
    columns = ["train/Known", "train/Unknown", "dev", "test", "test/HighlyKnown", "test/MaybeKnown",
               "test/WeaklyKnown", "test/Unknown", "test/in", "test/out"]  # fmt: skip
    present = [c for c in columns if any(c in r.accuracy for r in records)]
    lines = [
        f"{'epoch':>6} {'loss':>7} " + " ".join(f"{c.removeprefix('test/'):>13}" for c in present)
    ]
    for r in records:
        cells = " ".join(
            f"{100 * r.accuracy[c]:12.1f}%" if c in r.accuracy else f"{'-':>13}" for c in present
        )
        lines.append(f"{r.epoch:>6g} {r.train_loss:7.3f} {cells}")
    return "\n".join(lines)
