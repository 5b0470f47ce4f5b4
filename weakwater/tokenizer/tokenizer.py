"""A thin wrapper over a Hugging Face ``tokenizers`` directory (ours, a saved model's, or MiniMind's).

We deliberately do not depend on ``transformers.AutoTokenizer`` at runtime: it is slow to import and its
behaviour changes between versions. Instead we read ``tokenizer.json`` with the fast Rust tokenizer and
render the directory's own jinja chat template with the same sandboxed environment transformers uses,
so ``render_chat`` and ``AutoTokenizer.apply_chat_template(tokenize=False)`` agree byte for byte (tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer

# Our special tokens, in id order: they are the first ids of every tokenizer we train.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)

# Special tokens a reply may contain: reasoning and tool-call markup. Every other special token
# (<|im_end|>, <|endoftext|>, <|im_start|>, MiniMind-3's vision/audio/buffer tokens...) ends a reply.
REPLY_TAGS: frozenset[str] = frozenset(("<think>", "</think>", "<answer>", "</answer>", "<tool_call>", "</tool_call>"))

# ChatML, no default system prompt: exactly what SFT trains on and what inference renders.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class Tokenizer:
    """Encode/decode text and render chats for one tokenizer directory.

    ``encode`` never adds BOS/EOS: the data pipeline decides where document separators go.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        path = self.dir / "tokenizer.json"
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: no such directory (expected a tokenizer or saved model directory)")
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {self.dir} (is it a tokenizer or saved model directory?)")
        self._tok = _HFTokenizer.from_file(str(path))
        config_path = self.dir / "tokenizer_config.json"
        self.config: dict[str, Any] = (
            json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        )
        self.chat_template = self._find_chat_template()
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        eos = self.token_to_id("<|endoftext|>")
        if eos is None:
            raise ValueError(f"tokenizer in {self.dir} has no <|endoftext|> token (needed as document separator)")
        self.eos_id: int = eos
        self.im_start_id = self.token_to_id("<|im_start|>")
        self.im_end_id = self.token_to_id("<|im_end|>")

    def _find_chat_template(self) -> str | None:
        """transformers >= 4.43 may store the template in ``chat_template.jinja``; older dirs keep it in the config."""
        jinja_file = self.dir / "chat_template.jinja"
        if jinja_file.is_file():
            return jinja_file.read_text(encoding="utf-8")
        template = self.config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return template if isinstance(template, str) else None

    def __repr__(self) -> str:
        return f"Tokenizer(dir={str(self.dir)!r}, vocab_size={self.vocab_size})"

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def special_ids(self) -> dict[str, int]:
        """Every added token flagged special, ``{content: id}`` in id order."""
        added = self._tok.get_added_tokens_decoder()
        return {t.content: i for i, t in sorted(added.items()) if t.special}

    def special_tokens_map(self) -> dict[str, str]:
        """bos/eos/pad/... strings from the config, as transformers hands them to chat templates."""
        out = {}
        for key, value in self.config.items():
            if isinstance(value, dict):  # serialized AddedToken
                value = value.get("content")
            if key.endswith("_token") and isinstance(value, str):
                out[key] = value
        return out

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs: Any) -> str:
        """Render ``messages`` with this directory's chat template, like ``apply_chat_template(tokenize=False)``.

        Extra keyword arguments (e.g. ``enable_thinking``) are passed to the template as transformers does.
        """
        if self.chat_template is None:
            raise ValueError(f"tokenizer in {self.dir} has no chat_template")
        chat = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(message).__name__}")
            message = {k: v for k, v in message.items() if v is not None}
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:  # transformers aliases older reasoning field names the same way
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            chat.append(message)
        variables = {**self.special_tokens_map(), **kwargs}
        return _compile(self.chat_template).render(
            messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **variables
        )


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load a tokenizer directory (ours, a saved model dir, or MiniMind's)."""
    return Tokenizer(directory)


@lru_cache(maxsize=16)
def _compile(template: str):
    """Compile a chat template in the same sandbox, options and helpers that transformers uses."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = jinja2.utils.Namespace
    return env.from_string(template)
