"""Packing: the same samples in fewer rows give the same per-sample losses and gradients as one at a time."""

from __future__ import annotations

import pytest
import torch

from weakwater.data.dpo import collate_pairs
from weakwater.data.packing import first_fit_decreasing, lay_out, model_inputs
from weakwater.data.sft import SFTCollator
from weakwater.model import ModelConfig, Transformer
from weakwater.model.loglik import per_sample_sum, sequence_logprobs, token_logprobs
from weakwater.train.losses import weighted_token_nll


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64, init_std=0.2)
    return Transformer(config)


def chat_samples(lengths: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """SFT items: random ids; the second half of each sample supervised (the 'answer')."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[n // 2 :] = True
        out.append({"ids": torch.randint(1, 97, (n,), generator=g), "mask": mask})
    return out


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
    assert per_sample_sum(packed["a"].float(), packed["segment_ids"], 3).tolist() == [6.0, 9.0, 30.0]


@pytest.mark.parametrize("tag_weight", [1.0, 5.0])
def test_sft_packed_losses_and_gradients_equal_one_at_a_time(tag_weight):
    samples = chat_samples([9, 17, 5, 12, 3, 20], seed=1)
    collate = SFTCollator(pad_id=0, tag_ids=(7, 11, 13), tag_weight=tag_weight, pack_len=32)

    # One at a time: per-sample weighted CE sums and the gradient of their total.
    model = tiny_model()
    singles = []
    for s in samples:
        b = SFTCollator(pad_id=0, tag_ids=(7, 11, 13), tag_weight=tag_weight)([s])
        total, _ = weighted_token_nll(model(b["input_ids"]), b["labels"], b["weights"])
        singles.append(total)
    sum(singles).backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    packed_model = tiny_model()
    batch = collate(samples)
    logits = packed_model(batch["input_ids"], **model_inputs(batch))
    nll = -token_logprobs(logits, batch["labels"])
    per_sample = per_sample_sum(nll * batch["weights"], batch["segment_ids"], len(samples))
    assert torch.allclose(per_sample, torch.stack(singles).detach(), atol=1e-4)
    total, count = weighted_token_nll(logits, batch["labels"], batch["weights"])
    padded = SFTCollator(pad_id=0, tag_ids=(7, 11, 13), tag_weight=tag_weight)(samples)
    assert count == padded["weights"].sum()  # the same supervised weight either way
    total.backward()
    for name, p in packed_model.named_parameters():
        assert torch.allclose(p.grad, expected_grads[name], atol=1e-5, rtol=1e-4), name


def test_dpo_packed_sequence_logps_equal_padded():
    g = torch.Generator().manual_seed(3)

    def side(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[n - n // 3 :] = True  # the last turn
        return torch.randint(1, 97, (n,), generator=g), mask

    pairs = []
    for i, (a, b) in enumerate([(10, 14), (7, 19), (12, 6)]):
        (ci, cm), (ri, rm) = side(a), side(b)
        pairs.append({"index": i, "chosen_ids": ci, "chosen_mask": cm, "rejected_ids": ri, "rejected_mask": rm})
    model = tiny_model().eval()
    padded, packed = collate_pairs(pairs, 0), collate_pairs(pairs, 0, pack_len=40)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    with torch.no_grad():
        want, want_n = sequence_logprobs(model(padded["input_ids"]), padded["labels"])
        got, got_n = sequence_logprobs(
            model(packed["input_ids"], **model_inputs(packed)), packed["labels"], packed["segment_ids"], 6
        )
    assert got_n.tolist() == want_n.tolist()
    assert torch.allclose(got, want, atol=1e-4)
