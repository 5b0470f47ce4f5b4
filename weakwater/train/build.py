"""What a run trains, resolved and checked before its first step, and plain copies of it for saving.

The tokenizer (``--tokenizer``, else the one inside ``--init``, else the one the data names), the model
(a saved ``--init`` model plus the overrides that leave every weight's shape alone, or a fresh ``--preset``
with ``[model]`` overrides),
the checks that need tokenizer, model and data together, the optimizer, and the adapter-free CPU copy
of the live (possibly sharded, LoRA-wrapped) weights that ``best/`` and ``final/`` are written from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from weakwater.model.config import ModelConfig, preset
from weakwater.model.io import file_sha256
from weakwater.model.llama import Transformer
from weakwater.train.config import INIT_OVERRIDABLE, ConfigError, TrainConfig


def tokenizer_source(cfg: TrainConfig) -> str | None:
    """The tokenizer directory a run uses: ``--tokenizer``, else the one saved inside ``--init``, else the
    one ``--data`` was prepared with (named in its meta.json); None when there is none. The one rule for
    ``weakwater <stage>`` and ``Trainer(cfg, ...)`` in Python, so both pick the same tokenizer."""
    if cfg.tokenizer:
        return cfg.tokenizer
    if cfg.init and (Path(cfg.init) / "tokenizer.json").is_file():
        return cfg.init
    if cfg.data and Path(cfg.data).is_dir():
        from weakwater.data.pretrain import shard_tokenizer_dir

        try:
            source = shard_tokenizer_dir(cfg.data)  # relative to the shards, found from any working directory
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from e
        return str(source) if source is not None else None
    return None


def load_tokenizer(cfg: TrainConfig, required: bool = False) -> Any:
    """The run's tokenizer (:func:`tokenizer_source`). Without one, a ``required`` run (every CLI stage) is
    refused; otherwise it is a model-only run (tests, custom stages) whose final dir gets no tokenizer files."""
    source = tokenizer_source(cfg)
    if source is None:
        if required:
            raise ConfigError("no tokenizer: pass --tokenizer DIR (or --init DIR of a saved model, which contains one)")
        return None
    from weakwater.tokenizer import load_tokenizer as load

    return load(source)


def build_model(cfg: TrainConfig, tokenizer: Any) -> Transformer:
    """From ``--init`` (plus the allowed overrides) or a fresh ``--preset`` + ``[model]`` overrides."""
    overrides = cfg.model_overrides()
    if cfg.init:
        from weakwater.model.io import load_model

        model = load_model(cfg.init, device="cpu")
        saved = model.config.to_dict()
        changed = {k: v for k, v in overrides.items() if saved.get(k, v) != v or k not in saved}
        if not changed:
            return model
        fixed = sorted(set(changed) - set(INIT_OVERRIDABLE))
        if fixed:
            raise ConfigError(
                f"model overrides {', '.join(f'{k}={changed[k]}' for k in fixed)} change the shape of the --init "
                f"model; only {', '.join(INIT_OVERRIDABLE)} may change when starting from a saved model"
            )
        fresh = Transformer(ModelConfig.from_dict({**saved, **changed}))
        fresh.load_state_dict(model.state_dict())
        return fresh
    if tokenizer is not None and "vocab_size" not in overrides:
        overrides["vocab_size"] = tokenizer.vocab_size
    try:
        config = preset(cfg.preset, **overrides)
    except TypeError as e:
        raise ConfigError(f"[model] overrides: {e}; valid keys are the ModelConfig fields") from e
    return Transformer(config)


def check_model(cfg: TrainConfig, mc: ModelConfig, tokenizer: Any) -> None:
    """Shape problems that only show up once tokenizer, model and sequence length meet."""
    if tokenizer is not None and tokenizer.vocab_size > mc.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model vocab_size is {mc.vocab_size}: "
            f"drop the vocab_size override (it defaults to the tokenizer's) or use the model's own tokenizer"
        )
    if cfg.seq_len > mc.max_seq_len and mc.rope_scaling is None:
        raise ConfigError(
            f"--seq-len {cfg.seq_len} exceeds the model's max_seq_len {mc.max_seq_len}: lower --seq-len, "
            f"raise model max_seq_len (from scratch), or set model rope_scaling (linear/yarn) to extend a "
            f"pretrained model's context"
        )


def check_data(cfg: TrainConfig, train_data: Dataset, mc: ModelConfig, tokenizer: Any) -> None:
    """Token ids only mean something with the tokenizer (and vocabulary) that produced them."""
    data_vocab = getattr(train_data, "vocab_size", None)
    if data_vocab is not None and data_vocab > mc.vocab_size:
        raise ConfigError(
            f"--data {cfg.data} was tokenized with a {data_vocab}-token vocabulary but the model has "
            f"vocab_size {mc.vocab_size}: use the same tokenizer for prepare and training"
        )
    meta_path = Path(cfg.data) / "meta.json"
    tok_dir = getattr(tokenizer, "dir", None)
    if tok_dir is None or not meta_path.is_file():
        return
    expected = json.loads(meta_path.read_text(encoding="utf-8")).get("tokenizer", {}).get("sha256")
    tok_file = Path(tok_dir) / "tokenizer.json"
    if expected and tok_file.is_file() and file_sha256(tok_file) != expected:
        raise ConfigError(
            f"--data {cfg.data} was prepared with a different tokenizer than {tok_dir}: "
            f"re-run `weakwater prepare` with this tokenizer or pass the one it used (--tokenizer)"
        )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Any:
    """``--optimizer`` over the model's trainable parameters (see :mod:`weakwater.train.optim`)."""
    from weakwater.train.optim import build_optimizer as make

    return make(model, cfg.optimizer, cfg.lr, (cfg.beta1, cfg.beta2), cfg.weight_decay, device.type == "cuda")


def plain_copy(model: torch.nn.Module, mc: ModelConfig, cfg: TrainConfig, is_main: bool) -> Transformer | None:
    """A CPU, adapter-free copy of the current weights on the main process (None elsewhere). Every rank
    calls it: under FSDP the full weights are gathered first."""
    if cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if is_main else None
    if not is_main:
        return None
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not shift the training RNG stream
        plain = Transformer(mc)
    if cfg.lora_rank > 0:  # rebuild the adapter layout, load, then fold the adapters in
        from weakwater.model.lora import apply_lora, merge_lora

        apply_lora(plain, cfg.lora_rank, cfg.lora_alpha, targets=tuple(cfg.lora_targets))
        plain.load_state_dict(state)
        return merge_lora(plain)
    plain.load_state_dict(state)
    return plain
