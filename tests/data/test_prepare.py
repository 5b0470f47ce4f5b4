"""``weakwater prepare``: shards on real MiniMind lines, malformed input, dedup, splits and parallel equality."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weakwater.cli import main
from weakwater.data.prepare import HashSet64, NearDupIndex, minhash_signature, normalise, prepare
from weakwater.data.pretrain import PackedWindows
from weakwater.jsonl import DataError
from weakwater.tokenizer import load_tokenizer
from weakwater.tokenizer.train import train_tokenizer

STORY = (
    "从前有一座山，山上有一座庙，庙里有一个老和尚在给小和尚讲故事。Once upon a time there was a mountain, "
    "and on the mountain there was a temple where an old monk told stories to a young monk. "
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    rows = [{"text": f"{STORY} 第{i}段 paragraph {i}"} for i in range(100)]
    train_tokenizer([r["text"] for r in rows], d, vocab_size=400)
    return d


def read_split(out, split):
    meta = json.loads((out / "meta.json").read_text())
    files = meta["splits"][split]["files"]
    return np.concatenate([np.fromfile(out / f, dtype=meta["dtype"]) for f in files]) if files else np.array([])


def test_prepare_reference_pretrain(reference_dir, tmp_path):
    data = reference_dir / "data" / "pretrain.jsonl"
    tok_dir = reference_dir / "minimind_tokenizer"
    meta = prepare([data], tok_dir, tmp_path, val_frac=0.05, workers=1)
    stats, splits = meta["stats"], meta["splits"]
    lines = [json.loads(x)["text"] for x in data.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert stats["docs_read"] == len(lines) == stats["docs_kept"] + stats["exact_duplicates"]
    assert splits["train"]["docs"] > 0 and splits["val"]["docs"] > 0
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 6400
    tokens = np.concatenate([read_split(tmp_path, "train"), read_split(tmp_path, "val")])
    assert len(tokens) == stats["tokens"] and (tokens == 0).sum() == stats["docs_kept"]  # one EOS per doc
    # Decoding the shard gives back real documents, each ended by EOS.
    tok = load_tokenizer(tok_dir)
    train = read_split(tmp_path, "train")
    first_doc = train[: int(np.argmax(train == tok.eos_id))]
    assert tok.decode(first_doc.tolist()) in lines
    assert 2.5 < stats["bytes_per_token"] < 6
    ds = PackedWindows(tmp_path, "train", seq_len=256)
    assert len(ds) == (splits["train"]["tokens"] - 1) // 256
    assert ds[0].dtype.is_floating_point is False and ds[0].shape == (257,)


MALFORMED = (
    b'{"text": "\xe4\xbd\xa0\xe5\xa5\xbd world"}\r\n'
    b'{"text": "cut\n'
    b'{"text": 12}\n'
    b'{"txt": "wrong field"}\n'
    b'{"text": "   "}\n'
    b'{"text": "\xff bad"}\n'
    b'"just a string"\n'
    b'{"text": "the end"}\n'
)


@pytest.fixture
def malformed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(MALFORMED)
    return path


def test_malformed_strict_names_file_and_line(malformed, tok_dir, tmp_path):
    with pytest.raises(DataError, match=f"{malformed}:2: invalid JSON"):
        prepare([malformed], tok_dir, tmp_path / "out", strict=True, workers=1)


def test_malformed_lenient_counts(malformed, tok_dir, tmp_path):
    meta = prepare([malformed], tok_dir, tmp_path / "out", val_frac=0, workers=1)
    skipped = meta["stats"]["skipped"]
    assert skipped["by_reason"] == {
        "invalid_json": 1,
        "wrong_type": 1,
        "missing_field": 1,
        "empty_text": 1,
        "invalid_utf8": 1,
        "not_object": 1,
    }
    assert skipped["first_at"]["wrong_type"] == f"{malformed}:3"
    assert meta["stats"]["docs_kept"] == 2 and meta["stats"]["dropped_empty"] == 1
    tok = load_tokenizer(tok_dir)
    assert tok.decode(read_split(tmp_path / "out", "train").tolist()) == "你好 world<|endoftext|>the end<|endoftext|>"


def test_cli_strict_exit_code(malformed, tok_dir, tmp_path, capsys):
    args = ["prepare", "--data", str(malformed), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "o")]
    assert main([*args, "--strict", "--workers", "1"]) == 2
    assert f"{malformed}:2" in capsys.readouterr().err
    assert main([*args, "--workers", "1"]) == 0
    assert "skipped lines       6" in capsys.readouterr().out


def test_exact_and_near_dedup(tok_dir, tmp_path):
    long = STORY * 3
    rows = [
        {"text": long},
        {"text": "  " + long.upper().replace("。", "。\n\n") + " "},  # same after normalisation: exact dup
        {"text": long.replace("老和尚", "老道士", 1)},  # a near duplicate
        {"text": "完全不同的另一篇文章，讲的是数学。" * 10},
    ]
    path = write_jsonl(tmp_path / "dups.jsonl", rows)
    exact = prepare([path], tok_dir, tmp_path / "exact", val_frac=0, workers=1, dedup="exact")["stats"]
    assert (exact["exact_duplicates"], exact["near_duplicates"], exact["docs_kept"]) == (1, 0, 3)
    near = prepare([path], tok_dir, tmp_path / "near", val_frac=0, workers=1, dedup="minhash")["stats"]
    assert (near["exact_duplicates"], near["near_duplicates"], near["docs_kept"]) == (1, 1, 2)
    none = prepare([path], tok_dir, tmp_path / "none", val_frac=0, workers=1, dedup="none")["stats"]
    assert none["docs_kept"] == 4


def test_parallel_equals_serial_and_shards_roll(tok_dir, tmp_path):
    rows = [{"text": f"{STORY[: 20 + i % 50]} {i}"} for i in range(5000)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    serial = prepare([path], tok_dir, tmp_path / "s", val_frac=0.1, workers=1, shard_tokens=20_000)
    parallel = prepare([path], tok_dir, tmp_path / "p", val_frac=0.1, workers=2, shard_tokens=20_000)
    assert serial["splits"] == parallel["splits"] and len(serial["splits"]["train"]["files"]) > 2
    for split in ("train", "val"):
        assert np.array_equal(read_split(tmp_path / "s", split), read_split(tmp_path / "p", split))
    ds = PackedWindows(tmp_path / "s", "train", seq_len=64)
    expected = sum((t - 1) // 64 for t in (np.fromfile(tmp_path / "s" / f, np.uint16).size
                                            for f in serial["splits"]["train"]["files"]))  # fmt: skip
    assert len(ds) == expected
    assert all(ds[i].shape == (65,) for i in (0, len(ds) - 1))


def test_val_data_and_errors(tok_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"训练 {i}"} for i in range(20)])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": f"验证 {i}"} for i in range(5)])
    meta = prepare([train], tok_dir, tmp_path / "o", val_frac=0.5, val_data=[val], workers=1)
    assert (meta["splits"]["train"]["docs"], meta["splits"]["val"]["docs"]) == (20, 5)
    with pytest.raises(ValueError, match="dedup"):
        prepare([train], tok_dir, tmp_path / "o", dedup="fuzzy")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        prepare([tmp_path / "nope.jsonl"], tok_dir, tmp_path / "o")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no training documents"):
        prepare([empty], tok_dir, tmp_path / "o", workers=1)
    assert not (tmp_path / "o" / "meta.json").exists()  # a failed run never leaves a usable-looking directory


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=300))
def test_hashset_matches_python_set(values):
    ours, ref = HashSet64(capacity=4), set()
    for v in values:
        key = v or 1  # 0 is stored as 1 (the empty-slot marker), like the real hashes
        assert ours.add(v) == (key not in ref)
        ref.add(key)
    assert ours.size == len(ref)


def test_near_dup_index_decides_like_datasketch_lsh():
    from datasketch import MinHash, MinHashLSH

    rng = np.random.default_rng(0)
    base = [STORY[i:] + STORY[:i] for i in range(0, 60, 7)]
    docs = [b[: len(b) - int(k)] + "尾" * int(k) for b in base for k in rng.integers(0, 40, size=4)]
    ours, lsh = NearDupIndex(0.8), MinHashLSH(threshold=0.8, num_perm=128)
    decisions = []
    for i, doc in enumerate(docs):
        signature = minhash_signature(normalise(doc))
        m = MinHash(num_perm=128, seed=1, hashvalues=signature, scheme="affine32")
        new = not lsh.query(m)
        if new:
            lsh.insert(str(i), m)
        assert ours.add(signature) == new
        decisions.append(new)
    assert 0 < sum(decisions) < len(docs)  # both kinds of decision were exercised
