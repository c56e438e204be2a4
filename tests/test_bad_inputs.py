"""A catalogue of bad inputs, each run through the real command line.

Every case must end the same way: exit status 2, exactly one line on stderr that starts
"knowshift: error:" and says what is wrong and how to fix it, no traceback, nothing on stdout,
and no file created, changed or removed in the workspace, the models, the set or the case's own
folder (a snapshot of every file's size and mtime, and of every folder, before and after).

The shared material is made once: a workspace probed with the planted model, a set built from
it, a second tiny model of another shape with a LoRA adapter of its own, a LoRA adapter of the
planted model, and run folders whose run.json lies about their checkpoint or is damaged. Cases
that need a model use the planted one; most fail before it is loaded.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_cli, run_ok

GOOD = '{"question": "What is the capital of Kalo?", "answers": ["Mivane"]}\n'
ROW = {"prompt": "Q: What is the capital of Kalo?\nA:", "completion": " Mor\n"}


@dataclass(frozen=True)
class Env:
    """What the cases share (made once for the module)."""

    root: Path  # everything below, snapshotted by every case
    model: Path  # the planted model
    facts: str  # its facts, as a --facts spec
    workspace: Path  # probed with the planted model (exact, default settings)
    set_dir: Path  # an unknown-ratio set built from that probe
    other: Path  # a tiny model of another shape (hidden size 64)
    other_adapter: Path  # a LoRA adapter trained on `other`
    lora: Path  # a LoRA adapter of the planted model
    lying_run: Path  # run.json names `other` as base; the checkpoint is the planted model
    damaged_run: Path  # run.json is not JSON


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of our own


def _lora_adapter(model_dir: Path, out: Path) -> Path:
    """An untrained LoRA adapter (nonzero B) of `model_dir`'s model, saved as PEFT does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=2, target_modules=["up_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


def _other_model(tokenizer_dir: Path, out: Path) -> Path:
    """A randomly initialised Llama narrower than the planted one, with the same tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run_folder(out: Path, base: Path, checkpoint: Path, facts: str, run_json: str | None) -> Path:
    """A run folder as knowshift train leaves it, with `checkpoint` as its last checkpoint."""
    shutil.copytree(checkpoint, out / "checkpoints" / "last")
    info = {"run_id": "0123456789abcdef", "config": {"model": str(base), "facts": facts}}
    (out / "run.json").write_text(run_json if run_json is not None else json.dumps(info))
    return out


@pytest.fixture(scope="module")
def env(planted_model_dir, facts_file, tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad-inputs")
    facts, workspace = f"jsonl:{facts_file}", root / "workspace"
    common = ["--model", str(planted_model_dir), "--workspace", str(workspace), "--facts", facts]
    run_ok(["probe", *common, "--split", "test", "--dtype", "float32", "--device", "cpu"])
    run_ok(["build", *common, "--recipe", "unknown-ratio", "--size", "16", "--split", "test",
         "--dtype", "float32", "--out", str(root / "set")])  # fmt: skip
    other = _other_model(planted_model_dir, root / "other")
    return Env(
        root=root, model=planted_model_dir, facts=facts, workspace=workspace,
        set_dir=root / "set", other=other,
        other_adapter=_lora_adapter(other, root / "other-adapter"),
        lora=_lora_adapter(planted_model_dir, root / "lora"),
        lying_run=_run_folder(root / "lying-run", other, planted_model_dir, facts, None),
        damaged_run=_run_folder(root / "damaged-run", planted_model_dir, planted_model_dir,
                                facts, "{not json"),
    )  # fmt: skip


# --- the cases ---------------------------------------------------------------------------------
# Each case: (id, arguments made from the shared Env and the case's own folder, what the one
# line must say). A case writes its input files into its own folder.

Make = Callable[[Env, Path], list[str]]


def _file(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def probe_facts(spec_of: Callable[[Path], str]) -> Make:
    """`knowshift probe` of the planted model on a fact source made in the case's folder."""

    def make(env: Env, tmp: Path) -> list[str]:
        return ["probe", "--model", str(env.model), "--workspace", str(env.workspace),
                "--dtype", "float32", "--device", "cpu", "--facts", spec_of(tmp)]  # fmt: skip

    return make


