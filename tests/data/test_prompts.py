"""RL prompt sets: MiniMind RL conversations, {prompt, answer} and GSM8K, with errors naming file/line/field."""

from __future__ import annotations

import json

import pytest

from weakwater.data.prompts import PromptDataset, collate_prompts, parse_prompt
from weakwater.jsonl import DataError
from weakwater.tokenizer import load_tokenizer


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def test_formats_and_gold_answers():
    conv = {"conversations": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\n2+2=4\n</think>\n<answer>\n4\n</answer>"},
    ]}  # fmt: skip
    messages, gold = parse_prompt(conv, "f:1")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"] and gold == "4"
    placeholder = {"conversations": [{"role": "user", "content": "写一首诗"}, {"role": "assistant", "content": "空"}]}
    assert parse_prompt(placeholder, "f:2") == ([{"role": "user", "content": "写一首诗"}], None)
    assert parse_prompt({"prompt": "1+1?", "answer": 2}, "f:3") == ([{"role": "user", "content": "1+1?"}], "2")
    gsm = {"question": "How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
    assert parse_prompt(gsm, "f:4") == ([{"role": "user", "content": "How many?"}], "7")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": "x"}, "f:9: missing field 'conversations', 'prompt' or 'question'"),
        ({"prompt": 3}, "f:9: field 'prompt' must be a string"),
        ({"prompt": "q", "answer": [1]}, "f:9: field 'answer' must be a string or a number"),
        (
            {"conversations": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "f:9: field conversations[1].role",
        ),
        ({"question": ""}, "f:9: field 'question'"),
    ],
)
def test_errors_name_file_line_and_field(record, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_prompt(record, "f:9")


def test_dataset_on_real_minimind_rl_and_gsm8k_files(reference_dir, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    rl = PromptDataset(reference_dir / "data" / "extra" / "rlaif_head2000.jsonl", tok, max_prompt_len=4096)
    assert len(rl) == 2000 and all(item["answer"] is None for item in rl.items)
    first = rl[0]
    assert tok.decode(first["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert "列出五个基本的人格理论" in tok.decode(first["prompt_ids"])
    gsm = PromptDataset(reference_dir / "data" / "eval" / "gsm8k_test_head100.jsonl", tok, max_prompt_len=4096)
    assert len(gsm) == 100 and gsm[0]["answer"] == "18"  # Janet's ducks
    batch = collate_prompts([gsm[3], gsm[0]])
    assert batch["index"].tolist() == [3, 0] and batch["answers"][1] == "18"


def test_dataset_skips_or_raises(tmp_path, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    path = write(tmp_path / "p.jsonl", [{"prompt": "hi", "answer": "1"}, "{not json", {"prompt": "x " * 300}])
    ds = PromptDataset(path, tok, max_prompt_len=64)
    assert len(ds) == 1 and ds.skipped.counts == {"invalid_json": 1, "prompt_too_long": 1}
    with pytest.raises(DataError, match=f"{path}:2: invalid JSON"):
        PromptDataset(path, tok, max_prompt_len=64, strict=True)
    with pytest.raises(DataError, match="q.jsonl:1: field .answer.: missing"):
        PromptDataset(write(tmp_path / "q.jsonl", [{"prompt": "hi"}]), tok, 64, strict=True, require_answer=True)
