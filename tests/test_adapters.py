"""Adapters: each format to its canonical table, row errors, detection, load/read, round-trip properties."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import InputDataError
from curate.io import ADAPTERS, adapt, detect_adapter, load, read
from curate.io.prefs import parse_transcript
from curate.schema import MESSAGES, RESPONSES, TABLES, validate_schema


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def adapted(records: list[dict[str, Any]], adapter: str = "auto", **options: Any) -> tuple[pl.DataFrame, str]:
    frame, table = adapt(pl.LazyFrame(records), adapter, file="t.jsonl", options=options or None)
    return frame.collect(), table


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def check_canonical(frame: pl.DataFrame, table: str) -> None:
    validate_schema(frame.schema, table)
    assert frame.columns[: len(TABLES[table])] == list(TABLES[table])
    assert frame.columns[-2:] == ["_line", "_error"] or frame.columns[-1] == "_line"


# -- alpaca ----------------------------------------------------------------------------------------------


def test_alpaca_rows() -> None:
    frame, table = adapted(
        [
            {"instruction": "Add", "input": "1 2", "output": "3", "system": "Be terse."},
            {"instruction": "Hi", "input": "", "output": "Hello", "system": None},
            {"instruction": "Hi", "input": "  ", "output": None, "system": ""},
        ]
    )
    assert table == "conversation"
    check_canonical(frame, table)
    assert frame["messages"].to_list()[:2] == [
        [{"role": "system", "content": "Be terse."}, user("Add\n\n1 2"), assistant("3")],
        [user("Hi"), assistant("Hello")],
    ]
    assert frame["_error"].to_list() == [None, None, "column 'output': expected a non-empty string, got null"]
    assert frame["source"].to_list() == ["t.jsonl"] * 3


def test_numbers_are_not_text() -> None:
    frame, _ = adapted(
        [{"instruction": "q", "output": 5, "input": 7}, {"instruction": "q", "output": None, "input": 1}]
    )
    assert frame["_error"].to_list() == [
        "column 'output': expected a string, got a number: 5",
        "column 'output': expected a non-empty string, got null",
    ]
    nested, _ = adapted([{"instruction": "q", "output": "a", "input": ["x"]}])
    assert nested["_error"].to_list() == ["column 'input': expected a string, got a list"]


def test_alpaca_without_output_column_gives_user_only() -> None:
    frame, _ = adapted([{"instruction": "Write a poem", "uuid": "u1"}])
    assert frame["messages"].to_list() == [[user("Write a poem")]]
    assert frame["uuid"].to_list() == ["u1"] and frame["_error"].to_list() == [None]


def test_alpaca_instances_explode_and_keep_task_id() -> None:
    frame, _ = adapted(
        [
            {
                "id": "t1",
                "instruction": "Sum",
                "instances": [{"input": "1 1", "output": "2"}, {"input": "", "output": "0"}],
            },
            {"id": "t2", "instruction": "Say", "instances": [{"input": "", "output": ""}]},
        ]
    )
    assert frame.select("orig_id", "instance", "_line").rows() == [("t1", 1, 1), ("t1", 2, 1), ("t2", 1, 2)]
    assert frame["messages"].to_list()[:2] == [
        [user("Sum\n\n1 1"), assistant("2")],
        [user("Sum"), assistant("0")],
    ]
    assert (
        frame["_error"].to_list()[2]
        == "column 'instances.output': expected a non-empty string, got an empty string"
    )
    assert frame["id"].n_unique() == 3 and not frame["id"].is_in(["t1", "t2"]).any()


def test_alpaca_output_field_option_and_metadata_rename() -> None:
    records = [{"prompt": "raw", "instruction": "Q", "input": "", "response": "R", "target": "T"}]
    frame, _ = adapted(records, "alpaca", output_field="target")
    assert frame["messages"].to_list() == [[user("Q"), assistant("T")]]
    assert {"orig_prompt", "response"} <= set(frame.columns)
    auto, _ = adapted(records)
    assert auto["messages"].to_list() == [[user("Q"), assistant("R")]]


def test_bad_option_names_the_options() -> None:
    with pytest.raises(
        InputDataError, match=r"t\.jsonl: bad options for the alpaca adapter \(outptu_field.*output_field"
    ):
        adapted([{"instruction": "q"}], "alpaca", outptu_field="x")


def test_real_alpaca_files(shared_data: Path) -> None:
    expected = {
        "code_alpaca/code_alpaca_2k.json": (2015, 2),
        "code_alpaca/seed_tasks.jsonl": (21, 0),
        "self_instruct/seed_tasks.jsonl": (175, 0),
        "self_instruct/user_oriented_instructions.jsonl": (252, 0),
        "self_instruct/predictions_davinci.jsonl": (252, 0),
        "magpie_po_example/example_instructions.jsonl": (5, 0),
    }
    for name, (good, bad) in expected.items():
        loaded = load(shared_data / name)
        frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
        assert (loaded.adapter, loaded.table, frame.height, rejected.height) == (
            "alpaca",
            "conversation",
            good,
            bad,
        )
    rejected = load(shared_data / "code_alpaca/code_alpaca_2k.json").rejected.collect()
    assert set(rejected["reason"]) == {"column 'output': expected a non-empty string, got an empty string"}
    assert json.loads(rejected["row"][0])["output"] == ""
    seeds = load(shared_data / "self_instruct/seed_tasks.jsonl").frame.collect()
    assert seeds["orig_id"][0] == "seed_task_0" and seeds["instance"].to_list() == [1] * 175
    davinci = load(
        shared_data / "self_instruct/predictions_davinci.jsonl", options={"output_field": "response"}
    )
    assert "target" in davinci.frame.collect_schema().names()
    magpie = load(shared_data / "magpie_po_example/example_instructions.jsonl").frame.collect()
    assert magpie["messages"].list.len().to_list() == [1] * 5


# -- sharegpt / openai -----------------------------------------------------------------------------------


def test_sharegpt_roles() -> None:
    frame, table = adapted(
        [
            {
                "conversations": [
                    {"from": "system", "value": ""},
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "yo"},
                    {"from": "Human", "value": "more"},
                    {"from": "ChatGPT", "value": "sure"},
                ]
            },
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]},
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "bard", "value": " "}]},
            {"conversations": []},
        ],
        system_field=None,
    )
    assert table == "conversation"
    assert frame["messages"][0].to_list() == [user("hi"), assistant("yo"), user("more"), assistant("sure")]
    assert frame["_error"].to_list() == [
        None,
        "column 'conversations': message 2 has unknown role 'robot' (known: system, human, user, gpt, "
        "assistant, chatgpt, bing, bard, model, tool)",
        "column 'conversations': message 2 has empty content",
        "column 'conversations': expected a non-empty list of messages, got an empty list",
    ]


def test_sharegpt_system_column_is_prepended() -> None:
    frame, _ = adapted([{"system": "Be kind.", "conversations": [{"from": "human", "value": "q"}]}])
    assert frame["messages"].to_list() == [[{"role": "system", "content": "Be kind."}, user("q")]]


def test_openai_content_parts() -> None:
    frame, _ = adapted(
        [
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    }
                ]
            },
            {"messages": [{"role": "user", "content": [{"type": "image_url", "text": None}]}]},
        ]
    )
    assert frame["messages"][0].to_list() == [user("a\nb")]
    assert frame["_error"].to_list() == [
        None,
        "column 'messages': message 1 has a non-text content part ('image_url'); only text is supported",
    ]


def test_openai_file_mixing_string_and_part_contents(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "hi"}]
    image = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "http://x"}}]
    path = write_jsonl(
        tmp_path / "o.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": parts},
                    assistant("yo"),
                ]
            },
            {"messages": [{"role": "user", "content": image}]},
        ],
    )
    loaded = load(path)
    assert loaded.frame.collect()["messages"].to_list() == [
        [{"role": "system", "content": "sys"}, user("hi"), assistant("yo")]
    ]
    assert loaded.rejected.collect()["reason"].to_list() == [
        "column 'messages': message 1 has a non-text content part ('image_url'); only text is supported"
    ]


def test_openai_unknown_role_and_developer() -> None:
    frame, _ = adapted(
        [
            {"messages": [{"role": "developer", "content": "rules"}, user("q"), assistant("a")]},
            {"messages": [{"role": "narrator", "content": "x"}]},
            {"messages": None},
        ]
    )
    assert frame["messages"][0].to_list() == [
        {"role": "system", "content": "rules"},
        user("q"),
        assistant("a"),
    ]
    assert frame["_error"][1].startswith("column 'messages': message 1 has unknown role 'narrator'")
    assert frame["_error"][2] == "column 'messages': expected a list of {role, content} objects, got null"


# -- hh-rlhf ---------------------------------------------------------------------------------------------


def test_hh_rlhf_pairs() -> None:
    shared = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?"
    frame, table = adapted(
        [
            {"chosen": shared + "\n\nAssistant: Knock knock.", "rejected": shared + "\n\nAssistant: No."},
            {
                "chosen": "\n\nHuman: A\n\nAssistant: x\n\nHuman: B\n\nAssistant: y",
                "rejected": "\n\nHuman: A\n\nAssistant: z",
            },
            {"chosen": "Assistant: hi", "rejected": "\n\nHuman: A\n\nAssistant: z"},
            {"chosen": "\n\nHuman: A\n\nAssistant: same", "rejected": "\n\nHuman: A\n\nAssistant: same"},
        ]
    )
    assert table == "preference"
    check_canonical(frame, table)
    first = frame.row(0, named=True)
    assert first["prompt"] == [user("Hi"), assistant("Hello!"), user("Joke?")]
    assert (first["chosen"], first["rejected"]) == ([assistant("Knock knock.")], [assistant("No.")])
    assert frame["_error"].to_list()[1:] == [
        "chosen and rejected differ before the final Assistant turn (turn 2)",
        "column 'chosen': the transcript does not start with '\\n\\nHuman: '",
        "chosen and rejected end with the same response",
    ]


def test_real_hh_rlhf(shared_data: Path) -> None:
    loaded = load(shared_data / "hh_rlhf_harmless_base_test/test.jsonl.gz")
    frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
    assert (loaded.adapter, frame.height, rejected.height) == ("hh_rlhf", 2303, 9)
    reasons = rejected["reason"].to_list()
    assert reasons.count("column 'chosen': the final Assistant turn is empty") == 4
    assert (
        sum(r.startswith("chosen and rejected differ before the final Assistant turn") for r in reasons) == 5
    )
    assert frame["chosen"].list.len().unique().to_list() == [1]
    assert frame["prompt"].list.last().struct.field("role").unique().to_list() == ["user"]


# -- pairwise --------------------------------------------------------------------------------------------


def test_pairwise_labels() -> None:
    base = {"prompt": "Q", "response_a": "A", "response_b": "B"}
    labels = ["a", "B", 0, "1", "model_a", "tie", "maybe", None]
    frame, table = adapted([{**base, "label": str(lab) if lab is not None else None} for lab in labels])
    assert table == "preference"
    chosen = frame["chosen"].list.first().struct.field("content").to_list()
    assert chosen[:5] == ["A", "B", "A", "B", "A"]
    assert frame["_error"].to_list()[5:] == [
        "tie: no preference",
        "column 'label': expected a, b or tie (or 0/1, model_a/model_b), got 'maybe'",
        "column 'label': expected a, b or tie (or 0/1, model_a/model_b), got null",
    ]
    assert frame["score_chosen"].null_count() == len(labels)
    assert frame["prompt"][0].to_list() == [user("Q")]


def test_pairwise_winner_column_and_message_prompt() -> None:
    frame, _ = adapted(
        [{"prompt": [user("Q")], "response_a": "A", "response_b": "B", "winner": "model_b", "model_a": "m1"}]
    )
    row = frame.row(0, named=True)
    assert (row["chosen"], row["rejected"], row["model_a"], row["_error"]) == (
        [assistant("B")],
        [assistant("A")],
        "m1",
        None,
    )


def test_pairwise_tie_goes_to_rejected_with_reason(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "Q", "response_a": "A", "response_b": "B", "label": lab} for lab in ("a", "tie")],
    )
    loaded = load(path)
    assert loaded.frame.collect().height == 1
    assert loaded.rejected.collect().select("_line", "reason").rows() == [(2, "tie: no preference")]


# -- multi-response --------------------------------------------------------------------------------------


def test_real_magpie_multi_response(shared_data: Path) -> None:
    plain = load(shared_data / "magpie_po_example/example_instructions_5res.json")
    scored = load(shared_data / "magpie_po_example/example_instructions_5res_armorm.json")
    a, b = plain.frame.collect(), scored.frame.collect()
    assert (plain.adapter, plain.table, a.height, b.height) == ("multi_response", "candidates", 5, 5)
    assert a.schema["responses"] == RESPONSES
    first = a["responses"][0].to_list()
    assert len(first) == 5 and all(r["score"] is None for r in first)
    assert first[0]["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert b["responses"][0].to_list()[0]["score"] == pytest.approx(0.11279296875)
    assert b["responses"].list.eval(pl.element().struct.field("score").is_null().any()).explode().sum() == 0
    assert "rewards_armorm" not in b.columns and "uuid" in b.columns
    assert (a["id"] == b["id"]).all()  # scores are not content


def test_ultrafeedback_completions_and_score_key() -> None:
    row = {
        "instruction": "Q",
        "completions": [
            {"model": "m1", "response": "r1", "overall_score": 7.0, "fine-grained_score": 4.5},
            {"model": "m2", "response": "r2", "overall_score": 3.0, "fine-grained_score": 2.0},
        ],
    }
    frame, table = adapted([row])
    assert table == "candidates"
    assert frame["responses"][0].to_list() == [
        {"content": "r1", "model": "m1", "score": 4.5},
        {"content": "r2", "model": "m2", "score": 2.0},
    ]
    overall, _ = adapted([row], score_key="overall_score")
    assert [r["score"] for r in overall["responses"][0].to_list()] == [7.0, 3.0]


def test_parallel_scores_and_mismatch() -> None:
    frame, _ = adapted(
        [
            {"prompt": "Q", "responses": ["a", "b"], "scores": [1.0, 2.5]},
            {"prompt": "Q", "responses": ["a", "b"], "scores": [1.0]},
            {"prompt": "Q", "responses": ["a", ""], "scores": [1.0, 2.0]},
        ]
    )
    assert [r["score"] for r in frame["responses"][0].to_list()] == [1.0, 2.5]
    assert frame["_error"].to_list() == [
        None,
        "column 'scores': has 1 scores for 2 responses",
        "column 'responses': response 2 is empty",
    ]


# -- oasst -----------------------------------------------------------------------------------------------


def _node(text: str, role: str, rank: int | None = None, replies: list | None = None) -> dict[str, Any]:
    return {
        "message_id": text,
        "text": text,
        "role": role,
        "rank": rank,
        "lang": "en",
        "replies": replies or [],
    }


def test_oasst_tiny_tree() -> None:
    tree = _node(
        "q",
        "prompter",
        replies=[
            _node(
                "a0",
                "assistant",
                0,
                [_node("q2", "prompter", 0, [_node("b1", "assistant", 1), _node("b0", "assistant", 0)])],
            ),
            _node("a1", "assistant", 1),
        ],
    )
    lonely = _node("q", "prompter", replies=[_node("only", "assistant")])
    records = [{"message_tree_id": "t1", "prompt": tree}, {"message_tree_id": "t2", "prompt": lonely}]
    frame, table = adapted(records)
    assert table == "candidates"
    assert frame.select("message_tree_id", "message_id", "_line").rows() == [
        ("t1", "q", 1),
        ("t1", "q2", 1),
        ("t2", None, 2),
    ]
    assert frame["responses"][0].to_list() == [
        {"content": "a0", "model": None, "score": 0.0},
        {"content": "a1", "model": None, "score": -1.0},
    ]
    assert frame["prompt"][1].to_list() == [user("q"), assistant("a0"), user("q2")]
    assert frame["_error"].to_list()[2] == "tree has no prompter message with >= 2 ranked replies"
    conv, table = adapted(records, "oasst", mode="conversations")
    assert table == "conversation"
    assert conv["messages"].to_list() == [
        [user("q"), assistant("a0"), user("q2"), assistant("b0")],
        [user("q"), assistant("only")],
    ]


def test_real_oasst(shared_data: Path) -> None:
    loaded = load(shared_data / "oasst_en_100_trees/en_100_tree.jsonl")
    frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
    assert (loaded.adapter, loaded.table, frame.height, rejected.height) == ("oasst", "candidates", 212, 0)
    assert frame["responses"].list.len().min() >= 2
    conversations = load(
        shared_data / "oasst_en_100_trees/en_100_tree.jsonl", "oasst", {"mode": "conversations"}
    )
    conv = conversations.frame.collect()
    assert conversations.table == "conversation" and conv.height == 100
    assert conv["messages"].list.last().struct.field("role").unique().to_list() == ["assistant"]


# -- curate's own tables ---------------------------------------------------------------------------------


def test_canonical_round_trip_is_lazy_and_keeps_ids(tmp_path: Path) -> None:
    frame, _ = adapted([{"instruction": f"q{i}", "output": f"a{i}", "tag": i} for i in range(5)])
    path = tmp_path / "conv.parquet"
    frame.drop("_line", "_error").write_parquet(path)
    loaded = load(path, source="rerun")
    assert loaded.adapter == "conversation"
    assert "parquet" in loaded.frame.explain().lower()
    again = loaded.frame.collect(engine="streaming")
    assert again["id"].to_list() == frame["id"].to_list()
    assert again["tag"].to_list() == list(range(5)) and again["source"].unique().to_list() == ["rerun"]
    assert load(path).frame.collect()["source"].unique().to_list() == ["t.jsonl"]


def test_canonical_id_is_recomputed_from_content(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pl.DataFrame(
        {"id": ["stale"], "messages": [[user("q"), assistant("a")]], "source": ["x"]},
        schema_overrides={"messages": MESSAGES},
    ).write_parquet(path)
    fresh, _ = adapted([{"messages": [user("q"), assistant("a")]}])
    assert load(path).frame.collect()["id"].to_list() == fresh["id"].to_list()


def test_candidates_table_passthrough(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pl.DataFrame(
        {
            "id": ["x"],
            "prompt": [[user("q")]],
            "responses": [
                [{"content": "a", "model": "m", "score": 1.0}, {"content": "b", "model": None, "score": None}]
            ],
            "source": ["s"],
        },
        schema_overrides={"prompt": MESSAGES, "responses": RESPONSES},
    ).write_parquet(path)
    loaded = load(path)
    frame = loaded.frame.collect()
    assert (loaded.adapter, loaded.table, frame.height) == ("candidates", "candidates", 1)
    assert frame["responses"][0].to_list()[0] == {"content": "a", "model": "m", "score": 1.0}


def test_preference_strings_and_implicit_prompt() -> None:
    strings, table = adapted(
        [
            {"prompt": "Q", "chosen": "good", "rejected": "bad", "score_chosen": 9, "score_rejected": 2},
            {
                "prompt": "Q",
                "chosen": "same",
                "rejected": "same",
                "score_chosen": None,
                "score_rejected": None,
            },
        ]
    )
    lists, _ = adapted(
        [
            {
                "prompt": [user("Q")],
                "chosen": [user("Q"), assistant("good")],
                "rejected": [user("Q"), assistant("bad")],
            },
            {
                "prompt": [user("Q")],
                "chosen": [user("other"), assistant("good")],
                "rejected": [assistant("bad")],
            },
            {"prompt": [assistant("Q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        ]
    )
    assert table == "preference"
    check_canonical(strings, table)
    check_canonical(lists, table)
    assert strings["chosen"][0].to_list() == lists["chosen"][0].to_list() == [assistant("good")]
    assert strings["score_chosen"].to_list() == [9.0, None]
    assert strings["_error"].to_list() == [None, "chosen and rejected are the same response"]
    assert lists["_error"].to_list() == [
        None,
        "column 'chosen': expected one assistant message, got 2 messages",
        "column 'prompt': the last prompt message must be from the user, got 'assistant'",
    ]
    assert strings["id"][0] == lists["id"][0]  # same content, same id, whatever the input shape


# -- detection, errors, load/read ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "adapter"),
    [
        (["prompt", "chosen", "rejected"], "preference"),
        (["id", "prompt", "responses", "source"], "candidates"),
        (["id", "messages", "source"], "conversation"),
        (["chosen", "rejected"], "hh_rlhf"),
        (["prompt", "response_a", "response_b", "winner"], "pairwise"),
        (["instruction", "responses", "rewards_armorm"], "multi_response"),
        (["instruction", "completions"], "multi_response"),
        (["message_tree_id", "tree_state", "prompt"], "oasst"),
        (["conversations", "id"], "sharegpt"),
        (["messages"], "openai"),
        (["instruction", "input", "output"], "alpaca"),
        (["prompt", "instruction", "input", "response", "target"], "alpaca"),
        (["messages", "_line", "_error"], "openai"),
    ],
)
def test_detection(columns: list[str], adapter: str) -> None:
    assert detect_adapter(columns, "f.jsonl") == adapter


def test_detection_failure_lists_columns_and_adapters() -> None:
    with pytest.raises(InputDataError) as info:
        detect_adapter(["question", "answer"], "gsm8k.jsonl")
    message = str(info.value)
    assert message.startswith("gsm8k.jsonl: cannot tell the format from its columns ['answer', 'question']")
    for name, adapter in ADAPTERS.items():
        assert f"{name}: {adapter.expects}" in message


def test_unknown_adapter_suggests_nearest() -> None:
    with pytest.raises(
        InputDataError,
        match=r"f\.jsonl: unknown adapter 'sharegtp' \(did you mean 'sharegpt'\?\); adapters: auto,",
    ):
        adapt(pl.LazyFrame({"a": [1]}), "sharegtp", file="f.jsonl")


def test_missing_required_column_names_file_and_column() -> None:
    with pytest.raises(InputDataError, match=r"f\.jsonl: the pairwise adapter needs column 'prompt'"):
        adapt(
            pl.LazyFrame({"response_a": ["x"], "response_b": ["y"], "label": ["a"]}),
            "pairwise",
            file="f.jsonl",
        )


def test_load_rejected_holds_raw_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"instruction": "q1", "output": "a1"}\n{broken\n\n{"instruction": "q2", "output": null, "x": 1}\n'
    )
    loaded = load(path, source="mine")
    frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
    assert frame.select("_line", "source").rows() == [(1, "mine")]
    assert rejected.columns == ["_line", "reason", "row"]
    assert rejected["_line"].to_list() == [2, 4]
    assert rejected["row"][0] == "{broken"
    assert json.loads(rejected["row"][1]) == {"instruction": "q2", "output": None, "x": 1}
    assert rejected["reason"][1] == "column 'output': expected a non-empty string, got null"


def test_load_folder_and_binary_columns(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    pl.DataFrame(
        {"instruction": ["q1", "q2"], "output": ["a", None], "blob": [b"\x00", b"\xff"]}
    ).write_parquet(folder / "part-0.parquet")
    pl.DataFrame({"instruction": ["q3"], "output": ["c"], "blob": [b"x"]}).write_parquet(
        folder / "part-1.parquet"
    )
    loaded = load(folder)
    frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
    assert frame.select("_line", "_file").rows() == [(1, "part-0.parquet"), (1, "part-1.parquet")]
    assert rejected.columns == ["_line", "reason", "row", "_file"]
    assert json.loads(rejected["row"][0]) == {"instruction": "q2", "output": None, "blob": "/w=="}
    with pytest.raises(InputDataError, match=r"ds/part-0\.parquet, row 2: column 'output'"):
        read(folder)


def test_read_is_strict_and_drops_line(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "g.jsonl", [{"instruction": "q", "output": "a"}])
    frame = read(good).collect()
    assert "_line" not in frame.columns and frame["messages"].to_list() == [[user("q"), assistant("a")]]
    bad = write_jsonl(
        tmp_path / "b.jsonl", [{"instruction": "q", "output": "a"}, {"instruction": "q", "output": ""}]
    )
    with pytest.raises(
        InputDataError, match=r"b\.jsonl, row 2: column 'output': expected a non-empty string"
    ):
        read(bad)
    renamed = write_jsonl(tmp_path / "r.jsonl", [{"instruction": "q", "response": "a", "target": "t"}])
    assert read(renamed, output_field="target").collect()["messages"].to_list() == [
        [user("q"), assistant("t")]
    ]


def test_unknown_role_via_load(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "alien", "value": "zorp"}]}])
    with pytest.raises(
        InputDataError, match=r"s\.jsonl, row 1: column 'conversations': message 1 has unknown role 'alien'"
    ):
        read(path)


def test_undetectable_file(shared_data: Path) -> None:
    with pytest.raises(
        InputDataError, match=r"cannot tell the format from its columns \['answer', 'question'\]"
    ):
        load(shared_data / "gsm8k/test.jsonl")


# -- properties ------------------------------------------------------------------------------------------

_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")) | st.sampled_from(" \n"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() != "")
_ROLE_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}
_CONVERSATION = st.lists(
    st.tuples(st.sampled_from(["user", "assistant"]), _TEXT), min_size=1, max_size=5
).map(lambda turns: [{"role": r, "content": c} for r, c in turns])


def _round_trip(records: list[dict[str, Any]], **options: Any) -> pl.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load(write_jsonl(Path(tmp) / "d.jsonl", records), options=options or None)
        frame, rejected = pl.collect_all([loaded.frame, loaded.rejected])
    assert rejected.height == 0, rejected.to_dicts()
    return frame


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(_TEXT, st.one_of(st.just(""), _TEXT), _TEXT), min_size=1, max_size=5))
def test_alpaca_round_trip(rows: list[tuple[str, str, str]]) -> None:
    frame = _round_trip([{"instruction": i, "input": x, "output": o} for i, x, o in rows])
    expected = [[user(i + ("\n\n" + x if x else "")), assistant(o)] for i, x, o in rows]
    assert frame["messages"].to_list() == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(_CONVERSATION, min_size=1, max_size=4))
def test_sharegpt_round_trip(conversations: list[list[dict[str, str]]]) -> None:
    records = [
        {"conversations": [{"from": _ROLE_NAMES[m["role"]], "value": m["content"]} for m in c]}
        for c in conversations
    ]
    assert _round_trip(records)["messages"].to_list() == conversations


@settings(max_examples=25, deadline=None)
@given(st.lists(_CONVERSATION, min_size=1, max_size=4))
def test_openai_round_trip(conversations: list[list[dict[str, str]]]) -> None:
    assert _round_trip([{"messages": c} for c in conversations])["messages"].to_list() == conversations


_TURN_TEXT = _TEXT.map(str.strip).filter(lambda s: s and "\n\nHuman:" not in s and "\n\nAssistant:" not in s)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_TURN_TEXT, _TURN_TEXT), min_size=1, max_size=4))
def test_hh_transcript_parse_recovers_turns(exchanges: list[tuple[str, str]]) -> None:
    turns = [m for q, a in exchanges for m in (user(q), assistant(a))]
    transcript = "".join(
        f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in turns
    )
    assert parse_transcript(transcript) == turns


@settings(max_examples=25, deadline=None)
@given(st.lists(_CONVERSATION, min_size=2, max_size=6, unique_by=lambda c: json.dumps(c)))
def test_ids_are_stable_and_distinct(conversations: list[list[dict[str, str]]]) -> None:
    first, _ = adapted([{"messages": c, "meta": 1} for c in conversations])
    second, _ = adapted([{"messages": c, "other": "x"} for c in reversed(conversations)])
    assert first["id"].to_list() == list(reversed(second["id"].to_list()))
    assert first["id"].n_unique() == len(conversations)
