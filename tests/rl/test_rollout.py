"""Rollouts: reproducible per seed, independent of batching and engine; packing by hand."""

from __future__ import annotations

from weakwater.infer.sampling import SamplingParams
from weakwater.model.io import load_model
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.rl.rollout import pack, sample_completions, sample_seed
from weakwater.tokenizer import load_tokenizer


def test_pack_by_hand():
    batch = pack([[5, 6], [7]], [[8, 9, 2], [2]], pad_id=0)
    # sequences 5 6 8 9 2 / 7 2: inputs drop the last token; targets are the completion tokens only
    assert batch["input_ids"].tolist() == [[5, 6, 8, 9], [7, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 8, 9, 2], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["mask"].tolist() == [[False, True, True, True], [True, False, False, False]]
    packed = pack([[5, 6], [7]], [[8, 9, 2], [2]], pad_id=0, capacity=6)  # both fit one row of 6: 4 + 1
    assert packed["input_ids"].tolist() == [[5, 6, 8, 9, 7]]
    assert packed["labels"].tolist() == [[IGNORE_INDEX, 8, 9, 2, 2]]
    assert packed["segment_ids"].tolist() == [[0, 0, 0, 0, 1]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0]]


def test_sample_seed_is_a_function_of_its_keys():
    assert sample_seed(0, 1, 2, 3) == sample_seed(0, 1, 2, 3)
    assert len({sample_seed(0, 1, 2, j) for j in range(8)} | {sample_seed(1, 1, 2, 0)}) == 9
    assert 0 <= sample_seed(123, 4) < 2**63


def test_rollouts_identical_for_a_seed_and_independent_of_batch_and_engine(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m", init_std=0.02)
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    prompts = [tok.encode(tok.render_chat([{"role": "user", "content": q}], add_generation_prompt=True)) for q in
               ("What is 12 + 35?", "今天天气很好")]  # fmt: skip
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95)
    seeds = [sample_seed(7, i, j) for i in range(2) for j in range(3)]
    a = sample_completions(model, prompts, seeds, params, tok.im_end_id, group_size=3)
    b = sample_completions(model, prompts, seeds, params, tok.im_end_id, group_size=3, batch_rows=2, fast=False)
    alone = sample_completions(model, prompts[1:], seeds[3:], params, tok.im_end_id, group_size=3)
    assert a.completion_ids == b.completion_ids and a.finished == b.finished
    assert a.completion_ids[3:] == alone.completion_ids
    assert a.prompt_ids == [prompts[0]] * 3 + [prompts[1]] * 3
    assert len({tuple(c) for c in a.completion_ids}) > 1  # different seeds, different samples
    other = sample_completions(model, prompts, [s + 1 for s in seeds], params, tok.im_end_id, group_size=3)
    assert other.completion_ids != a.completion_ids
    for ids, done in zip(a.completion_ids, a.finished):
        assert (ids[-1] == tok.im_end_id) == done and (done or len(ids) == 12)
        assert tok.im_end_id not in ids[:-1]