def jsonl(text: str | bytes) -> Make:
    return probe_facts(lambda tmp: f"jsonl:{_file(tmp, 'facts.jsonl', text)}")


def csv_facts(text: str) -> Make:
    return probe_facts(lambda tmp: f"csv:{_file(tmp, 'facts.csv', text)}")


def build(*extra: str) -> Make:
    """`knowshift build` from the shared probe results, into the case's folder (`extra` may
    name another --recipe: the last one counts)."""

    def make(env: Env, tmp: Path) -> list[str]:
        return ["build", "--model", str(env.model), "--facts", env.facts, "--workspace",
                str(env.workspace), "--dtype", "float32", "--split", "test",
                "--out", str(tmp / "set"), "--recipe", "unknown-ratio", *extra]  # fmt: skip

    return make


def probe_model(model: Callable[[Env, Path], Path], *extra: str) -> Make:
    """`knowshift probe` of the planted facts with the model `model` makes."""

    def make(env: Env, tmp: Path) -> list[str]:
        return ["probe", "--model", str(model(env, tmp)), "--facts", env.facts, "--workspace",
                str(tmp / "ws"), "--device", "cpu", "--dtype", "float32", *extra]  # fmt: skip

    return make


def train(*extra: str, model: Callable[[Env, Path], Path] | None = None,
          data: Callable[[Env, Path], Path] | None = None,
          out: Callable[[Path], Path] | None = None) -> Make:  # fmt: skip
    """`knowshift train` on the shared set, into a run folder and workspace of the case's own."""

    def make(env: Env, tmp: Path) -> list[str]:
        model_dir = model(env, tmp) if model else env.model
        data_dir = data(env, tmp) if data else env.set_dir
        out_dir = out(tmp) if out else tmp / "run"
        return ["train", "--model", str(model_dir), "--data", str(data_dir), "--out",
                str(out_dir), "--workspace", str(tmp / "ws"), "--device", "cpu",
                "--epochs", "1", "--precision", "fp32", *extra]  # fmt: skip

    return make


def evaluate(*extra: str, model: Callable[[Env, Path], Path] | None = None) -> Make:
    def make(env: Env, tmp: Path) -> list[str]:
        model_dir = model(env, tmp) if model else env.model
        return ["eval", "--model", str(model_dir), "--facts", env.facts, "--workspace",
                str(tmp / "ws"), "--dtype", "float32", "--device", "cpu", *extra]  # fmt: skip

    return make


def audit(text: str | bytes | None, name: str = "data.jsonl", *extra: str) -> Make:
    """`knowshift audit` of a fine-tuning file written in the case's folder (None: facts_file)."""

    def make(env: Env, tmp: Path) -> list[str]:
        data = _file(tmp, name, text) if text is not None else Path(env.facts.split(":", 1)[1])
        return ["audit", str(data), "--model", str(env.model), "--workspace", str(tmp / "ws"),
                "--dtype", "float32", "--device", "cpu", "--k-shot", "2", *extra]  # fmt: skip

    return make


def audit_model(model: Callable[[Env, Path], Path], *extra: str) -> Make:
    def make(env: Env, tmp: Path) -> list[str]:
        argv = audit(None)(env, tmp)
        return [*argv[:2], "--model", str(model(env, tmp)), *argv[4:], *extra]

    return make


def study(document: Callable[[Env], dict | str | bytes], action: str = "validate",
          *extra: str) -> Make:  # fmt: skip
    """`knowshift study validate|run` of a study file written in the case's folder."""

    def make(env: Env, tmp: Path) -> list[str]:
        content = document(env)
        text = content if isinstance(content, str | bytes) else yaml.safe_dump(content)
        path = _file(tmp, "study.yaml", text)
        out = ["--out", str(tmp / "study-out"), "--device", "cpu"] if action == "run" else []
        return ["study", action, str(path), *out, *extra]

    return make


