from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from curate import Context
from curate.errors import InputDataError
from curate.models import ModelRegistry
from curate.reward import load_reward_model, objective_names
from curate.schema import RESPONSES, conform
from curate.stages.reward_score import RewardScore

LABELS = ["helpfulness", "harmlessness", "verbosity"]
WORDS = "the quick brown fox jumps over the lazy dog and sorts a list in Python".split()


@pytest.fixture(scope="module")
def rm_one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_reward import build_tiny_reward

    return build_tiny_reward(tmp_path_factory.mktemp("rm") / "one")


@pytest.fixture(scope="module")
def rm_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_reward import build_tiny_reward

    return build_tiny_reward(tmp_path_factory.mktemp("rm") / "three", labels=LABELS, seed=1)


def text(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def candidates(rows: list[tuple[str, list[str]]]) -> pl.LazyFrame:
    df = pl.DataFrame(
        {
            "prompt": [user(p) for p, _ in rows],
            "responses": [[{"content": r, "model": "m", "score": None} for r in rs] for _, rs in rows],
        },
        schema_overrides={"responses": RESPONSES},
    )
    return conform(df.lazy(), "candidates")


def preference(rows: list[tuple[str, str, str]]) -> pl.LazyFrame:
    df = pl.DataFrame({
        "prompt": [user(p) for p, _, _ in rows],
        "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in rows],
        "rejected": [[{"role": "assistant", "content": r}] for _, _, r in rows],
    })
    return conform(df.lazy(), "preference")


class Direct:
    """The same model called directly, one unpadded text at a time: the reference scores."""

    def __init__(self, path: Path) -> None:
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()

    def ids(self, prompt: str, response: str) -> list[int]:
        conversation = [*user(prompt), {"role": "assistant", "content": response}]
        rendered = self.tok.apply_chat_template(conversation, tokenize=False)
        return self.tok(rendered, add_special_tokens=False)["input_ids"]

    def forward(self, ids: list[int]) -> list[float]:
        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids])).logits[0].tolist()

    def __call__(self, prompt: str, response: str) -> list[float]:
        return self.forward(self.ids(prompt, response))


def scored(lf: pl.LazyFrame, stage: RewardScore, path: Path) -> pl.DataFrame:
    """Run ``stage`` and collect while its (ephemeral) context, and so its shards, still exist."""
    ctx = stage_ctx(path)
    return lf.pipe(stage, ctx).collect()


def stage_ctx(path: Path, cache: Path | None = None) -> Context:
    models = ModelRegistry({"reward": {"backend": "transformers", "path": str(path), "batch_size": 4}})
    if cache is None:
        return Context.ephemeral(models=models)
    return Context(cache_dir=cache, models=models)


MIXED = [  # lengths chosen so that length sorting reorders them inside a shard and across micro-batches
    (text(3), [text(40, 1), text(2, 2)]),
    (text(30, 3), [text(5, 4)]),
    (text(1, 5), [text(12, 6), text(60, 7), text(1, 8)]),
    (text(8, 9), [text(25, 10)]),
    (text(2, 11), [text(3, 12), text(33, 13)]),
]


def test_candidates_scores_match_direct_forward_in_row_order(rm_one: Path) -> None:
    ctx = stage_ctx(rm_one)
    out = candidates(MIXED).pipe(RewardScore(batch_size=3), ctx).collect()
    direct = Direct(rm_one)
    for (prompt, responses), row in zip(MIXED, out["responses"].to_list(), strict=True):
        assert [r["content"] for r in row] == responses
        for response, scored in zip(responses, row, strict=True):
            assert scored["score"] == pytest.approx(direct(prompt, response)[0], abs=1e-4)
    assert out["reward_note"].to_list() == [[None] * len(r) for _, r in MIXED]
    assert "reward_0" not in out.columns  # one head: score only
    stats = ctx.stats["reward_score"]
    assert stats["scored"] == 9 and stats["truncated"] == stats["too_long"] == stats["empty"] == 0
    assert stats["batches_computed"] == 2


def test_length_sorted_batches_restore_order(rm_one: Path) -> None:
    rm = load_reward_model({"path": str(rm_one), "batch_size": 2, "max_batch_tokens": 64})
    direct = Direct(rm_one)
    ids = [direct.ids(text(n), text(m, 1)) for n, m in [(2, 30), (40, 1), (1, 1), (10, 10), (3, 50), (20, 2)]]
    scores = rm.score_ids(ids)
    assert rm.forward_calls > 3  # several micro-batches, widths differing
    for row, got in zip(ids, scores, strict=True):
        assert got == pytest.approx(direct.forward(row), abs=1e-4)


