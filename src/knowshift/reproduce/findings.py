"""The nine published findings knowshift re-tests, declared as data before any run.

Each finding names the paper, the claim, the study it reads (a study file's `name`), its
statistic in words, the published value and the side of 0 the paper puts it on, and how its
95% interval is drawn. One rule decides every finding (RULE), part by part; nothing here is
tuned on results. `knowshift.reproduce.verdicts` computes the statistics from a study's store.

Units: accuracies and fitted shares in percentage points (0-100); a slope on the share of
Unknown examples is in points per whole set (0% -> 100% Unknown), like the regression
coefficients of METHODS B.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowshift.errors import unknown_name

CONFIDENCE = 0.95  # of every interval
N_DRAWS = 2000  # bootstrap draws
RNG_SEED = 20240505  # the bootstrap's random generator: the same input gives the same interval
MIN_SEEDS = 2  # fewer seeds with usable runs: every part is inconclusive
REFUSAL_FLOOR = 0.01  # F9: a base model refusing less than this cannot lose its refusals

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"

# The two bootstraps. Both resample seeds with replacement (the top stage).
SEEDS_AND_FACTS = (
    "two-stage bootstrap: seeds with replacement, then the test facts of each drawn seed's "
    "evaluations with replacement (one draw of facts per seed, shared by its runs, so paired "
    "conditions stay paired)"
)
SEEDS_AND_RUNS = (
    "two-stage bootstrap: seeds with replacement, then the runs within each drawn seed with "
    "replacement (no per-fact data exists for this statistic)"
)

RULE = (
    f"Per part: reproduced if the {CONFIDENCE:.0%} percentile interval ({N_DRAWS} draws, fixed "
    "RNG seed) lies entirely on the published side of 0; not reproduced if it lies entirely on "
    "the other side or touches 0 from there; inconclusive if it contains 0, if the part cannot be "
    f"computed, or with fewer than {MIN_SEEDS} seeds. Draws where the statistic cannot be "
    "computed count against the verdict (below every other draw for the lower bound, above for "
    "the upper). The finding is reproduced when every part is, not reproduced when any part is "
    "not reproduced, else inconclusive."
)

GEKHMAN = "Gekhman et al., EMNLP 2024"
YE = "Ye et al., EMNLP 2025"
REN = "Ren et al., ACL 2024"
PLETENEV = "Pletenev et al., 2025"


@dataclass(frozen=True)
class Part:
    """One statistic of a finding: its name, definition, the published figure, and the side of
    0 the paper puts it on (+1: above, -1: below)."""

    name: str
    definition: str
    published: str
    sign: int


@dataclass(frozen=True)
class Finding:
    """A published finding and how it is decided: every part must land on its published side."""

    id: str  # "F1"
    name: str  # "unknown-fitted-slower"
    paper: str
    claim: str
    study: str  # the study (its `name`) whose store it reads
    reads: str  # the runs, variant keys and stored results it uses
    parts: tuple[Part, ...]
    interval: str  # SEEDS_AND_FACTS or SEEDS_AND_RUNS
    rule: str = RULE

    @property
    def figure(self) -> str:
        """The paper's figures, one per part."""
        return "; ".join(p.published for p in self.parts)


