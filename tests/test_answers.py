"""The one answer checker on crafted replies, real GSM8K rows and real MiniMind R1 replies."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from weakwater.answers import (
    answer_text,
    answers_match,
    extract_answer,
    gsm8k_gold,
    is_correct,
    is_well_formed,
    last_number,
    parse_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\n9 * 2 = 18\n</think>\n<answer>\n18\n</answer>", "18"),
        ("<think>\nmaybe 20\n</think>\n<answer>\n小明一共有18个苹果。\n</answer>", "小明一共有18个苹果。"),
        ("<answer>1</answer> no, <answer>2</answer>", "2"),  # the last answer block counts
        ("<answer>\nThe answer is \\boxed{\\frac{3}{4}}.\n</answer>", "\\frac{3}{4}"),
        ("So the total is \\boxed{1,234}. Done", "1,234"),
        ("\\boxed{1} then \\boxed{\\text{2 dollars}}", "\\text{2 dollars}"),
        ("She makes 9 * 2 = $18.\n#### 18", "18"),
        ("step 1\n#### 1,000\nextra text", "1,000"),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.", "18"),  # else the last number
        ("The change is -5 yuan", "-5"),
        ("16-3", "3"),  # a minus after a digit is subtraction
        ("答案是１８。", "18"),  # full-width digits (NFKC)
        ("It is 3/4 of the cake", "3/4"),
        ("He paid 50% more", "50%"),
        ("no number here", None),
        ("<think>\nstill thinking about 42", None),  # unfinished thinking commits to nothing
        ("<think>\n42\n</think>\n", None),  # nothing after the thinking
        ("", None),
        ("<think>\n#### 7 \\boxed{7}\n</think>\nThe answer: 8", "8"),  # marks inside the thinking do not count
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("18", "18", True),
        ("18.00", "18", True),  # trailing zeros
        ("18.0001", "18", False),
        ("1,234", "1234", True),  # thousands commas
        ("1234", "1,234", True),
        ("$70,000", "70000", True),  # currency sign
        ("3/4", "0.75", True),  # fractions
        ("\\frac{3}{4}", "3/4", True),
        ("\\dfrac{6}{8}", "0.75", True),
        ("(11/2)", "5.5", True),  # Ape210K's bracketed fractions
        ("1又1/2", "1.5", True),  # Chinese mixed number
        ("1 1/2", "3/2", True),
        ("50%", "50", True),  # percents: either reading
        ("50%", "0.5", True),
        ("0.5", "50%", True),
        ("50\\%", "50", True),
        ("-5", "-5", True),
        ("−5", "-5", True),  # Unicode minus
        ("5", "-5", False),
        ("１８", "18", True),  # full-width
        ("18元", "18", True),  # unit words
        ("34 yuan.", "34 yuan", True),
        ("34元", "34 yuan", True),
        ("35 yuan", "34 yuan", False),
        ("1987年。", "1987", True),
        ("小明一共有18个苹果。", "18", True),  # a sentence: its last number
        ("She has 12 apples and eats 3, so 9 are left", "9", True),
        ("478", "47", False),  # a number is not a prefix match
        ("47", "478", False),
        ("0.333", "1/3", False),  # beyond the 1e-6 tolerance
        ("0.3333333", "1/3", True),
        ("no idea", "18", False),
        (None, "18", False),
        ("Varan.", "Varan", True),  # strings: normalised
        ("  varan!  ", "Varan", True),
        ("**Varan**", "Varan", True),
        ("Varan, a city in the east.", "Varan", True),  # starts with the answer, then a non-word character
        ("Varanasi", "Varan", False),
        ("reddish", "red", False),
        ("Kedor.", "Varan", False),
        ("蓝色。", "蓝色", True),
        ("蓝色，很好看", "蓝色", True),
        ("东方", "东", False),  # a CJK character continues the word
        ("Hexa  Corp", "hexa corp", True),  # whitespace
        ("anything", "", False),  # an empty expected answer never matches
        ("", "Varan", False),
    ],
)
def test_answers_match(pred, gold, ok):
    assert answers_match(pred, gold) is ok


def test_parse_and_last_number():
    assert parse_number("-3/4") == (Fraction(-3, 4), False)
    assert parse_number("50%") == (Fraction(50), True)
    assert parse_number("$1,000.50") == (Fraction(200100, 200), False)
    assert parse_number("3 4") is None  # two numbers are no mixed number
    assert parse_number("18 square metres") is None  # more than one unit word: free text
    assert parse_number("Route 66") is None
    assert parse_number("3/0") == (Fraction(3), False)  # a zero denominator does not crash
    assert last_number("from 2 to 1,500.") == (Fraction(1500), False)
    assert last_number("x2 and v3.5") is None  # digits glued to a name are no numbers
    assert last_number("nothing") is None


@pytest.mark.parametrize(
    ("reply", "gold", "ok"),
    [
        ("Varan.", "Varan", True),
        ("Varan, born 1987.", "Varan", True),  # a string answer is not replaced by the reply's last number
        ("1987年。", "1987", True),
        ("<think>\n47 + 3 = 50\n</think>\n<answer>\n50\n</answer>", "50", True),
        ("<think>\nmaybe 50\n</think>\n<answer>\n49\n</answer>", "50", False),
        ("<think>\n50\n</think>\n51", "50", False),  # the answer is what follows the thinking
        ("<think>\n50", "50", False),
        ("The answer is \\boxed{17}, though 18 appears later", "17", True),
        ("The answer is \\boxed{17}, though 18 appears later", "18", False),  # the boxed answer is the commitment
        ("", "50", False),
    ],
)
def test_is_correct(reply, gold, ok):
    assert is_correct(reply, gold) is ok


def test_answer_text_and_format():
    r1 = "<think>\n1 + 1 = 2\n</think>\n<answer>\n2\n</answer>"
    assert answer_text(r1) == "2"
    assert answer_text("Varan.") == "Varan."
    assert is_well_formed(r1)
    assert not is_well_formed("2")
    assert not is_well_formed("<think>\nx\n</think>\n<answer>\n\n</answer>")  # empty answer
    assert not is_well_formed(r1 + " and more text")
    assert not is_well_formed("<answer>\n2\n</answer>")


def test_gsm8k_gold():
    assert gsm8k_gold("He makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_gold("So 200,000-130,000=70,000\n#### 70,000") == "70000"
    assert gsm8k_gold("#### -3") == "-3"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no final line")
    with pytest.raises(ValueError, match="empty"):
        gsm8k_gold("#### ")


def test_real_gsm8k_rows(reference_dir):
    """Every real GSM8K test row: its gold parses as a number, and its own worked solution (the reference
    reply, with GSM8K's "<<…>>" calculator notes) is judged correct against it, while gold + 1 is not."""
    rows = [json.loads(line) for line in (reference_dir / "data/eval/gsm8k_test_head100.jsonl").open(encoding="utf-8")]
    assert len(rows) == 100
    for row in rows:
        gold = gsm8k_gold(row["answer"])
        assert parse_number(gold) is not None, gold
        assert extract_answer(row["answer"]) is not None
        assert is_correct(row["answer"], gold), row["answer"]
        wrong = str(parse_number(gold).value + 1)
        assert not is_correct(row["answer"], wrong)
        # The same answer as a MiniMind R1 reply, and as the last number of a free-text reply.
        solution = row["answer"].rsplit("####", 1)[0].strip()
        assert is_correct(f"<think>\n{solution}\n</think>\n<answer>\n{gold}\n</answer>", gold)
        assert is_correct(f"{solution}\nThe answer is {gold}.", gold)


def test_real_minimind_r1_replies(reference_dir):
    """Real MiniMind R1 replies: the answer is the <answer> block after the thinking, and is well formed."""
    replies = []
    for line in (reference_dir / "data/r1.jsonl").open(encoding="utf-8"):
        replies += [m["content"] for m in json.loads(line)["conversations"] if m["role"] == "assistant"]
    assert replies
    for reply in replies:
        answer = reply.split("<answer>")[-1].split("</answer>")[0].strip()
        assert extract_answer(reply) == answer
        assert is_correct(reply, answer)
        assert not is_correct(reply.replace("</think>", ""), answer)  # unfinished thinking answers nothing
        assert is_well_formed(reply)
