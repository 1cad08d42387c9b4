"""audit: benchmark leaks found by embeddings and 13-grams; unrelated rows left alone (real data, real MiniLM)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from curate import Context
from curate.errors import InputDataError
from curate.runner import run_recipe
from curate.schema import conform
from curate.stages import STAGES
from curate.stages.audit import AUDIT_SCHEMA, Audit

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Slices of GSM8K test (30) and MT-Bench (12) as reference files, and unrelated real instructions."""
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:30]
    gsm = [json.loads(line)["question"] for line in lines]
    ref = tmp_path_factory.mktemp("refs") / "gsm8k_slice.jsonl"
    ref.write_text("\n".join(json.dumps({"question": q, "id": f"gsm{i}"}) for i, q in enumerate(gsm)) + "\n")
    code = json.loads((shared_data / "code_alpaca" / "code_alpaca_2k.json").read_text())
    unrelated = [row["instruction"] for row in code[:25]]
    mt_lines = (shared_data / "mt_bench" / "question.jsonl").read_text().splitlines()[:12]
    mt_ref = ref.with_name("question.jsonl")
    mt_ref.write_text("\n".join(mt_lines) + "\n")
    mt = [json.loads(line) for line in mt_lines]
    return {"gsm": gsm, "ref": ref, "unrelated": unrelated, "mt": mt, "mt_path": mt_ref.parent}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the module: later tests reuse vectors, as a scheduled re-run would."""
    return tmp_path_factory.mktemp("cache")


def ctx_with(encoder: Any, tmp_path: Path | None = None) -> Context:
    ctx = Context.ephemeral() if tmp_path is None else Context(cache_dir=tmp_path)
    ctx.models.register("embed", encoder, {"path": "default"})
    return ctx


def frame(prompts: list[str]) -> pl.LazyFrame:
    rows = [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in prompts]
    return conform(pl.DataFrame({"messages": rows}).lazy(), "conversation")


def edited(question: str) -> str:
    """Numbers changed and a word swapped: what a careless rewrite of a benchmark item looks like."""
    return re.sub(r"\d+", lambda m: str(int(m.group()) + 3), question).replace("How many", "How much")


def corpus(data: dict[str, Any]) -> tuple[list[str], set[int]]:
    prompts = [*data["unrelated"], data["gsm"][3], edited(data["gsm"][7]), data["mt"][0]["turns"][0]]
    return prompts, {25, 26, 27}


def test_registered_and_reference_forms() -> None:
    assert STAGES["audit"] is Audit
    stage = Audit(references="a.jsonl")
    assert stage.references[0].path == "a.jsonl" and stage.references[0].label == "a"
    assert (stage.threshold, stage.ngram, stage.mode) == (0.95, 13, "flag")


def test_flags_verbatim_and_edited_leaks_not_unrelated(encoder: Any, data: dict[str, Any], cache: Path) -> None:
    prompts, leaks = corpus(data)
    ctx = ctx_with(encoder, cache)
    mt_ref = {"path": str(data["mt_path"] / "question.jsonl"), "name": "mt_bench"}
    stage = Audit(references=[str(data["ref"]), mt_ref])
    out = frame(prompts).pipe(stage, ctx).collect()
    flagged = {i for i, c in enumerate(out["contaminated"].to_list()) if c}
    assert flagged == leaks
    assert out["audit_matches"].to_list()[25] >= 1 and out.height == len(prompts)
    report = pl.read_parquet(ctx.stats["audit"]["report"])
    assert report.columns[:6] == ["id", "field", "reference", "reference_id", "text", "reference_text"]
    matched = report.filter(pl.col("match"))
    verbatim = matched.filter(pl.col("reference_id") == "gsm3").row(0, named=True)
    assert verbatim["cosine"] > 0.99 and verbatim["ngram_overlap"] == 1.0 and verbatim["text"] == data["gsm"][3]
    edit = matched.filter(pl.col("reference_id") == "gsm7").row(0, named=True)
    assert edit["embedding_match"] and edit["reference_text"] == data["gsm"][7]
    mt = matched.filter(pl.col("reference") == "mt_bench").row(0, named=True)
    assert mt["reference_id"] == f"{data['mt'][0]['question_id']}#0"


def test_drop_mode_quarantines_with_reference(encoder: Any, data: dict[str, Any]) -> None:
    prompts, _ = corpus(data)
    ctx = ctx_with(encoder)
    out = frame(prompts).pipe(Audit(references=[str(data["ref"])], mode="drop", method="ngram"), ctx).collect()
    # Numbers changed leave 13 words in a row intact in this item: the n-gram method sees the edit too.
    assert out.height == len(prompts) - 2
    reasons = ctx.quarantine_frame()["reason"].to_list()
    assert "item gsm7 " in reasons[1]
    reason = reasons[0]
    assert reason.startswith("contaminated: matches gsm8k_slice item gsm3 (prompt of row; cos 1.0, 13-gram overlap")


def test_second_audit_encodes_nothing(encoder: Any, data: dict[str, Any], cache: Path) -> None:
    prompts, _ = corpus(data)
    stage = Audit(references=[str(data["ref"])])
    frame(prompts).pipe(stage, ctx_with(encoder, cache)).collect()
    calls = encoder.calls
    ctx = ctx_with(encoder, cache)
    frame(prompts).pipe(stage, ctx).collect()
    assert encoder.calls == calls and ctx.stats["audit"]["texts_encoded"] == 0


def test_bad_and_empty_references(encoder: Any, tmp_path: Path) -> None:
    lf = frame(["What is 2 + 2?"])
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputDataError, match=re.escape(str(missing))):
        lf.pipe(Audit(references=[str(missing)]), ctx_with(encoder))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": ""}\n{"text": "   "}\n')
    with pytest.raises(InputDataError, match=f"{re.escape(str(blank))}: reference set 'blank' holds no texts"):
        lf.pipe(Audit(references=[str(blank)]), ctx_with(encoder))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputDataError, match=re.escape(str(empty))):
        lf.pipe(Audit(references=[str(empty)]), ctx_with(encoder))
    other = tmp_path / "other.jsonl"
    other.write_text('{"body": "x"}\n')
    with pytest.raises(InputDataError, match="has no text column"):
        lf.pipe(Audit(references=[{"path": str(other)}]), ctx_with(encoder))


def test_gzip_reference_and_response_audit(encoder: Any, data: dict[str, Any], tmp_path: Path) -> None:
    ref = tmp_path / "answers.jsonl.gz"
    with gzip.open(ref, "wt") as handle:
        handle.write(json.dumps({"text": data["gsm"][0]}) + "\n")
    rows = [[{"role": "user", "content": "Tell me a puzzle."}, {"role": "assistant", "content": data["gsm"][0]}]]
    lf = conform(pl.DataFrame({"messages": rows}).lazy(), "conversation")
    assert not lf.pipe(Audit(references=[str(ref)]), ctx_with(encoder)).collect()["contaminated"][0]
    assert lf.pipe(Audit(references=[str(ref)], on="response"), ctx_with(encoder)).collect()["contaminated"][0]


def test_recipe_runs_with_models_section(data: dict[str, Any], tmp_path: Path) -> None:
    # The shipped recipe, cut to 40 rows and a 12-question MT-Bench slice to stay fast on a CPU.
    overrides = [f"audit.references=[{{path: {data['mt_path'] / 'question.jsonl'}, name: mt_bench}}]"]
    result = run_recipe(RECIPES / "audit.yaml", out=tmp_path / "run", limit=40, overrides=overrides)
    stages = {s.name: s for s in result.stages}
    assert stages["audit"].notes["reference_items"] == 24  # 12 questions x 2 turns
    assert stages["embed_dedup"].notes["texts_cached"] > 0  # the audit embedded the same prompts already
    out = pl.read_parquet(result.output)
    assert "contaminated" in out.columns and out.height == stages["embed_dedup"].rows_out
    assert Path(stages["audit"].notes["report"]).is_file()
    again = run_recipe(RECIPES / "audit.yaml", out=tmp_path / "run", limit=40, overrides=overrides)
    assert all(s.cached for s in again.stages) and again.rows == result.rows


class ParrotLLM:
    """An LLM stand-in with a ChatML template that 'regurgitates' a known item in every other sample."""

    def __init__(self, leak: str) -> None:
        self.leak, self.prompts = leak, []

    def render(self, conversation: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def generate(self, prompts: list[str], sampling: Any) -> list[list[Any]]:
        from curate.llm import Generation

        self.prompts.extend(prompts)
        return [[Generation(text=self.leak if i % 2 else "Tell me a joke about cats.", tokens=5)]
                for i in range(len(prompts))]


def test_probe_mode_audits_the_model_not_the_rows(encoder: Any, data: dict[str, Any]) -> None:
    parrot = ParrotLLM(data["gsm"][5])
    ctx = ctx_with(encoder)
    ctx.models.register("gen", parrot)
    lf = frame(data["unrelated"][:3])
    stage = Audit(references=[str(data["ref"])], mode="probe", probe_model="gen", probe_samples=6)
    out = lf.pipe(stage, ctx).collect()
    assert out.equals(lf.collect())
    assert parrot.prompts == ["<|im_start|>user\n"] * 6  # only the template's prefix before a user message
    notes = ctx.stats["audit"]
    assert notes["probe_samples"] == 6 and notes["rows_matched"] == 3
    report = pl.read_parquet(notes["report"]).filter(pl.col("match"))
    assert set(report["reference_id"]) == {"gsm5"} and set(report["field"]) == {"probe"}
    with pytest.raises(ValidationError, match="probe_model"):
        Audit(references=["x.jsonl"], mode="probe")


def test_probe_with_a_real_tiny_llm(encoder: Any, data: dict[str, Any], tiny_llm_path: Path) -> None:
    ctx = ctx_with(encoder)
    ctx.models.specs["gen"] = {"backend": "transformers", "path": str(tiny_llm_path), "device": "cpu"}
    stage = Audit(references=[str(data["ref"])], mode="probe", probe_model="gen", probe_samples=4,
                  probe_max_tokens=8)
    frame(["What is 2 + 2?"]).pipe(stage, ctx).collect()
    assert ctx.stats["audit"]["matches"] == 0  # random weights: gibberish, nothing regurgitated
    assert pl.read_parquet(ctx.stats["audit"]["report"]).columns == list(AUDIT_SCHEMA)
