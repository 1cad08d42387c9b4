"""The transformers backend on the tiny model (fast) and, once, on the embedded SmolLM2 GGUF (slow)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from curate.errors import ModelError
from curate.llm import LLM, Generation, Sampling, load_llm
from curate.models import ModelRegistry

PROMPTS = [
    "Write a short poem about the sea and the sky, please.",
    "Hi",
    "How do I sort a list in Python?",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "2 + 2 =",
]
GREEDY = Sampling(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def llm(tiny_llm_path: Path):
    return load_llm({"backend": "transformers", "path": str(tiny_llm_path), "batch_size": 4})


def test_protocol_and_shapes(llm) -> None:
    assert isinstance(llm, LLM)
    out = llm.generate(PROMPTS, GREEDY)
    assert len(out) == len(PROMPTS)
    for gens in out:
        assert len(gens) == 1 and isinstance(gens[0], Generation)
        g = gens[0]
        assert 1 <= g.tokens <= 12 and g.prompt_tokens > 0
        assert g.finish_reason in ("stop", "length")
    assert llm.generate([], GREEDY) == []


def test_left_padding_batched_equals_unbatched(llm) -> None:
    """Greedy outputs must not depend on what else is in the batch (left padding + attention mask)."""
    batched = [g[0].text for g in llm.generate(PROMPTS, GREEDY)]
    unbatched = [llm.generate([p], GREEDY)[0][0].text for p in PROMPTS]  # one prompt per batch: no padding
    assert batched == unbatched
    # Order is restored after sorting by length: reversed input gives reversed output.
    assert [g[0].text for g in llm.generate(PROMPTS[::-1], GREEDY)] == batched[::-1]


def test_stop_strings_cut_and_end_early(llm) -> None:
    long = Sampling(temperature=0.0, max_tokens=16)
    free = llm.generate(PROMPTS, long)
    # Pick a stop string that the first prompt's greedy output contains after a few characters.
    text = free[0][0].text
    assert len(text) > 6
    stop = text[4:6]
    cut = text[: text.find(stop)]
    out = llm.generate(PROMPTS, Sampling(temperature=0.0, max_tokens=16, stop=(stop, "never-there")))
    g = out[0][0]
    assert g.text == cut
    assert g.finish_reason == "stop"
    assert g.tokens < free[0][0].tokens or free[0][0].tokens < 16
    for before, after in zip(free, out, strict=True):
        assert stop not in after[0].text
        assert before[0].text.startswith(after[0].text)


def test_n_and_seed_determinism(llm) -> None:
    s = Sampling(temperature=1.0, top_p=0.95, max_tokens=6, seed=123, n=3)
    a = llm.generate(PROMPTS[:3], s)
    b = llm.generate(PROMPTS[:3], s)
    assert [[g.text for g in row] for row in a] == [[g.text for g in row] for row in b]
    assert all(len(row) == 3 for row in a)
    assert len({g.text for g in a[0]}) > 1  # samples differ from one another
    c = llm.generate(PROMPTS[:3], Sampling(temperature=1.0, top_p=0.95, max_tokens=6, seed=124, n=3))
    assert [[g.text for g in row] for row in a] != [[g.text for g in row] for row in c]
    greedy_n = llm.generate(PROMPTS[:2], Sampling(temperature=0.0, max_tokens=6, n=2))
    assert all(len(row) == 2 and row[0].text == row[1].text for row in greedy_n)


def test_logprobs_shape_and_raw_distribution(llm) -> None:
    out = llm.generate(PROMPTS[:2], Sampling(temperature=0.0, max_tokens=8, logprobs=3))
    for gens in out:
        g = gens[0]
        assert g.logprobs is not None and len(g.logprobs) == g.tokens
        for step in g.logprobs:
            assert 1 <= len(step) <= 3
            values = list(step.values())
            assert all(v <= 0 for v in values) and values == sorted(values, reverse=True)
    # Logprobs are the model's distribution, before temperature: the first step is the same either way.
    hot = llm.generate(PROMPTS[:1], Sampling(temperature=0.5, max_tokens=2, logprobs=3, seed=1))[0][0]
    assert hot.logprobs[0] == pytest.approx(out[0][0].logprobs[0])
    assert llm.generate(PROMPTS[:1], GREEDY)[0][0].logprobs is None


def test_eos_ends_generation(tiny_llm_path: Path) -> None:
    """A model that wants to end its turn at once produces an empty text, one token, finish 'stop'."""
    m = load_llm({"backend": "transformers", "path": str(tiny_llm_path)})
    eos = m.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eos in m.eos_ids

    def force_eos(module, inputs, output):
        output[..., eos] += 1000.0
        return output

    handle = m.model.lm_head.register_forward_hook(force_eos)
    try:
        g = m.chat([[{"role": "user", "content": "hi"}]], Sampling(temperature=0.0, max_tokens=10))[0][0]
    finally:
        handle.remove()
    assert (g.text, g.tokens, g.finish_reason) == ("", 1, "stop")


def test_chat_uses_the_models_template(llm) -> None:
    conv = [{"role": "user", "content": "Hello there!"}]
    rendered = llm.render(conv)
    assert rendered == "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n"
    assert llm.render(conv, add_generation_prompt=False).endswith("<|im_end|>\n")
    assert llm.chat([conv], GREEDY)[0][0].text == llm.generate([rendered], GREEDY)[0][0].text


def test_other_template_families(tiny_llm_builder) -> None:
    from tiny_llm import GEMMA, LLAMA3

    for template, marker, eot in ((LLAMA3, "<|start_header_id|>assistant", "<|eot_id|>"),
                                  (GEMMA, "<start_of_turn>model", "<end_of_turn>")):
        m = load_llm({"backend": "transformers", "path": str(tiny_llm_builder(template))})
        rendered = m.render([{"role": "user", "content": "hi"}])
        assert marker in rendered
        assert m.tokenizer.convert_tokens_to_ids(eot) in m.eos_ids
        ids = m.encode(rendered)
        assert ids.count(m.tokenizer.bos_token_id) == 1  # the template's BOS, never a second one


def test_registry_loads_through_load_llm(tiny_llm_path: Path, tmp_path: Path) -> None:
    spec = {"backend": "transformers", "path": tiny_llm_path.name}  # relative to the recipe folder
    reg = ModelRegistry({"gen": spec}, base_dir=tiny_llm_path.parent)
    llm = reg.get("gen", "llm")
    assert reg.get("gen", "llm") is llm
    assert llm.generate(["Hi"], GREEDY)[0][0].tokens > 0


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown LLM backend"):
        load_llm({"backend": "nope"})
    with pytest.raises(ModelError, match="unknown option"):
        load_llm({"backend": "transformers", "path": "default", "temprature": 0.1})
    with pytest.raises(ModelError, match="not found"):
        load_llm({"backend": "transformers", "path": "missing-model"}, base_dir=tmp_path)
    with pytest.raises(ModelError, match="not found"):
        load_llm({"backend": "transformers", "path": "missing.gguf"}, base_dir=tmp_path)


@pytest.mark.slow
def test_default_smollm2_gguf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded SmolLM2-135M-Instruct GGUF loads with no network at all and answers a chat."""

    def no_network(*args, **kwargs):
        raise AssertionError("model loading tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    llm = load_llm({"backend": "transformers", "path": "default"})
    assert llm.gguf_file and llm.gguf_file.endswith(".gguf")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    out = llm.chat([question], Sampling(temperature=0.0, max_tokens=6))
    assert out[0][0].text.strip() and out[0][0].tokens > 0
