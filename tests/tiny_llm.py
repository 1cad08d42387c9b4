"""Build a tiny random causal LM (Llama architecture) with a trained tokenizer and a chat template.

Why: the LLM backends and the model stages need a real ``transformers`` model to run against, but the
embedded SmolLM2 takes seconds per generation on CPU.  This builds, in about a second and without any
network, a folder that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load like any hub checkpoint: a
byte-level BPE tokenizer trained on a small built-in corpus (so any text tokenizes), the special tokens of
the common chat-template families, a chat template, and a few-MB random ``LlamaForCausalLM``.

The model's text is gibberish, but it is deterministic, so tests can compare batched vs unbatched greedy
outputs, seeds, stop strings and logprob shapes.

Usage::

    from tiny_llm import build_tiny_llm, CHATML, LLAMA3, GEMMA   # tests/ is on sys.path under pytest
    folder = build_tiny_llm(tmp_path / "tiny", chat_template=LLAMA3)

or the session fixtures in tests/conftest.py: ``tiny_llm_path`` (ChatML) and ``tiny_llm_builder``
(``tiny_llm_builder(LLAMA3)`` -> folder, built once per template per session).
"""

from __future__ import annotations

import json
from pathlib import Path

# Chat templates of three common families (simplified from the originals, same token structure).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA}

# Every family's special tokens are in every tiny vocabulary; the end-of-turn token is chosen per template.
SPECIAL_TOKENS = [
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
]
# (marker in template, bos, end-of-turn token)
_FAMILIES = [
    ("<|im_end|>", "<s>", "<|im_end|>"),
    ("<|eot_id|>", "<|begin_of_text|>", "<|eot_id|>"),
    ("<end_of_turn>", "<bos>", "<end_of_turn>"),
]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea and the sky.",
    "How do I sort a list in Python? Use sorted(items) or items.sort().",
    "Explain the difference between a list and a tuple.",
    "Sure! Here is a recipe for pancakes: flour, milk, eggs, sugar and butter.",
    "What is the capital of France? The capital of France is Paris.",
    "Translate 'good morning' into Spanish: buenos dias.",
    "user assistant system model Question Answer Instruction Response",
    "1 2 3 4 5 6 7 8 9 10 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \"",
    "Summarize the following text in one sentence, please.",
    "def add(a, b):\n    return a + b\n",
    "Thank you for your help. You are welcome, happy to help!",
]


def _family(chat_template: str) -> tuple[str, str]:
    for marker, bos, eot in _FAMILIES:
        if marker in chat_template:
            return bos, eot
    return "<s>", "</s>"


def build_tiny_llm(
    path: Path,
    chat_template: str = CHATML,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    eos_token: str | None = None,
    bos_token: str | None = None,
) -> Path:
    """Write a tiny model folder at ``path`` and return it (idempotent: an existing build is reused).

    ``chat_template`` is a Jinja template string (``CHATML``, ``LLAMA3``, ``GEMMA`` or your own); the
    end-of-turn token (the model's EOS) and BOS follow its family unless given.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    stamp = path / ".tiny_llm_complete"
    bos_default, eos_default = _family(chat_template)
    bos_token = bos_token or bos_default
    eos_token = eos_token or eos_default
    key = json.dumps([chat_template, vocab_size, hidden_size, num_layers, seed, eos_token, bos_token])
    if stamp.exists() and stamp.read_text() == key:
        return path
    path.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=chat_template,
        model_max_length=2048,
        padding_side="left",
    )
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.bos_token_id = fast.bos_token_id
    model.save_pretrained(path)
    stamp.write_text(key)
    return path
