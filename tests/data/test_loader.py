"""BatchLoader and PackedWindows: determinism, exact resume, rank sharding, window contents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from weakwater.data.loader import BatchLoader
from weakwater.data.pretrain import PackedWindows, collate_windows
from weakwater.jsonl import DataError


def ids(batch):
    return batch.tolist()


def make_loader(n=23, batch_size=4, seed=0, **kw):
    return BatchLoader(list(range(n)), batch_size, torch.tensor, seed=seed, **kw)


def take(loader, k):
    return [ids(next(loader)) for _ in range(k)]


def test_deterministic_and_seeded():
    assert take(make_loader(), 12) == take(make_loader(), 12)
    assert take(make_loader(seed=1), 12) != take(make_loader(seed=0), 12)
    assert take(make_loader(shuffle=False), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_epochs_cover_items_once_and_reshuffle():
    loader = make_loader(n=23, batch_size=4)  # 5 batches per epoch, 3 items dropped
    assert loader.batches_per_epoch == 5
    epoch0, epoch1 = take(loader, 5), take(loader, 5)
    flat0 = [i for b in epoch0 for i in b]
    assert len(set(flat0)) == 20 and set(flat0) <= set(range(23))
    assert epoch0 != epoch1 and loader.epoch == 1


def test_resume_continues_at_next_batch():
    reference = take(make_loader(), 13)
    first = make_loader()
    head = take(first, 7)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = make_loader(seed=123)
    resumed.load_state_dict(state)
    assert head + take(resumed, 6) == reference


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_union_equals_single_process(world_size):
    single = make_loader(n=50, batch_size=2 * world_size)
    ranks = [make_loader(n=50, batch_size=2, rank=r, world_size=world_size) for r in range(world_size)]
    for _ in range(10):  # crosses epoch boundaries
        parts = [ids(next(r)) for r in ranks]
        assert sum(parts, []) == ids(next(single))
        assert len({i for p in parts for i in p}) == 2 * world_size  # disjoint


def test_invalid_configs():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_loader(n=5, batch_size=3, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        make_loader(rank=2, world_size=2)


def write_shards(tmp_path, arrays, dtype="uint16", split="train"):
    files = []
    for k, arr in enumerate(arrays):
        name = f"{split}_{k:06d}.bin"
        np.asarray(arr, dtype=dtype).tofile(tmp_path / name)
        files.append(name)
    meta = {"dtype": dtype, "vocab_size": 100, "eos_id": 0, "splits": {split: {"files": files}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))


def test_packed_windows_slices(tmp_path):
    write_shards(tmp_path, [np.arange(10), np.arange(100, 107)])
    ds = PackedWindows(tmp_path, "train", seq_len=3)
    assert len(ds) == 3 + 2  # (10-1)//3 + (7-1)//3
    assert ds[0].tolist() == [0, 1, 2, 3] and ds[2].tolist() == [6, 7, 8, 9]
    assert ds[3].tolist() == [100, 101, 102, 103] and ds[4].dtype == torch.int64
    with pytest.raises(IndexError):
        ds[5]
    batch = collate_windows([ds[0], ds[1]])
    assert batch["input_ids"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_packed_windows_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weakwater prepare"):
        PackedWindows(tmp_path, "train", seq_len=4)
    write_shards(tmp_path, [np.arange(4)])
    with pytest.raises(DataError, match="fewer than one window"):
        PackedWindows(tmp_path, "train", seq_len=4)
    with pytest.raises(ValueError, match="no split 'val'"):
        PackedWindows(tmp_path, "val", seq_len=2)


def test_loader_over_windows_is_reproducible(tmp_path):
    write_shards(tmp_path, [np.arange(1000) % 97], dtype="uint32")
    ds = PackedWindows(tmp_path, "train", seq_len=16)
    a = BatchLoader(ds, 4, collate_windows, seed=7)
    b = BatchLoader(ds, 4, collate_windows, seed=7)
    for _ in range(20):
        x, y = next(a), next(b)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