def tiny_study(env: Env, **changes) -> dict:
    """A valid one-run study on the planted model, with `changes` (section -> mapping)."""
    document = {
        "name": "tiny",
        "model": {"name": str(env.model), "dtype": "float32"},
        "facts": {"source": env.facts},
        "probe": {"limit": 16},
        "build": {"recipe": "unknown-ratio", "size": 4, "split": "test"},
        "train": {"epochs": 1, "precision": "fp32"},
    }
    for section, values in changes.items():
        document[section] = (
            {**document.get(section, {}), **values} if isinstance(values, dict) else values
        )
    return document


def analyze(*extra: str, run: Callable[[Env], Path] | None = None) -> Make:
    def make(env: Env, tmp: Path) -> list[str]:
        target = ["--run", str(run(env))] if run else []
        return ["analyze", "collapse", *target, "--workspace", str(tmp / "ws"),
                "--device", "cpu", "--limit", "4", *extra]  # fmt: skip

    return make


def empty_dir(env: Env, tmp: Path) -> Path:
    (tmp / "empty-model").mkdir()
    return tmp / "empty-model"


def text_dir(env: Env, tmp: Path) -> Path:
    _file(tmp, "notes-model/README.txt", "my model notes")
    return tmp / "notes-model"


def model_copy(change: Callable[[Path], None]) -> Callable[[Env, Path], Path]:
    """A copy of the planted model in the case's folder, damaged by `change`."""

    def make(env: Env, tmp: Path) -> Path:
        copy = shutil.copytree(env.model, tmp / "model")
        change(copy)
        return copy

    return make


def set_copy(change: Callable[[Path], None]) -> Callable[[Env, Path], Path]:
    def make(env: Env, tmp: Path) -> Path:
        copy = shutil.copytree(env.set_dir, tmp / "set")
        change(copy)
        return copy

    return make


def _drop_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()


POPQA_CUT = (
    'subj\tprop\tquestion\tpossible_answers\nKalo\tcapital\tWhat is the capital of Kalo?\t["Mor"\n'
)
DEEP = "[" * 50_000 + "]" * 50_000
CHAT_WITH_LIST_ROLE = {"messages": [{"role": ["user"], "content": "What is the capital of Kalo?"},
                                    {"role": "assistant", "content": "Mor"}]}  # fmt: skip

