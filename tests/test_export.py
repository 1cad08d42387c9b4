"""curate export: every format loads with `datasets` and passes TRL's own dataset preparation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import InputDataError
from curate.export import export
from curate.io import read
from curate.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def preference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(ROOT / "recipes" / "preference_clean.yaml", tmp_path_factory.mktemp("pref") / "run").run_dir


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    model = tokenizers.models.WordLevel({"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>")
    fast.chat_template = CHATML
    return fast


def load(path: Path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset("parquet", data_files=str(path))["train"]


def test_dpo_is_trl_conversational_preference(preference_run: Path, tmp_path: Path, tokenizer) -> None:
    trl_data = pytest.importorskip("trl.data_utils")
    result = export(preference_run, "dpo", tmp_path / "dpo")
    ds = load(result.out_dir / "train.parquet")
    assert len(ds) == result.splits["train"] == 40
    row = ds[0]
    assert trl_data.is_conversational(row)
    rendered = trl_data.maybe_apply_chat_template(row, tokenizer)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert rendered["chosen"].endswith("<|im_end|>\n") and rendered["rejected"].endswith("<|im_end|>\n")


def test_kto_equals_trl_unpairing_of_dpo(preference_run: Path, tmp_path: Path, tokenizer) -> None:
    trl_data = pytest.importorskip("trl.data_utils")
    dpo = load(export(preference_run, "dpo", tmp_path / "dpo").out_dir / "train.parquet")
    kto_result = export(preference_run, "kto", tmp_path / "kto")
    kto = load(kto_result.out_dir / "train.parquet")
    assert kto_result.report["desirable"] == kto_result.report["undesirable"] == len(dpo)
    unpaired = trl_data.maybe_unpair_preference_dataset(dpo.remove_columns(["id", "score_chosen", "score_rejected"]))

    def key(row: dict) -> str:
        return json.dumps([row["prompt"], row["completion"], row["label"]], sort_keys=True)

    assert Counter(key(r) for r in kto) == Counter(key(r) for r in unpaired)
    assert trl_data.maybe_apply_chat_template(kto[0], tokenizer)["completion"].endswith("<|im_end|>\n")
    assert [r["label"] for r in kto.select(range(4))] == [True, False, True, False]


def test_sft_from_each_table(preference_run: Path, tmp_path: Path, tokenizer) -> None:
    trl_data = pytest.importorskip("trl.data_utils")
    from_pairs = load(export(preference_run, "sft", tmp_path / "a").out_dir / "train.parquet")
    assert [m["role"] for m in from_pairs[0]["messages"]] == ["user", "assistant"]
    assert "<|im_start|>assistant" in trl_data.maybe_apply_chat_template(from_pairs[0], tokenizer)["text"]
    quick = run_recipe(ROOT / "recipes" / "clean_sft.yaml", tmp_path / "quick")
    from_conversations = load(export(quick.run_dir, "sft", tmp_path / "b").out_dir / "train.parquet")
    assert len(from_conversations) == quick.rows


def test_listwise_and_sft_from_candidates(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / "magpie_po_example" / "example_instructions_5res_armorm.json"
    frame = read(source).collect()
    frame.write_parquet(tmp_path / "candidates.parquet")
    listwise = pl.read_parquet(export(tmp_path / "candidates.parquet", "listwise", tmp_path / "lw").out_dir
                               / "train.parquet")
    for scores in listwise["responses"].list.eval(pl.element().struct.field("score")).to_list():
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
    sft = pl.read_parquet(export(tmp_path / "candidates.parquet", "sft", tmp_path / "sft").out_dir / "train.parquet")
    best = frame["responses"].to_list()[0]
    best_text = max(best, key=lambda r: r["score"])["content"]
    assert sft["messages"][0][-1]["content"] == best_text


def test_split_is_by_prompt_and_seeded(preference_run: Path, tmp_path: Path) -> None:
    a = export(preference_run, "kto", tmp_path / "a", test_size=0.3, seed=1)
    b = export(preference_run, "kto", tmp_path / "b", test_size=0.3, seed=1)
    c = export(preference_run, "kto", tmp_path / "c", test_size=0.3, seed=2)
    assert a.report["prompts_in_both_splits"] == 0
    assert a.splits["test"] > 0 and a.splits["train"] > 0
    assert pl.read_parquet(a.out_dir / "test.parquet").equals(pl.read_parquet(b.out_dir / "test.parquet"))
    assert not pl.read_parquet(a.out_dir / "test.parquet").equals(pl.read_parquet(c.out_dir / "test.parquet"))


def test_recipe_export_section(preference_run: Path) -> None:
    for fmt in ("dpo", "kto"):
        assert (preference_run / "export" / fmt / "train.parquet").exists()
        assert (preference_run / "export" / fmt / "test.parquet").exists()


def test_wrong_table_and_format(preference_run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="needs a candidates table, but the input is a preference table"):
        export(preference_run, "listwise", tmp_path / "x")
    with pytest.raises(InputDataError, match="unknown export format 'orpo'"):
        export(preference_run, "orpo", tmp_path / "x")


def test_cli(preference_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(preference_run), "--format", "kto", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert "desirable 40 / undesirable 40" in result.output
    bad = CliRunner().invoke(app, ["export", str(preference_run), "--format", "nope", "--out", str(tmp_path / "k")])
    assert bad.exit_code == 3 and "unknown export format" in bad.stderr