def test_three_heads_columns_objective_and_labels(rm_three: Path) -> None:
    rows = MIXED[:3]
    out = scored(candidates(rows), RewardScore(), rm_three)
    direct = Direct(rm_three)
    for k, name in enumerate(LABELS):
        column = out[f"reward_{name}"].to_list()
        for (prompt, responses), values in zip(rows, column, strict=True):
            assert values == pytest.approx([direct(prompt, r)[k] for r in responses], abs=1e-4)
    first = [[r["score"] for r in row] for row in out["responses"].to_list()]
    assert first == out["reward_helpfulness"].to_list()
    harm = scored(candidates(rows), RewardScore(objective="harmlessness"), rm_three)
    assert [[r["score"] for r in row] for row in harm["responses"].to_list()] == harm["reward_harmlessness"].to_list()
    with pytest.raises(Exception, match="objective 'nope' is not a head"):
        scored(candidates(rows), RewardScore(objective="nope"), rm_three)
    assert objective_names({0: "LABEL_0", 1: "Helpsteer-Helpfulness", 2: ""}, 4) == ["0", "helpsteer_helpfulness",
                                                                                     "2", "3"]


def test_preference_rows_rescored(rm_three: Path) -> None:
    rows = [(text(4), text(9, 1), text(3, 2)), (text(12, 3), text(2, 4), text(20, 5))]
    ctx = stage_ctx(rm_three)
    out = preference(rows).pipe(RewardScore(), ctx).collect()
    direct = Direct(rm_three)
    for side, index in (("chosen", 1), ("rejected", 2)):
        expected = [direct(r[0], r[index]) for r in rows]
        assert out[f"score_{side}"].to_list() == pytest.approx([e[0] for e in expected], abs=1e-4)
        for k, name in enumerate(LABELS):
            assert out[f"reward_{name}_{side}"].to_list() == pytest.approx([e[k] for e in expected], abs=1e-4)
        assert out[f"reward_note_{side}"].to_list() == [None, None]
    agree = sum(c > r for c, r in zip(out["score_chosen"], out["score_rejected"], strict=True)) / 2
    assert ctx.stats["reward_score"]["agreement_with_label"] == agree


def test_long_prompt_truncated_from_the_left(rm_one: Path) -> None:
    prompt, response = text(80), text(6, 3)
    direct = Direct(rm_one)
    full = direct.ids(prompt, response)
    limit = len(full) - 25
    ctx = stage_ctx(rm_one)
    out = preference([(prompt, response, text(2, 1))]).pipe(RewardScore(max_length=limit), ctx).collect()
    assert out["reward_note_chosen"][0] == "prompt truncated: 25 tokens cut from the left"
    rejected = direct.ids(prompt, text(2, 1))
    cut = len(rejected) - limit
    assert out["reward_note_rejected"][0] == f"prompt truncated: {cut} tokens cut from the left"
    assert out["score_rejected"][0] == pytest.approx(direct.forward(rejected[:1] + rejected[1 + cut:])[0], abs=1e-4)
    kept = full[:1] + full[26:]  # BOS stays, the next 25 prompt tokens go, the end is intact
    assert out["score_chosen"][0] == pytest.approx(direct.forward(kept)[0], abs=1e-4)
    assert direct.tok.decode(kept).endswith(response + "<|eot_id|>")
    assert ctx.stats["reward_score"]["truncated"] == 2


def test_response_too_long_gets_null_and_reason(rm_one: Path) -> None:
    ctx = stage_ctx(rm_one)
    out = candidates([(text(3), [text(200), text(2, 1), ""])]).pipe(RewardScore(max_length=64), ctx).collect()
    assert out.height == 1
    scores = [r["score"] for r in out["responses"][0]]
    notes = out["reward_note"][0].to_list()
    assert scores[0] is None and notes[0].startswith("response does not fit:") and "max_length 64" in notes[0]
    assert scores[1] is not None and notes[1] is None
    assert scores[2] is None and notes[2] == "empty response"
    stats = ctx.stats["reward_score"]
    assert (stats["too_long"], stats["empty"], stats["scored"]) == (1, 1, 1)


def test_default_max_length_is_model_positions(rm_one: Path) -> None:
    out = scored(candidates([(text(300), [text(3)])]), RewardScore(), rm_one)
    assert out["reward_note"][0][0].startswith("prompt truncated")  # tiny model: 256 positions
    assert out["responses"][0][0]["score"] is not None


def test_resume_computes_nothing_and_loads_no_model(rm_one: Path, tmp_path: Path) -> None:
    lf = candidates(MIXED)
    first_ctx = stage_ctx(rm_one, tmp_path)
    first = lf.pipe(RewardScore(batch_size=2), first_ctx).collect()
    assert first_ctx.stats["reward_score"]["batches_computed"] == 3
    ctx = stage_ctx(rm_one, tmp_path)
    again = lf.pipe(RewardScore(batch_size=2), ctx).collect()
    stats = ctx.stats["reward_score"]
    assert stats["batches_computed"] == 0 and stats["rows_computed"] == 0 and stats["rows_cached"] == len(MIXED)
    assert not ctx.models._loaded  # every shard cached: the model was never loaded
    assert again.equals(first)
    changed = stage_ctx(rm_one, tmp_path)
    lf.pipe(RewardScore(batch_size=2, max_length=100), changed).collect()
    assert changed.stats["reward_score"]["batches_computed"] == 3  # other parameters, other shards
    # A refresh with one new row scores exactly that row (row-level cache), wherever it sits.
    grown = stage_ctx(rm_one, tmp_path)
    extra = candidates([*MIXED[:3], ("a brand new prompt", ["a brand new response"]), *MIXED[3:]])
    extra.pipe(RewardScore(batch_size=2), grown).collect()
    assert grown.stats["reward_score"]["rows_computed"] == 1


