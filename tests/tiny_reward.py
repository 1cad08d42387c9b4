"""Build a tiny random reward model (``LlamaForSequenceClassification``) with a trained tokenizer and a chat template.

Why: ``reward_score`` needs a real ``AutoModelForSequenceClassification`` folder to load and score with, built
in about a second without network.  The tokenizer is a byte-level BPE trained on a small built-in corpus (any
text tokenizes), with a ``<|begin_of_text|>`` BOS written by the Llama-3-style chat template, a distinct
``<pad>`` token (the pad id the model pools by), and a few-hundred-KB random model with one head (``score``)
or several (``id2label`` set, e.g. helpfulness / harmlessness / verbosity).

Usage::

    from tiny_reward import build_tiny_reward   # tests/ is on sys.path under pytest
    folder = build_tiny_reward(tmp_path / "rm", labels=["helpfulness", "harmlessness", "verbosity"])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I sort a list in Python? Use sorted(items) or items.sort().",
    "What is the capital of France? The capital of France is Paris.",
    "Sure! Here is a recipe for pancakes: flour, milk, eggs, sugar and butter.",
    "user assistant system Question Answer I cannot help with that, sorry.",
    "1 2 3 4 5 6 7 8 9 10 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \"",
]


def build_tokenizer(path: Path, *, vocab_size: int = 400, model_max_length: int = 2048,
                    corpus: Sequence[str] | None = None) -> object:
    """Train a byte-level BPE tokenizer (on ``corpus``, default a small built-in one), wrap it as a fast tokenizer
    with the chat template, save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else _CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<pad>",
        unk_token="<unk>", chat_template=TEMPLATE, model_max_length=model_max_length,
    )
    fast.save_pretrained(path)
    return fast


def build_tiny_reward(
    path: Path,
    labels: Sequence[str] | None = None,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_position_embeddings: int = 256,
    seed: int = 0,
    vocab_size: int = 400,
) -> Path:
    """Write a tiny reward model folder at ``path`` and return it (an existing identical build is reused).

    ``labels``: ``None`` for one head (no labels), or the names of several heads (``id2label``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    path = Path(path)
    stamp = path / ".tiny_reward_complete"
    key = json.dumps([list(labels or []), hidden_size, num_layers, max_position_embeddings, seed, vocab_size])
    if stamp.exists() and stamp.read_text() == key:
        return path
    path.mkdir(parents=True, exist_ok=True)
    fast = build_tokenizer(path, vocab_size=vocab_size, model_max_length=max_position_embeddings)
    torch.manual_seed(seed)
    extra = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}} if labels else {}
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, num_labels=len(labels) if labels else 1,
        **extra,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a visible spread of scores (the default init gives near-zero logits)
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    stamp.write_text(key)
    return path
