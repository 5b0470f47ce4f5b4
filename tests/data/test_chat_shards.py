"""Pre-tokenised chat data (``weakwater prepare --chat``): the same samples as the JSONL path, checked
against it sample by sample on MiniMind's real files, refused when made by another tokenizer, and a
training run on them equal to one on the JSONL file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from weakwater.cli import main
from weakwater.data.chat_shards import ChatShards, write_chat_shards
from weakwater.data.dpo import PreferenceDataset
from weakwater.data.sft import ChatDataset
from weakwater.jsonl import DataError
from weakwater.tokenizer import load_tokenizer

BIG = 1 << 30


def prepare(kind: str, data, tok_dir, out) -> None:
    assert main(["prepare", "--chat", kind, "--data", str(data), "--tokenizer", str(tok_dir), "--out", str(out)]) == 0


@pytest.mark.parametrize("kind", ["sft", "r1", "dpo"])
def test_shards_hold_the_jsonl_samples(tmp_path, reference_dir, kind):
    tok = load_tokenizer(reference_dir / "minimind_tokenizer")
    data = reference_dir / "data" / f"{kind}.jsonl"
    chat = "dpo" if kind == "dpo" else "sft"
    prepare(chat, data, reference_dir / "minimind_tokenizer", tmp_path / "shards")
    make = (lambda p, n: PreferenceDataset(p, tok, n)) if chat == "dpo" else (lambda p, n: ChatDataset(p, tok, n))
    # a short window: truncation happens when a sample is read, the same way for both
    text, shards = make(data, 128), make(tmp_path / "shards", 128)
    assert len(text) == len(shards) > 50
    for i in range(len(text)):
        a, b = text[i], shards[i]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (i, key)
    assert text.stats == shards.stats
    a, b = text.length_report(), shards.length_report()
    assert (a.lost_end, a.tail_kept, a.total) == (
        b.lost_end,
        b.tail_kept,
        b.total,
    ) and a.lengths.tolist() == b.lengths.tolist()


def test_wrong_kind_other_tokenizer_and_damage_are_refused(tmp_path, reference_dir, bpe_tokenizer_dir):
    minimind = load_tokenizer(reference_dir / "minimind_tokenizer")
    prepare("sft", reference_dir / "data" / "sft.jsonl", reference_dir / "minimind_tokenizer", tmp_path / "s")
    with pytest.raises(DataError, match="holds sft data"):
        PreferenceDataset(tmp_path / "s", minimind, BIG)
    with pytest.raises(DataError, match="another tokenizer or chat template"):
        ChatDataset(tmp_path / "s", load_tokenizer(bpe_tokenizer_dir), BIG)
    with pytest.raises(DataError, match="not a chat-shards directory"):
        ChatDataset(tmp_path, minimind, BIG)
    ids = tmp_path / "s" / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-2])
    with pytest.raises(DataError, match="do not match meta.json"):
        ChatShards(tmp_path / "s", "sft", minimind)


def test_rewrite_replaces_and_never_clobbers_other_directories(tmp_path, reference_dir):
    tok = load_tokenizer(reference_dir / "minimind_tokenizer")
    data = reference_dir / "data" / "sft.jsonl"
    ds = ChatDataset(data, tok, BIG)
    write_chat_shards(ds, "sft", tok, tmp_path / "s", data)
    meta = write_chat_shards(ds, "sft", tok, tmp_path / "s", data)  # replaced in place
    assert meta["samples"] == len(ds) and not (tmp_path / "s.partial").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_chat_shards(ds, "sft", tok, tmp_path / "other", data)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_training_on_shards_equals_training_on_jsonl(tmp_path, reference_dir, make_model_dir, bpe_tokenizer_dir, stage):
    """Same batches, same order, same weights: a run on the shards is the run on the JSONL file."""
    init = make_model_dir(tmp_path / "init", init_std=0.02)
    data = reference_dir / "data" / ("dpo.jsonl" if stage == "dpo" else "sft.jsonl")
    prepare(stage, data, bpe_tokenizer_dir, tmp_path / "shards")
    finals = []
    for name, source in (("text", data), ("shards", tmp_path / "shards")):
        args = [stage, "--data", str(source), "--init", str(init), "--out", str(tmp_path / name), "--max-steps", "3",
                "--batch-size", "2", "--seq-len", "64", "--device", "cpu", "--eval-every", "0", "--save-every", "0",
                "--allow-truncation"]  # fmt: skip
        assert main(args) == 0
        finals.append(load_file(str(tmp_path / name / "final" / "model.safetensors")))
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
