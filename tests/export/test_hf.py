"""The HF export loads in plain transformers (no remote code) and computes exactly what our model computes."""

from __future__ import annotations

import json

import pytest
import torch

from weakwater.export.hf import export_hf
from weakwater.model import load_model
from weakwater.model.config import RopeScaling
from weakwater.model.lora import apply_lora, save_adapter

from .reference import greedy

transformers = pytest.importorskip("transformers")

TEXT = "Small models learn fast. 小模型学得很快！What is 12 + 35?"


@pytest.mark.parametrize(
    "rope_scaling,tie,qk_norm",
    [
        (None, True, False),
        (RopeScaling("linear", 2.0, 64), False, False),
        (RopeScaling("yarn", 4.0, 32), True, False),
        (None, False, True),
        (RopeScaling("yarn", 4.0, 32), True, True),
    ],
    ids=["plain-tied", "linear-untied", "yarn", "qwen3-untied", "qwen3-yarn"],
)
def test_hf_export_logits_match(tmp_path, make_model_dir, rope_scaling, tie, qk_norm):
    model_dir = make_model_dir(tmp_path / "m", rope_scaling=rope_scaling, tie_embeddings=tie, qk_norm=qk_norm)
    out = export_hf(model_dir, tmp_path / "hf")
    ours = load_model(model_dir).eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if qk_norm else "LlamaForCausalLM")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(TEXT)["input_ids"]
    assert ids == tok.backend_tokenizer.encode(TEXT).ids  # no BOS/EOS added
    long_ids = (ids * 8)[:120]  # past the original context, where RoPE scaling matters
    x = torch.tensor([long_ids])
    with torch.no_grad():
        diff = (hf(x).logits - ours(x)).abs().max().item()
    assert diff < 1e-4, f"max abs logit diff {diff}"


def test_hf_export_greedy_and_tokenizer(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    out = export_hf(model_dir, tmp_path / "hf")
    assert not any(json.loads((out / "config.json").read_text()).get(k) for k in ("auto_map",))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "你好, who are you?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n你好, who are you?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    prompt = tok(text)["input_ids"]
    ours = greedy(load_model(model_dir).eval(), prompt, 32)
    with torch.no_grad():
        gen = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt) :].tolist()
    stops = set(hf.generation_config.eos_token_id)
    assert gen == ours[: len(gen)]
    assert len(gen) == 32 or gen[-1] in stops  # HF stops early only at an end token


def test_hf_export_renders_tool_chats_as_training_does(tmp_path):
    """``apply_chat_template(messages, tools=...)`` on the export gives the exact string SFT trains on."""
    from weakwater.data.chat import to_messages
    from weakwater.data.sft import tokenize_conversation
    from weakwater.model import ModelConfig, Transformer, save_model
    from weakwater.tokenizer import load_tokenizer
    from weakwater.tokenizer.train import train_tokenizer

    train_tokenizer([f"{TEXT} {i}" for i in range(50)], tmp_path / "tok", vocab_size=400)
    tok = load_tokenizer(tmp_path / "tok")
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1))
    out = export_hf(save_model(model, tmp_path / "m", tokenizer_dir=tmp_path / "tok"), tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    record = {  # OpenAI's shape: arguments as a JSON string, null content, tool_call_id
        "messages": [
            {"role": "system", "content": "你是助手。"},
            {"role": "user", "content": "12 * 35?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"e":"12*35"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "420"},
            {"role": "assistant", "content": "420。"},
        ],
        "tools": tools,
    }  # fmt: skip
    messages = to_messages(record)
    ids, _ = tokenize_conversation(tok, messages)
    expected = hf_tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert tok.decode(ids) == expected
    assert hf_tok(expected, add_special_tokens=False)["input_ids"] == ids
    assert hf_tok.convert_tokens_to_ids("<tool_call>") == tok.token_to_id("<tool_call>")


def test_hf_export_dtype_and_merge_lora(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    model = load_model(model_dir)
    apply_lora(model, rank=4, alpha=8)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    save_adapter(model, tmp_path / "adapter")
    x = torch.tensor([[5, 9, 30, 200, 7]])
    with torch.no_grad():
        expected = model(x)
    out = export_hf(model_dir, tmp_path / "hf", merge_adapter=tmp_path / "adapter", dtype="bfloat16")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert hf.dtype == torch.bfloat16
    with torch.no_grad():
        got = hf.float()(x).logits
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()  # bf16 rounding only
    with pytest.raises(ValueError, match="--dtype"):
        export_hf(model_dir, tmp_path / "bad", dtype="int4")
