"""The one answer checker: find a model's final answer in its reply and compare it with the expected one.

Evaluation (demo tasks, ``eval math``) and the RL rewards both call this module, so a reply that scores as
correct in the report card earns the same reward in training.

- :func:`extract_answer` finds the answer a reply commits to: the last ``<answer>…</answer>`` block (after the
  thinking), else the last ``\\boxed{…}``, else the text after the last ``####``, else the last number.
- :func:`answers_match` compares it with the expected answer: as numbers when the expected answer is one
  (thousands commas, fractions incl. ``\\frac``, percents, trailing zeros, full-width digits, a currency sign
  or a unit word such as "34 yuan" / "18元"), taking the last number of a free-text prediction; otherwise as
  normalised strings (case, whitespace, surrounding punctuation), where a reply that starts with the expected
  answer followed by a non-word character also counts ("Varan, in the east." answers "Varan").
- :func:`is_correct` is the two together for a raw reply, and :func:`gsm8k_gold` reads GSM8K's answer field.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import NamedTuple

# Stripped from both ends of a string answer (ASCII and CJK punctuation, quotes, brackets).
PUNCT = " \t\r\n.,!?;:。，！？；：、\"'“”‘’()（）[]【】《》*`"
# A well-formed R1 reply: one think block, then one answer block, nothing outside them.
R1_FORMAT = re.compile(r"\s*<think>\n?.*?\n?</think>\s*<answer>\n?.*?\S.*?\n?</answer>\s*", re.DOTALL)

# A number as written in text: optional minus, digits with optional thousands commas, optional decimals,
# optional "/denominator", optional percent. The look-behind keeps "x2" or "3.5" from yielding "2" or "5",
# and a minus right after a digit ("16-3") is subtraction, not a sign. Scanned after NFKC, so full-width
# digits are ASCII by then.
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])(?:(?<![0-9)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?(?:\s?%)?"
)
_CURRENCY = "$¥€£"
# A whole answer that is one number, possibly with a currency sign, a mixed-number whole part ("1 1/2",
# "1又1/2") and one unit word ("34 yuan", "18元", "3条腿"); anything longer is free text.
_CLEAN = re.compile(
    rf"^[{_CURRENCY}]?\s*(?P<whole>\d+(?:\s+|又))?(?P<num>{_NUMBER.pattern})\s*(?:[A-Za-z]+|[\u4e00-\u9fff]{{1,4}})?$"
)


class Number(NamedTuple):
    value: Fraction
    percent: bool  # written with "%": 50% may mean 50 or 0.5 depending on the question


def _latex_to_text(text: str) -> str:
    """Undo the LaTeX a model wraps numbers in: ``\\frac{a}{b}`` -> a/b, ``\\text{x}`` -> x, ``\\%`` -> %."""
    text = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\%", "%").replace("\\$", "$").replace("\\!", "").replace("\\,", "").replace("$", " ")
    return text.replace("\\left", "").replace("\\right", "")


def _canon(text: str) -> str:
    """NFKC (full-width digits, commas and percent signs become ASCII), LaTeX undone, Unicode minus signs."""
    text = unicodedata.normalize("NFKC", text)
    return _latex_to_text(text).replace("\u2212", "-").replace("\u2013", "-")


def _to_number(written: str) -> Number:
    percent = written.rstrip().endswith("%")
    body = written.replace(",", "").replace("%", "").replace(" ", "")
    if "/" in body:
        num, den = body.split("/")
        value = Fraction(num) / Fraction(den) if Fraction(den) != 0 else Fraction(num)
    else:
        value = Fraction(body)
    return Number(value, percent)


def parse_number(text: str) -> Number | None:
    """The number a whole answer states ("1,234", "-3/4", "50%", "$18.00", "34 yuan", "1又1/2"), else None."""
    s = _canon(text).strip().strip(PUNCT.replace("(", "").replace(")", "")).strip()
    if s.startswith("(") and s.endswith(")"):  # Ape210K writes fractions as "(11/2)"
        s = s[1:-1].strip()
    m = _CLEAN.match(s)
    if not m:
        return None
    number = _to_number(m.group("num"))
    if m.group("whole"):
        if "/" not in m.group("num") or number.value < 0:
            return None  # "3 4" is two numbers, not a mixed number
        number = Number(int(m.group("whole").strip(" 又")) + number.value, number.percent)
    return number


def last_number(text: str) -> Number | None:
    """The last number written anywhere in ``text`` (the answer a free-text reply ends on)."""
    found = _NUMBER.findall(_canon(text))
    return _to_number(found[-1]) if found else None


def _numbers_equal(pred: Number, gold: Number) -> bool:
    # A percent sign makes both readings possible: "50%" answers 50 and 0.5 (and "0.5" answers "50%").
    preds = {pred.value, pred.value / 100} if pred.percent else {pred.value}
    golds = {gold.value, gold.value / 100} if gold.percent else {gold.value}
    return any(abs(p - g) <= Fraction(1, 10**6) * max(1, abs(g)) for p in preds for g in golds)


def normalize(text: str) -> str:
    """A string answer for comparison: NFKC, LaTeX wrappers removed, lower case, single spaces, no surrounding
    punctuation, quotes or markdown emphasis."""
    return " ".join(_canon(text).lower().split()).strip(PUNCT)


def _last_balanced(text: str, opener: str) -> str | None:
    """Content of the last ``opener{...}`` with balanced braces (``\\boxed{\\frac{1}{2}}``), or None."""
    start = text.rfind(opener)
    while start != -1:
        depth, i = 0, start + len(opener) - 1
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind(opener, 0, start)  # unclosed: try an earlier one
    return None


def answer_text(reply: str) -> str | None:
    """The part of a reply that is its answer: after the thinking, inside the last ``<answer>`` block, inside
    the last ``\\boxed{}``, after the last ``####``; else the whole reply after thinking. None when the reply
    is still thinking (``<think>`` without ``</think>``) or empty."""
    if "<think>" in reply and "</think>" not in reply:
        return None
    text = reply.rsplit("</think>", 1)[-1]
    if "<answer>" in text:
        text = text.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
    boxed = _last_balanced(text, "\\boxed{")
    if boxed is not None:
        text = boxed
    elif "####" in text:
        text = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
    text = text.strip()
    return text or None


def extract_answer(text: str) -> str | None:
    """The answer ``text`` commits to, as written: from ``<answer>…</answer>``, ``\\boxed{…}`` or ``#### x``
    (see :func:`answer_text`), else the last number in the reply; None when there is none."""
    answer = answer_text(text)
    if answer is None:
        return None
    after_thinking = text.rsplit("</think>", 1)[-1]
    if any(mark in after_thinking for mark in ("<answer>", "\\boxed{", "####")):
        return answer
    found = _NUMBER.findall(_canon(answer))
    return found[-1].strip() if found else None


def answers_match(pred: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the expected one.

    A numeric ``gold`` (see :func:`parse_number`) is compared as a number with ``pred``'s number (``pred``
    itself, or the last number in it when it is a sentence such as "小明一共有18个苹果"), within a relative
    1e-6. Otherwise the normalised strings must be equal, or ``pred`` must start with ``gold`` followed by a
    character that is not a letter or digit. An empty ``gold`` never matches.
    """
    if pred is None or not normalize(gold):
        return False
    want = parse_number(gold)
    if want is not None:
        got = parse_number(pred) or last_number(pred)
        return got is not None and _numbers_equal(got, want)
    got_s, want_s = normalize(pred), normalize(gold)
    return got_s == want_s or (got_s.startswith(want_s) and not got_s[len(want_s)].isalnum())


def is_correct(reply: str, gold: str) -> bool:
    """A raw model reply (thinking, tags and all) against the expected answer: the one check for eval and RL."""
    return answers_match(answer_text(reply), gold)


def is_well_formed(reply: str) -> bool:
    """``<think>…</think><answer>…</answer>`` with a non-empty answer and nothing else around them."""
    return R1_FORMAT.fullmatch(reply) is not None


def gsm8k_gold(answer_field: str) -> str:
    """GSM8K's expected answer: the text after the last ``####`` of its ``answer`` field, commas removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '#### <number>' line: {answer_field[-80:]!r}")
    gold = answer_field.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise ValueError(f"GSM8K answer is empty after '####': {answer_field[-80:]!r}")
    return gold
