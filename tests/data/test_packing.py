"""Packing layout: first-fit rows, per-sample positions and segments, per-sample sums."""

from __future__ import annotations

import pytest
import torch

from weakwater.data.packing import first_fit_decreasing, lay_out, model_inputs, segment_sum


def test_first_fit_decreasing_by_hand():
    # sorted: 7 (i=1), 5 (i=0), 4 (i=3), 3 (i=2), 1 (i=4); capacity 8
    rows = first_fit_decreasing([5, 7, 3, 4, 1], 8)
    assert rows == [[1, 4], [0, 2], [3]]
    assert first_fit_decreasing([2, 2], 4) == [[0, 1]]
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([9], 8)


def test_lay_out_positions_segments_and_fill():
    samples = [{"a": torch.tensor([1, 2, 3])}, {"a": torch.tensor([4, 5])}, {"a": torch.tensor([6, 7, 8, 9])}]
    packed = lay_out(samples, {"a": 0}, capacity=6)
    # rows: [2 (len 4), 1 (len 2)], [0 (len 3)] padded to width 6
    assert packed["a"].tolist() == [[6, 7, 8, 9, 4, 5], [1, 2, 3, 0, 0, 0]]
    assert packed["segment_ids"].tolist() == [[2, 2, 2, 2, 1, 1], [0, 0, 0, -1, -1, -1]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    padded = lay_out(samples, {"a": -5})
    assert padded["a"].tolist() == [[1, 2, 3, -5], [4, 5, -5, -5], [6, 7, 8, 9]]
    assert model_inputs(padded) == {}
    assert segment_sum(packed["a"].float(), packed["segment_ids"], 3).tolist() == [6.0, 9.0, 30.0]
