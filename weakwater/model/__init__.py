"""The LLaMA-3-style model, its config and presets, and the saved-model directory format."""

from weakwater.model.config import PRESETS, ModelConfig, RopeScaling, preset
from weakwater.model.io import load_model, read_model_config, save_model
from weakwater.model.llama import KVCache, Transformer

__all__ = [
    "PRESETS",
    "KVCache",
    "ModelConfig",
    "RopeScaling",
    "Transformer",
    "load_model",
    "preset",
    "read_model_config",
    "save_model",
]
