"""Export a saved model as a Hugging Face ``LlamaForCausalLM`` directory, ``Qwen3ForCausalLM`` for
QK-norm models (no ``trust_remote_code`` either way).

The model itself (config shape fields, weight names, RoPE scaling) is translated by the one mapping
in ``model/hf.py``; this module adds the files around it: token ids, tokenizer, chat template,
generation defaults.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weakwater.model.config import ModelConfig
from weakwater.model.hf import to_hf_config, to_hf_state_dict
from weakwater.model.io import atomic_replace_dir, fresh_tmp_dir, load_model, save_safetensors
from weakwater.model.llama import Transformer
from weakwater.model.lora import load_adapter, merge_lora

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokens other runtimes need to know about (None when a tokenizer lacks one)."""

    endoftext: int
    im_start: int | None
    im_end: int | None

    @property
    def eos(self) -> int:
        """The chat stop token when present (generation ends a turn there), else the document separator."""
        return self.im_end if self.im_end is not None else self.endoftext

    @property
    def eos_list(self) -> list[int]:
        return sorted({self.eos, self.endoftext})


def read_tokenizer_json(tokenizer_dir: Path) -> dict[str, Any]:
    path = tokenizer_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer.json")
    return json.loads(path.read_text(encoding="utf-8"))


def special_ids(tokenizer_json: dict[str, Any]) -> SpecialIds:
    """Look the special tokens up in tokenizer.json (added tokens first, then the BPE vocab)."""
    table = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    vocab = tokenizer_json["model"]["vocab"]
    ids = {name: table.get(name, vocab.get(name)) for name in (ENDOFTEXT, IM_START, IM_END)}
    if ids[ENDOFTEXT] is None:
        raise ValueError(f"tokenizer has no {ENDOFTEXT} token")
    return SpecialIds(ids[ENDOFTEXT], ids[IM_START], ids[IM_END])


def read_chat_template(tokenizer_dir: Path) -> str | None:
    """The chat template from ``chat_template.jinja`` or, for older dirs, ``tokenizer_config.json``."""
    jinja = tokenizer_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    config = tokenizer_dir / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def hf_config(config: ModelConfig, ids: SpecialIds, dtype: str) -> dict[str, Any]:
    """``config.json``: the model mapping's shape fields plus the token ids and the weight dtype."""
    return {
        **to_hf_config(config),
        "bos_token_id": ids.im_start,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.endoftext,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def write_tokenizer(src: Path, dst: Path, config: ModelConfig, ids: SpecialIds) -> None:
    """Copy ``tokenizer.json`` and write a ``tokenizer_config.json`` that AutoTokenizer needs no code for."""
    shutil.copyfile(src / "tokenizer.json", dst / "tokenizer.json")
    config_path = src / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    tok_config.pop("auto_map", None)  # remote-code tokenizer classes must not be needed
    tok_config.update(
        tokenizer_class="PreTrainedTokenizerFast",
        eos_token=IM_END if ids.im_end is not None else ENDOFTEXT,
        pad_token=ENDOFTEXT,
        unk_token=None,
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=config.max_seq_len,
    )
    tok_config.setdefault("bos_token", None)
    template = read_chat_template(src)
    tok_config.pop("chat_template", None)
    if template is not None:
        # transformers >= 4.43 reads chat_template.jinja; older versions only the config entry.
        tok_config["chat_template"] = template
        (dst / "chat_template.jinja").write_text(template, encoding="utf-8")
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    special_map = {"eos_token": tok_config["eos_token"], "pad_token": ENDOFTEXT}
    if tok_config.get("bos_token"):
        special_map["bos_token"] = tok_config["bos_token"]
    (dst / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")


def load_for_export(model_dir: str | Path, merge_adapter: str | Path | None = None) -> Transformer:
    """Load a saved model in fp32, folding a LoRA adapter into it when one is given."""
    model = load_model(model_dir, device="cpu")
    if merge_adapter is not None:
        merge_lora(load_adapter(model, merge_adapter))
    return model.float().eval()


def export_hf(
    model_dir: str | Path,
    out_dir: str | Path,
    merge_adapter: str | Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the HF directory (Llama, or Qwen3 for QK-norm) for the saved model in ``model_dir`` to ``out_dir``."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = load_for_export(model_dir, merge_adapter)
    ids = special_ids(read_tokenizer_json(model_dir))
    tmp = fresh_tmp_dir(out_dir)
    save_safetensors(to_hf_state_dict(model.state_dict(), model.config, DTYPES[dtype]), tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(hf_config(model.config, ids, dtype), indent=2) + "\n")
    generation = {
        "bos_token_id": ids.im_start,
        "eos_token_id": ids.eos_list,
        "pad_token_id": ids.endoftext,
        "do_sample": False,
        "max_new_tokens": 256,
    }
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_tokenizer(model_dir, tmp, model.config, ids)
    atomic_replace_dir(tmp, out_dir)
    return out_dir
