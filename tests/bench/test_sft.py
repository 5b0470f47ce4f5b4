"""``weakwater bench sft``: padding shares by hand, and the packed vs padded run end to end at a tiny size."""

from __future__ import annotations

import json

import pytest
import torch

from weakwater.bench.sft import epoch_padding
from weakwater.cli import main


class FakeChat:
    """Samples of known lengths (the bench only reads ``ids``)."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return {"ids": torch.zeros(self.lengths[i] + 1, dtype=torch.long)}


def test_epoch_padding_by_hand():
    # one micro-batch of all 4 samples (unshuffled order does not matter for the totals):
    # padded: 4 rows x 8 = 32 slots for 2+3+5+8 = 18 tokens; packed into rows of 10: [8, 2] [5, 3] -> 2 x 10
    shares = epoch_padding(FakeChat([2, 3, 5, 8]), batch=4, seq=10, seed=0)
    assert shares["padding_share_padded"] == pytest.approx(1 - 18 / 32)
    assert shares["padding_share_packed"] == pytest.approx(1 - 18 / 20)
    assert shares["mean_sample_tokens"] == 4.5 and shares["max_sample_tokens"] == 8


@pytest.mark.slow
def test_bench_sft_packed_vs_padded(tmp_path, bpe_tokenizer_dir):
    rows = []
    for i in range(12):
        answer = " ".join(["small models learn fast"] * (1 + 3 * (i % 4)))
        rows.append({"conversations": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}]})
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "sft.json"
    args = ["bench", "sft", "--data", str(data), "--tokenizer", str(bpe_tokenizer_dir), "--preset", "tiny"]
    assert main([*args, "--seq", "128", "--batch", "6", "--steps", "1", "--device", "cpu", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert 0 <= row["padding_share_packed"] < row["padding_share_padded"] < 1
    assert row["packed_useful_tok_s"] > 0 and row["padded_useful_tok_s"] > 0 and row["speedup"] > 0
    assert row["packed_measured_padding_share"] < row["padded_measured_padding_share"]
