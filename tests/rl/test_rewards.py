"""Every reward function on crafted replies, the weighted sum, and user functions by name."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from weakwater.rl.rewards import (
    format_reward,
    length_reward,
    load_reward_fn,
    math_reward,
    parse_rewards,
    repetition_reward,
    score,
)

GOOD = "<think>\n12 + 30 = 42\n</think>\n<answer>\n42\n</answer>"


def test_math_reward_uses_the_shared_answer_checker():
    replies = [GOOD, "<answer>41</answer>", "the total is 1,000 yuan", r"so \boxed{0.5}", "no number", GOOD]
    gold = ["42", "42", "1000", "1/2", "3", None]
    assert math_reward([""] * 6, replies, answer=gold) == [1.0, 0.0, 1.0, 1.0, 0.0, None]


def test_format_reward():
    replies = [GOOD, "<think>x</think>", "42", "<think>a</think><answer>1</answer> trailing", "<answer>42</answer>"]
    assert format_reward([""] * 5, replies) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_length_reward_soft_penalty():
    fn = length_reward(4)
    ids = [[1] * 3, [1] * 4, [1] * 6, [1] * 8, [1] * 20]
    assert fn([""] * 5, [""] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_repetition_reward():
    fn = repetition_reward(2)
    ids = [[1, 2, 3, 4], [1, 2, 1, 2, 1, 2], [7], []]
    # bigrams: all 3 unique -> 0; (1,2),(2,1),(1,2),(2,1),(1,2): 2 unique of 5 -> -(1 - 2/5); too short -> 0
    assert fn([""] * 4, [""] * 4, completion_ids=ids) == [0.0, pytest.approx(-0.6), 0.0, 0.0]


def test_weighted_sum_and_none():
    rewards = parse_rewards(["math", "format=0.5"])
    total, parts = score(rewards, ["q"] * 3, [GOOD, "<answer>7</answer>", GOOD], answer=["42", "42", None])
    assert total.tolist() == [1.5, 0.0, 0.5]  # None counts 0 in the sum
    assert parts["math"][:2].tolist() == [1.0, 0.0] and math.isnan(parts["math"][2])
    assert parts["format"].tolist() == [1.0, 0.0, 1.0]


def test_user_reward_by_module_and_file(tmp_path, monkeypatch):
    code = textwrap.dedent(
        """
        def shorter(prompts, completions, **kwargs):
            return [-len(c) / 10 for c in completions]

        def broken(prompts, completions, **kwargs):
            return [1.0]
        """
    )
    (tmp_path / "my_rewards.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward_fn("my_rewards:shorter")(["p"], ["abcde"]) == [-0.5]
    rewards = parse_rewards([f"{tmp_path / 'my_rewards.py'}:shorter=2"])
    total, _ = score(rewards, ["p", "p"], ["ab", "abcd"])
    assert torch.allclose(total, torch.tensor([-0.4, -0.8], dtype=torch.float64))
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        score(parse_rewards(["my_rewards:broken"]), ["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="cannot import module"):
        load_reward_fn("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="has no function"):
        load_reward_fn("my_rewards:missing")
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        parse_rewards(["nonsense"])
    with pytest.raises(ValueError, match="listed twice"):
        parse_rewards(["math", "math=2"])
