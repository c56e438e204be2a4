"""`knowshift report`: a study database built here with the Store API and the real analysis
functions -> one HTML file, checked as text, as XML and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from knowshift.analysis.benchmarks import BenchmarkResult
from knowshift.analysis.collapse import answer_collapse
from knowshift.analysis.consistency import ConsistencyResult
from knowshift.analysis.regression import fit_regression, regression_points
from knowshift.analysis.restore import GroupShare, RestoreReport, SweepPoint
from knowshift.analysis.shift import shift_matrix
from knowshift.analysis.token_kl import TokenKLResult
from knowshift.cli import main
from knowshift.errors import KnowshiftError
from knowshift.evaluate.qa import Prediction
from knowshift.report import write_report
from knowshift.report.data import load_study
from knowshift.store import Store
from knowshift.types import CATEGORIES, ProbeResult

PLANTED = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECTIONS = ("categories", "dynamics", "unknown-share", "regression", "category-accuracy",
            "size-mastery", "restoration", "shift", "collapse", "token-kl", "consistency",
            "benchmarks")  # fmt: skip
_, MK, _, UNK = CATEGORIES
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)  # fmt: skip


# --- a study with every kind of result ----------------------------------------------------------


def _put_probe_results(store: Store) -> None:
    """40 facts of the base model "fp-tiny" in two relations (one with a hostile name), 10 per
    category."""
    store.register_settings("key-exact", "exact", {"estimator": "exact"}, {})
    results = [ProbeResult(f"f{i}", "exact", "key-exact", "fp-tiny", 0.5, 0.5, CATEGORIES[i % 4])
               for i in range(40)]  # fmt: skip
    store.put_probe_results(
        results, {f"f{i}": (("capital", PLANTED)[i % 2], "test") for i in range(40)}
    )


def _accuracy(epoch: int, frac_unknown: float) -> dict[str, float]:
    """Known examples fitted fast, Unknown ones slowly; test accuracy falls as Unknown ones are
    fitted; dev accuracy peaks at epoch 2."""
    known, unknown = min(1.0, 0.5 + 0.25 * epoch), min(1.0, 0.1 * epoch**1.5)
    test = (
        0.40
        + 0.06 * known * (1 - frac_unknown)
        - 0.12 * unknown * frac_unknown
        + 0.004 * (epoch % 2)
    )
    accuracy = {"dev": test + (0.02 if epoch == 2 else 0.0), "test": test, "test/in": test,
                "test/out": test + 0.05, "train": known, "train/Known": known, "train/Unknown": unknown}  # fmt: skip
    for category, base in zip(CATEGORIES, (0.95, 0.6, 0.12, 0.01), strict=True):
        value = base * (1 - 0.1 * unknown * frac_unknown)
        accuracy[f"test/in/{category.value}"] = accuracy[f"test/{category.value}"] = value
    return accuracy


def _put_runs(store: Store) -> list[str]:
    """Study "unknown-ratio" as the study runner records it: 0, 50, 100% Unknown, 5 epochs each
    (the 50% run's variant carries planted markup), D_Known and IDK variants, a failed run and a
    dropped one; study "size-mastery": levels 0, 2, 4 x 60, 240 examples, 1 epoch each."""
    share_runs = []
    for run_id, frac, variant in (
        ("share0", 0.0, {"build.frac_unknown": 0.0}),
        ("share50", 0.5, {"build.frac_unknown": 0.5, "note": PLANTED}),
        ("share100", 1.0, {"build.frac_unknown": 1.0}),
        ("known", 0.0, {"build.recipe": "known-only", "label": "D_Known"}),
        ("idk", 0.5, {"build.recipe": "idk:unknown-ratio", "label": "IDK"}),
        ("dropped", 0.25, {"build.frac_unknown": 0.25}),
    ):
        sizes = {
            "train": 100,
            "train/Known": round(100 * (1 - frac)),
            "train/Unknown": round(100 * frac),
        }
        store.register_run(
            run_id, {"model": "tiny-model", "base_fingerprint": "fp-tiny", "group_sizes": sizes}
        )
        for epoch in range(1, 6):
            store.put_train_record(run_id, epoch, 10 * epoch, 1.0 / epoch, _accuracy(epoch, frac))
        store.put_study_run(
            "unknown-ratio", run_id, variant, "dropped" if run_id == "dropped" else "done"
        )
        share_runs.append(run_id)
    failed = {"build.frac_unknown": 0.75, "error": "KnowshiftError: out of memory"}
    store.put_study_run("unknown-ratio", "plan-0.75", failed, "failed")
    for level in (0, 2, 4):
        for size in (60, 240):
            run_id = f"mastery{level}-{size}"
            store.register_run(run_id, {"model": "tiny-model", "group_sizes": {"train": size}})
            test = 0.40 + 0.02 * level + (0.05 if size == 240 else 0.0)
            store.put_train_record(run_id, 1, 8, 0.5, {"dev": test, "test": test, "test/in": test})
            variant = {"build.mastery_level": level, "build.size": size}
            store.put_study_run("size-mastery", run_id, variant, "done")
    return share_runs[:3]


def _predictions(relation: str, answers: list[str], n_right: int) -> list[Prediction]:
    return [Prediction(f"q{i}", relation, answer, i < n_right, i < n_right, answer == "I don't know", None, None, True)
            for i, answer in enumerate(answers)]  # fmt: skip


def _put_analyses(store: Store, run_id: str) -> None:
    """One analysis of every kind, made by the analysis functions where they need no model."""
    subject = f"{run_id}:last"
    regression = fit_regression(regression_points(store))
    store.put_analysis("regression", ",".join(regression.runs), {}, asdict(regression))
    # 10 facts per category; after fine-tuning 3 HighlyKnown ones are Unknown, 2 Unknown ones MaybeKnown.
    before = {f"f{i}": CATEGORIES[i % 4] for i in range(40)}
    after = {**before, "f0": UNK, "f4": UNK, "f8": UNK, "f3": MK, "f7": MK}
    shift = replace(shift_matrix(before, after), reliability=0.9, n_trained_unknown=20)
    store.put_analysis("shift", subject, {}, asdict(shift))
    before_answers = _predictions(PLANTED, [f"city {i}" for i in range(12)], 6)
    after_answers = _predictions(
        PLANTED, ["Paris"] * 8 + ["city 9", "city 10", "I don't know", "city 11"], 2
    )
    store.put_analysis(
        "collapse", subject, {}, asdict(answer_collapse(before_answers, after_answers))
    )
    consistency = ConsistencyResult(120, 4, 0.62, 0.085, 0.71, 0.41, 0.37, 0.52, 0.47,
                                    {"neg_kl/questions": 0.21, "identical/questions": 0.18}, {})  # fmt: skip
    store.put_analysis("consistency", subject, {}, asdict(consistency))
    token = TokenKLResult(80, "mastery level 4", 10, 0.137, 0.09, 0.9, 0.7, 0.08, 0.31, -0.42, {})
    store.put_analysis("token-kl", subject, {}, asdict(token))
    store.put_analysis("restore-sweep", subject, {}, _sweep_record())
    for role, mmlu in (("base", 0.41), ("tuned", 0.36)):
        bench = BenchmarkResult(f"{role}-model", "fp", ("mmlu",), {"mmlu": {"acc": mmlu, "acc_stderr": 0.01}},
                                {"mmlu": 100}, {}, {"mmlu": 5}, None, None, 0, "0.4")  # fmt: skip
        store.put_analysis("benchmarks", subject, {"role": role}, asdict(bench))


def _sweep_record() -> dict:
    """A restore-sweep record as `knowshift analyze restore-sweep` stores it."""
    modules = {
        "mlp.down_proj": GroupShare(100, 30, 0.3, 0.4),
        "self_attn.q_proj": GroupShare(100, 7, 0.07, 0.05),
    }
    points = []
    for fraction, mode, accuracy in ((0.0, "top", 0.30), (0.01, "top", 0.31), (0.2, "top", 0.36),
                                     (0.6, "top", 0.12), (0.2, "random", 0.29), (1.0, "top", 0.33)):  # fmt: skip
        report = RestoreReport("base", "tuned", fraction, mode, "layers", 0, 1000, int(1000 * fraction), None, 50.0,
                               fraction**0.3, modules, {0: GroupShare(500, 20, 0.5, 0.5)}, None)  # fmt: skip
        metrics = {
            "accuracy": accuracy,
            "category/HighlyKnown": accuracy + 0.4,
            "category/Unknown": 0.01,
        }
        points.append(SweepPoint(fraction, mode, report, metrics))
    stats = {"concentration": [[0.01, 0.55], [0.2, 0.88], [1.0, 1.0]], "n_zero_base": 12,
             "concentration_nonzero_base": [[0.01, 0.4], [0.2, 0.8], [1.0, 1.0]]}  # fmt: skip
    return {"points": [asdict(p) for p in points], "stats": stats}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    with Store.for_workspace(folder) as store:
        _put_probe_results(store)
        share_runs = _put_runs(store)
        _put_analyses(store, share_runs[1])
    return folder


@pytest.fixture(scope="module")
def report_html(study_dir) -> str:
    return write_report(study_dir).read_text(encoding="utf-8")


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


# --- the HTML -----------------------------------------------------------------------------------


def test_every_section_is_drawn_with_its_published_comparison(study_dir, report_html):
    assert (study_dir / "report.html").is_file()
    for anchor in SECTIONS:
        section = _section(report_html, anchor)
        assert "<svg" in section and "Not in this study" not in section, anchor
        assert 'class="published"' in section, anchor


def test_the_numbers_of_the_study_appear(report_html):
    section = {anchor: _section(report_html, anchor) for anchor in SECTIONS}
    assert "n=40" in section["categories"] and "25%" in section["categories"]  # 10 per category
    assert "tiny-model, exact estimator" in section["categories"]  # as the runs name their base
    for count in (10, 7, 2):  # MK stays MK, HK stays HK, Unk -> MK
        assert f">{count}</text>" in section["shift"]
    assert "positive 5.0%, negative 7.5%" in section["shift"]
    assert "reliability 90.0% of 20" in section["shift"]
    assert "R²" in section["regression"] and "+36.9" in section["regression"]  # beside published
    assert "95.0 → " in section["category-accuracy"]
    assert "published D_Unknown" in section["category-accuracy"]
    assert "D_train-4" in section["size-mastery"]
    assert "0.1370" in section["token-kl"] and "62.0" in section["consistency"]
    assert ">paris<" in section["collapse"]  # the exploded answer, normalised
    assert "0.410" in section["benchmarks"]
    assert ">20%<" in section["restoration"] and ">36.0<" in section["restoration"]


def test_planted_markup_is_escaped_everywhere(report_html):
    assert PLANTED not in report_html and "<script" not in report_html
    assert report_html.count(ESCAPED) >= 3  # a run label, a relation, an exploded answer's relation


def test_the_report_is_self_contained_and_the_svgs_are_well_formed(report_html):
    for reference in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert reference not in report_html
    svgs = re.findall(r"<svg.*?</svg>", report_html, re.S)
    assert len(svgs) >= len(SECTIONS)
    for svg in svgs:
        ElementTree.fromstring(svg)  # raises on malformed markup


def test_the_same_database_gives_the_same_report(study_dir, report_html, tmp_path):
    again = write_report(study_dir, tmp_path / "again.html")
    assert again == tmp_path / "again.html" and again.read_text(encoding="utf-8") == report_html


def test_runs_are_labelled_by_what_their_study_varied(study_dir):
    study = load_study(study_dir)
    runs = {r.run_id: r for r in study.runs}
    assert runs["share0"].label == "frac_unknown=0.0"
    assert runs["share50"].label == f"frac_unknown=0.5, note={PLANTED}"
    assert runs["known"].label == "D_Known" and runs["idk"].label == "IDK"  # the study's own
    assert runs["mastery2-240"].label == "mastery_level=2, size=240"
    assert "dropped" not in runs  # no longer in its study
    assert study.failed == (("frac_unknown=0.75", "KnowshiftError: out of memory"),)
    share = runs["share50"]
    assert share.frac_unknown == 0.5 and share.varies_unknown_share
    assert share.early_stop.epoch == 2 and share.convergence.epoch == 5  # best dev, last
    assert runs["known"].known_only and not runs["idk"].varies_unknown_share


def test_the_unknown_share_curve_has_the_grid_runs_and_d_known_beside_them(report_html):
    section = _section(report_html, "unknown-share")
    assert "D_Known, EARLY_STOP, in distribution" in section
    assert ">IDK<" not in section  # a variant of the 50% set, not a point of the curve
    assert "1 run(s) failed: frac_unknown=0.75: KnowshiftError: out of memory" in report_html


def test_a_study_without_analyses_says_what_is_missing(tmp_path):
    with Store.for_workspace(tmp_path) as store:
        _put_probe_results(store)
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<svg" in _section(html, "categories")
    for anchor in SECTIONS[1:]:
        assert "Not in this study" in _section(html, anchor), anchor
    assert "knowshift analyze restore-sweep" in _section(html, "restoration")


def test_a_record_of_another_shape_is_named_not_fatal(tmp_path):
    with Store.for_workspace(tmp_path) as store:
        _put_probe_results(store)
        store.put_analysis("shift", "run:last", {}, {"counts": {}})  # fields missing
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "cannot read" in html and "shift run:last" in html


def test_no_database_or_an_empty_one_is_a_one_line_error(tmp_path):
    with pytest.raises(KnowshiftError, match="no results database") as missing:
        write_report(tmp_path)
    assert "\n" not in str(missing.value) and not (tmp_path / "knowshift.db").exists()
    Store.for_workspace(tmp_path).close()
    with pytest.raises(KnowshiftError, match="holds no probe results, runs or analyses"):
        write_report(tmp_path)


def test_cli_writes_the_report_where_asked(study_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(study_dir), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("knowshift: error: no results database") and error.count("\n") == 1


def test_reporting_does_not_import_torch(study_dir, tmp_path):
    code = ("import sys; from knowshift.report import write_report; "
            f"write_report({str(study_dir)!r}, {str(tmp_path / 'r.html')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- the versions the results were made with --------------------------------------------------

NOW = {"knowshift": "0.1.0", "torch": "2.13.0", "transformers": "5.25.0", "python": "3.11.7"}
OLDER = {**NOW, "transformers": "5.19.0"}


def _environment_study(folder: Path, monkeypatch, probe_versions: dict) -> str:
    """Probe results made with `probe_versions`; runs a and b (b resumed from an older start)
    and a shift analysis of a made with NOW. Returns the report."""
    monkeypatch.setattr("knowshift.versions.environment_versions", lambda: dict(NOW))
    with Store.for_workspace(folder) as store:
        _put_probe_results(store)
        store.connection.execute(
            "UPDATE probe_settings SET versions = ?", (json.dumps(probe_versions),)
        )
        for run_id, earlier in (("run-a", []), ("run-b", [probe_versions])):
            config = {"model": "tiny-model", "base_fingerprint": "fp-tiny", "versions": NOW}
            store.register_run(
                run_id, {**config, **({"earlier_versions": earlier} if earlier else {})}
            )
            store.put_train_record(run_id, 1, 10, 0.5, {"test": 0.4})
        before = {f"f{i}": CATEGORIES[i % 4] for i in range(8)}
        store.put_analysis("shift", "run-a:last", {}, asdict(shift_matrix(before, before)))
    return write_report(folder).read_text(encoding="utf-8")


def test_the_environment_section_names_the_versions_of_the_results(tmp_path, monkeypatch):
    html = _environment_study(tmp_path, monkeypatch, NOW)
    section = _section(html, "environment")
    assert '<a href="#environment">Environment</a>' in html
    for package, version in NOW.items():
        assert (
            f"<td>{package}</td><td>{version}</td><td>all 4</td>" in section
        )  # a, b, probe, shift
    assert "Not all results" not in html


def test_results_made_with_other_versions_are_named_at_the_top(tmp_path, monkeypatch):
    html = _environment_study(tmp_path, monkeypatch, OLDER)
    warning = ("Not all results here were made with the same versions: transformers 5.25.0 "
               "(runs run-a, run-b; analysis shift run-a (last)) and 5.19.0 (run run-b; probe "
               "settings key-exact (exact)).")  # fmt: skip
    top = html.split("<nav>")[0]
    assert f'<p class="warning">{warning}' in top
    assert warning in _section(html, "environment")
    section = _section(html, "environment")
    assert "<td>transformers</td><td>5.19.0</td>" in section
    assert "<td>transformers</td><td>5.25.0</td>" in section
    assert "<td>torch</td><td>2.13.0</td><td>all 4</td>" in section  # the same for every result


def test_results_without_recorded_versions_are_counted(report_html):
    # The module's study writes its runs and probe settings without versions, as an older
    # knowshift did; its analyses record this process's.
    section = _section(report_html, "environment")
    assert "record no versions" in section and "<td>transformers</td>" in section


# --- in a browser -------------------------------------------------------------------------------

# Injected into a copy of the report: count the SVGs that have a size on the page, and collect
# script errors, console errors and failed resource loads.
PROBE = """<script>
window.__problems = [];
addEventListener("error", e => __problems.push(String(e.message || (e.target && (e.target.src || e.target.href)) || "error")), true);
const consoleError = console.error;
console.error = (...args) => { __problems.push(args.join(" ")); consoleError(...args); };
addEventListener("load", () => {
  const svgs = [...document.querySelectorAll("svg")];
  const drawn = svgs.filter(s => { const r = s.getBoundingClientRect(); return r.width > 20 && r.height > 20; });
  document.title = JSON.stringify({svgs: svgs.length, drawn: drawn.length, problems: __problems});
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with its own profile, no network (every host fails to resolve)."""
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", f"--user-data-dir={profile}", '--host-resolver-rules=MAP * ~NOTFOUND', *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _png_pixels(path: Path) -> np.ndarray:
    """An 8-bit RGB(A) PNG as a (height, width, channels) array, unfiltered as the PNG
    specification says (plain Python: per byte it is faster than numpy here)."""
    data, pos, chunks = path.read_bytes(), 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour_type in (2, 6), "an 8-bit RGB or RGBA PNG"
    bpp, raw = 3 if colour_type == 2 else 4, zlib.decompress(chunks[b"IDAT"])
    stride, previous, rows = width * bpp + 1, bytearray(width * bpp), []
    for y in range(height):
        previous = _unfilter(
            raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride]), previous, bpp
        )
        rows.append(bytes(previous))
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, bpp)


def _unfilter(kind: int, line: bytearray, above: bytearray, bpp: int) -> bytearray:
    """One row: None, Sub, Up, Average or Paeth (left a, above b, above-left c)."""
    if kind == 2:
        return bytearray((x + b) & 255 for x, b in zip(line, above, strict=True))
    for i in range(len(line) if kind in (1, 3, 4) else 0):
        a = line[i - bpp] if i >= bpp else 0
        b, c = above[i], (above[i - bpp] if i >= bpp else 0)
        if kind == 1:
            predictor = a
        elif kind == 3:
            predictor = (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
        line[i] = (line[i] + predictor) & 255
    return line


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it with apt-get where it can)")  # fmt: skip
def test_the_report_renders_in_headless_chromium(study_dir, report_html, tmp_path):
    # Every SVG is laid out with a size, and nothing fails: no script error, no console error,
    # no resource that did not load.
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(report_html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    run = _chromium("--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000", "--dump-dom",
                    probe_page.as_uri(), profile=tmp_path / "profile")  # fmt: skip
    title = re.search(r"<title>(.*?)</title>", run.stdout, re.S)
    assert title, f"no DOM came back: {run.stderr[-2000:]}"
    found = json.loads(title.group(1).replace("&amp;", "&"))
    n_svgs = report_html.count("<svg")
    assert found == {"svgs": n_svgs, "drawn": n_svgs, "problems": []}
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    # The page as a person sees it: a screenshot with the charts' colours on it.
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1000,1400", (study_dir / "report.html").as_uri(),
              profile=tmp_path / "profile")  # fmt: skip
    pixels = _png_pixels(shot)[:, :, :3]
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert pixels.shape[:2] == (1400, 1000) and len(colours) > 50
    background = (pixels == pixels[0, 0]).all(axis=2).mean()
    assert background < 0.9  # not a blank page
