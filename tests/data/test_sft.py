"""SFT samples: the assistant-only mask checked token by token, truncation policy, collator properties."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weakwater.data.sft import (
    ChatDataset,
    SFTCollator,
    line_offsets,
    tag_token_ids,
    tokenize_conversation,
)
from weakwater.data.truncation import fit_window
from weakwater.jsonl import DataError
from weakwater.model.loglik import IGNORE_INDEX
from weakwater.tokenizer import load_tokenizer

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12 + 35?"},
    {"role": "assistant", "content": "<think>\n12 + 35 = 47\n</think>\n<answer>\n47\n</answer>"},
    {"role": "user", "content": "再说一遍？"},
    {"role": "assistant", "content": "四十七。"},
]


@pytest.fixture(params=["ours", "minimind3", "minimind2"])
def tokenizer(request, bpe_tokenizer_dir):
    if request.param == "ours":
        return load_tokenizer(bpe_tokenizer_dir)
    from tests.conftest import _reference_dir  # noqa: PLC0415

    ref = _reference_dir() / "minimind_tokenizer"
    path = ref if request.param == "minimind3" else ref / "minimind2_4014e62"
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"MiniMind tokenizer not found at {path}")
    return load_tokenizer(path)


def test_mask_token_by_token(tokenizer):
    """Supervised tokens are exactly each assistant reply plus its <|im_end|>; never the newline after it."""
    ids, mask = tokenize_conversation(tokenizer, CONV)
    assert tokenizer.decode(ids) == tokenizer.render_chat(CONV)
    im_end = tokenizer.decode([tokenizer.im_end_id])
    supervised = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    replies = [m["content"] for m in CONV if m["role"] == "assistant"]
    # Templates may rewrite assistant content (MiniMind-3 adds empty think blocks): each reply must end
    # its supervised span, and the spans contain nothing from user/system turns.
    spans = supervised.split(im_end)
    assert spans[-1] == "" and len(spans) == len(replies) + 1
    for span, reply in zip(spans, replies):
        assert span.endswith(reply.split("</think>")[-1].strip())
    for i, (tok, sup) in enumerate(zip(ids, mask)):
        if tok == tokenizer.im_end_id:
            prefix = tokenizer.decode(ids[:i])
            in_assistant = prefix.rfind("<|im_start|>assistant\n") > prefix.rfind(im_end)
            assert sup == in_assistant, f"<|im_end|> at {i}: supervised={sup}"
        if tok == tokenizer.im_start_id:
            assert not sup
    after_end = [mask[i + 1] for i, t in enumerate(ids[:-1]) if t == tokenizer.im_end_id]
    assert not any(after_end), "the token after <|im_end|> (the template's newline) must not be supervised"
    assert "terse" not in supervised and "12 + 35?" not in supervised


def supervised_runs(tok, ids: list[int], mask: list[bool]) -> list[tuple[bool, str]]:
    """The conversation as (supervised?, text) runs of consecutive tokens with the same flag."""
    runs: list[tuple[bool, list[int]]] = []
    for token, sup in zip(ids, mask):
        if runs and runs[-1][0] == sup:
            runs[-1][1].append(token)
        else:
            runs.append((sup, [token]))
    return [(sup, tok.decode(r)) for sup, r in runs]


def test_mask_exact_text_with_our_template(bpe_tokenizer_dir):
    """Our ChatML template, token by token: supervised text is the two replies each closed by <|im_end|>,
    and the unsupervised text is everything else of the rendered conversation, in order."""
    tok = load_tokenizer(bpe_tokenizer_dir)
    ids, mask = tokenize_conversation(tok, CONV)
    assert supervised_runs(tok, ids, mask) == [
        (False, "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 12 + 35?<|im_end|>\n"
                "<|im_start|>assistant\n"),
        (True, CONV[2]["content"] + "<|im_end|>"),
        (False, "\n<|im_start|>user\n再说一遍？<|im_end|>\n<|im_start|>assistant\n"),
        (True, "四十七。<|im_end|>"),
        (False, "\n"),
    ]  # fmt: skip


def test_last_turn_only(tokenizer):
    ids, mask = tokenize_conversation(tokenizer, CONV, last_turn_only=True)
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]).endswith("四十七。<|im_end|>")
    assert "47" not in tokenizer.decode([i for i, m in zip(ids, mask) if m])


def test_truncation_policy_is_counted(tmp_path, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    long_prompt = {
        "conversations": [{"role": "user", "content": "river " * 200}, {"role": "assistant", "content": "ok"}]
    }
    long_answer = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "sea " * 200}]}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(long_prompt) + "\n" + json.dumps(long_answer) + "\n")
    ds = ChatDataset(path, tok, max_len=32)
    a, b = ds[0], ds[1]
    assert len(a["ids"]) == len(b["ids"]) == 32
    assert a["mask"][1:].any() and b["mask"][1:].any()  # never a sample without a loss token
    assert a["ids"][-2].item() == tok.im_end_id  # tail window keeps the reply and its <|im_end|>
    assert ds.stats == {"samples": 2, "truncated_head": 1, "truncated_tail": 1}


def test_fit_window_keeps_short_samples():
    assert fit_window([1, 2, 3], [False, True, True], 8) == ([1, 2, 3], [False, True, True], "")


def test_lazy_offsets_and_skips(tmp_path, bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    good = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "答"}]}
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + (json.dumps(good) + "\r\n{bad\n\n" + json.dumps(good, ensure_ascii=False) + "\n").encode()
    )
    assert line_offsets(path).tolist()[:2] == [0, len(json.dumps(good)) + 5]
    ds = ChatDataset(path, tok, max_len=64)
    assert len(ds) == 2 and ds.skipped.total == 1
    assert torch.equal(ds[0]["ids"], ds[1]["ids"])
    with pytest.raises(DataError, match=r"data\.jsonl:2"):
        ChatDataset(path, tok, max_len=64, strict=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{bad\n")
    with pytest.raises(DataError, match="no usable conversations"):
        ChatDataset(empty, tok, max_len=64)


sample = st.integers(2, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(3, 50), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n)
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(sample, min_size=1, max_size=5), st.floats(1.0, 20.0))
def test_collator_properties(samples, tag_weight):
    """Shapes line up; labels are shifted ids exactly where the shifted mask is set; padding carries no weight."""
    items = [{"ids": torch.tensor(i), "mask": torch.tensor(m)} for i, m in samples]
    batch = SFTCollator(pad_id=0, tag_ids=(3, 4), tag_weight=tag_weight)(items)
    width = max(len(i) for i, _ in samples) - 1
    assert batch["input_ids"].shape == batch["labels"].shape == batch["weights"].shape == (len(items), width)
    for row, (ids, mask) in enumerate(samples):
        for t in range(width):
            real = t + 1 < len(ids) and mask[t + 1]
            target, weight = batch["labels"][row, t].item(), batch["weights"][row, t].item()
            if not real:
                assert target == IGNORE_INDEX and weight == 0
            else:
                assert target == ids[t + 1]
                assert weight == pytest.approx(tag_weight if target in (3, 4) else 1.0)
        assert batch["input_ids"][row, : len(ids) - 1].tolist() == ids[:-1]


def test_collator_rejects_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        SFTCollator(pad_id=0)([])


def test_real_samples_both_tokenizers(reference_dir, tokenizer):
    for name in ("sft", "r1"):
        ds = ChatDataset(reference_dir / "data" / f"{name}.jsonl", tokenizer, max_len=257)
        assert len(ds) >= 100 and ds.skipped.total == 0
        batch = SFTCollator(tokenizer.eos_id, tag_token_ids(tokenizer), 10.0)([ds[i] for i in range(8)])
        assert (batch["weights"].sum(1) > 0).all()
    extra = ChatDataset(reference_dir / "data" / "extra" / "sft_t2t_mini_head100.jsonl", tokenizer, max_len=513)
    assert len(extra) == 100 and extra.skipped.total == 0  # lines 55 and 76 repeat an assistant turn: kept as is


text = st.text(alphabet=st.sampled_from(list("ab xy12+=?.河水东流。\n")), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.booleans(), st.lists(st.tuples(text, text), min_size=1, max_size=3), text)
def test_mask_property_random_conversations(bpe_tokenizer_dir, with_system, turns, system):
    """For any conversation, supervised text is exactly the replies each followed by <|im_end|>."""
    tok = load_tokenizer(bpe_tokenizer_dir)
    conv = [{"role": "system", "content": system}] if with_system else []
    for question, reply in turns:
        conv += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    ids, mask = tokenize_conversation(tok, conv)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == tok.render_chat(conv)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "".join(r + "<|im_end|>" for _, r in turns)


TOOL_RECORD = {
    "conversations": [
        {"role": "system", "content": "", "tools": '[{"type": "function", "function": {"name": "calc"}}]'},
        {"role": "user", "content": "12 * 35?"},
        {"role": "assistant", "content": "", "tool_calls": '[{"name": "calc", "arguments": {"e": "12*35"}}]'},
        {"role": "tool", "content": "420"},
        {"role": "assistant", "content": "420."},
    ]
}


@pytest.fixture(scope="module")
def tool_tokenizer(tmp_path_factory):
    """A tokenizer as ``weakwater tokenizer train`` writes it: tool tags as single tokens, the tools template."""
    from weakwater.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("tooltok")
    train_tokenizer([f"What is 12 * 35? 420. 计算 {i}" for i in range(40)], out / "tok", vocab_size=300)
    return load_tokenizer(out / "tok")


def test_tool_mask_token_by_token(tool_tokenizer):
    """Loss on the assistant's calls and answer (each closed by <|im_end|>); never on the tools, the user or
    the tool's result."""
    from weakwater.data.chat import to_messages

    tok = tool_tokenizer
    ids, mask = tokenize_conversation(tok, to_messages(TOOL_RECORD))
    text = supervised_runs(tok, ids, mask)
    assert [sup for sup, _ in text] == [False, True, False, True, False]
    assert text[0][1].startswith("<|im_start|>system\n# Tools") and text[0][1].endswith(
        "<|im_start|>user\n12 * 35?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text[1][1] == '<tool_call>\n{"name": "calc", "arguments": {"e": "12*35"}}\n</tool_call><|im_end|>'
    assert text[2][1] == "\n<|im_start|>user\n<tool_response>\n420\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert text[3][1] == "420.<|im_end|>"
    call_open = tok.token_to_id("<tool_call>")
    assert [m for i, m in zip(ids, mask) if i == call_open] == [False, False, True]  # the tools text: not trained
    response = tok.token_to_id("<tool_response>")
    assert not any(m for i, m in zip(ids, mask) if i == response)


def test_tool_mask_minimind_tokenizers(tokenizer):
    """MiniMind-3's template and tokenizer (tool tags are tokens) and MiniMind2's (spelt as text): same rule."""
    from weakwater.data.chat import to_messages

    if not tokenizer.supports_tools:
        pytest.skip("template without tools")
    ids, mask = tokenize_conversation(tokenizer, to_messages(TOOL_RECORD))
    assert "# Tools" in tokenizer.decode(ids) and '{"name": "calc"}' in tokenizer.decode(ids)
    supervised = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert '<tool_call>\n{"name": "calc", "arguments": {"e": "12*35"}}\n</tool_call><|im_end|>' in supervised
    assert supervised.endswith("420.<|im_end|>") and "<tool_response>" not in supervised
    assert "12 * 35?" not in supervised and "# Tools" not in supervised
