"""The translate stage: selective translation with a deterministic stand-in backend, verification, quarantine,
caching, mix, the optional judge, and a real tiny model end to end."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Sequence

import polars as pl
import pytest
from synth_fakes import FakeLLM
from tiny_llm import CHATML

from curate import Context
from curate.errors import ModelError, RecipeError
from curate.llm.base import LLM, Generation, Sampling
from curate.schema import MESSAGES, RESPONSES, conform
from curate.stages import STAGES, Translate
from curate.text import verify
from curate.text.segment import MARKER_RX

LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CYRILLIC = str.maketrans(LATIN, "абцдефгхийклмнопярстуввхызАБЦДЕФГХИЙКЛМНОПЯРСТУВВХЫЗ")
HEBREW = str.maketrans(LATIN, "אבגדהוזחטיכלמנסעפצקרשתאבגד" * 2)


class CipherTranslator:
    """A real (deterministic) backend of the LLM protocol: 'translates' prose by mapping Latin letters to another
    script and keeps every marker; ``mutate`` can break the output the way a bad model would."""

    def __init__(self, table: dict[int, str] = CYRILLIC, mutate: Callable[[str], str] | None = None,
                 name: str = "cipher") -> None:
        self.name = name
        self.table = table
        self.mutate = mutate or (lambda text: text)
        self.sent: list[str] = []
        self.calls = 0

    def translate(self, text: str) -> str:
        return "".join(p if MARKER_RX.fullmatch(p) else p.translate(self.table) for p in re.split(r"(⟦\d+⟧)", text))

    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[list[Generation]]:
        self.calls += 1
        out = []
        for conv in conversations:
            assert conv[0]["role"] == "system" and "⟦0⟧" in conv[0]["content"]
            header, text = conv[-1]["content"].split("\n", 1)
            assert header.startswith("Translate into ")
            self.sent.append(text)
            result = self.mutate(self.translate(text))
            out.append([Generation(text=result, tokens=max(1, len(result) // 4))])
        return out

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        return [[Generation(text=self.translate(p), tokens=1)] for p in prompts]

    def render(self, conversation: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise ModelError("the cipher translator has no chat template")


CODE = "```python\ndef add(a, b):\n    return a + b\n```"
NESTED = "````md\nExample:\n```js\nlet x = 1;\n```\n````"
SFT = [
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": 'Explain `add` and send {"op": "add", "args": [1, 2]} to https://api.example.com/v1.'},
     {"role": "assistant",
      "content": f"Here is the function:\n{CODE}\nIt returns $a+b$, so with $5 and $10 you get 15."}],
    [{"role": "user", "content": f"Show a nested fence please.\n{NESTED}\nAn unbalanced $x and \\( stay prose."},
     {"role": "assistant", "content": ""}],
]


def conversations(rows: list[list[dict[str, str]]] = SFT) -> pl.LazyFrame:
    return conform(pl.LazyFrame({"messages": rows}, schema={"messages": MESSAGES}), "conversation")


def run(stage: Translate, data: pl.LazyFrame, backend: object,
        ctx: Context | None = None) -> tuple[pl.DataFrame, Context]:
    ctx = ctx or Context.ephemeral()
    if "gen" not in ctx.models._loaded:
        ctx.models.register("gen", backend)
    return stage(data, ctx).collect(), ctx


def test_stage_is_registered_and_backend_is_an_llm() -> None:
    assert STAGES["translate"] is Translate
    assert isinstance(CipherTranslator(), LLM)
    with pytest.raises(ValueError):
        Translate(target_lang="en")


def test_conversations_keep_every_protected_span_and_roles() -> None:
    backend = CipherTranslator()
    data = conversations()
    out, ctx = run(Translate(target_lang="ru"), data, backend)
    source = data.collect()
    assert out.height == 2 and out["lang"].to_list() == ["ru", "ru"] and out["source_lang"].to_list() == ["en", "en"]
    assert out["parent_id"].to_list() == source["id"].to_list()
    assert not set(out["id"]) & set(source["id"])
    first = out["messages"][0].to_list()
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    cipher = backend.translate
    assert first[1]["content"] == (f'{cipher("Explain")} `add` {cipher("and send")} {{"op": "add", "args": [1, 2]}} '
                                   f'{cipher("to")} https://api.example.com/v1.')
    assert CODE in first[2]["content"] and "$a+b$" in first[2]["content"]
    assert "$5 анд $10" in first[2]["content"]  # currency is prose
    second = out["messages"][1].to_list()
    assert NESTED in second[0]["content"] and cipher("$x and \\( stay prose") in second[0]["content"]
    assert second[1]["content"] == ""  # empty message: nothing sent, stays empty
    for text in backend.sent:  # no protected span was ever sent
        assert "```" not in text and "https://" not in text and "`add`" not in text and "$a+b$" not in text
    notes = ctx.stats["translate"]
    assert notes["translated"] == 2 and notes["spans_preserved_rate"] == 1.0 and notes["quarantine_reasons"] == {}


def test_preference_rows_translate_prompt_and_both_sides() -> None:
    rows = {"prompt": [[{"role": "user", "content": "Sort the list `xs` in Python."}]],
            "chosen": [[{"role": "assistant", "content": "Use this:\n```python\nxs.sort()\n```\nIt sorts in place."}]],
            "rejected": [[{"role": "assistant", "content": "Call sorted(xs) and ignore the result."}]],
            "score_chosen": [8.0], "score_rejected": [3.0]}
    schema = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "score_chosen": pl.Float64,
              "score_rejected": pl.Float64}
    data = conform(pl.LazyFrame(rows, schema=schema), "preference")
    out, _ = run(Translate(target_lang="ru"), data, CipherTranslator())
    row = out.row(0, named=True)
    assert row["prompt"][0]["content"] == "Сорт тхе лист `xs` ин Пытхон."
    assert row["chosen"][0]["content"] == "Усе тхис:\n```python\nxs.sort()\n```\nИт сортс ин плаце."
    assert row["rejected"][0]["content"].startswith("Цалл ") and row["rejected"][0]["role"] == "assistant"
    assert (row["score_chosen"], row["score_rejected"]) == (8.0, 3.0)


def test_candidates_responses_are_translated() -> None:
    data = conform(pl.LazyFrame({
        "prompt": [[{"role": "user", "content": "Say hello in a sentence."}]],
        "responses": [[{"content": "Hello there, friend.", "model": "m", "score": 1.0},
                       {"content": "Hi, how are you today?", "model": "m", "score": 2.0}]],
    }, schema={"prompt": MESSAGES, "responses": RESPONSES}), "candidates")
    out, _ = run(Translate(target_lang="ru"), data, CipherTranslator())
    responses = out["responses"][0].to_list()
    assert [r["content"] for r in responses] == ["Хелло тхере, фриенд.", "Хи, хов аре ыоу тодаы?"]
    assert [r["score"] for r in responses] == [1.0, 2.0]


def test_dropped_marker_goes_to_quarantine_with_the_reason() -> None:
    backend = CipherTranslator(mutate=lambda text: text.replace("⟦0⟧", ""))
    out, ctx = run(Translate(target_lang="ru"), conversations(SFT[:1]), backend)
    assert out.height == 0
    q = ctx.quarantine_frame()
    assert q.height == 1 and q["reason"][0] == "marker lost: messages[1]: ⟦0⟧ missing"
    row = json.loads(q["row"][0])
    assert row["translated_messages"][1]["content"].startswith(backend.translate("Explain  and"))  # kept
    assert ctx.stats["translate"]["quarantined_marker_lost"] == 1
    assert ctx.stats["translate"]["spans_preserved_rate"] < 1.0


def test_duplicated_and_unknown_markers_and_altered_spans() -> None:
    cases = {
        "marker duplicated": lambda t: t.replace("⟦0⟧", "⟦0⟧ ⟦0⟧", 1),
        "unknown marker": lambda t: t + " ⟦9⟧",
        "protected span altered": lambda t: t + " `add`",  # the model wrote a protected text itself
    }
    for category, mutate in cases.items():
        _, ctx = run(Translate(target_lang="ru"), conversations(SFT[:1]), CipherTranslator(mutate=mutate))
        assert ctx.quarantine_frame()["reason"][0].startswith(category + ": "), category


def test_untranslated_output_is_caught_by_langid_and_by_overlap() -> None:
    echo = CipherTranslator(table={})  # returns the English text unchanged
    for method in ("langid", "overlap"):
        out, ctx = run(Translate(target_lang="fr", untranslated_check=method), conversations(SFT[:1]), echo)
        assert out.height == 0, method
        assert ctx.quarantine_frame()["reason"][0].startswith("untranslated: 100% of the output prose is still en")
    out, ctx = run(Translate(target_lang="fr", untranslated_check="off"), conversations(SFT[:1]), echo)
    assert out.height == 0  # the target-language check still sees English where French was asked for
    assert ctx.quarantine_frame()["reason"][0].startswith("wrong language: messages[2]: identified as en")
    out, _ = run(Translate(target_lang="fr", untranslated_check="off", language_check="off"),
                 conversations(SFT[:1]), echo)
    assert out.height == 1


SPANISH = "El gato duerme en la casa porque hace mucho frío y la lluvia no para desde muy temprano por la mañana. "


def into_spanish(text: str) -> str:
    """A 'translation' into the wrong language: Spanish prose about as long as the unit, every marker kept."""
    markers = [m.group() for m in MARKER_RX.finditer(text)]
    n = len(MARKER_RX.sub("", text))
    words = (SPANISH * (n // len(SPANISH) + 1))[:n].rsplit(" ", 1)[0] if n > 12 else "Hola"
    return " ".join([words, *markers])


def test_a_third_language_is_quarantined_as_wrong_language() -> None:
    spanish = CipherTranslator(table={}, mutate=into_spanish)
    out, ctx = run(Translate(target_lang="fr"), conversations(SFT[:1]), spanish)
    assert out.height == 0
    reason = ctx.quarantine_frame()["reason"][0]
    # messages[0] and [1] have fewer than 40 letters of prose: only the assistant message is identified
    assert re.fullmatch(r"wrong language: messages\[2\]: identified as es \(P\(fr\) 0\.\d\d, \d+ letters\), not fr",
                        reason), reason
    notes = ctx.stats["translate"]
    assert notes["quarantined_wrong_language"] == 1 and notes["quarantine_reasons"] == {"wrong language": 1}
    assert notes["language_check"].startswith("langid: fr, messages with >= 40 letters")
    assert notes["spans_preserved_rate"] == 1.0  # every span is back: only the language is wrong
    out, _ = run(Translate(target_lang="es"), conversations(SFT[:1]), spanish)
    assert out.height == 1  # the same output is right when Spanish was asked for
    out, _ = run(Translate(target_lang="fr", language_check="off"), conversations(SFT[:1]), spanish)
    assert out.height == 1
    out, _ = run(Translate(target_lang="fr", language_check_min_letters=500), conversations(SFT[:1]), spanish)
    assert out.height == 1  # too little prose to tell: not checked


def test_wrong_language_thresholds() -> None:
    french = "Le chat dort dans la maison parce qu'il fait très froid et que la pluie ne cesse pas."
    assert verify.wrong_language(french, "fr") is None
    found = verify.wrong_language(french, "es")
    assert found is not None and found[0] == "fr" and found[1] < 0.1 and found[2] == len(re.findall(r"\w", french))
    assert verify.wrong_language("Le chat dort ici.", "es") is None  # 13 letters: too short to tell
    assert verify.wrong_language(french, "es", min_prob=1.1) is not None
    assert verify.langid_code("pt-BR") == "pt" and verify.langid_code("nb") == "no"
    assert verify.langid_code("haw") is None  # Hawaiian: not among py3langid's languages


@pytest.fixture
def without_py3langid(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """py3langid made unimportable (``sys.modules[name] = None`` makes ``import`` raise ImportError)."""
    monkeypatch.setitem(sys.modules, "py3langid", None)
    verify.langid_available.cache_clear()
    yield
    monkeypatch.undo()
    verify.langid_available.cache_clear()


def test_language_check_is_skipped_and_noted_without_py3langid(without_py3langid, caplog) -> None:  # type: ignore[no-untyped-def]
    spanish = CipherTranslator(table={}, mutate=into_spanish)
    with caplog.at_level("WARNING", logger="curate"):
        out, ctx = run(Translate(target_lang="fr"), conversations(SFT[:1]), spanish)
    assert out.height == 1  # nothing identifies the language: the row passes, but not silently
    notes = ctx.stats["translate"]
    assert notes["language_check"] == "skipped: py3langid is not installed (pip install py3langid)"
    assert notes["untranslated_check"] == "overlap"
    assert "target-language check skipped: py3langid is not installed" in caplog.text
    with pytest.raises(RecipeError, match="language_check 'langid' needs py3langid"):
        run(Translate(target_lang="fr", language_check="langid"), conversations(SFT[:1]), spanish)


def test_target_py3langid_does_not_know_is_skipped_and_noted() -> None:
    _, ctx = run(Translate(target_lang="haw"), conversations(SFT[:1]), CipherTranslator())
    assert ctx.stats["translate"]["language_check"] == "skipped: py3langid cannot identify target_lang 'haw'"


def test_length_ratio_bounds() -> None:
    padded = CipherTranslator(mutate=lambda t: " ".join([t] * 5))
    _, ctx = run(Translate(target_lang="ru"), conversations(SFT[:1]), padded)
    assert ctx.quarantine_frame()["reason"][0].startswith("marker duplicated")  # markers repeat first
    wordy = CipherTranslator(mutate=lambda t: t + " ыадда" * 40)
    _, ctx = run(Translate(target_lang="ru"), conversations(SFT[:1]), wordy)
    assert ctx.quarantine_frame()["reason"][0].startswith("length ratio: output/input prose length")
    assert ctx.stats["translate"]["quarantined_length_ratio"] == 1


def test_right_to_left_target_with_bidi_marks() -> None:
    rtl = CipherTranslator(table=HEBREW, mutate=lambda t: MARKER_RX.sub(lambda m: f"\u200f⟦\u200f{m.group(1)}⟧", t))
    out, ctx = run(Translate(target_lang="he"), conversations(SFT[:1]), rtl)
    assert out.height == 1, ctx.quarantine_frame()["reason"].to_list()
    user = out["messages"][0][1]["content"]
    assert "`add`" in user and '{"op": "add", "args": [1, 2]}' in user and "https://api.example.com/v1" in user
    assert re.search("[\u05d0-\u05ea]", user) and CODE in out["messages"][0][2]["content"]


def test_nothing_to_translate_is_quarantined() -> None:
    data = conversations([[{"role": "user", "content": "```\nprint(1)\n```"}, {"role": "assistant", "content": "1"}]])
    out, ctx = run(Translate(target_lang="ru"), data, CipherTranslator())
    assert out.height == 0 and ctx.quarantine_frame()["reason"][0].startswith("nothing to translate")


def test_model_work_is_cached_and_thresholds_do_not_recompute() -> None:
    backend = CipherTranslator()
    ctx = Context.ephemeral()
    ctx.models.register("gen", backend)
    first = Translate(target_lang="ru")(conversations(), ctx).collect()
    calls = backend.calls
    again = Translate(target_lang="ru", max_untranslated=0.9, mix=0.5)(conversations(), ctx).collect()
    assert backend.calls == calls and ctx.stats["translate"]["rows_cached"] >= 2
    assert again.filter(pl.col("lang") == "ru")["id"].to_list() == first["id"].to_list()
    Translate(target_lang="de")(conversations(), ctx).collect()
    assert backend.calls > calls  # another language is new work


def test_mix_emits_a_seeded_fraction_of_source_rows() -> None:
    rows = [[{"role": "user", "content": f"Question number {w} about cats?"}] for w in
            ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")]
    data = conversations(rows)
    out, _ = run(Translate(target_lang="ru", mix=0.5, seed=3), data, CipherTranslator())
    again, _ = run(Translate(target_lang="ru", mix=0.5, seed=3), data, CipherTranslator())
    source = out.filter(pl.col("lang") == "en")
    assert out.filter(pl.col("lang") == "ru").height == 12 and 2 <= source.height <= 10
    assert source["parent_id"].null_count() == source.height
    assert set(source["id"]) <= set(data.collect()["id"]) and source["id"].to_list() == again.filter(
        pl.col("lang") == "en")["id"].to_list()
    everything, _ = run(Translate(target_lang="ru", mix=1.0), data, CipherTranslator())
    assert everything.height == 24


def test_optional_quality_judge_with_threshold() -> None:
    def rate(prompt: str, sampling: Sampling, k: int) -> Generation:
        assert prompt.endswith("Rating:") and sampling.logprobs
        low = "Rate the fluency" in prompt and "Цалл" in prompt  # only the second row reads badly
        digit = " 2" if low else " 5"
        return Generation(text=digit, tokens=1, logprobs=[{digit: math.log(0.9), " 4": math.log(0.1)}])

    rows = [SFT[0], [{"role": "user", "content": "Call me later, please."}]]
    ctx = Context.ephemeral()
    ctx.models.register("gen", CipherTranslator())
    ctx.models.register("judge", FakeLLM(CHATML, generate_fn=rate))
    out = Translate(target_lang="ru", judge=True, judge_model="judge")(conversations(rows), ctx).collect()
    assert out.height == 1 and out["translate_fluency"][0] == pytest.approx(5 * 0.9 + 4 * 0.1)
    reason = ctx.quarantine_frame()["reason"][0]
    assert reason.startswith("quality: lowest judge score 2.2 < 3.0 (fluency 2.2")
    assert ctx.stats["translate"]["quarantined_quality"] == 1 and ctx.stats["translate"]["judge_from"] == "prefill"


@pytest.mark.slow
def test_tiny_model_end_to_end(tiny_llm_path) -> None:
    ctx = Context.ephemeral()
    ctx.models.specs["gen"] = {"backend": "transformers", "path": str(tiny_llm_path)}
    stage = Translate(target_lang="fr", max_tokens=12)
    out = stage(conversations(), ctx).collect()
    notes = ctx.stats["translate"]
    assert notes["rows_in"] == 2 and notes["units_sent"] >= 4 and notes["rows_computed"] == 2
    assert out.height + ctx.quarantine_frame().height == 2  # every row is either translated or set aside
    known = ("truncated", "empty translation", "marker", "unknown marker", "protected span", "length ratio",
             "untranslated", "wrong language")
    assert all(r.startswith(known) for r in ctx.quarantine_frame()["reason"])
    for row in out.iter_rows(named=True):  # whatever a random model writes, kept rows keep their code
        assert CODE in json.dumps(row["messages"]) or NESTED in row["messages"][0]["content"]
    stage(conversations(), ctx).collect()
    assert ctx.stats["translate"]["rows_computed"] == 2  # the second run did no model work
