"""Table contracts (issue 18 items 5, 6; issue 17 defects 2, 4): what validate, the runner and a stage called from
Python check before any row is processed, and plain frames made canonical as the read stage makes them."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.contract import ContractError, canonical, check_chain, recipe_input, recipe_problems, schema_columns
from curate.errors import InputDataError, RecipeError
from curate.io import load
from curate.pipeline import Context, Pipeline
from curate.recipe import build_stage, load_recipe
from curate.schema import MESSAGES, TABLES, detect_table
from curate.stages import STAGES
from curate.stages.audit import Audit
from curate.stages.combine_scores import CombineScores
from curate.stages.deita_select import DeitaSelect
from curate.stages.exact_dedup import ExactDedup
from curate.stages.filter import Filter
from curate.stages.minhash_dedup import MinHashDedup
from curate.stages.pairs import Pairs
from curate.stages.reward_augment import RewardAugment
from curate.stages.subsample import Subsample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
cli = CliRunner()

BAD_COLUMNS = """\
name: bad
input: {data}
on_error: quarantine
stages:
  - filter: {{}}
  - exact_dedup: {{keep: "highest:score_chosen"}}
  - minhash_dedup: {{keep: "highest:nonexistent"}}
  - combine_scores: {{weights: {{helpful: 1.0}}, constraints: ["harm >= 0"]}}
  - deita_select: {{score: quality}}
