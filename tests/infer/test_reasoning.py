"""Reasoning/answer splitting, including tags split across stream deltas."""

from __future__ import annotations

import pytest

from weakwater.infer.reasoning import ReasoningSplitter, prompt_opens_think, split_reasoning

TEXT = "<think>\nLet me add 2 and 2.\n</think>\n<answer>\n4\n</answer>"


def test_split_whole_text():
    assert split_reasoning(TEXT) == ("Let me add 2 and 2.", "4")
    assert split_reasoning("plain answer") == ("", "plain answer")
    assert split_reasoning("still thinking", in_think=True) == ("still thinking", "")
    assert split_reasoning("reason</think>answer", in_think=True) == ("reason", "answer")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_split_streamed_in_small_pieces_equals_whole(size):
    splitter = ReasoningSplitter()
    reasoning, content = "", ""
    for i in range(0, len(TEXT), size):
        r, c = splitter.push(TEXT[i : i + size])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    assert ((reasoning + r).strip(), (content + c).strip()) == split_reasoning(TEXT)
    assert "<" not in content + c


def test_unfinished_tag_prefix_is_flushed_at_end():
    assert split_reasoning("a < b and x <thi") == ("", "a < b and x <thi")


def test_prompt_opens_think():
    assert prompt_opens_think("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_think("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_think("<|im_start|>assistant\n")
