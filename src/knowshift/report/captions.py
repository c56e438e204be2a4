"""What each section of the report shows, the published direction to compare it with (from
METHODS.md), and what would produce its data when a study has none. Kept together so the
report's claims can be checked against the papers in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class About:
    """A section's anchor and title, one line on what it shows, the published direction, and
    the command that produces its data."""

    anchor: str
    title: str
    shows: str
    published: str
    missing: str


CATEGORIES = About(
    "categories", "Knowledge categories",
    "Share of probed facts in each SliCK category (METHODS A), per relation, from the stored probe results.",
    "Gekhman et al., PaLM 2-M on EntityQuestions: 24% HighlyKnown, 23% MaybeKnown, 17% WeaklyKnown, 36% Unknown (last bar).",
    "no probe results with categories; run knowshift probe",
)  # fmt: skip
DYNAMICS = About(
    "dynamics", "Training dynamics",
    "Per run and epoch: share of the Known and of the Unknown training examples the model fits (its greedy answer is the gold one), with test accuracy.",
    "Gekhman et al.: Unknown examples are fitted much more slowly than Known ones; dev accuracy peaks (EARLY_STOP) before most of them are.",
    "no runs trained on a set built from probe categories; run knowshift build and knowshift train",
)  # fmt: skip
UNKNOWN_SHARE = About(
    "unknown-share", "Accuracy against %Unknown",
    "Test accuracy against the share of Unknown examples in the fine-tuning set, at EARLY_STOP (best dev epoch) and CONVERGENCE (last epoch).",
    "Gekhman et al.: accuracy falls as %Unknown grows, up to 14 points in distribution (6 out of it); small at EARLY_STOP (Unknown examples not yet fitted), larger at CONVERGENCE.",
    "no runs with a known share of Unknown examples; a study over build.frac_unknown gives them",
)  # fmt: skip
REGRESSION = About(
    "regression", "Accuracy ~ fitted Known + fitted Unknown",
    "Least-squares fit of test accuracy (%) on the shares of the set fitted, Known and Unknown, over every (run, epoch): coefficients with confidence intervals, R², and each point against the fit.",
    "Gekhman et al.: in distribution b0 = 36.9, b_kn = +7.3, b_unk = −8.3, R² = 0.86; out of it 36.2, +3.2, −3.0, R² = 0.95. Fitting Unknown examples hurts about as much as fitting Known ones helps.",
    "no stored regression; run knowshift analyze regression",
)  # fmt: skip
CATEGORY_ACCURACY = About(
    "category-accuracy", "Accuracy per category",
    "Accuracy (%) on the in-distribution test facts of each base-model category, EARLY_STOP → CONVERGENCE, per run, in the layout of the published table; the chart shows the change between the two.",
    "Gekhman et al. (rows in brown): MaybeKnown data is best, HighlyKnown-only is not; sets rich in WeaklyKnown or Unknown facts lose HighlyKnown accuracy by CONVERGENCE (D_Unknown 95.6 → 55.8).",
    "no runs measured per test category and on dev facts; run knowshift train on a probed fact source",
)  # fmt: skip
SIZE_MASTERY = About(
    "size-mastery", "Data size × mastery level",
    "Test accuracy (%, in distribution, last epoch) of runs by training-set size (columns) and the mastery level of their facts (rows).",
    "Ye et al.: 240 samples beat 1,920 by up to ~14 points; at 1,920 samples the level moves accuracy by ~12 points (D0 45.5, D1 52.7, D2 57.5, D3 55.2, D4 53.9).",
    "no runs on mastery-level sets; a study over build.mastery_level and build.size gives them",
)  # fmt: skip
RESTORATION = About(
    "restoration", "Parameter restoration",
    "Closed-book QA accuracy after resetting the top (largest relative update), random or bottom k% of the weights to the base model; how concentrated the update is; where the restored weights sit.",
    "Ye et al.: restoring the top 20–40% improves accuracy after 1,920 samples (D0 45.0 → 54.8 at 20%), little after 240; at 60% the model collapses. The top 1% of weights carry ~70.6% of the change, the top 20% ~92%; restored weights sit mostly in the MLP.",
    "no stored restore-sweep; run knowshift analyze restore-sweep --run RUN",
)  # fmt: skip
SHIFT = About(
    "shift", "Category shifts",
    "Each held-out fact's SliCK category before (rows) and after (columns) fine-tuning, re-probed with the run's settings: positive shifts (Unk→HK, Unk→MK, MK→HK) in green, negative ones (HK→Unk, HK→MK, MK→Unk) in red.",
    "Pletenev et al.: negative shifts exceed positive ones; reliability (trained Unknown facts now answered) ~1.0 up to 500 new facts, 0.48 at 3,000 with HighlyKnown additions.",
    "no stored shift analysis; run knowshift analyze shift --run RUN",
)  # fmt: skip
COLLAPSE = About(
    "collapse", "Answer collapse",
    "How varied the answers are before and after fine-tuning: distinct answers per question, the most frequent answers' shares, refusals, accuracy, and exploded answers (given to many of a relation's questions, mostly wrongly).",
    "Pletenev et al.: distinct answers halve and one answer takes over thousands of questions when the data is skewed towards a few entities; refusals nearly vanish.",
    "no stored collapse analysis; run knowshift analyze collapse --run RUN",
)  # fmt: skip
TOKEN_KL = About(
    "token-kl", "First-token KL",
    "KL(fine-tuned ‖ base) over the fine-tuned model's top-k first answer tokens, on the facts the base model masters best; mean KL where the fine-tuned model is right and where it is wrong.",
    "Ye et al.: larger KL goes with lower accuracy (expect more KL where wrong, and a negative Spearman(KL, right)).",
    "no stored token-kl analysis; run knowshift analyze token-kl --run RUN",
)  # fmt: skip
CONSISTENCY = About(
    "consistency", "Consistency with the base model",
    "Agreement of the fine-tuned model with its base on held-out questions (identical greedy answers, KL and rank correlation over answer options), and whether staying consistent goes with scoring well.",
    "Ren et al.: the more consistent the fine-tuned model stays with its base, the better it scores (positive partial correlation); harmonious data beats incompatible by ~11–15 points.",
    "no stored consistency analysis; run knowshift analyze consistency --run RUN",
)  # fmt: skip
BENCHMARKS = About(
    "benchmarks", "General-ability benchmarks",
    "lm-evaluation-harness scores of the base model, the fine-tuned one and any others scored with them (e.g. restored models).",
    "Pletenev et al.: MMLU falls (0.677 → 0.554) when 500–3,000 new facts are packed into the model.",
    "no stored benchmarks; run knowshift analyze benchmarks --run RUN --tasks mmlu",
)  # fmt: skip