def test_retrained_model_in_same_folder_is_not_reused(rm_one: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(rm_one, folder)
    lf = candidates(MIXED[:2])
    lf.pipe(RewardScore(path=str(folder)), Context(cache_dir=tmp_path / "cache")).collect()
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.score.weight.mul_(-1.0)
    model.save_pretrained(folder)
    ctx = Context(cache_dir=tmp_path / "cache")
    lf.pipe(RewardScore(path=str(folder)), ctx).collect()
    assert ctx.stats["reward_score"]["batches_computed"] == 1


def test_model_without_pad_token_scores_like_direct(rm_one: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nopad"
    shutil.copytree(rm_one, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(config))
    ctx = Context.ephemeral()
    out = candidates(MIXED[:3]).pipe(RewardScore(path=str(folder)), ctx).collect()
    direct = Direct(folder)
    for (prompt, responses), row in zip(MIXED[:3], out["responses"].to_list(), strict=True):
        assert [r["score"] for r in row] == pytest.approx([direct(prompt, r)[0] for r in responses], abs=1e-4)


def test_parameters_and_tables_checked(rm_one: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        RewardScore(model="rm", path="/x")
    with pytest.raises(ValidationError, match="needs model"):
        RewardScore(model=None)
    assert RewardScore(path=str(rm_one)).models_used() == []
    conversation = conform(pl.DataFrame({"messages": [user("hi")]}).lazy(), "conversation")
    with pytest.raises(InputDataError, match="candidates or preference"):
        conversation.pipe(RewardScore(path=str(rm_one)))
    with pytest.raises(Exception, match="not defined under models"):
        candidates(MIXED[:1]).pipe(RewardScore(model="missing"))


def test_template_refusal_gives_null_with_reason(rm_one: Path) -> None:
    from tiny_reward import TEMPLATE

    strict = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}" + TEMPLATE
    models = ModelRegistry({"reward": {"path": str(rm_one), "chat_template": strict}})
    ctx = Context.ephemeral(models=models)
    df = pl.DataFrame(
        {
            "prompt": [[{"role": "system", "content": "be brief"}, *user("hi")], user("hi")],
            "responses": [[{"content": "hello", "model": "m", "score": None}]] * 2,
        },
        schema_overrides={"responses": RESPONSES},
    )
    out = conform(df.lazy(), "candidates").pipe(RewardScore(), ctx).collect()
    assert out["responses"][0][0]["score"] is None
    assert out["reward_note"][0][0] == "chat template failed: TemplateError: no system turns"
    assert out["responses"][1][0]["score"] == pytest.approx(Direct(rm_one)("hi", "hello")[0], abs=1e-4)


def test_recipe_reward_then_combine(rm_three: Path, tmp_path: Path) -> None:
    from curate.runner import run_recipe

    rows = [{"prompt": text(4, i), "chosen": text(6, i + 1), "rejected": text(3, i + 2)} for i in range(6)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "recipe.yaml").write_text(
        f"""name: rescore
input: [{{path: pairs.jsonl}}]
models:
  rm: {{backend: transformers, path: {rm_three}}}
stages:
  - reward_score: {{model: rm}}
  - combine_scores:
      direction: {{helpfulness: 1.0, harmlessness: 1.0}}
      normalize: minmax
      constraints: ["harmlessness > -1000"]
"""
    )
    result = run_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    out = pl.read_parquet(result.output)
    assert out.height == 6 and out["score_chosen"].null_count() == 0
    assert {"reward_helpfulness_chosen", "reward_verbosity_rejected", "reward_note_chosen"} <= set(out.columns)
    assert [s.name for s in result.stages[1:]] == ["reward_score", "combine_scores"]
    again = run_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    assert all(s.cached for s in again.stages[1:])


def test_registered_model_object(rm_one: Path, tmp_path: Path) -> None:
    rm = load_reward_model({"path": str(rm_one)})
    models = ModelRegistry()
    models.register("mine", rm)  # a loaded object (notebooks): no folder spec to hash
    ctx = Context(cache_dir=tmp_path, models=models)
    out = candidates(MIXED[:1]).pipe(RewardScore(model="mine"), ctx).collect()
    direct = Direct(rm_one)
    assert [r["score"] for r in out["responses"][0]] == pytest.approx(
        [direct(MIXED[0][0], r)[0] for r in MIXED[0][1]], abs=1e-4
    )
    assert rm.texts_scored == 2
