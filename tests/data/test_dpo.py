"""Preference pairs: validation of hostile pairs and the chosen-then-rejected batch layout."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weakwater.data.chat import ConversationError
from weakwater.data.dpo import PreferenceDataset, collate_pairs, to_pair
from weakwater.jsonl import DataError
from weakwater.model.loglik import IGNORE_INDEX as IGNORE
from weakwater.tokenizer import load_tokenizer

Q = {"role": "user", "content": "What is 2 + 3?"}
PAIR = {"chosen": [Q, {"role": "assistant", "content": "5."}], "rejected": [Q, {"role": "assistant", "content": "6."}]}


@pytest.mark.parametrize(
    ("record", "field", "key"),
    [
        ({"chosen": PAIR["chosen"]}, "rejected", "missing_field"),
        (
            {**PAIR, "rejected": [{"role": "user", "content": "other"}, PAIR["rejected"][1]]},
            "rejected",
            "different_prompts",
        ),
        ({**PAIR, "chosen": [Q]}, "chosen", "no_assistant_turn"),
        ({**PAIR, "chosen": [Q, PAIR["chosen"][1], Q]}, "chosen", "turn_order"),
        ({**PAIR, "rejected": "6"}, "rejected", "wrong_type"),
    ],
)
def test_hostile_pairs(record, field, key):
    with pytest.raises(ConversationError) as err:
        to_pair(record)
    assert err.value.field == field and err.value.key == key


def test_batch_layout_and_last_turn_mask(tmp_path, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    path = tmp_path / "pairs.jsonl"
    bad = {**PAIR, "rejected": [{"role": "user", "content": "x"}, PAIR["rejected"][1]]}
    path.write_text("\n".join(json.dumps(r) for r in (PAIR, bad, PAIR)) + "\n")
    ds = PreferenceDataset(path, tok, max_len=64, index_offset=10)
    assert len(ds) == 2 and ds.skipped.counts == {"different_prompts": 1}
    batch = collate_pairs([ds[0], ds[1]], tok.eos_id)
    assert batch["input_ids"].shape[0] == 4 and batch["index"].tolist() == [10, 11]
    chosen_targets = [t for t in batch["labels"][0].tolist() if t != IGNORE]
    rejected_targets = [t for t in batch["labels"][2].tolist() if t != IGNORE]
    assert tok.decode(chosen_targets) == "5.<|im_end|>" and tok.decode(rejected_targets) == "6.<|im_end|>"
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: field rejected: different prompts"):
        PreferenceDataset(path, tok, max_len=64, strict=True)


def test_real_pairs(reference_dir, bpe_tokenizer_dir):
    for tok_dir in (bpe_tokenizer_dir, reference_dir / "minimind_tokenizer"):
        tok = load_tokenizer(tok_dir)
        ds = PreferenceDataset(reference_dir / "data" / "dpo.jsonl", tok, max_len=257)
        assert len(ds) == 100 and ds.skipped.total == 0
        batch = collate_pairs([ds[i] for i in range(4)], tok.eos_id)
        assert ((batch["labels"] != IGNORE).sum(1) > 0).all()  # long pairs keep answer tokens (tail window)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 9), st.integers(2, 9)), min_size=1, max_size=4))
def test_collate_pairs_property(lengths):
    """Row r is chosen r, row B + r is rejected r; supervised targets are exactly the shifted masked ids."""
    samples = []
    for i, (lc, lr) in enumerate(lengths):
        side = {}
        for name, n in (("chosen", lc), ("rejected", lr)):
            side[f"{name}_ids"] = torch.arange(10, 10 + n)
            side[f"{name}_mask"] = torch.tensor([k >= n // 2 for k in range(n)])
        samples.append({"index": i, **side})
    batch = collate_pairs(samples, pad_id=0)
    b = len(samples)
    assert batch["input_ids"].shape[0] == 2 * b and batch["labels"].shape == batch["input_ids"].shape
    for r, s in enumerate(samples):
        for row, name in ((r, "chosen"), (b + r, "rejected")):
            ids, mask = s[f"{name}_ids"], s[f"{name}_mask"]
            expected = [int(t) if m else IGNORE for t, m in zip(ids[1:], mask[1:])]
            got = batch["labels"][row].tolist()
            assert got[: len(expected)] == expected and all(t == IGNORE for t in got[len(expected) :])
