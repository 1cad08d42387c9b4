"""The ``transformers`` backend: a local folder or GGUF file, on CPU or GPU, in length-sorted padded batches.

Why it looks like this:

* Prompts are tokenized once, sorted by length (when that saves padding: see ``_batch_order``) and cut
  into batches of ``batch_size``; left padding keeps every row's last prompt token at the same position so
  one ``generate`` call serves the whole batch.  Results go back in input order.
* Stop strings end a row as soon as its text contains one (a ``StoppingCriteria`` that decodes only the
  tail of each row), and the text is cut before the stop string, as the OpenAI API and vLLM do.
* Top-k log-probabilities come from the model's raw next-token distribution (before temperature/top-p),
  captured per step by a logits processor so that only ``k`` values per token are kept, never the whole
  vocabulary for every step.
* Every row samples from its own random stream: its seed (``Sampling.seeds``; the model stages derive it
  from the row's id) seeds a CPU ``torch.Generator`` that draws the row's uniforms up front, and a logits
  processor (:class:`_RowSampler`) turns each row's temperature/top-p distribution and its own uniform of
  the step into the next token by inverse CDF; ``generate`` then runs greedy over that one-hot choice.  No
  stream is shared between rows (HF's own sampling draws the whole batch from the global RNG, so a row's
  tokens would depend on its batch), and the caller's global RNG is never touched.  Left padding with the
  attention mask and position ids from it make a row's logits those of the row alone up to float rounding
  (batched matmuls sum in another order); a row's tokens therefore equal its tokens alone unless a draw
  falls within that rounding of a boundary between two tokens (measured: tests/test_row_seeds.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import xxhash

from curate.errors import ModelError
from curate.llm._common import END_OF_TURN_TOKENS, TokenizerChat, cut_at_stop, offline_hub
from curate.llm.base import Generation, Sampling
from curate.progress import model_call

log = logging.getLogger(__name__)


class TransformersLLM(TokenizerChat):
    """LLM protocol over a ``transformers`` causal LM.

    ``folder`` holds config + weights + tokenizer, or a GGUF file named by ``gguf_file`` (dequantized on
    load).  ``device``/``dtype`` ``"auto"`` pick CUDA with bf16 (fp16 where bf16 is unsupported) when a
    GPU is present, else CPU float32 (CPU half precision is slow and inexact).
    """

    def __init__(
        self,
        folder: Path,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        tokenizer: Path | None = None,
        chat_template: str | None = None,
        name: str | None = None,
    ) -> None:
        offline_hub()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.folder = Path(folder)
        self.gguf_file = gguf_file
        self.batch_size = max(1, int(batch_size))
        self.device = _pick_device(device, torch)
        self.dtype = _pick_dtype(dtype, self.device, torch)
        self.name = name or f"transformers:{self.folder / gguf_file if gguf_file else self.folder}"
        kw: dict[str, Any] = {"local_files_only": True}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        try:
            tok_src = Path(tokenizer) if tokenizer else self.folder
            tok_kw = kw if tokenizer is None else {"local_files_only": True}
            self.tokenizer = AutoTokenizer.from_pretrained(str(tok_src), **tok_kw)
            self.model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=self.dtype, **kw)
        except (OSError, ValueError) as e:
            where = self.folder / gguf_file if gguf_file else self.folder
            raise ModelError(f"cannot load model from {where}: {e}") from e
        self.model.to(self.device)
        self.model.eval()
        tok = self.tokenizer
        tok.padding_side = "left"
        if chat_template:
            tok.chat_template = chat_template
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self.eos_ids = self._stop_token_ids()
        # Does the tokenizer add BOS by itself?  Then raw prompts get one unless they already start with it
        # (a chat template usually writes BOS itself; a second one derails the model).
        probe = tok("a").input_ids
        self._adds_bos = tok.bos_token_id is not None and bool(probe) and probe[0] == tok.bos_token_id
        self._token_text: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"TransformersLLM({self.name!r}, device={self.device}, dtype={self.dtype})"

    # -- protocol -------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        if not prompts:
            return []
        ids = self.encode_batch(prompts)
        seeds = sampling.seeds(len(ids))
        order = self._batch_order(ids)
        out: list[list[Generation] | None] = [None] * len(ids)
        with model_call(self, len(ids)) as call:  # progress inside a stage's batch, and token counts
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                gens = self._generate_batch([ids[i] for i in chunk], sampling, [seeds[i] for i in chunk],
                                            ended=call.ended if call.watched else None)
                for i, row in zip(chunk, gens, strict=True):
                    out[i] = row
                call.done(len(chunk), tokens_in=sum(len(ids[i]) for i in chunk),
                          tokens_out=sum(g.tokens for row in gens for g in row))
        return out  # type: ignore[return-value]

    # -- helpers --------------------------------------------------------------------------------------
    def _batch_order(self, ids: list[list[int]]) -> list[int]:
        """Row order for batching: by prompt length when that saves real padding, else input order.

        A batch costs (rows x longest prompt) to prefill and (rows x longest *generation*) to decode.
        Sorting removes prompt padding, but prompt length says nothing about generation length, so when
        prompts are of similar length sorting saves little and only reshuffles which generations share a
        batch.  Sort only when it cuts the padded prompt tokens by at least 10%.
        """
        order = list(range(len(ids)))
        by_len = sorted(order, key=lambda i: len(ids[i]))

        def padded(o: list[int]) -> int:
            b = self.batch_size
            return sum(max(len(ids[i]) for i in o[s : s + b]) * len(o[s : s + b]) for s in range(0, len(o), b))

        return by_len if padded(by_len) < 0.9 * padded(order) else order

    def encode_batch(self, prompts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many prompts in one call of the (Rust) tokenizer."""
        tok = self.tokenizer
        out = tok(list(prompts), add_special_tokens=False).input_ids
        if self._adds_bos:
            bos = tok.bos_token_id
            out = [x if x and x[0] == bos else [bos, *x] for x in out]
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts (for budgets and the manifest's token totals)."""
        return [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]

    def _stop_token_ids(self) -> list[int]:
        tok = self.tokenizer
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        vocab = tok.get_vocab()
        special = set(getattr(tok, "all_special_tokens", []) or []) | set(getattr(tok, "added_tokens_encoder", {}))
        for t in END_OF_TURN_TOKENS:
            if t in vocab and t in special:
                ids.add(vocab[t])
        return sorted(ids)

    def _text(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._token_text[token_id] = text
        return text

    def _generate_batch(self, batch: list[list[int]], sampling: Sampling, seeds: list[int | None],
                        ended: Callable[[int], None] | None = None) -> list[list[Generation]]:
        """One padded ``generate`` call; ``ended(k)`` after each step with the rows that have ended so far."""
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self.tokenizer
        pad = tok.pad_token_id
        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, x in enumerate(batch):
            if x:
                input_ids[r, width - len(x) :] = torch.tensor(x, dtype=torch.long)
                mask[r, width - len(x) :] = 1
        greedy = sampling.temperature <= 0
        n_model = 1 if greedy else max(1, sampling.n)  # greedy: n copies of one decode
        if n_model > 1:  # row r's samples are rows r*n .. r*n+n-1, as num_return_sequences would lay them out
            input_ids, mask = input_ids.repeat_interleave(n_model, dim=0), mask.repeat_interleave(n_model, dim=0)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        steps = max(1, sampling.max_tokens)
        # Greedy over the processors' scores: sampling, when asked, is _RowSampler's one-hot choice.
        cfg = GenerationConfig(max_new_tokens=steps, do_sample=False, num_return_sequences=1,
                               eos_token_id=self.eos_ids, pad_token_id=pad, bos_token_id=tok.bos_token_id)
        processors = LogitsProcessorList()
        capture = None
        if sampling.logprobs:
            capture = _TopKCapture(int(sampling.logprobs))
            processors.append(capture)  # before the sampler: it records the model's own distribution
        if not greedy:
            uniforms = torch.stack([
                _row_uniforms(torch, _sample_seed(seed, j), steps) for seed in seeds for j in range(n_model)
            ]).to(self.device)
            processors.append(_RowSampler(uniforms, float(sampling.temperature), float(sampling.top_p), width))
        criteria = StoppingCriteriaList()
        stop = tuple(s for s in sampling.stop if s)
        stopper = _StopStrings(tok, stop, width) if stop else None
        if stopper is not None:
            criteria.append(stopper)
        if ended is not None:
            criteria.append(_RowsEnded(self.eos_ids, n_model, ended))
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=cfg,
                logits_processor=processors,
                stopping_criteria=criteria,
            )
        gen = seqs[:, width:].tolist()
        eos = set(self.eos_ids)
        results: list[list[Generation]] = []
        for r in range(len(batch)):
            row_gens: list[Generation] = []
            for j in range(n_model):
                k = r * n_model + j
                toks = gen[k]
                # Generated length: up to and including the first EOS; padding after it is not generated.
                length, ended = len(toks), False
                for p, t in enumerate(toks):
                    if t in eos:
                        length, ended = p + 1, True
                        break
                stopped_at = stopper.stopped_at[k] if stopper is not None and stopper.stopped_at else None
                if stopped_at is not None and stopped_at <= length:
                    # Ended by a stop string; what follows is padding (which may be the EOS id itself).
                    length, ended = stopped_at, False
                elif not ended:
                    length = _strip_pad(toks, pad, length)
                body = toks[: length - 1] if ended else toks[:length]
                text, hit = cut_at_stop(tok.decode(body, skip_special_tokens=True), stop)
                finish = "stop" if (ended or hit) else ("length" if length >= cfg.max_new_tokens else "stop")
                lps = capture.row(k, length, self._text) if capture is not None else None
                row_gens.append(Generation(text=text, tokens=length, finish_reason=finish, logprobs=lps,
                                           prompt_tokens=len(batch[r])))
            if greedy and sampling.n > 1:
                row_gens = [
                    Generation(g.text, g.tokens, g.finish_reason, g.logprobs, g.prompt_tokens)
                    for g in row_gens * sampling.n
                ]
            results.append(row_gens)
        return results


def _sample_seed(seed: int | None, j: int) -> int:
    """Seed of sample ``j`` of a row (``None``: a fresh random one); sample 0 uses the row's seed itself."""
    if seed is None:
        return secrets.randbits(63)
    return seed if j == 0 else xxhash.xxh3_64_intdigest(f"{seed}:{j}".encode()) >> 1


def _row_uniforms(torch: Any, seed: int, steps: int) -> Any:
    """The uniforms of one row's sampled steps, drawn on the CPU from the row's own generator: the same
    numbers on every device and in every batch."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return torch.rand(steps, generator=gen, dtype=torch.float64)


class _RowSampler:
    """Logits processor that samples each row's next token with the row's own uniform of this step.

    Temperature, then the top-p nucleus (the smallest set of likeliest tokens whose mass reaches ``top_p``,
    ties in stable order), then inverse CDF: the first token whose cumulative probability exceeds ``u`` times
    the nucleus mass.  Every operation works along a row, so a row's choice depends only on its own scores
    and its own uniforms.  Returns one-hot scores (0 for the choice, -inf elsewhere) for ``generate``'s
    greedy step.
    """

    def __init__(self, uniforms: Any, temperature: float, top_p: float, prompt_width: int) -> None:
        self.uniforms = uniforms
        self.temperature = temperature
        self.top_p = top_p
        self.width = prompt_width

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = min(input_ids.shape[1] - self.width, self.uniforms.shape[1] - 1)
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            probs = probs.double()
            cum = probs.cumsum(-1)
            kept = ((cum - probs) < self.top_p).sum(-1, keepdim=True)  # a prefix, at least one token
        else:
            order, cum = None, probs.double().cumsum(-1)
            kept = torch.full_like(cum[:, :1], cum.shape[1], dtype=torch.long)
        mass = cum.gather(-1, kept - 1)
        target = self.uniforms[:, step : step + 1] * mass
        pos = torch.searchsorted(cum, target, right=True).clamp_(max=kept - 1)
        token = order.gather(-1, pos) if order is not None else pos
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)


def _strip_pad(toks: list[int], pad: int, length: int) -> int:
    """Length without trailing pad tokens (rows that stopped early are padded to the batch's length)."""
    while length > 0 and toks[length - 1] == pad:
        length -= 1
    return length


class _TopKCapture:
    """Logits processor that records the top-k log-probabilities of the raw logits at each step.

    transformers runs caller-given processors before its temperature/top-p warpers, so it sees the model's
    own distribution (tests/test_llm_transformers.py checks this); it returns the scores unchanged.  Only
    ``k`` values per row and step are kept, never the vocabulary.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.steps: list[tuple[Any, Any]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        lp = torch.log_softmax(scores.float(), dim=-1)
        vals, idx = torch.topk(lp, self.k, dim=-1)
        self.steps.append((vals.cpu(), idx.cpu()))
        return scores

    def row(self, r: int, length: int, text: Any) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        for vals, idx in self.steps[:length]:
            d: dict[str, float] = {}
            for v, i in zip(vals[r].tolist(), idx[r].tolist(), strict=True):
                t = text(i)
                if t not in d:  # two ids can decode to the same text: keep the likelier
                    d[t] = float(v)
            out.append(d)
        return out


class _RowsEnded:
    """A stopping criterion that never stops: after each step it reports how many rows have ended (EOS), so a
    long micro-batch shows progress before it returns (curate.progress).  Added only while someone watches."""

    def __init__(self, eos_ids: list[int], per_row: int, report: Callable[[int], None]) -> None:
        self.eos, self.per_row, self.report = eos_ids, per_row, report
        self.finished: Any = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1]
        ended = torch.isin(last, torch.tensor(self.eos, device=last.device))
        self.finished = ended if self.finished is None else (self.finished | ended)
        self.report(int(self.finished.sum()) // self.per_row)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _StopStrings:
    """Stopping criterion: a row is done once its generated text contains a stop string.

    Decodes only the last few tokens of each unfinished row per step (enough to hold the longest stop
    string), so the cost per step does not grow with the generated length.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], prompt_width: int) -> None:
        self.tok = tokenizer
        self.stop = stop
        self.width = prompt_width
        self.tail = max(len(s) for s in stop) + 4
        self.done: list[bool] | None = None
        #: Per row, the generated length at which a stop string appeared (None: never).
        self.stopped_at: list[int | None] = []

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids.shape[0]
        if self.done is None:
            self.done = [False] * rows
            self.stopped_at = [None] * rows
        gen = input_ids[:, self.width :]
        start = max(0, gen.shape[1] - self.tail)
        tails = gen[:, start:].tolist()
        for r in range(rows):
            if not self.done[r]:
                text = self.tok.decode(tails[r], skip_special_tokens=True)
                if any(s in text for s in self.stop):
                    self.done[r] = True
                    self.stopped_at[r] = gen.shape[1]
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _pick_device(device: str, torch: Any) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"unknown device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this torch build sees no CUDA GPU")
    return dev


def _pick_dtype(dtype: str, device: Any, torch: Any) -> Any:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelError(f"unknown dtype {dtype!r} (one of: auto, {', '.join(table)})")
    return table[dtype]
