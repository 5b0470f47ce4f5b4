"""GGUF export: metadata and tensors as llama.cpp expects, and (with llama-cpp-python) same tokens and greedy text."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from weakwater.export.gguf import export_gguf, permute_rope, pre_tokenizer_name
from weakwater.model import load_model

from .reference import greedy

gguf = pytest.importorskip("gguf")

MIXED = (
    "Hello, 世界! It's (DON'T) 1308 + 7 = 1315，价格：45元。 The river flows east 河水向东流入大海。 What is 12 + 35?"
    "\n\n  indented\t\n<|im_start|>user\n你好<|im_end|>"
)


def read_fields(path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_permute_rope_matches_interleaved_rotation():
    """Rotating interleaved pairs of the permuted rows equals rotate-half on the original rows."""
    torch.manual_seed(0)
    n_heads, hd, dim = 2, 8, 5
    w, x = torch.randn(n_heads * hd, dim), torch.randn(dim)
    theta = torch.rand(hd // 2) * 3
    cos, sin = torch.cat([theta.cos()] * 2), torch.cat([theta.sin()] * 2)
    q = (w @ x).view(n_heads, hd)
    half = torch.cat((-q[:, hd // 2 :], q[:, : hd // 2]), -1)
    ref = q * cos + half * sin
    p = (permute_rope(w, n_heads) @ x).view(n_heads, hd // 2, 2)
    c, s = theta.cos(), theta.sin()
    rot = torch.stack((p[..., 0] * c - p[..., 1] * s, p[..., 0] * s + p[..., 1] * c), -1).view(n_heads, hd)
    back = rot.view(n_heads, hd // 2, 2).transpose(1, 2).reshape(n_heads, hd)  # undo the permutation
    assert torch.allclose(back, ref, atol=1e-5)


@pytest.mark.parametrize("tensor_type", ["f32", "f16", "q8_0"])
def test_gguf_metadata_and_tensors(tmp_path, make_model_dir, tensor_type):
    model_dir = make_model_dir(tmp_path / "m")
    path = export_gguf(model_dir, tmp_path / "m.gguf", tensor_type)
    fields, tensors = read_fields(path)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "qwen2"
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert fields["tokenizer.ggml.token_type"][:7] == [3] * 7  # control tokens
    assert len(fields["tokenizer.ggml.merges"]) == len(tok["model"]["merges"])
    assert (fields["tokenizer.ggml.eos_token_id"], fields["tokenizer.ggml.padding_token_id"]) == (2, 0)
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    assert "output.weight" not in tensors  # tied embeddings
    expected = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}[tensor_type]
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == expected
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    if tensor_type == "f32":
        ours = load_model(model_dir)
        got = np.asarray(tensors["blk.1.attn_k.weight"].data)
        want = permute_rope(ours.layers[1].self_attn.k_proj.weight.detach(), 2).numpy()
        assert np.array_equal(got.reshape(want.shape), want)


def test_gguf_qk_norm_model_is_qwen3(tmp_path, make_model_dir):
    """QK-norm models go out as llama.cpp's qwen3: q/k norm gains as f32 tensors, q/k rows unpermuted."""
    model_dir = make_model_dir(tmp_path / "m", qk_norm=True)
    fields, tensors = read_fields(export_gguf(model_dir, tmp_path / "m.gguf", "f32"))
    assert fields["general.architecture"] == "qwen3"
    assert fields["qwen3.block_count"] == 2 and fields["qwen3.attention.key_length"] == 16
    assert "llama.block_count" not in fields
    ours = load_model(model_dir)
    for name, theirs in (("q_proj", "attn_q"), ("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm")):
        want = ours.layers[1].self_attn.get_parameter(f"{name}.weight").detach().numpy()
        got = tensors[f"blk.1.{theirs}.weight"]
        assert got.tensor_type.name == "F32"
        assert np.array_equal(np.asarray(got.data).reshape(want.shape), want)