_IN_DIST = "in-distribution test facts (trained relations)"
FINDINGS: tuple[Finding, ...] = (
    Finding(
        "F1", "unknown-fitted-slower", GEKHMAN,
        "Unknown training examples are fitted much more slowly than Known ones.",
        "unknown-ratio",
        "train_records of every done run except the IDK one: accuracy 'train/Known' and "
        "'train/Unknown' (the fitted shares) of each epoch measuring both",
        (Part("fit gap", "per run with both groups, the mean over its epochs of fitted share "
              "Known minus fitted share Unknown (points); averaged over a seed's runs, then over "
              "seeds", "> 0 (Unknown fitted much more slowly; no number given)", +1),),
        SEEDS_AND_RUNS,
    ),
    Finding(
        "F2", "unknown-hurts-at-convergence", GEKHMAN,
        "Test accuracy falls as the share of Unknown examples grows at CONVERGENCE, much less "
        "at EARLY_STOP.",
        "unknown-ratio",
        "runs whose variant has 'build.frac_unknown' (not IDK, not D_Known): exact-match "
        f"accuracy on {_IN_DIST} of the 'early_stop' and 'last' checkpoints "
        "(predictions/<checkpoint>.jsonl; else the stored 'eval' summary)",
        (Part("slope at CONVERGENCE", "least-squares slope of test accuracy (points) on the "
              "share of Unknown (0-1) over all runs at the last checkpoint",
              "< 0 (up to -14 points from 0% to 100% Unknown)", -1),
         Part("slope CONVERGENCE - EARLY_STOP", "that slope minus the same slope at the "
              "early_stop checkpoint", "< 0 (at EARLY_STOP D ~ D_Known)", -1)),
        SEEDS_AND_FACTS,
    ),
    Finding(
        "F3", "regression-signs", GEKHMAN,
        "Fitting Unknown examples lowers test accuracy about as much as fitting Known ones "
        "raises it.",
        "unknown-ratio",
        "train_records of every done run except the IDK one, with the run config's "
        "'group_sizes' (train, train/Known, train/Unknown): per epoch the fitted Known and "
        "Unknown counts over |D| and 'test/in' accuracy (else 'test'), as `knowshift analyze "
        "regression` reads them",
        (Part("b_kn", "OLS over all (run, epoch) points of Acc = b0 + b_kn * known_fitted + "
              "b_unk * unknown_fitted; the Known coefficient (points)", "+7.3", +1),
         Part("b_unk", "the Unknown coefficient of the same fit (points)", "-8.3", -1)),
        SEEDS_AND_RUNS,
    ),
    Finding(
        "F4", "maybeknown-best-unknown-worst", GEKHMAN,
        "At CONVERGENCE, D_MaybeKnown gives the best test accuracy and D_Unknown the worst.",
        "categories",
        "runs whose variant 'build.category' is HighlyKnown, MaybeKnown, WeaklyKnown or Unknown "
        f"(natural is a mix, left out): exact-match accuracy on {_IN_DIST} at 'last'",
        (Part("MK - best other", "mean accuracy of D_MaybeKnown minus the highest of "
              "D_HighlyKnown, D_WeaklyKnown, D_Unknown (points)", "+3.2 (43.2 vs 40.0)", +1),
         Part("Unk - worst other", "mean accuracy of D_Unknown minus the lowest of "
              "D_HighlyKnown, D_MaybeKnown, D_WeaklyKnown (points)", "-9.6 (25.8 vs 35.4)", -1)),
        SEEDS_AND_FACTS,
    ),
    Finding(
        "F5", "idk-helps-answered", GEKHMAN,
        "Relabelling the Unknown examples 'I don't know' raises accuracy on the questions the "
        "model answers.",
        "unknown-ratio",
        "the IDK run (variant 'build.recipe' idk:..., or an 'idk' kind among its group sizes) "
        "and the plain run with 'build.frac_unknown' 0.5: exact-match accuracy on the answered "
        f"(not refused) {_IN_DIST} at 'last'",
        (Part("IDK - plain (answered)", "mean accuracy on answered questions of the IDK "
              "runs minus that of the plain 50% Unknown runs (points)", "+18.8 (61.8 vs 43.0)",
              +1),),
        SEEDS_AND_FACTS,
    ),
    Finding(
        "F6", "size-and-mastery", YE,
        "A smaller fine-tuning set beats a larger one, and the mastery level of the data moves "
        "accuracy.",
        "size-mastery",
        "runs with 'build.size' and 'build.mastery_level' in their variant: accuracy "
        f"(alias containment) on {_IN_DIST} at 'last'",
        (Part("small - large", "per mastery level run at both sizes, mean accuracy at the "
              "smallest size minus at the largest, averaged over those levels (points)",
              "> 0 (up to +14; +8.9 for D_train-0)", +1),
         Part("levels >= 1 - level 0", "at the largest size, the mean over levels >= 1 of their "
              "mean accuracy minus the mean accuracy of level 0 (points)",
              "+9.3 (mean of 52.7, 57.5, 55.2, 53.9 vs 45.5)", +1)),
        SEEDS_AND_FACTS,
    ),
    Finding(
        "F7", "restoration-helps", YE,
        "After fine-tuning on the larger set, restoring the 20-40% largest relative updates "
        "improves accuracy.",
        "size-mastery",
        "runs at the largest 'build.size': their 'restore-sweep' analysis (subject "
        "'<run>:last', mode top) at fractions 0, 0.2 and 0.4, metric 'distribution/in' "
        "(else 'accuracy')",
        (Part("restored - unrestored", "per run, the mean of the accuracies with the top 20% "
              "and top 40% restored (pre-declared: their mean, not the better) minus the "
              "unrestored accuracy (points); averaged over a seed's runs, then over seeds",
              "+10.1 (mean of 54.8, 55.4 vs 45.0)", +1),),
        SEEDS_AND_RUNS,
    ),
    Finding(
        "F8", "consistent-beats-incompatible", REN,
        "Training on answers consistent with the model (harmonious, self-aligning) beats "
        "training on answers that contradict it (incompatible).",
        "intervention",
        "runs whose variant 'build.group' is harmonious, incompatible or self-aligning: "
        "exact-match accuracy on all test facts at 'last' (the groups' trained relations "
        "differ, so every test fact counts)",
        (Part("harmonious - incompatible", "mean accuracy difference (points)", "+11 to +15",
              +1),
         Part("self-aligning - incompatible", "mean accuracy difference (points)", "+5 to +10",
              +1)),
        SEEDS_AND_FACTS,
    ),
    Finding(
        "F9", "packing-damages", PLETENEV,
        "Packing new facts into a LoRA adapter moves more held-out facts down than up, "
        "narrows the answers and removes refusals.",
        "lora-packing",
        "every done run: its 'shift' analysis (negative_share, positive_share) and 'collapse' "
        "analysis (before/after n_distinct and refusal_rate), subject '<run>:last'",
        (Part("negative - positive shifts", "share of held-out facts shifted down minus up "
              "(points), averaged over a seed's runs, then over seeds",
              "> 0 (negative shifts exceed positive ones)", +1),
         Part("distinct answers after - before", "distinct normalised answers after minus "
              "before (count)", "< 0 (distinct answers halve)", -1),
         Part("refusals after - before", "refusal rate after minus before (points); "
              f"inconclusive by rule when the base refuses under {REFUSAL_FLOOR:.0%} of the "
              "questions in every run (there is nothing to vanish)",
              "< 0 (refusals nearly vanish)", -1)),
        SEEDS_AND_RUNS,
    ),
)  # fmt: skip


