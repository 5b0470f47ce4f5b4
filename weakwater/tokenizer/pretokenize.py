"""How text is cut into pre-tokens before BPE: the regexes our tokenizers use and llama.cpp knows.

Kept apart from training because the same constants also decide how a tokenizer is exported (GGUF
names its pre-tokenizer) and must match, byte for byte, what ``tokenizer.json`` stores.
"""

from __future__ import annotations

from tokenizers import Regex, pre_tokenizers

# Pre-tokenizer regexes as HF ``Split`` patterns (Qwen2's and Llama-3's tokenizer.json); they differ only in
# how numbers are cut. We train with Qwen2's, which makes every digit its own pre-token. GPT-2's regex (ours
# before, MiniMind's) lets BPE merge digit runs by frequency: "950 + 358 = 1308" became "9|50| 3|5|8| 13|0|8",
# the same digit a different token from number to number, which a small model learns arithmetic from badly
# (demo multi-step addition, seeds 0/1: 11%/46% with GPT-2's regex, 74%/75% with Qwen2's). Qwen2's regex
# also keeps a punctuation mark with the word after it, which compresses Chinese better (held-out MiniMind
# pretraining text, vocab 6400: 1.603 chars/token vs 1.546).
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = _WORDS + r"\p{N}" + _REST
LLAMA3_SPLIT = _WORDS + r"\p{N}{1,3}" + _REST


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer we train with: Qwen2's regex split, then byte-level mapping (llama.cpp: ``qwen2``)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
