"""Needle in a haystack: prompt construction, teacher-forced scoring against an oracle, past-context runs."""

from __future__ import annotations

import random

import pytest
import torch

from weakwater.eval.needle import (
    NEEDLE,
    answer_ids,
    evaluate_needle,
    make_trial,
    plot_heatmaps,
    score_trials,
)
from weakwater.model.io import load_model
from weakwater.tokenizer import load_tokenizer


class Oracle(torch.nn.Module):
    """Knows the full token sequences: its argmax is the true next token, except at ``wrong`` positions."""

    def __init__(self, sequences: list[list[int]], vocab: int, wrong_last: bool = False) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.sequences, self.vocab, self.wrong_last = sequences, vocab, wrong_last

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*inputs.shape, self.vocab)
        for b, row in enumerate(inputs.tolist()):
            seq = next(s for s in self.sequences if s[: len(s) - 1] == row[: len(s) - 1])
            for t in range(len(seq) - 1):
                logits[b, t, seq[t + 1]] = 1.0
            if self.wrong_last:
                logits[b, len(seq) - 2] = 0.0
                logits[b, len(seq) - 2, (seq[-1] + 1) % self.vocab] = 1.0
        return logits


def test_trial_length_and_depth(bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    rng = random.Random(0)
    for lang in ("en", "zh"):
        for length in (250, 400, 600):  # this test tokenizer spends ~150 tokens on the bare question
            sizes = [len(answer_ids(tok, make_trial(rng, tok, length, 0.5, lang))[0]) for _ in range(3)]
            assert all(length - 40 <= n <= length + 8 for n in sizes), (lang, length, sizes)  # + the key tokens
        first, last = (make_trial(rng, tok, 300, d, lang) for d in (0.0, 1.0))
        for trial, where in ((first, "start"), (last, "end")):
            content = trial.messages[0]["content"]
            needle = NEEDLE[lang].format(k=trial.key)
            at = content.index(needle) / len(content)
            assert (at < 0.2) if where == "start" else (at > 0.7), (lang, where, at)


def test_scoring_against_an_oracle(bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    rng = random.Random(1)
    trials = [make_trial(rng, tok, n, d, lang) for n, d, lang in ((60, 0.0, "en"), (150, 0.5, "zh"), (90, 1.0, "en"))]
    sequences = [answer_ids(tok, t)[0] for t in trials]
    vocab = tok.vocab_size
    assert score_trials(Oracle(sequences, vocab), tok, trials, batch_size=2) == [True, True, True]
    # One wrong key token (the last) fails the trial: the key must be read back whole.
    assert score_trials(Oracle(sequences, vocab, wrong_last=True), tok, trials) == [False, False, False]


@pytest.mark.slow
def test_runs_past_the_context_and_plots(tmp_path, make_model_dir, bpe_tokenizer_dir):
    model = load_model(make_model_dir(tmp_path / "m", max_seq_len=64))
    tok = load_tokenizer(bpe_tokenizer_dir)
    result = evaluate_needle(model, tok, lengths=[48, 64, 128], depths=(0.0, 1.0), trials=2)
    assert result["context"] == 64 and len(result["accuracy"]) == 2 and len(result["accuracy"][0]) == 3
    assert result["within_context"] is not None and result["beyond_context"] is not None
    assert result["mean_tokens"]["128"] > 64  # prompts really ran past the model's context
    png = plot_heatmaps({"a": result, "b": result}, tmp_path / "needle.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_lengths_leave_the_full_context_prompt_room_for_its_key():
    from weakwater.eval.needle import default_lengths

    assert default_lengths(256) == [64, 128, 192, 248, 384]
