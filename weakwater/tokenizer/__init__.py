"""Byte-level BPE tokenizer: loading any tokenizer directory, chat rendering, training and statistics."""

from weakwater.tokenizer.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, TOOL_TOKENS, Tokenizer, load_tokenizer
from weakwater.tokenizer.train import tokenizer_stats, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TOOL_TOKENS",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_stats",
    "train_tokenizer",
]