CASES: list[tuple[str, Make, str]] = [
    # --- fact files: malformed, truncated, empty, wrong types, huge ------------------------------
    ("jsonl-cut-off-at-the-end", jsonl(GOOD + '{"question": "What is the capital of Rut'),
     "facts.jsonl line 2: malformed JSON"),
    ("jsonl-nested-too-deep", jsonl(GOOD + '{"question": ' + DEEP + "}\n"),
     "line 2: JSON nested too deeply to be a fact record; fix the JSON there"),
    ("jsonl-10MB-line", jsonl(GOOD + json.dumps({"question": "x" * 10_000_000, "answer": "y"})),
     "line 2: question is 10,000,000 characters long, more than the 2000"),
    ("jsonl-duplicate-ids", jsonl('{"id": "k1", "question": "What is the capital of Kalo?", "answer": "Mor"}\n'
                                  '{"id": "k1", "question": "What is the capital of Pesh?", "answer": "Tor"}\n'),
     "duplicate fact id 'k1'; give every row a unique id"),
    ("jsonl-answers-not-a-list", jsonl('{"question": "What is the capital of Kalo?", "answers": {"a": 1}}\n'),
     "line 1: answers must be a list of strings; fix the record"),
    ("jsonl-question-missing", jsonl(GOOD + '{"answers": ["Mivane"]}\n'),
     "line 2: missing question; give every record a non-empty question"),
    ("jsonl-empty-file", jsonl(""), "no facts in the file; add at least one row"),
    ("jsonl-record-not-an-object", jsonl(GOOD + '["What is the capital of Kalo?", "Mor"]\n'),
     "line 2: expected a JSON object with question and answers"),
    ("jsonl-not-utf8", jsonl(GOOD.encode() + b'{"question": "Caf\xe9?", "answers": ["x"]}\n'),
     "line 2: not UTF-8 (byte 0xe9); re-save the file as UTF-8"),
    ("csv-quote-never-closed", csv_facts('question,answer\nWhat is the capital of Kalo?,Mor\n"What is the capital of Pesh?,Tor\nWho?,x\n'),
     'facts.csv line 3: a quoted field is never closed; close its "'),
    ("csv-more-fields-than-header", csv_facts("question,answer\nWhat is the capital of Kalo, really?,Mor\n"),
     "line 2: more fields than the header has columns; quote fields that hold commas"),
    ("csv-header-only", csv_facts("question,answer\n"), "no facts in the file; add at least one row"),
    ("popqa-answers-cut-off",
     probe_facts(lambda tmp: f"popqa:{_file(tmp, 'popqa.tsv', POPQA_CUT)}"),
     "popqa.tsv line 2: malformed JSON"),
    ("entity-questions-file-not-a-list",
     probe_facts(lambda tmp: f"entity-questions:{_file(tmp, 'eq/test/P36.test.json', GOOD).parents[1]}"),
     "P36.test.json: expected a JSON list of questions; fix the file"),
    ("facts-path-of-unknown-type", probe_facts(lambda tmp: str(_file(tmp, "facts.txt", GOOD))),
     "cannot tell the format from the name; write it as NAME:"),
    # --- unknown names --------------------------------------------------------------------------
    ("eval-unknown-estimator", evaluate("--estimator", "exakt"),
     "unknown estimator 'exakt' (did you mean 'exact'?)"),
    ("eval-unknown-train-relation", evaluate("--train-relations", "capitol"),
     "'capitol' (did you mean 'capital'?); valid: capital"),
    ("build-unknown-template", build("--template", "taggd"),
     "unknown template 'taggd' (did you mean 'tagged'?); valid: plain, tagged"),
    ("train-unknown-optimizer", train("--optimizer", "adam"),
     "unknown optimizer 'adam' (did you mean 'adamw'?); valid: adamw, sgd"),
    ("audit-unknown-prompt-format", audit(json.dumps(ROW) + "\n", "data.jsonl", "--prompt-format", "chatml"),
     "unknown prompt format 'chatml'"),
    ("analyze-unknown-checkpoint", analyze("--checkpoint", "best", run=lambda env: env.lying_run),
     "unknown checkpoint 'best'; valid: early_stop, last"),
    ("study-unknown-model-key", study(lambda env: tiny_study(env, model={"nmae": "x"})),
     "unknown model key 'nmae' (did you mean 'name'?)"),
    ("study-unknown-fact-source",
     study(lambda env: tiny_study(env, facts={"source": "jsonll:facts.jsonl"})),
     "unknown fact source in facts.source 'jsonll' (did you mean 'jsonl'?)"),
    ("study-variant-unknown-recipe",
     study(lambda env: tiny_study(env, variants=[{"build.recipe": "idk:unknown-ration"}])),
     "unknown recipe 'unknown-ration' (did you mean 'unknown-ratio'?)"),
    # --- fractions outside [0, 1] -----------------------------------------------------------------
    ("build-frac-biased-below-0", build("--recipe", "entity-bias", "--frac-biased", "-0.2"),
     "--frac-biased must be between 0 and 1, got -0.2"),
    ("build-min-confidence-above-1", build("--recipe", "intervention", "--group", "harmonious",
                                           "--min-confidence", "1.5"),
     "--min-confidence must be between 0 and 1, got 1.5"),
    ("study-regression-confidence-above-1",
     study(lambda env: tiny_study(env, study_analyses=[{"kind": "regression", "confidence": 1.5}])),
     "study_analyses[0].confidence must be between 0 and 1"),
    ("train-warmup-ratio-above-1", train("--warmup-ratio", "1.5"), "warmup_ratio must be in [0, 1]"),
    # --- more examples than exist ---------------------------------------------------------------
    ("build-more-unknown-than-probed", build("--recipe", "pack", "--n-unknown", "100"),
     "--n-unknown 100 is more than the 16 Unknown test facts (capital 16); lower --n-unknown"),
    ("build-category-set-too-big", build("--recipe", "category", "--category", "Unknown", "--size", "50"),
     "--size 50 is more than the"),
    ("train-no-dev-facts", train("--n-dev", "0"), "--n-dev must be at least 1, got 0"),
    # --- study files: keys, types, encodings, overrides, what they name ---------------------------
    ("study-not-utf8", study(lambda env: b"name: caf\xe9\n"),
     "study.yaml line 1: not UTF-8 (byte 0xe9); re-save the file as UTF-8"),
    ("study-set-value-not-yaml", study(lambda env: tiny_study(env), "validate", "--set", "train.epochs=[1"),
     "--set 'train.epochs=[1': the value is not valid YAML"),
    ("study-list-given-a-number", study(lambda env: tiny_study(env, train={"lora_target_modules": 5})),
     "train.lora_target_modules must be a list, got 5"),
    ("study-empty-file", study(lambda env: ""), "study.yaml is empty; a study file maps name:"),
    ("study-run-model-missing", study(lambda env: tiny_study(env, model={"name": str(env.root / "no-such-model")}), "run"),
     "unknown model"),
    ("study-run-unknown-relation", study(lambda env: tiny_study(env, facts={"relations": ["capitol"]}), "run"),
     "unknown relation in facts.relations of jsonl:"),
    # --- outputs and workspaces that cannot be -------------------------------------------------
    ("report-out-is-a-folder",
     lambda env, tmp: ["report", str(env.workspace), "--out", str(tmp)],
     "is a folder; give the HTML file to write"),
    ("analyze-regression-without-a-workspace",
     lambda env, tmp: ["analyze", "regression", "--workspace", str(tmp / "typo")],
     "no results database"),
    # --- model paths that are not models --------------------------------------------------------
    ("train-model-empty-dir", train(model=empty_dir), "is not a model directory (no config.json)"),
    ("audit-model-dir-of-a-text-file", audit_model(text_dir), "is not a model directory (no config.json)"),
    ("eval-model-is-a-file", evaluate(model=lambda env, tmp: _file(tmp, "model.safetensors", "x")),
     "is not a model directory (no config.json)"),
    ("eval-model-config-not-json", evaluate(model=model_copy(lambda m: _file(m, "config.json", "{oops"))),
     "config.json is not valid JSON"),
    ("probe-model-without-tokenizer", probe_model(model_copy(_drop_tokenizer)),
     "(it has no tokenizer files); the folder needs the files tokenizer.save_pretrained writes"),
    ("probe-model-weights-damaged",
     probe_model(model_copy(lambda m: _file(m, "model.safetensors", "garbage"))),
     "a weights file is damaged"),
    # --- LoRA target modules the model lacks ----------------------------------------------------
    ("train-lora-target-missing", train("--method", "lora", "--lora-target-modules", "c_attn"),
     "--lora-target-modules c_attn: not in"),
    ("train-lora-target-not-linear", train("--method", "lora", "--lora-target-modules", "up_proj", "embed_tokens"),
     "--lora-target-modules embed_tokens: not in"),
    # --- checkpoints, adapters and sets of another model ------------------------------------------
    ("probe-adapter-of-another-base",
     lambda env, tmp: probe_model(lambda e, t: e.model, "--adapter", str(env.other_adapter))(env, tmp),
     "does not fit this model (base_model.model.model.layers.0.mlp"),
    ("eval-adapter-on-another-base",
     lambda env, tmp: evaluate("--adapter", str(env.lora), model=lambda e, t: e.other)(env, tmp),
     "does not fit this model"),
    # The model loads before the run is recorded: the shared workspace gets no train_runs row.
    ("train-adapter-of-another-base-into-a-used-workspace",
     lambda env, tmp: train("--adapter", str(env.other_adapter), "--workspace", str(env.workspace))(env, tmp),
     "does not fit this model"),
    ("train-set-built-for-another-model", train(model=lambda env, tmp: env.other),
     "was built from the probe results of"),
    ("analyze-run-checkpoint-of-another-model", analyze(run=lambda env: env.lying_run),
     "is not a fine-tune of"),
    ("analyze-tuned-of-another-shape",
     lambda env, tmp: analyze("--base", str(env.model), "--tuned", str(env.other), "--facts", env.facts)(env, tmp),
     "is not a fine-tune of --base"),
    ("analyze-run-json-damaged", analyze(run=lambda env: env.damaged_run),
     "run.json is damaged (not the run.json knowshift train writes)"),
    ("train-set-manifest-damaged", train(data=set_copy(lambda s: _file(s, "manifest.json", '{"recipe": '))),
     "manifest.json: malformed JSON"),
    ("train-out-is-a-file", train(out=lambda tmp: _file(tmp, "run.txt", "x")),
     "is a file; give a folder for the run"),
    # --- fine-tuning files for audit -------------------------------------------------------------
    ("audit-role-not-text", audit(json.dumps(CHAT_WITH_LIST_ROLE) + "\n"),
     "no example is a short-answer question to probe (not a plain chat: 1)"),
    ("audit-10MB-line", audit(json.dumps({"prompt": "x" * 10_000_000, "completion": "y"}) + "\n"),
     "no example is a short-answer question to probe (long prompt: 1)"),
    ("audit-csv-quote-never-closed", audit('prompt,completion\n"Q: What is the capital of Kalo?,Mor\n', "data.csv"),
     "data.csv line 2: a quoted field is never closed"),
    ("audit-not-utf8", audit(json.dumps(ROW).encode() + b"\n" + b'{"prompt": "Q: Caf\xe9?", "completion": "x"}\n'),
     "data.jsonl line 2: not UTF-8 (byte 0xe9); re-save the file as UTF-8"),
    ("audit-every-field-empty", audit('{"prompt": "", "completion": ""}\n' * 6),
     "no example is a short-answer question to probe (no question: 6)"),
    # --- scaling out: the vLLM backend, the Ray executor -------------------------------------------
    ("probe-vllm-arg-on-torch", probe_model(lambda env, tmp: env.model, "--vllm-arg", "x=1"),
     "--vllm-arg applies to the vllm backend only"),
    ("probe-vllm-on-a-cpu-device", probe_model(lambda env, tmp: env.model, "--backend", "vllm"),
     "vLLM picks its devices itself"),
    ("probe-vllm-arg-not-key-value",
     lambda env, tmp: ["probe", "--model", str(env.model), "--facts", env.facts, "--workspace",
                       str(tmp / "ws"), "--backend", "vllm", "--vllm-arg", "nonsense"],
     "--vllm-arg 'nonsense': write KEY=VALUE"),
]  # fmt: skip


