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
from typing import Any, Protocol

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

# Tool-calling tags (Qwen's and MiniMind-3's), single special tokens that take the LAST ids of a tokenizer we
# train: BPE learns ``vocab_size - 4`` tokens and these are appended, so every id below them is the same as in a
# tokenizer trained without them (a merge learnt last is the only difference) and the vocabulary keeps its size.
TOOL_TOKENS: tuple[str, ...] = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# ChatML without a default system prompt, plus tools rendered the way Qwen2.5/Qwen3 and MiniMind-3 render them.
# Without tools it is byte-identical to plain ChatML. ``tools`` come from the ``tools=`` argument or, MiniMind-3's
# shape, from a leading system message's ``tools`` key; they open the conversation inside the system turn
# (after the system prompt, if any). An assistant turn writes its content, then each call as
# ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``; consecutive ``tool`` messages share one
# user turn, each result inside ``<tool_response>\n...\n</tool_response>``. What SFT supervises is unchanged:
# everything between ``<|im_start|>assistant\n`` and ``<|im_end|>`` (text and calls), never tool results.
CHAT_TEMPLATE = """\
{%- if not tools and messages and messages[0].role == 'system' and messages[0].tools %}
{%- set tools = messages[0].tools %}
{%- endif %}
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages and messages[0].role == 'system' and messages[0].content %}
{{- messages[0].content + '\\n\\n' }}
{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}
{{- '\\n' }}{{- tool | tojson }}
{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within ' }}
{{- '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}' }}
{{- '\\n</tool_call><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first and tools %}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' + (message.content or '') }}
{%- for tc in message.tool_calls or [] %}
{%- if tc.function %}
{%- set tc = tc.function %}
{%- endif %}
{%- if message.content or not loop.first %}
{{- '\\n' }}
{%- endif %}
{{- '<tool_call>\\n{"name": "' + tc.name + '", "arguments": ' }}
{%- if tc.arguments is string %}
{{- tc.arguments }}
{%- else %}
{{- tc.arguments | tojson }}
{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
{{- '<|im_end|>\\n' }}
{%- endif %}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTokenizer(Protocol):
    """What data preparation, training and generation use of a tokenizer: :class:`Tokenizer` provides it,
    and tests may pass a smaller stand-in. ``im_start_id``/``im_end_id`` are None without ChatML tokens."""

    eos_id: int
    im_start_id: int | None
    im_end_id: int | None

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str: ...
    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs: Any) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...


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

    def fingerprint(self) -> str:
        """sha256 of what decides a conversation's tokens: the tokenizer model and the chat template."""
        import hashlib

        text = self._tok.to_str() + "\0" + (self.chat_template or "")
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

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

    @property
    def missing_tool_tokens(self) -> tuple[str, ...]:
        """Tool tags that are not single tokens here (MiniMind2's tokenizer has none): they still work as text,
        each spelt with several ordinary tokens, which a model must learn as a sequence."""
        return tuple(t for t in TOOL_TOKENS if self.token_to_id(t) is None)

    @property
    def supports_tools(self) -> bool:
        """Whether the chat template renders ``tools``, assistant ``tool_calls`` and ``tool`` turns."""
        return self.chat_template is not None and all(
            word in self.chat_template for word in ("tools", "tool_calls", "tool")
        )

    def render_chat(
        self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None, **kwargs: Any
    ) -> str:
        """Render ``messages`` with this directory's chat template, like ``apply_chat_template(tokenize=False)``.

        ``tools`` (OpenAI function schemas) are passed to the template as transformers passes them; extra keyword
        arguments (e.g. ``enable_thinking``) too. A conversation with tools, tool calls or tool turns on a template
        that cannot show them is an error rather than a prompt with the tools silently left out.
        """
        if self.chat_template is None:
            raise ValueError(f"tokenizer in {self.dir} has no chat_template")
        chat = []
        uses_tools = bool(tools)
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(message).__name__}")
            message = {k: v for k, v in message.items() if v is not None}
            uses_tools = (
                uses_tools or bool(message.get("tools") or message.get("tool_calls")) or message.get("role") == "tool"
            )
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:  # transformers aliases older reasoning field names the same way
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            chat.append(message)
        if tools is None and chat and chat[0].get("role") == "system" and chat[0].get("tools"):
            # MiniMind-3's shape: the tools ride on the system message. Templates (MiniMind's, Qwen's) read the
            # ``tools`` variable, so hand them over as transformers would; an empty system prompt that only
            # carried them is not a system prompt.
            tools = chat[0]["tools"]
            chat = chat[1:] if not chat[0].get("content") else [{**chat[0]}, *chat[1:]]
        if uses_tools and not self.supports_tools:
            raise ValueError(
                f"the chat template of {self.dir} cannot render tools, tool calls or tool turns (a tokenizer trained "
                "before tool support, or a plain ChatML one): train a new tokenizer, or use one whose template does"
            )
        variables = {**self.special_tokens_map(), **kwargs}
        return _compile(self.chat_template).render(
            messages=chat, tools=tools or None, documents=None, add_generation_prompt=add_generation_prompt, **variables
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
