"""A saved model is a directory: ``config.json`` + ``model.safetensors`` + tokenizer files.

Weights are only ever read from safetensors (no pickle). Directories are written to a
temporary sibling and renamed into place, so a crash never leaves a half-written model.

:func:`load_model` is the one loading path of chat, serve, eval and ``--init``; besides our own
directories it reads Hugging Face ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` directories (ours from
``weakwater export hf``, or anyone's, e.g. MiniMind models converted to those classes), translated
by the one HF mapping in ``model/hf.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from weakwater.model.config import ModelConfig
from weakwater.model.llama import Transformer, rope_frequencies

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "weakwater-llama"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (weights, tokenizers and checkpoints all use this one)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """State dict without the tied lm_head (safetensors refuses shared storage)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` with the permissions of any other file this process writes.

    safetensors creates its file with mode 0600 whatever the umask, so saved models and exports could
    not be shared with another user or mounted into a container running as one; we restore
    ``0666 & ~umask``, what ``open()`` would have given.
    """
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fresh_tmp_dir(final: Path) -> Path:
    """An empty temporary sibling of ``final`` to write into (what a crashed earlier write left is removed);
    :func:`atomic_replace_dir` then moves it into place."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` directory to ``final``, replacing any previous one."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_model(
    model: Transformer,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and the tokenizer files found in ``tokenizer_dir``) to ``out_dir``."""
    out_dir = Path(out_dir)
    tmp = fresh_tmp_dir(out_dir)
    weights = tmp / WEIGHTS_FILE
    save_safetensors(weights_state_dict(model), weights)
    meta = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "weights_sha256": file_sha256(weights),
        **(extra or {}),
    }
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if tokenizer_dir is not None:
        copy_tokenizer_files(Path(tokenizer_dir), tmp)
    atomic_replace_dir(tmp, out_dir)
    return out_dir


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    found = [name for name in TOKENIZER_FILES if (src / name).exists()]
    if "tokenizer.json" not in found:
        raise FileNotFoundError(f"{src}: no tokenizer.json (is this a tokenizer or model directory?)")
    for name in found:
        shutil.copyfile(src / name, dst / name)


def read_json(directory: str | Path, name: str, what: str) -> dict[str, Any]:
    """The JSON in ``directory/name``: a ``FileNotFoundError`` saying ``directory`` is not ``what`` when the
    file is missing, a ``ValueError`` naming the file when it is not valid JSON."""
    path = Path(directory) / name
    if not path.exists():
        raise FileNotFoundError(f"{directory}: not {what} (no {name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def read_model_config(model_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model shape and the whole metadata dict of a saved model directory (ours or an HF one)."""
    path = Path(model_dir) / CONFIG_FILE
    meta = read_json(model_dir, CONFIG_FILE, "a model directory")
    if is_hf_config(meta):
        from weakwater.model.hf import from_hf_config

        try:
            return from_hf_config(meta), meta
        except (KeyError, ValueError) as e:
            detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path}: cannot load this Hugging Face model ({detail})") from e
    if meta.get("format") != FORMAT or "model" not in meta:
        raise ValueError(f"{path}: not a WeakWater model config (format={meta.get('format')!r})")
    return ModelConfig.from_dict(meta["model"]), meta


def is_hf_config(meta: dict[str, Any]) -> bool:
    """An HF ``config.json`` (has ``model_type``) rather than ours (has ``format``)."""
    return "format" not in meta and "model_type" in meta


def _read_weights(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        raise ValueError(f"{path}: unreadable safetensors file ({e})") from e


def _hf_state(model_dir: Path, config: ModelConfig, device: str | torch.device) -> dict[str, torch.Tensor]:
    """An HF directory's weights (one file, or shards listed in ``model.safetensors.index.json``) under
    our names, floats as fp32 like every model we save (exports may be bf16/fp16)."""
    from weakwater.model.hf import from_hf_state_dict

    index = model_dir / (WEIGHTS_FILE + ".index.json")
    if (model_dir / WEIGHTS_FILE).exists():
        files = [model_dir / WEIGHTS_FILE]
    elif index.exists():
        files = [model_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"{model_dir}: missing {WEIGHTS_FILE} (or its .index.json for shards)")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"{index}: lists {path.name}, which is missing")
        state.update(_read_weights(path, device))
    # Older Llama checkpoints also store RoPE's inv_freq buffer; we compute it from the config.
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    try:
        state = from_hf_state_dict(state, config)
    except ValueError as e:
        raise ValueError(f"{model_dir}: {e}") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> Transformer:
    """Load a saved model (ours or an HF Llama/Qwen3 directory); ``verify`` checks the weights' sha256
    against our config.json (HF directories carry no checksum)."""
    model_dir = Path(model_dir)
    config, meta = read_model_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if is_hf_config(meta):
        state = _hf_state(model_dir, config, device)
    else:
        if not weights.exists():
            raise FileNotFoundError(f"{model_dir}: missing {WEIGHTS_FILE}")
        if verify and meta.get("weights_sha256") and file_sha256(weights) != meta["weights_sha256"]:
            raise ValueError(f"{weights}: checksum mismatch, the file is corrupt or was modified")
        state = _read_weights(weights, device)
    with torch.device("meta"):  # skip the random init: every weight is overwritten below
        model = Transformer(config)
    model.to_empty(device=device)
    model.inv_freq.copy_(rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)[0])
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not match config (missing {missing}, unexpected {unexpected})")
    return model
