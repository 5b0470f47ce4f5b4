"""MiniMind checkpoints (MiniMind-3, MiniMind2 and v1 names) import to a model that computes the same function."""

from __future__ import annotations

import json
import math

import pytest
import torch

from weakwater.cli import main
from weakwater.export.gguf import permute_rope
from weakwater.export.minimind import import_minimind
from weakwater.model import load_model

X = torch.tensor([[1, 7, 42, 300, 5, 2, 99]])


def minimind2_state(model) -> dict[str, torch.Tensor]:
    """Our weights as MiniMind2's ``MiniMindForCausalLM.state_dict()`` saves them (fp16, lm_head tied)."""
    state = {f"model.{k}": v.half() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["lm_head.weight"] = model.lm_head.weight.detach().half()
    return state


def minimind_v1_state(model) -> dict[str, torch.Tensor]:
    """Our weights under MiniMind v1 (Meta-style) names with interleaved RoPE rows."""
    legacy = {
        "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo", "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "feed_forward.w1",
        "mlp.up_proj": "feed_forward.w3", "mlp.down_proj": "feed_forward.w2",
    }  # fmt: skip
    c = model.config
    out = {"tok_embeddings.weight": model.embed_tokens.weight, "norm.weight": model.norm.weight}
    out["output.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.layers):
        for ours, theirs in legacy.items():
            w = layer.get_parameter(f"{ours}.weight")
            if ours == "self_attn.q_proj":
                w = permute_rope(w, c.n_heads)
            elif ours == "self_attn.k_proj":
                w = permute_rope(w, c.n_kv_heads)
            out[f"layers.{i}.{theirs}.weight"] = w
    return {k: v.detach().clone() for k, v in out.items()}


def test_import_minimind2(tmp_path, make_model_dir, bpe_tokenizer_dir):
    src = load_model(make_model_dir(tmp_path / "src", max_seq_len=128)).eval()
    torch.save(minimind2_state(src), tmp_path / "full_sft_64.pth")
    rc = main(["import", "minimind", "--checkpoint", str(tmp_path / "full_sft_64.pth"), "--out", str(tmp_path / "mm"),
               "--tokenizer", str(bpe_tokenizer_dir), "--n-heads", "4", "--max-seq-len", "128"])  # fmt: skip
    assert rc == 0
    imported = load_model(tmp_path / "mm").eval()
    c = imported.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim, c.tie_embeddings) == (64, 2, 4, 2, 192, True)
    with torch.no_grad():
        for p in src.parameters():  # MiniMind saves fp16: compare against the same rounding
            p.copy_(p.half().float())
        assert torch.allclose(imported(X), src(X), atol=1e-5)
    assert (tmp_path / "mm" / "tokenizer.json").exists()


def minimind3_reference(vocab_size: int, tie: bool = True):
    """A random model shaped as MiniMind-3's ``MiniMindConfig`` builds it (hidden 64, 4 heads, 2 kv heads,
    intermediate ceil(hidden * pi / 64) * 64, eps 1e-6, theta 1e6), held by transformers' ``Qwen3ForCausalLM``,
    which MiniMind-3's own converter loads its state dicts into unchanged (same parameter names)."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Qwen3ForCausalLM"):
        pytest.skip("transformers too old for Qwen3")
    torch.manual_seed(0)
    hidden = 64
    config = transformers.Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=math.ceil(hidden * math.pi / 64) * 64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=tie,
        use_sliding_window=False,
    )
    qwen3 = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in qwen3.named_parameters():
            if name.endswith("norm.weight"):  # gains start at 1, where a misplaced one changes nothing
                p.uniform_(0.5, 2.0)
            else:
                p.normal_(0, 0.3)  # peaky logits, as in the other export tests
            p.copy_(p.half().float())  # MiniMind's trainer saves fp16: compare against the same rounding
    return qwen3


def test_import_minimind3_equals_qwen3(tmp_path, bpe_tokenizer_dir):
    vocab = len(json.loads((bpe_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    qwen3 = minimind3_reference(vocab)
    state = {k: v.half() for k, v in qwen3.state_dict().items()}  # as its lm_checkpoint saves: lm_head included
    assert "model.layers.1.self_attn.k_norm.weight" in state and "lm_head.weight" in state
    torch.save(state, tmp_path / "full_sft_64.pth")
    rc = main(["import", "minimind", "--checkpoint", str(tmp_path / "full_sft_64.pth"), "--out", str(tmp_path / "mm"),
               "--tokenizer", str(bpe_tokenizer_dir), "--max-seq-len", "128"])  # fmt: skip
    assert rc == 0
    imported = load_model(tmp_path / "mm").eval()
    c = imported.config
    assert (c.qk_norm, c.n_heads, c.n_kv_heads, c.ffn_dim, c.norm_eps) == (True, 4, 2, 256, 1e-6)
    assert c.tie_embeddings
    x = torch.randint(3, vocab, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (imported(x) - qwen3(x).logits).abs().max().item()
    assert diff < 1e-4, diff


def test_import_minimind3_checks_heads_and_refuses_moe(tmp_path, bpe_tokenizer_dir, capsys):
    state = minimind3_reference(700, tie=False).state_dict()
    torch.save(state, tmp_path / "dense.pth")
    with pytest.raises(ValueError, match="--n-heads 8 contradicts the checkpoint"):
        import_minimind(tmp_path / "dense.pth", tmp_path / "o", bpe_tokenizer_dir, n_heads=8)
    # MiniMind-3 with use_moe=True: a router per layer and experts replacing the dense MLP.
    moe = {k: v for k, v in state.items() if ".mlp." not in k}
    for i in range(2):
        moe[f"model.layers.{i}.mlp.gate.weight"] = torch.zeros(4, 64)
        for e in range(4):
            for part, shape in (("gate_proj", (256, 64)), ("up_proj", (256, 64)), ("down_proj", (64, 256))):
                moe[f"model.layers.{i}.mlp.experts.{e}.{part}.weight"] = torch.zeros(shape)
    torch.save(moe, tmp_path / "full_sft_64_moe.pth")
    rc = main(["import", "minimind", "--checkpoint", str(tmp_path / "full_sft_64_moe.pth"), "--out",
               str(tmp_path / "o"), "--tokenizer", str(bpe_tokenizer_dir)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "MoE is not supported" in err and "4 experts per layer" in err and "full_sft_64_moe.pth" in err
    assert not (tmp_path / "o").exists()


def test_import_minimind_v1_untied(tmp_path, make_model_dir, bpe_tokenizer_dir):
    src = load_model(make_model_dir(tmp_path / "src", tie_embeddings=False)).eval()
    torch.save({"model": minimind_v1_state(src)}, tmp_path / "pretrain_64.pth")
    out = import_minimind(tmp_path / "pretrain_64.pth", tmp_path / "mm", bpe_tokenizer_dir, n_heads=4, max_seq_len=128)
    imported = load_model(out).eval()
    assert not imported.config.tie_embeddings
    with torch.no_grad():
        assert torch.allclose(imported(X), src(X), atol=1e-5)


def test_import_rejects_pickled_objects_and_bad_shapes(tmp_path, bpe_tokenizer_dir, capsys):
    import datetime

    torch.save({"x": datetime.datetime(2025, 1, 1)}, tmp_path / "evil.pth")  # any non-tensor object
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        import_minimind(tmp_path / "evil.pth", tmp_path / "o", bpe_tokenizer_dir)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    rc = main(["import", "minimind", "--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o"),
               "--tokenizer", str(bpe_tokenizer_dir)])  # fmt: skip
    assert rc == 2 and "unrecognised checkpoint" in capsys.readouterr().err
