# %% [markdown]
# # knowshift from Python
#
# Which facts does a model know, what does a fine-tuning set made of them look like, and what
# does training on it fit, epoch by epoch? Run as a script (`python docs/example.py`) or cell by
# cell in an editor that knows `# %%` cells (VS Code, PyCharm, Jupytext). With no settings it
# uses the embedded smollm2-135m and the built-in geo facts (a few minutes on 2 CPU cores); the
# test suite runs it on its tiny planted model (KNOWSHIFT_MODEL, KNOWSHIFT_FACTS, ...).

# %%
import os
import tempfile
from pathlib import Path

import knowshift as ks

MODEL = os.environ.get("KNOWSHIFT_MODEL", "smollm2-135m")
FACTS = os.environ.get("KNOWSHIFT_FACTS", "geo")
SPLIT = os.environ.get("KNOWSHIFT_SPLIT", "train")
LIMIT = int(os.environ.get("KNOWSHIFT_LIMIT", "120"))
SIZE = int(os.environ.get("KNOWSHIFT_SIZE", "16"))
DTYPE = os.environ.get("KNOWSHIFT_DTYPE", "auto")
WORK = Path(os.environ.get("KNOWSHIFT_WORK") or tempfile.mkdtemp(prefix="knowshift-example-"))

# %% [markdown]
# ## 1. Probe: the SliCK category of every fact (the exact estimator: no sampling)

# %%
probed = ks.probe(ks.ProbeRequest(model=MODEL, facts=FACTS, split=SPLIT, limit=LIMIT,
                                  dtype=DTYPE, workspace=WORK))  # fmt: skip
facts = probed.frame()
shares = probed.category_shares()
print(shares.round(2))

# %% [markdown]
# ## 2. Build: a set of fixed size, half of it facts the model does not know

# %%
built = ks.build(ks.BuildRequest(recipe="unknown-ratio", out=WORK / "set", model=MODEL,
                                 facts=FACTS, dtype=DTYPE, workspace=WORK,
                                 options={"size": SIZE, "frac_unknown": 0.5, "split": SPLIT}))  # fmt: skip
examples = built.frame()
print(examples["category"].value_counts())

# %% [markdown]
# ## 3. Train: full fine-tuning, measuring after every epoch which examples are fitted

# %%
run = ks.train(ks.TrainRequest(data=built.out, out=WORK / "run", model=MODEL, workspace=WORK,
                               settings={"epochs": 3, "lr": 5e-5 if MODEL == "smollm2-135m" else 2e-3,
                                         "batch_size": 4},
                               n_dev=8, n_test=16))  # fmt: skip
epochs = run.frame()
print(epochs[["epoch", "train_loss", "train/Known", "train/Unknown", "test"]].round(3))