# --- the check ---------------------------------------------------------------------------------


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file (size, mtime) and folder under `roots`."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            stat = path.stat()
            state[str(path)] = ("dir",) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return state


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [case_id for case_id, _, _ in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_status_2_and_changes_nothing(
    make, message, env, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a default ./workspace would land here, and be noticed
    monkeypatch.setenv("KNOWSHIFT_WORKSPACE", str(tmp_path / "default-workspace"))
    argv = make(env, tmp_path)
    before = _snapshot(env.root, env.model, tmp_path)
    status, stdout, stderr = run_cli(argv)
    lines = stderr.splitlines()
    assert status == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("knowshift: error: "), stderr
    assert message in lines[0], lines[0]
    assert _snapshot(env.root, env.model, tmp_path) == before


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_probe_backend_vllm_without_vllm_says_how_to_install_it(env, tmp_path):
    status, stdout, stderr = run_cli(["probe", "--backend", "vllm", "--model", str(env.model),
                                      "--facts", env.facts, "--workspace", str(tmp_path / "ws")])  # fmt: skip
    assert status == 2 and stdout == "" and "Traceback" not in stderr
    assert stderr.startswith("knowshift: error: --backend vllm needs vLLM")
    assert "pip install 'knowshift[vllm]'" in stderr
    assert not (tmp_path / "ws").exists()