def get_finding(key: str) -> Finding:
    """A finding by id ("F3") or name ("regression-signs")."""
    for finding in FINDINGS:
        if key in (finding.id, finding.name):
            return finding
    raise unknown_name("finding", key, [f.id for f in FINDINGS] + [f.name for f in FINDINGS])


@dataclass(frozen=True)
class Scale:
    """How a study's published design was sized, and what the suite's smaller one limits
    (declared with the findings, before any run)."""

    study: str
    paper: str
    limits: str


SCALES: tuple[Scale, ...] = (
    Scale("unknown-ratio",
          "EntityQuestions, 12 relations in distribution and 7 out; |D| per relation its smallest "
          "category, summed (thousands of examples); EARLY_STOP at the best dev epoch (5-10), "
          "CONVERGENCE after 50 epochs; one fine-tuning run per variant",
          "tens of examples per set and at most 8 epochs: CONVERGENCE is the last epoch, which "
          "may leave Unknown examples unfitted (F2's convergence slope and F3's b_unk then rest "
          "on few fitted Unknown examples); ~120 test facts per run give accuracies with a "
          "standard error of about 4 points, so differences of a few points stay inconclusive"),
    Scale("categories",
          "the same data as unknown-ratio; single-category sets of size |D| (thousands)",
          "a few dozen examples per category: a set this small moves the model less, so the "
          "gaps between categories (3-10 points in the paper) are near the resolution of ~120 "
          "test facts"),
    Scale("size-mastery",
          "EntityQuestions, 10 location relations; sets of 60 to 1,920 examples per mastery "
          "level (240 vs 1,920 compared), 1 epoch at lr 1e-5; restoration of 1-60% of the "
          "largest relative updates",
          "one relation and sets of 8 and 24 examples (3 epochs at lr 5e-5 instead of 1 at "
          "1e-5): 'larger' is 3x, not 8x, larger, and a small update leaves little to restore"),
    Scale("intervention",
          "multiple-choice and QA facts the base model is confident about; equal-size groups "
          "and mixtures at ratios 0.05-0.8",
          "a few dozen examples per group and 3 epochs; the mixtures are not run; confidence "
          "comes from 10 greedy few-shot answers, not 5-shot multiple choice"),
    Scale("lora-packing",
          "1 to 3,000 Unknown facts with 0, 1 or 10 additions, 10 epochs, 3 seeds; MMLU and "
          "TruthfulQA before and after",
          "10 and 50 facts without additions: the paper's damage grows with hundreds to "
          "thousands of facts, so small shifts are expected here; ~100 held-out facts per run"),
)  # fmt: skip
