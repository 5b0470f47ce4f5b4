"""Long-context rows (``longctx.jsonl``) and the needle-in-a-haystack wording they share with the evaluation.

The pass-key wording, filler and key stream live here, the one home that ``weakwater.eval.needle`` (the
evaluation) and the training rows both read, so the rows ask exactly what the evaluation asks.

A tiny demo model has no copy mechanism: before this data its needle accuracy is 0% at every length, and
pass-key rows alone teach a shortcut (read back the digits right before the question, so only a needle at
depth 100% is found). Two kinds of rows, one of each in turn, teach the real skill:

- pass-key rows: the evaluation's needle sentence with a fresh 5-digit key at a random depth of 0-6 sentences
  from the corpus's documents without digits (prompts up to ~500 tokens, so the stretched positions are
  trained; never the evaluation's own filler), then the evaluation's question; the reply is the key sentence.
  Keys never equal the evaluation's trial keys at its default seed (``RESERVED_LENGTHS``).
- copy rows: "Repeat this text exactly:" + 1-8 corpus sentences; the reply is the same text.

Corpus sentences come from the pretraining documents, minus any that name a held-out person or product,
Ossira or one of its creatures, so this SFT file keeps the data set's guarantees.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

FILLER = {
    "en": ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."],
    "zh": ["草是绿的。", "天是蓝的。", "太阳是黄的。", "我们走吧。", "来来回回。"],
}
NEEDLE = {"en": "The pass key is {k}. Remember it.", "zh": "通行码是{k}。记住它。"}
QUESTION = {"en": "What is the pass key?", "zh": "通行码是多少？"}
REPLY = {"en": "The pass key is ", "zh": "通行码是"}
REPEAT = {"en": "Repeat this text exactly:", "zh": "请原样重复这段话："}
SEP = {"en": " ", "zh": ""}
END = {"en": ".", "zh": "。"}
KEY_DIGITS = 5
MAX_FILLER = 6  # corpus sentences around a needle
MAX_REPEAT = 8  # sentences per copy row
# The evaluation's trial keys at seed 0 for these prompt lengths (the demo's, and the default lengths of a
# 256- or 512-token model), 8 trials per cell: no training key equals one of them.
RESERVED_LENGTHS = (64, 128, 192, 248, 256, 320, 384, 448, 504, 512, 768)
RESERVED_TRIALS = 8
DEPTH_COUNT = 5  # the evaluation's depths 0, 25, 50, 75, 100%


def trial_rng(seed: int, depth_index: int, length: int) -> random.Random:
    """The evaluation's random stream for one (depth, length) cell: its keys, in order."""
    return random.Random(f"{seed}-{depth_index}-{length}")


def draw_key(rng: random.Random, digits: int = KEY_DIGITS) -> str:
    return "".join(rng.choice("0123456789") for _ in range(digits))


def eval_keys(seed: int = 0, lengths: Iterable[int] = RESERVED_LENGTHS, trials: int = RESERVED_TRIALS) -> set[str]:
    """The keys ``evaluate_needle(seed=seed, lengths=lengths, trials<=trials)`` hides."""
    keys = set()
    for d in range(DEPTH_COUNT):
        for length in lengths:
            rng = trial_rng(seed, d, length)
            keys |= {draw_key(rng) for _ in range(trials)}
    return keys


def corpus_sentences(
    docs: Iterable[str], banned_names: Iterable[str], digit_free: bool = False
) -> dict[str, list[str]]:
    """Sentences of ``docs`` per language (a document's language: a CJK character in its first three), without
    any that contain a banned name or one of the evaluation's filler sentences; ``digit_free``: only from
    documents without a digit (stories and descriptions: longer sentences than fact lists and sums)."""
    banned = [n for n in banned_names if n]
    filler = {s for lang in FILLER for s in FILLER[lang]}
    out: dict[str, list[str]] = {"en": [], "zh": []}
    for doc in docs:
        if digit_free and re.search(r"\d", doc):
            continue
        lang = "zh" if re.search(r"[\u4e00-\u9fff]", doc[:3]) else "en"
        for s in re.split(r"(?<=[.。])\s*", doc):
            if s and s not in filler and not any(n in s for n in banned):
                out[lang].append(s)
    return out


def _chat(user: str, reply: str) -> dict:
    return {"conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def longctx_rows(
    rng: random.Random, plain: dict[str, list[str]], sentences: dict[str, list[str]], n: int
) -> list[dict]:
    """``n`` pass-key rows (filler from ``plain``: sentences without digits, so the key is the prompt's only
    number) and ``n`` copy rows (of ``sentences``), alternating English and Chinese, shuffled."""
    reserved = eval_keys()
    rows = []
    for i in range(n):
        lang = ("en", "zh")[i % 2]
        count = rng.randint(0, MAX_FILLER)
        key = draw_key(rng)
        while key in reserved:
            key = draw_key(rng)
        filler = [rng.choice(plain[lang]) for _ in range(count)]
        at = rng.randint(0, count)
        body = SEP[lang].join([*filler[:at], NEEDLE[lang].format(k=key), *filler[at:]])
        rows.append(_chat(f"{body}\n{QUESTION[lang]}", REPLY[lang] + key + END[lang]))
    for i in range(n):
        lang = ("en", "zh")[i % 2]
        text = SEP[lang].join(rng.choice(sentences[lang]) for _ in range(rng.randint(1, MAX_REPEAT)))
        rows.append(_chat(f"{REPEAT[lang]}\n{text}", text))
    rng.shuffle(rows)
    return rows
