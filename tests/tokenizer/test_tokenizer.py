"""Tokenizer: round trips, special tokens, chat template equality with transformers, training and stats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weakwater.cli import main
from weakwater.data.text import iter_texts
from weakwater.jsonl import DataError, SkipCounter
from weakwater.tokenizer import SPECIAL_TOKENS, TOOL_TOKENS, Tokenizer, load_tokenizer
from weakwater.tokenizer.train import tokenizer_stats, train_tokenizer

LINES = [
    "今天天气很好，我们去公园散步吧。",
    "The quick brown fox jumps over the lazy dog.",
    "北京是中国的首都，Beijing is the capital of China.",
    "数学：3 + 4 = 7，12 × 3 = 36。",
    "Emoji 也可以：😀🎉👍🏽 and ümlauts, café, naïve.",
    "<think>先想一想</think><answer>答案是四十二</answer>",
    "深度学习模型需要大量数据进行训练。Deep learning needs lots of data.",
]
SAMPLES = [
    "你好，世界！",
    "Hello, world!",
    "😀🎉👍🏽 🇨🇳",
    "混合 mixed 文本 with 数字 123 and emoji 🚀\n新行\r\n\ttab",
    "<|im_start|>user\n你好<|im_end|>\n<think>\n嗯\n</think>\n<answer>好</answer><|endoftext|>",
    "  leading and trailing spaces  ",
    "",
]
MESSAGES = [
    {"role": "system", "content": "你是一个乐于助人的助手。"},
    {"role": "user", "content": "1+1 等于几？"},
    {"role": "assistant", "content": "<think>\n一加一\n</think>\n<answer>2</answer>"},
    {"role": "user", "content": "Thanks! 再见 👋"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = [{"text": f"{line} 第{i}行 line {i}"} for i in range(60) for line in LINES]
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", rows)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(iter_texts([corpus]), out, vocab_size=500)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    return load_tokenizer(tok_dir)


def minimind_dirs(reference_dir):
    base = reference_dir / "minimind_tokenizer"
    return [base, base / "minimind2_4014e62"]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_single_fixed_ids(tok):
    for i, special in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(special) == i
        assert tok.encode(special) == [i]
    assert (tok.eos_id, tok.im_start_id, tok.im_end_id) == (0, 1, 2)
    ids = tok.encode("a<think>b</think>")
    assert ids.count(3) == 1 and ids.count(4) == 1
    assert tok.decode(tok.encode("<answer>x</answer>"), skip_special_tokens=True) == "x"


def test_tool_tokens_are_single_and_last(tok, reference_dir):
    last = [tok.vocab_size - 4 + i for i in range(4)]
    assert [tok.token_to_id(t) for t in TOOL_TOKENS] == last
    assert [tok.encode(t) for t in TOOL_TOKENS] == [[i] for i in last]
    assert tok.missing_tool_tokens == () and tok.supports_tools
    # MiniMind-3's tokenizer has them (its own ids); MiniMind2's has none: they are spelt as several tokens.
    mm3, mm2 = minimind_dirs(reference_dir)
    assert load_tokenizer(mm3).missing_tool_tokens == ()
    assert load_tokenizer(mm2).missing_tool_tokens == TOOL_TOKENS
    assert len(load_tokenizer(mm2).encode("<tool_call>")) > 1


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]
CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "12 * 34"}}}
TOOL_CHAT = [
    {"role": "user", "content": "12 * 34?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "408"},
    {"role": "assistant", "content": "408.", "tool_calls": None},
]


def test_tool_chat_renders_like_qwen(tok):
    text = tok.render_chat([{"role": "system", "content": "Be brief."}, *TOOL_CHAT], tools=TOOLS)
    head = "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
    assert text.startswith(head)
    assert "<tools>\n" + json.dumps(TOOLS[0], ensure_ascii=False) + "\n</tools>" in text
    assert text.endswith(
        "<|im_start|>user\n12 * 34?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 34"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n408\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n408.<|im_end|>\n"
    )
    # MiniMind-3's shape (tools on the system message) renders the same; two results share one user turn.
    on_system = [{"role": "system", "content": "Be brief.", "tools": TOOLS}, *TOOL_CHAT]
    assert tok.render_chat(on_system) == text
    two = [TOOL_CHAT[0], {"role": "assistant", "content": "Sure.", "tool_calls": [CALL, CALL]}]
    two += [{"role": "tool", "content": "408"}, {"role": "tool", "content": "408"}]
    rendered = tok.render_chat(two, tools=TOOLS, add_generation_prompt=True)
    assert "Sure.\n<tool_call>\n" in rendered and "</tool_call>\n<tool_call>\n" in rendered
    assert rendered.endswith(
        "<|im_start|>user\n<tool_response>\n408\n</tool_response>\n<tool_response>\n408\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_that_cannot_show_tools_is_an_error(tmp_path, tok_dir):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tok_dir / name).read_bytes())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    plain = load_tokenizer(tmp_path)
    assert plain.render_chat(MESSAGES[1:2]) == MESSAGES[1]["content"]
    with pytest.raises(ValueError, match="cannot render tools"):
        plain.render_chat(MESSAGES[1:2], tools=TOOLS)
    with pytest.raises(ValueError, match="cannot render tools"):
        plain.render_chat(TOOL_CHAT)


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]


def test_our_chat_template_is_chatml(tok):
    text = tok.render_chat(MESSAGES[1:2], add_generation_prompt=True)
    assert text == "<|im_start|>user\n1+1 等于几？<|im_end|>\n<|im_start|>assistant\n"


def _assert_same_as_transformers(directory):
    from transformers import AutoTokenizer

    ours, hf = load_tokenizer(directory), AutoTokenizer.from_pretrained(str(directory))
    for messages in (MESSAGES, MESSAGES[1:], MESSAGES[1:2], MESSAGES[:3]):
        for gen in (False, True):
            expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert ours.render_chat(messages, add_generation_prompt=gen) == expected
    if ours.supports_tools:  # both MiniMind templates and ours render tools
        for messages in (TOOL_CHAT, [MESSAGES[0], *TOOL_CHAT], TOOL_CHAT[:2]):
            expected = hf.apply_chat_template(messages, tools=TOOLS, tokenize=False)
            assert ours.render_chat(messages, tools=TOOLS) == expected
    for text in SAMPLES:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False)


def test_chat_template_matches_transformers_ours(tok_dir):
    _assert_same_as_transformers(tok_dir)


def test_chat_template_matches_transformers_minimind(reference_dir):
    for directory in minimind_dirs(reference_dir):
        _assert_same_as_transformers(directory)


def test_load_minimind(reference_dir):
    for directory in minimind_dirs(reference_dir):
        tok = load_tokenizer(directory)
        assert tok.vocab_size == 6400
        assert (tok.eos_id, tok.im_start_id, tok.im_end_id) == (0, 1, 2)
        for text in SAMPLES:
            assert tok.decode(tok.encode(text)) == text


def test_missing_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_numbers_are_single_digits(tok):
    # The corpus repeats "12 × 3 = 36" and line numbers 0-59 sixty times: GPT-2's regex would merge them.
    for text in ("12 × 3 = 36", "line 59", "1308元"):
        digits = [t for t in (tok.decode([i]) for i in tok.encode(text)) if any(c.isdigit() for c in t)]
        assert digits == [c for c in text if c.isdigit()], text


def test_train_writes_autotokenizer_dir(tok_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(hf) == 500
    assert hf.eos_token == "<|im_end|>" and hf.pad_token_id == 0
    assert hf.convert_tokens_to_ids("</answer>") == 6


def test_train_reads_chat_rows_and_skips_bad_lines(tmp_path):
    rows = [{"conversations": [{"role": "user", "content": f"问题{i}"}, {"role": "assistant", "content": "回答"}]}
            for i in range(50)]  # fmt: skip
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"broken": \n[1, 2]\n')
    skipped = SkipCounter()
    summary = train_tokenizer(iter_texts([path], skipped=skipped), tmp_path / "tok", vocab_size=300, skipped=skipped)
    assert summary["train_docs"] == 50
    assert summary["skipped"]["by_reason"] == {"invalid_json": 1, "not_object": 1}


def test_train_errors(tmp_path, corpus):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(iter_texts([corpus]), tmp_path / "t", vocab_size=100)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no usable text"):
        train_tokenizer(iter_texts([empty]), tmp_path / "t")
    with pytest.raises(FileNotFoundError):
        train_tokenizer(iter_texts([tmp_path / "missing.jsonl"]), tmp_path / "t")


def test_stats_counts_tags(tok, corpus):
    stats = tokenizer_stats(tok, iter_texts([corpus]))
    assert stats["tokens_per_tag"] == dict.fromkeys(SPECIAL_TOKENS + TOOL_TOKENS, 1)
    assert stats["chars_per_token"] > 1.0 and stats["bytes_per_token"] > stats["chars_per_token"]


def test_cli_train_and_stats(tmp_path, corpus, capsys):
    assert main(["tokenizer", "train", "--data", str(corpus), "--out", str(tmp_path / "t"), "--vocab-size", "300"]) == 0
    assert main(["tokenizer", "stats", "--tokenizer", str(tmp_path / "t"), "--data", str(corpus)]) == 0
    assert '"chars_per_token"' in capsys.readouterr().out
    assert main(["tokenizer", "stats", "--tokenizer", str(tmp_path / "nope"), "--data", str(corpus)]) == 2


def test_compression_vs_minimind(reference_dir, tmp_path):
    """Ours at vocab 6400 trained on 90% of the reference pretrain lines vs MiniMind's on the held-out 10%."""
    data = [reference_dir / "data" / "pretrain.jsonl"]
    train_tokenizer(iter_texts(data, heldout_frac=0.1), tmp_path / "ours", vocab_size=6400)
    ours = tokenizer_stats(load_tokenizer(tmp_path / "ours"), iter_texts(data, heldout_frac=0.1, heldout=True))
    theirs = tokenizer_stats(
        load_tokenizer(reference_dir / "minimind_tokenizer"), iter_texts(data, heldout_frac=0.1, heldout=True)
    )
    print(f"held-out chars/token: ours {ours['chars_per_token']:.3f}, MiniMind {theirs['chars_per_token']:.3f}")
    assert ours["chars"] == theirs["chars"] > 10_000
    # Same vocab size, trained on this distribution: ours must compress at least about as well.
    assert ours["chars_per_token"] > 0.95 * theirs["chars_per_token"]
    assert 1.0 < ours["chars_per_token"] < 4.0
