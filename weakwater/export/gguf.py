"""Export a saved model as one GGUF file that stock llama.cpp (and Ollama, LM Studio) loads unpatched.

The layout is llama.cpp's ``llama`` architecture as ``convert_hf_to_gguf.py`` writes it for
``LlamaForCausalLM``: q/k rows permuted from HF's rotate-half RoPE layout to llama.cpp's interleaved
one. QK-norm models are written as its ``qwen3`` architecture instead (as for ``Qwen3ForCausalLM``):
the same tensors plus ``attn_q_norm``/``attn_k_norm``, and no permutation, because llama.cpp rotates
qwen3's q/k in the rotate-half ("NEOX") layout ours already has. Either way a ``gpt2``-type BPE
tokenizer is embedded with its merges, token types, special ids and chat template.
``tokenizer.ggml.pre`` names the pre-tokenizer regex, which llama.cpp must know: ours is Qwen2's
(single digits; llama.cpp's ``qwen2``), MiniMind's byte-level GPT-2 (``gpt-2``), so nothing needs
patching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakwater.export.hf import load_for_export, read_chat_template, read_tokenizer_json, special_ids
from weakwater.model.config import ModelConfig
from weakwater.tokenizer.pretokenize import LLAMA3_SPLIT, QWEN2_SPLIT

# Pre-tokenizer regexes of the HF ``Split`` pre-tokenizer that llama.cpp implements, by its name for them.
KNOWN_SPLIT_REGEXES = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}
TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for this tokenizer; refuses ones llama.cpp would split differently."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt-2"  # llama.cpp's name for the GPT-2 regex (its model name is "gpt2")
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        if (
            len(steps) == 2
            and steps[0].get("type") == "Split"
            and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True)
        ):
            regex = steps[0].get("pattern", {}).get("Regex")
            if regex in KNOWN_SPLIT_REGEXES:
                return KNOWN_SPLIT_REGEXES[regex]
    raise ValueError(
        f"tokenizer.json pre_tokenizer {pre!r} has no llama.cpp equivalent; "
        "GGUF export supports byte-level GPT-2, Qwen2 and Llama-3 pre-tokenization"
    )


def vocab_arrays(tokenizer_json: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, llama.cpp token types, merges as "a b") padded to the model's vocab size."""
    import gguf

    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer model type {model.get('type')!r} is not BPE")
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {t["id"]: t for t in tokenizer_json.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if max(by_id) >= vocab_size:
        raise ValueError(f"tokenizer has id {max(by_id)} but the model's vocab_size is {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # the model has more rows than the tokenizer: never produced, never sampled
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def permute_rope(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k output rows per head from rotate-half (HF) to interleaved pairs (llama.cpp's rope)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_arch(config: ModelConfig) -> str:
    """llama.cpp's architecture computing what ``config`` computes."""
    return "qwen3" if config.qk_norm else "llama"


def gguf_tensors(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under llama.cpp tensor names (tied ``output.weight`` omitted: llama.cpp reuses the embedding)."""
    out = {"token_embd.weight": state["embed_tokens.weight"], "output_norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    if config.qk_norm:
        names.update({"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"})
    interleaved = gguf_arch(config) == "llama"  # llama.cpp's llama rope pairs neighbours; qwen3's halves
    for i in range(config.n_layers):
        for ours, theirs in names.items():
            w = state[f"layers.{i}.{ours}.weight"]
            if interleaved and ours == "self_attn.q_proj":
                w = permute_rope(w, config.n_heads)
            elif interleaved and ours == "self_attn.k_proj":
                w = permute_rope(w, config.n_kv_heads)
            out[f"blk.{i}.{theirs}.weight"] = w
    return out


def export_gguf(
    model_dir: str | Path, out_file: str | Path, tensor_type: str = "f16", merge_adapter: str | Path | None = None
) -> Path:
    """Write ``out_file`` (GGUF v3) for the saved model in ``model_dir``; ``tensor_type`` is f32, f16 or q8_0."""
    import gguf

    if tensor_type not in TYPES:
        raise ValueError(f"--type must be one of {', '.join(TYPES)}, got {tensor_type!r}")
    model_dir, out_file = Path(model_dir), Path(out_file)
    model = load_for_export(model_dir, merge_adapter)
    config = model.config
    tok_json = read_tokenizer_json(model_dir)
    ids = special_ids(tok_json)
    tokens, token_types, merges = vocab_arrays(tok_json, config.vocab_size)

    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[tensor_type]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=gguf_arch(config))  # metadata keys are prefixed by the arch
    writer.add_name(model_dir.resolve().name)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.dim)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_key_length(config.head_dim)  # as the converter writes for HF configs that name head_dim
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    if config.rope_scaling is not None:
        scaling = config.rope_scaling
        kind = gguf.RopeScalingType.LINEAR if scaling.kind == "linear" else gguf.RopeScalingType.YARN
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(scaling.factor)
        if scaling.kind == "yarn":
            writer.add_rope_scaling_orig_ctx_len(scaling.original_max_seq_len)
            writer.add_rope_scaling_yarn_beta_fast(scaling.beta_fast)
            writer.add_rope_scaling_yarn_beta_slow(scaling.beta_slow)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tok_json))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids.im_start if ids.im_start is not None else ids.endoftext)
    writer.add_eos_token_id(ids.eos)
    if ids.im_end is not None:
        writer.add_eot_token_id(ids.im_end)
    writer.add_pad_token_id(ids.endoftext)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    template = read_chat_template(model_dir)
    if template is not None:
        writer.add_chat_template(template)

    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    for name, tensor in gguf_tensors(state, config).items():
        data = tensor.numpy()
        if data.ndim == 1 or tensor_type == "f32":  # norms stay f32, as llama.cpp's converter keeps them
            writer.add_tensor(name, data.astype(np.float32))
        elif tensor_type == "f16" or data.shape[-1] % Q8_BLOCK:  # q8_0 needs rows in whole 32-value blocks
            writer.add_tensor(name, data.astype(np.float16))
        else:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_file)
    return out_file
