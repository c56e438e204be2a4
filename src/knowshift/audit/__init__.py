"""Audit a user's fine-tuning file: what does the model already know of what it would be taught?

    sft = read_sft(path)                        # JSONL or CSV; prompt/completion, messages, Q/A
    result = audit(sft, model, config, store)   # a SliCK category, or why not, per example
    print(summary_table(result))

Each short-answer example is probed as it stands (its question, its answer), with few-shot
exemplars drawn from the same file; long-form examples (several sentences, code, long answers,
multi-turn chats) are reported as not probed, with the reason. `write` turns the result into a
per-example table, a filtered file (Unknown dropped) or a relabelled one (Unknown answered with a
refusal), in the input's own format.
"""

from knowshift.audit.data import SftExample, SftFile, read_sft

__all__ = ["SftExample", "SftFile", "read_sft"]
