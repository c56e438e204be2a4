"""Verdicts on the published findings: declared as data (findings), decided from a study's
stored results by one rule with a bootstrap interval (verdicts), written as RESULTS.md
(results_md). Reads only the store and the run folders' predictions; imports no torch."""

from knowshift.reproduce.findings import FINDINGS, Finding, Part, get_finding
from knowshift.reproduce.results_md import ResultsContext, render_results, results_context
from knowshift.reproduce.verdicts import (
    Verdict,
    all_verdicts,
    study_verdicts,
    verdict,
    verdict_records,
)

__all__ = [
    "FINDINGS",
    "Finding",
    "Part",
    "ResultsContext",
    "Verdict",
    "all_verdicts",
    "get_finding",
    "render_results",
    "results_context",
    "study_verdicts",
    "verdict",
    "verdict_records",
]
