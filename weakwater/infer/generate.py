"""KV-cache text generation: batched prefill, then one cached step per new token.

``BatchDecoder`` is the engine: it left-pads prompts of different lengths into one batch,
prefills the cache once, and then feeds only the newest token of each sequence. Finished or
cancelled sequences are dropped from the batch (and the cache) right away, so they cost nothing
afterwards. ``Generator`` wraps it in the simple API the rest of the project uses, and the server's
scheduler drives it step by step to stream tokens to many clients at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from weakwater.infer.fast import FastDecoder, supports_fast_path
from weakwater.infer.sampling import SamplingParams, apply_repetition_penalty, sample_row
from weakwater.model.llama import KVCache, Transformer
from weakwater.tokenizer.tokenizer import ChatTokenizer


def end_token_ids(tokenizer: ChatTokenizer) -> tuple[int, ...]:
    """Tokens that end a reply, in chat and raw mode alike: every special token of the tokenizer except
    the tags a reply may contain (:data:`~weakwater.tokenizer.tokenizer.REPLY_TAGS`: think/answer,
    tool calls). ``<|im_end|>`` ends a turn and ``<|endoftext|>`` a document, but a small model also
    emits ``<|im_start|>`` (it would go on to write the user's next turn) or MiniMind-3's vision and
    buffer tokens; none of them is ever part of an answer. Tokenizers that do not list their special
    tokens fall back to ``<|im_end|>`` and ``<|endoftext|>``.
    """
    from weakwater.tokenizer.tokenizer import REPLY_TAGS

    listed = getattr(tokenizer, "special_ids", None)
    specials = [i for t, i in listed().items() if t not in REPLY_TAGS] if listed is not None else []
    fallback = (getattr(tokenizer, "im_end_id", None), getattr(tokenizer, "eos_id", None))
    return tuple(dict.fromkeys(i for i in (*fallback, *specials) if i is not None))


@dataclass
class _Row:
    """Book-keeping for one sequence of a batch."""

    index: int
    params: SamplingParams
    limit: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass(frozen=True)
class StepEvent:
    """What happened to one sequence in one step: a new token, a finish, or both."""

    index: int
    token: int | None
    finish_reason: str | None


class BatchDecoder:
    """Decode several prompts together, one token per sequence per ``step()``.

    Prompts are left-padded to a common length; the attention mask hides the padding and each
    row gets its own position ids, so every sequence produces exactly what it would alone.
    A sequence may generate ``min(max_new_tokens, max_seq_len - len(prompt))`` tokens.
    """

    def __init__(
        self,
        model: Transformer,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        decode: Callable[[list[int]], str] | None = None,
        forward: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        if len(prompts) != len(params) or not prompts:
            raise ValueError("need one SamplingParams per prompt and at least one prompt")
        config = model.config
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; generation needs at least one token")
            if len(p) >= config.max_seq_len:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens; the model's context is {config.max_seq_len} "
                    "and at least one position must remain for the answer"
                )
            if max(p) >= config.vocab_size or min(p) < 0:
                raise ValueError(f"prompt {i} has token ids outside the vocabulary (0..{config.vocab_size - 1})")
        if decode is None and any(sp.stop for sp in params):
            raise ValueError("stop strings need a tokenizer to decode the generated text")
        self.model = model
        # ``forward`` may be a faster inference-only equivalent of the model (see fast.py).
        self.forward = forward or model
        self.decode = decode
        device = next(model.parameters()).device
        self.device = device
        self.rows = [
            _Row(i, sp, min(sp.max_new_tokens, config.max_seq_len - len(p)), sp.make_generator(device))
            for i, (p, sp) in enumerate(zip(prompts, params))
        ]
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        capacity = width + max(r.limit for r in self.rows)
        dtype = next(model.parameters()).dtype
        self.cache = KVCache(config, len(prompts), capacity, device, dtype)
        self.padded = min(lengths) != width
        ids = torch.full((len(prompts), width), 0, dtype=torch.long)
        # The mask covers the whole cache up front (model slices it), so steps allocate nothing.
        self.mask = torch.ones((len(prompts), capacity), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            self.mask[i, : width - len(p)] = 0
        self.mask = self.mask.to(device)
        self.next_pos = torch.tensor(lengths, dtype=torch.long, device=device)[:, None]
        penalties = [sp.repetition_penalty for sp in params]
        self.penalty: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        if any(p != 1.0 for p in penalties):
            self.penalty = torch.tensor(penalties, dtype=torch.float32, device=device)[:, None]
            self.seen = torch.zeros((len(prompts), config.vocab_size), dtype=torch.bool, device=device)
            for i, p in enumerate(prompts):
                self.seen[i, list(p)] = True
        self.all_greedy = all(sp.greedy for sp in params)
        with torch.inference_mode():
            ids = ids.to(device)
            if self.padded:
                positions = (self.mask[:, :width].cumsum(-1) - 1).clamp(min=0)
                logits = self.forward(ids, attention_mask=self.mask, position_ids=positions, kv_cache=self.cache)
            else:
                logits = self.forward(ids, kv_cache=self.cache)
        self.logits = logits[:, -1].float()
        self.pending: list[StepEvent] = []
        self.finished: list[_Row] = []
        self.next_index = len(self.rows)
        for r in self.rows:
            if r.limit <= 0:
                self._finish(r, "length")
        self._compact()

    @property
    def done(self) -> bool:
        """No live sequences and no unreported events."""
        return not self.rows and not self.pending

    def cancel(self, index: int) -> None:
        """Stop sequence ``index`` (e.g. its client went away); it leaves the batch next step."""
        for r in self.rows:
            if r.index == index and r.finish_reason is None:
                r.finish_reason = "cancelled"

    def _finish(self, row: _Row, reason: str) -> None:
        row.finish_reason = reason
        self.pending.append(StepEvent(row.index, None, reason))

    def _hit_stop_string(self, row: _Row) -> bool:
        """Whether the newest token completed a stop string (only the text's tail can match)."""
        if not row.params.stop or self.decode is None:
            return False
        window = max(len(s.encode()) for s in row.params.stop) + 2  # a token is at least one byte
        tail = self.decode(row.tokens[-window:])
        return any(s in tail for s in row.params.stop)

    def _compact(self) -> None:
        """Drop finished rows from every per-row tensor so later steps only compute live ones,
        then drop cache columns that are padding for every remaining row."""
        keep = [i for i, r in enumerate(self.rows) if r.finish_reason is None]
        if len(keep) == len(self.rows):
            return
        self.finished += [r for r in self.rows if r.finish_reason is not None]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        idx = torch.tensor(keep, device=self.device)
        first = int(self.mask.index_select(0, idx)[:, : self.cache.length].argmax(dim=1).min())
        cols = slice(first, None)
        self.cache.k = self.cache.k.index_select(1, idx)[:, :, :, cols]
        self.cache.v = self.cache.v.index_select(1, idx)[:, :, :, cols]
        self.cache.length -= first
        self.cache.max_len -= first
        self.mask = self.mask.index_select(0, idx)[:, cols]
        self.padded = bool((self.mask[:, : self.cache.length] == 0).any())
        self.next_pos = self.next_pos.index_select(0, idx)
        self.logits = self.logits.index_select(0, idx)
        if self.seen is not None and self.penalty is not None:
            self.seen = self.seen.index_select(0, idx)
            self.penalty = self.penalty.index_select(0, idx)

    def merge(self, other: BatchDecoder) -> list[int]:
        """Add the (prefilled) sequences of ``other`` to this batch, so requests that arrive while
        a batch is running join it instead of waiting for it to finish. Both caches are aligned
        at their right edge; the shorter side is padded on the left (masked out).

        Returns the indices the joining sequences have in this batch, in ``other``'s order.
        """
        offset = self.next_index
        for r in other.rows + other.finished:
            r.index += offset
        self.pending += [StepEvent(e.index + offset, e.token, e.finish_reason) for e in other.pending]
        self.finished += other.finished
        self.next_index += other.next_index
        new_indices = [offset + i for i in range(other.next_index)]
        if not other.rows:
            return new_indices
        if not self.rows:
            self.rows, self.cache, self.mask, self.next_pos = other.rows, other.cache, other.mask, other.next_pos
            self.logits, self.seen, self.penalty = other.logits, other.seen, other.penalty
            self.padded, self.all_greedy = other.padded, other.all_greedy
            return new_indices
        a, b = self.cache, other.cache
        na, nb = len(self.rows), len(other.rows)
        width = max(a.length, b.length)
        rows = self.rows + other.rows
        capacity = width + max(r.limit - len(r.tokens) for r in rows)
        cache = KVCache(self.model.config, na + nb, capacity, self.device, a.k.dtype)
        cache.k[:, :na, :, width - a.length : width] = a.k[:, :, :, : a.length]
        cache.v[:, :na, :, width - a.length : width] = a.v[:, :, :, : a.length]
        cache.k[:, na:, :, width - b.length : width] = b.k[:, :, :, : b.length]
        cache.v[:, na:, :, width - b.length : width] = b.v[:, :, :, : b.length]
        cache.length = width
        mask = torch.ones((na + nb, capacity), dtype=torch.long, device=self.device)
        mask[:na, :width] = 0
        mask[na:, :width] = 0
        mask[:na, width - a.length : width] = self.mask[:, : a.length]
        mask[na:, width - b.length : width] = other.mask[:, : b.length]
        self.cache, self.mask, self.rows = cache, mask, rows
        self.next_pos = torch.cat((self.next_pos, other.next_pos))
        self.logits = torch.cat((self.logits, other.logits))
        if self.seen is not None or other.seen is not None:
            vocab = self.logits.shape[-1]
            sides = [(self, na), (other, nb)]
            self.seen = torch.cat(
                [
                    d.seen if d.seen is not None else torch.zeros((n, vocab), dtype=torch.bool, device=self.device)
                    for d, n in sides
                ]
            )
            self.penalty = torch.cat(
                [d.penalty if d.penalty is not None else torch.ones((n, 1), device=self.device) for d, n in sides]
            )
        self.padded = bool((mask[:, :width] == 0).any())
        self.all_greedy = self.all_greedy and other.all_greedy
        return new_indices

    def _choose(self) -> list[int]:
        logits = self.logits
        if self.seen is not None and self.penalty is not None:
            logits = apply_repetition_penalty(logits, self.seen, self.penalty)
        if self.all_greedy:
            return logits.argmax(dim=-1).tolist()
        return [sample_row(logits[i], r.params, r.generator) for i, r in enumerate(self.rows)]

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """Pick the next token of every live sequence and run the model on them."""
        events, self.pending = self.pending, []
        self._compact()  # cancellations since the last step
        if not self.rows:
            return events
        for r, tok in zip(self.rows, self._choose()):
            if tok in r.params.stop_token_ids:
                events.append(StepEvent(r.index, None, "stop"))
                r.finish_reason = "stop"
                continue
            r.tokens.append(tok)
            reason = "stop" if self._hit_stop_string(r) else "length" if len(r.tokens) >= r.limit else None
            r.finish_reason = reason
            events.append(StepEvent(r.index, tok, reason))
        new_tokens = torch.tensor([r.tokens[-1] if r.tokens else 0 for r in self.rows], device=self.device)
        keep_mask = [r.finish_reason is None for r in self.rows]
        self._compact()
        if not self.rows:
            return events
        if not all(keep_mask):
            new_tokens = new_tokens[torch.tensor(keep_mask, device=self.device)]
        if self.seen is not None:
            self.seen.scatter_(1, new_tokens[:, None], True)
        ids = new_tokens[:, None]
        if self.padded:
            logits = self.forward(ids, attention_mask=self.mask, position_ids=self.next_pos, kv_cache=self.cache)
        else:
            logits = self.forward(ids, kv_cache=self.cache)
        self.next_pos += 1
        self.logits = logits[:, -1].float()
        return events


class TextStream:
    """Turns a growing token list into safe text deltas.

    Holds back text while a UTF-8 character is incomplete (byte-level tokens can split one) and
    while the text ends with a prefix of a stop string; cuts the text before a stop string.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.emitted = 0
        self.stopped = False

    def _text(self) -> str:
        text = self.decode(self.tokens)
        for s in self.stop:
            at = text.find(s)
            if at >= 0:
                self.stopped = True
                text = text[:at]
        return text

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.tokens.append(token)
        text = self._text()
        if self.stopped:
            return self._emit(text, len(text))
        safe = len(text.rstrip("\ufffd"))
        for s in self.stop:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        return self._emit(text, safe)

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        text = self._text()
        return self._emit(text, len(text))

    def _emit(self, text: str, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = text[self.emitted : end], end
        return delta


class Generator:
    """Generation API on top of ``BatchDecoder``; see the module docstring.

    With ``fast=True`` (default) decoding uses ``FastDecoder``, which keeps fused copies of the
    projection weights; they are rebuilt automatically when the model's weights are modified
    in place (e.g. by more training steps between generations). ``weights="int8"`` makes those
    copies int8 (CPU only, see fast.py): 3-4x faster for 26m-size models, logits ~2% off.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: ChatTokenizer | None = None,
        device: str | torch.device = "cpu",
        fast: bool = True,
        weights: str = "fp32",
    ) -> None:
        if weights != "fp32" and not (fast and supports_fast_path(model)):
            raise ValueError(f"{weights} weights need the fast decoder (merge LoRA adapters first)")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.fast = fast and supports_fast_path(model)
        self.weights = weights
        self._fast: tuple[int, FastDecoder] | None = None
        if self.fast:
            self._forward()  # build now, so a bad ``weights`` choice fails here and not mid-request

    def _forward(self) -> Callable[..., torch.Tensor]:
        if not self.fast:
            return self.model
        version = sum(p._version for p in self.model.parameters())
        if self._fast is None or self._fast[0] != version:
            self._fast = (version, FastDecoder(self.model, self.weights))
        return self._fast[1]

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def _decode_fn(self) -> Callable[[list[int]], str] | None:
        tok = self.tokenizer
        return None if tok is None else (lambda ids: tok.decode(ids, skip_special_tokens=False))

    def decoder(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> BatchDecoder:
        return BatchDecoder(self.model, prompts, params, self._decode_fn(), self._forward())

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[int]]:
        """New tokens for each prompt (stop tokens excluded), all prompts decoded in one batch."""
        per_row = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        dec = self.decoder(prompts, per_row)
        while not dec.done:
            dec.step()
        out: list[list[int]] = [[] for _ in prompts]
        for r in dec.finished:
            out[r.index] = r.tokens
        return out

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """Yield new token ids one at a time as they are produced."""
        dec = self.decoder([prompt_ids], [params])
        while not dec.done:
            for ev in dec.step():
                if ev.token is not None:
                    yield ev.token

    def stream_text(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[str]:
        """Yield text deltas; the text ends before any stop string."""
        decode = self._decode_fn()
        if decode is None:
            raise ValueError("stream_text needs a tokenizer")
        text = TextStream(decode, params.stop)
        for tok in self.stream(prompt_ids, params):
            delta = text.push(tok)
            if delta:
                yield delta
            if text.stopped:
                break
        rest = text.finish()
        if rest:
            yield rest

    def complete(self, text: str, params: SamplingParams) -> str:
        """Plain continuation of ``text`` (for pretrained models), up to the end of the document."""
        if self.tokenizer is None:
            raise ValueError("complete needs a tokenizer")
        return "".join(self.stream_text(self.tokenizer.encode(text), self.reply_params(params)))

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("chat needs a tokenizer")
        return self.tokenizer.encode(self.tokenizer.render_chat(messages, add_generation_prompt=True))

    def reply_params(self, params: SamplingParams) -> SamplingParams:
        """``params`` with the tokens that end a reply (:func:`end_token_ids`) added to its stop tokens;
        raw continuation uses the same set (``<|endoftext|>`` ends a document)."""
        assert self.tokenizer is not None
        stops = tuple(dict.fromkeys(params.stop_token_ids + end_token_ids(self.tokenizer)))
        return replace(params, stop_token_ids=stops)

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams) -> str:
        """The assistant's reply (raw text, reasoning tags included) to a conversation."""
        return "".join(self.stream_text(self.chat_prompt(messages), self.reply_params(params)))