"""


def invoke(*args: str):
    return cli.invoke(app, list(args), catch_exceptions=False)


def one_line(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    text = result.stderr.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert "ColumnNotFoundError" not in text and "polars" not in text.lower(), text
    for fragment in fragments:
        assert fragment in text, text
    return text


def columns(table: str, **extra: pl.DataType | None) -> dict[str, pl.DataType | None]:
    return {**TABLES[table], **extra}


def stages(*entries: tuple[str, dict]) -> list:
    return [build_stage(name, params, f"stages[{i}]") for i, (name, params) in enumerate(entries)]


# -- issue 18 item 5: columns named by parameters -------------------------------------------------------------
def test_validate_reports_every_bad_column_with_its_stage(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_COLUMNS.format(data=SAMPLE / "pairs_pairwise.jsonl"))
    text = one_line(invoke("validate", str(recipe)), 2,
                    "stage 3 minhash_dedup (stages[2]): keep: highest:nonexistent: no column 'nonexistent' in the "
                    "preference table at this point (columns: id, prompt, chosen, rejected, score_chosen",
                    "stage 4 combine_scores (stages[3]): weights: objective 'helpful' not found",
                    "constraints: harm >= 0: objective 'harm' not found",
                    "stage 5 deita_select (stages[4]): score: no score column 'quality'")
    assert "exact_dedup" not in text  # highest:score_chosen is a preference column: fine


def test_run_exits_2_naming_the_stage_before_any_stage_runs(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_COLUMNS.format(data=SAMPLE / "pairs_pairwise.jsonl"))
    run_dir = tmp_path / "run"
    one_line(invoke("run", str(recipe), "--out", str(run_dir), "--quiet"), 2,
             "stage 3 minhash_dedup", "no column 'nonexistent'")
    done = [p.name for p in (run_dir / "cache" / "stages").iterdir() if (p / "stats.json").exists()]
    assert [name[:7] for name in done] == ["00-read"]  # the filter never ran


def test_run_time_error_even_without_a_recipe_check(tmp_path: Path) -> None:
    """A stage called on a frame missing its column says so (exit code 2), never a raw Polars error."""
    frame = pl.DataFrame({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
    for stage in (ExactDedup(keep="highest:nope"), MinHashDedup(keep="highest:nope"), DeitaSelect(score="nope"),
                  Subsample(method="deita", score="nope")):
        with pytest.raises(ContractError, match=f"{stage.name}: .*no (score )?column 'nope'") as caught:
            frame.pipe(stage)
        assert caught.value.exit_code == 2 and isinstance(caught.value, RecipeError)


@pytest.mark.parametrize(("chain", "table", "extra", "fragment"), [
    ([("exact_dedup", {"keep": "highest:source"})], "conversation", {},
     "keep: highest:source: column 'source' is String, not a number"),
    ([("embed_dedup", {"keep": "highest:q"})], "conversation", {}, "no column 'q' in the conversation table"),
    ([("combine_scores", {"weights": {"help": 1.0}})], "candidates", {"help": pl.String()},
     "objective 'help': column 'help' is String, not a number list"),
    ([("combine_scores", {"weights": {"help": 1.0}})], "conversation", {},
     "takes a candidates or preference table, but a conversation table reaches it here"),
    ([("pairs", {})], "preference", {}, "put respond, then judge or reward_score, before it"),
    ([("reward_augment", {})], "conversation", {}, "takes a preference table"),
    ([("judge", {"mode": "pairwise"})], "conversation", {}, "use mode pointwise"),
    ([("deita_score", {})], "candidates", {}, "takes a conversation or preference table"),
    ([("subsample", {"method": "deita"})], "conversation", {}, "score (method deita): no score column 'deita_score'"),
    ([("respond", {}), ("exact_dedup", {"keep": "highest:judge_score"})], "conversation", {},
     "stage 2 exact_dedup (stages[1]): keep: highest:judge_score: no column 'judge_score' in the candidates table"),
])
def test_each_kind_of_problem(chain, table, extra, fragment) -> None:
    problems, _, _ = check_chain(stages(*chain), table, columns(table, **extra))
    assert any(fragment in p for p in problems), problems


def test_columns_added_by_earlier_stages_satisfy_later_ones() -> None:
    chains = [
        ("conversation", [("judge", {}), ("exact_dedup", {"keep": "highest:judge_score"})], "conversation"),
        ("conversation", [("deita_score", {}), ("deita_select", {})], "conversation"),
        ("conversation", [("respond", {"n": 2}), ("reward_score", {}), ("combine_scores",
                                                                        {"weights": {"helpful": 1.0, "score": 0.5}}),
                          ("pairs", {}), ("reward_augment", {}), ("minhash_dedup", {"keep": "highest:goal_score"})],
         "preference"),
        ("preference", [("reward_score", {}), ("combine_scores", {"weights": {"harmless": 1.0},
                                                                  "constraints": ["helpful >= 0"]})], "preference"),
        ("candidates", [("magpie", {"count": 3}), ("exact_dedup", {"keep": "highest:magpie_turns"})], "conversation"),
        ("conversation", [("audit", {"references": ["x.jsonl"]}), ("embed_dedup", {"keep": "highest:audit_matches"})],
         "conversation"),
        ("conversation", [("respond", {"n": 1, "output": "conversation"}), ("judge", {}), ("translate", {})],
         "conversation"),
    ]
    for table, chain, final in chains:
        problems, out, _ = check_chain(stages(*chain), table, columns(table))
        assert problems == [] and out == final, (chain, problems)


def test_output_table_is_checked() -> None:
    problems, _, _ = check_chain(stages(("respond", {})), "conversation", columns("conversation"),
                                 output_table="preference")
    assert problems == ["output.table is 'preference' but the stages produce a candidates table "
                        "(set output.table: candidates, or drop it)"]


def test_every_shipped_recipe_passes_its_contract() -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        table, cols, _ = recipe_input(recipe, str(path))
        problems, final = recipe_problems(recipe, table, cols)
        assert problems == [], (path.name, problems)
        assert recipe.output.table in (None, final), path.name


def test_validate_ok_names_the_tables() -> None:
    result = invoke("validate", str(ROOT / "recipes" / "clean_sft.yaml"))
    assert result.exit_code == 0 and "conversation -> conversation table" in result.output


# -- issue 18 item 6: inputs that give different tables ------------------------------------------------------
def test_validate_finds_inputs_giving_different_tables(tmp_path: Path) -> None:
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: mix\ninput:\n  - {SAMPLE / 'instructions_alpaca.jsonl'}\n"
                      f"  - {SAMPLE / 'pairs_pairwise.jsonl'}\nstages: [{{filter: {{}}}}]\n")
    one_line(invoke("validate", str(recipe)), 3, "the inputs give different tables",
             "instructions_alpaca.jsonl (alpaca adapter) gives a conversation table",
             "pairs_pairwise.jsonl (pairwise adapter) gives a preference table")
    assert invoke("run", str(recipe), "--out", str(tmp_path / "run"), "--quiet").exit_code == 3  # as the run says


def test_validate_finds_alpaca_plus_oasst(tmp_path: Path, shared_data: Path) -> None:
    oasst = shared_data / "oasst_en_100_trees" / "en_100_tree.jsonl"
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: mix\ninput:\n  - {SAMPLE / 'instructions_alpaca.jsonl'}\n  - {oasst}\n"
                      "stages: [{filter: {}}]\n")
    one_line(invoke("validate", str(recipe)), 3, "(alpaca adapter) gives a conversation table",
             "en_100_tree.jsonl (oasst adapter) gives a candidates table", "mode: conversations")
    recipe.write_text(recipe.read_text().replace(f"  - {oasst}\n",
                                                 f"  - {{path: {oasst}, options: {{mode: conversations}}}}\n"))
    assert invoke("validate", str(recipe)).exit_code == 0


# -- issue 17 defect 2: curate stages NAME ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STAGES))
def test_stages_describes_every_stage(name: str) -> None:
    result = invoke("stages", name)
    assert result.exit_code == 0, result.output
    assert name in result.output and "tables:" in result.output
    for field in STAGES[name].__pydantic_fields__:  # type: ignore[attr-defined]
        assert field in result.output


def test_stages_unknown_name_suggests() -> None:
    one_line(invoke("stages", "minhash"), 2, "unknown stage 'minhash'; did you mean 'minhash_dedup'?")


# -- issue 17 defect 4: plain frames through the API ------------------------------------------------------------
CHATS = [
    [("user", "What is the capital of France?"), ("assistant", "Paris.")],
    [("user", "Name a prime number."), ("assistant", "Seven.")],
    [("user", "What is the capital of France?"), ("assistant", "Paris.")],  # identical to the first
    [("user", "Say something."), ("assistant", "   ")],  # empty response: filter quarantines it
]


def chats(order: tuple[str, str] = ("role", "content")) -> pl.DataFrame:
    return pl.DataFrame({"messages": [[dict(zip(order, m if order[0] == "role" else m[::-1], strict=True))
                                       for m in chat] for chat in CHATS]})


def read_ids(tmp_path: Path) -> list[str]:
    """The ids the read stage gives the same conversations (an OpenAI-messages JSONL file; the read stage sets
    the one with a blank answer aside, so it has no id there)."""
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) + "\n"
                            for chat in CHATS))
    return load(path).frame.collect()["id"].to_list()


def test_plain_frame_through_a_stage_gets_the_read_stages_ids(tmp_path: Path) -> None:
    expected = read_ids(tmp_path)
    for frame in (chats(), chats(("content", "role"))):  # dict key order does not change the id
        ctx = Context.ephemeral()
        out = frame.lazy().pipe(ExactDedup(), ctx).collect()
        assert expected[0] == expected[2] and out["id"].to_list()[:2] == expected[:2] and out.height == 3
        assert out.schema["messages"] == MESSAGES and out["source"].null_count() == out.height
        q = ctx.quarantine_frame()
        assert q["reason"].to_list() == ["identical content to row 1 (same id)"] and q["id"].to_list() == [expected[2]]


def test_filter_never_quarantines_a_row_with_a_null_id() -> None:
    ctx = Context.ephemeral()
    out = Filter()(chats(), ctx)
    assert len(out) == 2
    q = ctx.quarantine_frame()
    assert q.filter(pl.col("reason").str.starts_with("empty")).height == 1
    assert q["id"].null_count() == 0
    with_nulls = chats().with_columns(pl.lit(None, pl.String).alias("id"), pl.lit("mine").alias("source"))
    ctx = Context.ephemeral()
    Filter()(with_nulls, ctx)
    assert ctx.quarantine_frame()["id"].null_count() == 0


def test_plain_frame_through_pipeline_run_and_pipe() -> None:
    for run in (lambda f, c: Pipeline([Filter(), ExactDedup()]).run(f, c),
                lambda f, c: f.pipe(Filter(), c).pipe(ExactDedup(), c)):
        ctx = Context.ephemeral()
        out = run(chats(), ctx)
        assert isinstance(out, pl.DataFrame) and out.height == 2
        assert ctx.quarantine_frame().height == 2


def test_plain_frame_problems_are_one_line() -> None:
    with pytest.raises(InputDataError, match=r"match no canonical table.*curate\.read"):
        pl.DataFrame({"text": ["hi"]}).pipe(Filter())
    with pytest.raises(ContractError) as caught:  # every problem of the chain, before the first stage runs
        Pipeline([ExactDedup(keep="highest:a"), DeitaSelect(score="b"), Pairs()]).run(chats())
    text = str(caught.value)
    assert "stage 1 exact_dedup" in text and "stage 2 deita_select" in text and "stage 3 pairs" in text


def test_identical_rows_through_the_api_behave_as_through_curate_run(tmp_path: Path) -> None:
    """MinHash on the sample's conversations built by hand (no ids) removes what `curate run` removes."""
    source = SAMPLE / "instructions_alpaca.jsonl"
    plain = load(source).frame.select("messages").collect()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ninput: {source}\non_error: quarantine\nstages:\n  - minhash_dedup: {{}}\n")
    assert invoke("run", str(recipe), "--out", str(tmp_path / "run"), "--quiet").exit_code == 0
    ran = pl.read_parquet(tmp_path / "run" / "data" / "conversation.parquet")
    quarantine = pl.concat([pl.read_parquet(p).select("reason")
                            for p in (tmp_path / "run" / "quarantine").glob("*.parquet")])
    identical = quarantine.filter(pl.col("reason").str.contains("identical content")).height
    near = quarantine.filter(pl.col("reason").str.starts_with("near duplicate")).height
    assert identical > 0 and near > 0
    read = load(source).frame.drop("_line")  # lazy, with the read stage's ids: identical rows share one
    for api in (lambda c: Pipeline([MinHashDedup()]).run(plain, c), lambda c: plain.pipe(MinHashDedup(), c),
                lambda c: read.pipe(MinHashDedup(), c).collect(),
                lambda c: Pipeline([MinHashDedup()]).run(read, c).collect()):
        ctx = Context.ephemeral()
        out = api(ctx)
        assert out["id"].to_list() == ran["id"].to_list()
        reasons = ctx.quarantine_frame()["reason"]
        assert reasons.str.contains("identical content").sum() == identical
        assert reasons.str.starts_with("near duplicate").sum() == near


