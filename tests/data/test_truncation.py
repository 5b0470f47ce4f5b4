"""The truncation policy, its counters and the length check before training, on MiniMind's real data."""

from __future__ import annotations

import pytest

from weakwater.data.dpo import PreferenceDataset
from weakwater.data.sft import ChatDataset
from weakwater.data.truncation import TruncationError, check_lengths, fit_window, loses_end, measure
from weakwater.tokenizer import load_tokenizer


def test_policy_and_lost_end():
    mask = [False, False, True, True, True, True]
    assert fit_window(list(range(6)), mask, 8)[2] == ""
    assert fit_window(list(range(6)), mask, 4) == ([0, 1, 2, 3], mask[:4], "truncated_head")
    assert loses_end(mask, 4) and not loses_end(mask, 6)
    prompt_heavy = [False] * 5 + [True]
    assert fit_window(list(range(6)), prompt_heavy, 3) == ([3, 4, 5], prompt_heavy[3:], "truncated_tail")
    assert not loses_end(prompt_heavy, 3)  # the tail keeps the answer's end


def test_measure_counts_by_hand():
    samples = {0: [([1] * 3, [False, True, True])], 1: [([1] * 10, [False] * 2 + [True] * 8)]}
    report = measure(2, samples.__getitem__, max_len=5, what="conversations")
    assert (report.measured, report.cut, report.lost_end, report.tail_kept) == (2, 1, 1, 0)
    assert report.suggestion(1.0) == 64  # 10 tokens = 9 positions, rounded up to a multiple of 64


@pytest.fixture(scope="module")
def minimind2(reference_dir):
    return load_tokenizer(reference_dir / "minimind_tokenizer" / "minimind2_4014e62")


def test_r1_at_the_tiny_context_is_refused_before_training(reference_dir, minimind2):
    """--seq-len 256 (the tiny preset): 86 of MiniMind's 100 R1 samples would lose </answer> and <|im_end|>."""
    ds = ChatDataset(reference_dir / "data" / "r1.jsonl", minimind2, 257)
    report = ds.length_report()
    assert (report.measured, report.cut, report.lost_end) == (100, 86, 86)
    lines = []
    with pytest.raises(TruncationError, match=r"86 of 100 conversations \(86%\) would lose the end") as err:
        check_lengths(report, allow_truncation=False, say=lines.append, name="distill train data")
    assert "--max-seq-len 768" in str(err.value) and "--allow-truncation" in str(err.value)
    assert lines[0].startswith("distill train data: lengths of 100 conversations (tokens): median 524")
    assert "exceed --seq-len 256 (257 tokens)" in lines[1] and "truncated to 257" not in " ".join(lines)
    assert "--max-seq-len 896 keeps every one whole" in lines[2]
    check_lengths(report, allow_truncation=True, say=lines.append, name="distill")  # the user said so
    ds[0]
    assert ds.stats == {"samples": 100, "truncated_head": 1, "truncated_tail": 0}


def test_dpo_sides_and_sft_that_mostly_fit(reference_dir, minimind2):
    report = PreferenceDataset(reference_dir / "data" / "dpo.jsonl", minimind2, 257).length_report()
    assert (report.measured, report.cut, report.what) == (200, 172, "pair sides")
    sft = ChatDataset(reference_dir / "data" / "sft.jsonl", minimind2, 257).length_report()
    assert (sft.measured, sft.cut, sft.lost_end) == (191, 32, 31)
    check_lengths(sft, allow_truncation=False, say=lambda _: None, name="sft")  # 16%: reported, not refused


def test_big_files_are_estimated_from_a_seeded_subset(monkeypatch):
    from weakwater.data import truncation

    monkeypatch.setattr(truncation, "MEASURE_AT_MOST", 10)
    seen = []

    def sequences(i):
        seen.append(i)
        return [([1] * 4, [False, True, True, True])]

    report = measure(1000, sequences, max_len=8, what="conversations", seed=3)
    assert report.measured == 10 and report.total == 1000 and len(set(seen)) == 10
    assert "10 random of 1000 conversations" in report.lines()[0]
