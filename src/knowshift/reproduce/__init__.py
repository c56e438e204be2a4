"""Verdicts on the published findings: declared as data (findings), decided from a study's
stored results by one rule with a bootstrap interval (verdicts), kept as compact per-study data
(data), run as a suite (suite) and written as RESULTS.md with its figures (results_md, figures).
Reads only the store, the run folders' predictions and the exports; imports no torch."""

from knowshift.reproduce.data import StudyData, read_study_data, write_study_data
from knowshift.reproduce.findings import FINDINGS, SCALES, Finding, Part, get_finding
from knowshift.reproduce.results_md import (
    ModelResults,
    ResultsContext,
    render_results,
    results_context,
)
from knowshift.reproduce.verdicts import (
    Verdict,
    all_verdicts,
    study_verdicts,
    verdict,
    verdict_records,
)

__all__ = [
    "FINDINGS",
    "SCALES",
    "Finding",
    "ModelResults",
    "Part",
    "ResultsContext",
    "StudyData",
    "Verdict",
    "all_verdicts",
    "get_finding",
    "read_study_data",
    "render_results",
    "results_context",
    "study_verdicts",
    "verdict",
    "verdict_records",
    "write_study_data",
]