# -- the declarations match what the stages do -----------------------------------------------------------------
def assert_declared(actual: list[str], declared: dict, stage: str) -> None:
    """Every declared column is in the output, and every output column is declared (or matches a pattern)."""
    fixed = {c for c in declared if "*" not in c}
    patterns = [c for c in declared if "*" in c]
    assert fixed <= set(actual), (stage, fixed - set(actual))
    extra = [c for c in actual if c not in fixed and not any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    assert not extra, (stage, extra)


def preference_frame() -> pl.LazyFrame:
    rows = [{"prompt": [{"role": "user", "content": f"question {i}?"}],
             "chosen": [{"role": "assistant", "content": f"a good answer {i}."}],
             "rejected": [{"role": "assistant", "content": f"bad {i}"}],
             "score_chosen": 5.0 + i, "score_rejected": 1.0 + i % 3, "help_chosen": 1.0, "help_rejected": 0.0}
            for i in range(6)]
    return pl.DataFrame(rows).lazy()


def candidates_frame() -> pl.LazyFrame:
    rows = [{"prompt": [{"role": "user", "content": f"question {i}?"}],
             "responses": [{"content": f"answer {i} {k}.", "model": "m", "score": float(k + i % 2)}
                           for k in range(3)]} for i in range(5)]
    return pl.DataFrame(rows).lazy()


@pytest.mark.parametrize(("stage", "frame"), [
    (Filter(refusals=True), lambda: chats().lazy()),
    (ExactDedup(keep="highest:score_chosen"), preference_frame),
    (MinHashDedup(), preference_frame),
    (CombineScores(weights={"help": 1.0}, constraints=["help >= 0"]), preference_frame),
    (Pairs(), candidates_frame),
    (RewardAugment(), preference_frame),
    (Subsample(method="random", fraction=0.5), preference_frame),
])
def test_declared_columns_are_the_output_columns(stage, frame) -> None:
    ctx = Context.ephemeral()
    given = canonical(frame(), ctx)  # as a stage receives it
    _, out_table, declared = check_chain([stage], detect_table(given.collect_schema()),
                                         schema_columns(given.collect_schema()))
    out = stage(given, ctx)
    assert_declared(out.collect_schema().names(), declared, stage.name)
    assert detect_table(out.collect_schema()) == out_table


@pytest.mark.slow
def test_declared_columns_of_model_stages(tiny_llm_path: Path, encoder) -> None:
    """respond, judge (each table) and audit run for real (the tiny LLM, MiniLM): their columns are declared."""
    from curate.stages.judge import Judge
    from curate.stages.respond import Respond

    ctx = Context.ephemeral()
    ctx.models.specs["gen"] = {"backend": "transformers", "path": str(tiny_llm_path)}
    ctx.models.specs["judge"] = ctx.models.specs["gen"]
    conversation = canonical(chats().lazy().head(2), ctx)
    chain = [Respond(n=2, max_tokens=8), Judge(max_tokens=8, allow_degenerate=True), Pairs()]
    frame = conversation
    table = "conversation"
    for stage in chain:
        table, declared = check_chain([stage], table, schema_columns(frame.collect_schema()))[1:]
        frame = stage(frame, ctx)
        assert_declared(frame.collect_schema().names(), declared, stage.name)
    ref = Path(ctx.cache_dir) / "ref.jsonl"
    ref.write_text(json.dumps({"instruction": "What is the capital of France?", "output": "Paris."}) + "\n")
    audit = Audit(references=[str(ref)])
    _, _, declared = check_chain([audit], "conversation", schema_columns(conversation.collect_schema()))
    assert_declared(audit(conversation, ctx).collect_schema().names(), declared, "audit")


def test_validate_reads_only_the_first_lines_of_a_large_input(tmp_path: Path) -> None:
    """A 5 MB JSONL (and its .gz) is validated on its first 4 MB of lines: the last line, the only one with a
    ``messages`` column (which a whole read would detect as the openai format), is not read."""
    import gzip

    line = json.dumps({"instruction": "Explain the water cycle. " * 20, "output": "Water evaporates. " * 20}) + "\n"
    last = json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n"
    body = line * (5 * 2**20 // len(line) + 1) + last
    (tmp_path / "big.jsonl").write_text(body)
    (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress(body.encode(), compresslevel=1))
    for name in ("big.jsonl", "big.jsonl.gz"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"name: r\ninput: {name}\nstages:\n  - exact_dedup: {{keep: 'highest:nope'}}\n")
        one_line(invoke("validate", str(recipe)), 2, "stage 1 exact_dedup", "no column 'nope'")
        recipe.write_text(f"name: r\ninput: {name}\nstages:\n  - exact_dedup: {{}}\n")
        result = invoke("validate", str(recipe))
        assert result.exit_code == 0 and "adapter alpaca -> conversation table" in result.output, result.output
