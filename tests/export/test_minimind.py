"""MiniMind checkpoints (MiniMind2 and v1 parameter names) import to a model that computes the same function."""

from __future__ import annotations

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