def test_unknown_pre_tokenizer_rejected():
    with pytest.raises(ValueError, match="no llama.cpp equivalent"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}) == "gpt-2"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # loud on purpose; CI sets WEAKWATER_REQUIRE_LLAMA_CPP=1 so it fails instead
        message = f"LLAMA.CPP NOT TESTED: llama-cpp-python is not importable ({e}); see docs/export.md"
        if os.environ.get("WEAKWATER_REQUIRE_LLAMA_CPP") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return llama_cpp


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["ours", "minimind", "ours-qk-norm"])
def test_llama_cpp_tokens_and_greedy(tmp_path, make_model_dir, request, tokenizer):
    llama_cpp = _llama_cpp()
    if tokenizer == "ours-qk-norm":  # llama.cpp's qwen3 architecture
        model_dir = make_model_dir(tmp_path / "m", qk_norm=True)
    elif tokenizer == "minimind":
        ref = request.getfixturevalue("reference_dir") / "minimind_tokenizer" / "minimind2_4014e62"
        model_dir = make_model_dir(tmp_path / "m", vocab_size=6400)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model_dir / name).write_bytes((ref / name).read_bytes())
        (model_dir / "chat_template.jinja").unlink()  # use MiniMind's own template from its config
    else:
        model_dir = make_model_dir(tmp_path / "m")
    path = export_gguf(model_dir, tmp_path / "m.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=2, verbose=False, logits_all=False)
    from tokenizers import Tokenizer

    hf_tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ours_ids = hf_tok.encode(MIXED).ids
    assert llm.tokenize(MIXED.encode(), add_bos=False, special=True) == ours_ids
    assert llm.detokenize(ours_ids[:12]).decode() == hf_tok.decode(ours_ids[:12], skip_special_tokens=False)

    prompt = ours_ids[:20]
    want = greedy(load_model(model_dir).eval(), prompt, 32)
    got = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        got.append(token)
        if len(got) == 32 or token == llm.token_eos():
            break
    assert got == want[: len(got)] and (len(got) == 32 or got[-1] == llm.token_eos())


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant,tensor_type,tol",
    [("tied", "f32", 1e-3), ("untied", "f32", 1e-3), ("linear", "f32", 1e-3), ("yarn", "f32", 1e-3),
     ("tied", "f16", 0.3), ("tied", "q8_0", 3.0), ("qk_norm", "f32", 1e-3), ("qk_norm-yarn", "f32", 1e-3)],
)  # fmt: skip
def test_llama_cpp_logits(tmp_path, make_model_dir, variant, tensor_type, tol):
    """Same logits as ours over 100 positions (f32 KV cache so only the weights' type differs),
    including positions past the original context where RoPE scaling matters."""
    from weakwater.model.config import RopeScaling

    llama_cpp = _llama_cpp()
    overrides = {
        "tied": {},
        "untied": {"tie_embeddings": False},
        "linear": {"rope_scaling": RopeScaling("linear", 2.0, 64)},
        "yarn": {"rope_scaling": RopeScaling("yarn", 4.0, 32)},
        "qk_norm": {"qk_norm": True, "tie_embeddings": False},
        "qk_norm-yarn": {"qk_norm": True, "rope_scaling": RopeScaling("yarn", 4.0, 32)},
    }[variant]
    model_dir = make_model_dir(tmp_path / "m", **overrides)
    path = export_gguf(model_dir, tmp_path / "m.gguf", tensor_type)
    f32 = 0  # GGML_TYPE_F32 for the KV cache (llama.cpp defaults to f16)
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=128, n_threads=2, verbose=False, logits_all=True, type_k=f32, type_v=f32
    )
    ids = torch.randint(7, llm.n_vocab(), (100,), generator=torch.Generator().manual_seed(0)).tolist()
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        want = load_model(model_dir)(torch.tensor([ids]))[0].numpy()
    assert np.abs(got - want).max() < tol
