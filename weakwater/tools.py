"""Tools a model can call: the built-in ones, a user's module, and reading calls out of generated text.

A model trained on our chat template writes each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n
</tool_call>`` inside its turn (see ``weakwater.tokenizer.CHAT_TEMPLATE``). :func:`parse_calls` is the one
place that reads them back, for ``weakwater chat --tools``, the server's OpenAI ``tool_calls`` and the demo's
tool stage; a block that is not a JSON object naming a known tool with object arguments is *malformed* and
stays text, so a caller never acts on a guess.

Built-in tools (``--tools builtin``, or each by name), safe to run on anything a model writes:

- ``calculator {"expression": "347 * 2891"}``: arithmetic parsed here (``+ - * / // % ^ **``, parentheses,
  unary signs, decimals), computed exactly with fractions; never ``eval``. Sizes are bounded so a
  hostile expression cannot exhaust memory (``9 ** 9 ** 9`` is refused).
- ``lookup {"name": ..., "attribute": ...}``: facts of the demo's synthetic world (``world.json``): people,
  products and creatures of Ossira, in English or Chinese.

A user's module (``--tools my_tools.py``) lists plain Python functions in ``TOOLS``; each becomes a tool
named after the function, described by its docstring's first paragraph, with a JSON-schema parameter per
argument (``str``/``int``/``float``/``bool`` annotations; arguments without a default are required).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ToolError(ValueError):
    """A tool refused its arguments; the message goes back to the model as the tool's result."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    fn: Callable[..., Any]

    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema (what the chat template shows the model)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def run(self, arguments: dict[str, Any]) -> str:
        """The result as text for the ``tool`` turn; a refusal becomes ``{"error": ...}``, never an exception."""
        props = self.parameters.get("properties", {})
        missing = [k for k in self.parameters.get("required", []) if k not in arguments]
        unknown = [k for k in arguments if k not in props]
        try:
            if missing or unknown:
                raise ToolError(
                    "; ".join(
                        ([f"missing argument(s) {', '.join(missing)}"] if missing else [])
                        + ([f"unknown argument(s) {', '.join(unknown)}"] if unknown else [])
                    )
                )
            result = self.fn(**arguments)
        except (ToolError, TypeError, ValueError, KeyError, ArithmeticError) as e:
            return json.dumps({"error": str(e)}, ensure_ascii=False)
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


# ----- reading calls -----


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ParsedReply:
    """A reply split into its text (malformed call blocks included, verbatim) and its well-formed calls."""

    content: str
    calls: list[ToolCall]
    malformed: int  # call blocks left as text: not JSON, no/unknown name, arguments not an object, unclosed


def parse_call(body: str, names: Sequence[str] | None = None) -> ToolCall | None:
    """The call inside one ``<tool_call>`` block, or None if it is malformed."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):  # some models write the OpenAI wire form, arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict) or (names is not None and obj["name"] not in names):
        return None
    return ToolCall(obj["name"], arguments)


def parse_calls(text: str, names: Sequence[str] | None = None) -> ParsedReply:
    """Split generated ``text`` into content and calls; ``names`` (if given) are the tools that exist."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    malformed, pos = 0, 0
    for m in _CALL_BLOCK.finditer(text):
        call = parse_call(m.group(1), names)
        kept.append(text[pos : m.start()] if call else text[pos : m.end()])
        if call:
            calls.append(call)
        else:
            malformed += 1
        pos = m.end()
    rest = text[pos:]
    malformed += rest.count(CALL_OPEN)  # a call cut off (length limit) before its closing tag
    kept.append(rest)
    return ParsedReply("".join(kept).strip(), calls, malformed)


class CallStream:
    """:func:`parse_calls` for streamed text: push deltas, get ``("text", str)`` and ``("call", body)`` events.

    Text is released as soon as it cannot be the start of ``<tool_call>`` (a tokenizer without the tag as one
    token spells it over several deltas); a call is released whole, when its ``</tool_call>`` arrives, for the
    caller to parse (:func:`parse_call`) and, if malformed, show as text (:func:`call_text`).
    """

    def __init__(self) -> None:
        self.buf, self.in_call = "", False

    def push(self, delta: str) -> list[tuple[str, str]]:
        self.buf += delta
        out: list[tuple[str, str]] = []
        while True:
            if self.in_call:
                end = self.buf.find(CALL_CLOSE)
                if end < 0:
                    return out
                out.append(("call", self.buf[:end]))
                self.buf, self.in_call = self.buf[end + len(CALL_CLOSE) :], False
                continue
            start = self.buf.find(CALL_OPEN)
            if start >= 0:
                if start:
                    out.append(("text", self.buf[:start]))
                self.buf, self.in_call = self.buf[start + len(CALL_OPEN) :], True
                continue
            keep = next((k for k in range(len(CALL_OPEN) - 1, 0, -1) if self.buf.endswith(CALL_OPEN[:k])), 0)
            if len(self.buf) > keep:
                out.append(("text", self.buf[: len(self.buf) - keep]))
                self.buf = self.buf[len(self.buf) - keep :]
            return out

    def finish(self) -> list[tuple[str, str]]:
        """What is left: held-back text, or a call cut off before its closing tag (as text: malformed)."""
        rest = (CALL_OPEN if self.in_call else "") + self.buf
        self.buf, self.in_call = "", False
        return [("text", rest)] if rest else []


def call_text(body: str) -> str:
    """A call block as the model wrote it (how a malformed call is shown)."""
    return CALL_OPEN + body + CALL_CLOSE


# ----- the calculator -----

MAX_EXPRESSION = 200
MAX_DIGITS = 400  # bound on the size of any intermediate number (numerator or denominator digits)
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SYMBOLS = {"×": "*", "÷": "/", "−": "-", "（": "(", "）": ")", "＋": "+", "＊": "*", "／": "/"}


class _Calc:
    """Recursive descent over ``expr := term (+|- term)*``, ``term := power (*|/|//|% power)*``,
    ``power := unary (^|** power)?`` (right-associative), ``unary := (+|-) unary | number | ( expr )``."""

    def __init__(self, text: str) -> None:
        for a, b in _SYMBOLS.items():
            text = text.replace(a, b)
        self.tokens = self._lex(text)
        self.i = 0

    @staticmethod
    def _lex(text: str) -> list[str]:
        tokens, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
            elif m := _NUMBER.match(text, i):
                tokens.append(m.group())
                i = m.end()
            elif text.startswith(("**", "//"), i):
                tokens.append(text[i : i + 2])
                i += 2
            elif text[i] in "+-*/%^()":
                tokens.append(text[i])
                i += 1
            else:
                raise ToolError(f"unexpected character {text[i]!r} at position {i}")
        return tokens

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ToolError("incomplete expression")
        self.i += 1
        return token

    def parse(self) -> Fraction:
        if not self.tokens:
            raise ToolError("empty expression")
        value = self.expr(0)
        if self.peek() is not None:
            raise ToolError(f"unexpected {self.peek()!r}")
        return value

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term(depth)
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.power(depth)
        while self.peek() in ("*", "/", "//", "%"):
            op, rhs = self.take(), self.power(depth)
            if op != "*" and rhs == 0:
                raise ToolError("division by zero")
            if op == "*":
                value = value * rhs
            elif op == "/":
                value = value / rhs
            elif op == "//":
                value = Fraction(value // rhs)
            else:
                value = value - rhs * (value // rhs)
            value = _checked(value)
        return value

    def power(self, depth: int) -> Fraction:
        base = self.unary(depth)
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.power(depth)
            if exponent.denominator != 1:
                raise ToolError("only whole-number powers are supported")
            if base == 0 and exponent < 0:
                raise ToolError("division by zero")
            # Bound the result before computing it: digits(base ** e) ~ e * digits(base).
            size = max(len(str(base.numerator)), len(str(base.denominator)))
            if abs(exponent) * size > MAX_DIGITS and abs(base) != 1:
                raise ToolError(f"result too large (over {MAX_DIGITS} digits)")
            return _checked(base ** int(exponent))
        return base

    def unary(self, depth: int) -> Fraction:
        if depth > 50:
            raise ToolError("expression nested too deeply")
        token = self.take()
        if token in ("+", "-"):
            value = self.unary(depth + 1)
            return value if token == "+" else -value
        if token == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ToolError("missing ')'")
            return value
        if _NUMBER.fullmatch(token):
            return Fraction(token)
        raise ToolError(f"unexpected {token!r}")


def _checked(value: Fraction) -> Fraction:
    if max(len(str(abs(value.numerator))), len(str(value.denominator))) > MAX_DIGITS:
        raise ToolError(f"result too large (over {MAX_DIGITS} digits)")
    return value


def format_number(value: Fraction) -> str:
    """Whole numbers exactly; others as a decimal with up to 12 significant digits."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.12g}"
    return text if "e" in text or "." not in text else text.rstrip("0").rstrip(".")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. ``calculate("347 * 2891")`` -> ``"1003177"``."""
    if not isinstance(expression, str):
        raise ToolError("expression must be a string")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    return format_number(_Calc(expression).parse())


CALCULATOR = Tool(
    "calculator",
    "Evaluate an arithmetic expression exactly",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    calculate,
)


# ----- the demo world's lookup -----

WORLD_ATTRIBUTES = ("city", "job", "birth_year", "colour", "maker", "price", "legs", "food", "region")


def world_lookup(world: dict[str, Any]) -> Tool:
    """``lookup`` over a ``world.json`` fact table; answers in the language the name was given in."""
    table: dict[str, tuple[str, dict[str, Any]]] = {}
    for kind in ("people", "products", "creatures"):
        for entity in world.get(kind, []):
            for lang in ("en", "zh"):
                table[entity["name"][lang].casefold()] = (lang, entity)

    def lookup(name: str, attribute: str) -> str:
        if not isinstance(name, str) or not isinstance(attribute, str):
            raise ToolError("name and attribute must be strings")
        found = table.get(name.strip().casefold())
        if found is None:
            raise ToolError(f"no person, product or creature named {name!r}")
        lang, entity = found
        attribute = attribute.strip().lower().replace(" ", "_")
        attribute = {"color": "colour", "year": "birth_year", "born": "birth_year"}.get(attribute, attribute)
        if attribute not in entity or attribute in ("name", "heldout", "heldout_attribute"):
            have = [a for a in WORLD_ATTRIBUTES if a in entity]
            raise ToolError(f"{name} has no attribute {attribute!r} (it has {', '.join(have)})")
        value = entity[attribute]
        return str(value[lang] if isinstance(value, dict) else value)

    properties = {"name": {"type": "string"}, "attribute": {"type": "string", "enum": list(WORLD_ATTRIBUTES)}}
    return Tool(
        "lookup",
        "Look up a fact about a person, product or creature of the world",
        {"type": "object", "properties": properties, "required": ["name", "attribute"]},
        lookup,
    )


def find_world(model_dir: str | Path | None) -> Path | None:
    """``world.json`` beside a model: in its directory, or the demo layout's ``OUT/data/world.json``."""
    if model_dir is None:
        return None
    model_dir = Path(model_dir).resolve()
    for candidate in (model_dir / "world.json", model_dir.parent.parent / "data" / "world.json"):
        if candidate.is_file():
            return candidate
    return None


# ----- a user's module -----


def _param_schema(param: inspect.Parameter, where: str) -> dict[str, Any]:
    kind = param.annotation
    if isinstance(kind, str):  # ``from __future__ import annotations`` leaves names as strings
        kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    if kind is inspect.Parameter.empty:
        return {}
    if kind not in _JSON_TYPES:
        raise ValueError(f"{where}: parameter {param.name!r} has type {kind!r}; use str, int, float or bool")
    return {"type": _JSON_TYPES[kind]}


def tool_from_function(fn: Callable[..., Any], where: str = "") -> Tool:
    """A :class:`Tool` described by ``fn``'s name, docstring and signature."""
    where = where or getattr(fn, "__qualname__", repr(fn))
    if not callable(fn) or not getattr(fn, "__name__", "").isidentifier():
        raise ValueError(f"{where}: TOOLS must list functions, got {fn!r}")
    properties, required = {}, []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ValueError(f"{where}: *args/**kwargs cannot be described to a model; name each argument")
        properties[param.name] = _param_schema(param, where)
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    description = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ").strip()
    return Tool(fn.__name__, description, {"type": "object", "properties": properties, "required": required}, fn)


def load_tools_module(path: str | Path) -> list[Tool]:
    """Import a Python file and turn the functions in its ``TOOLS`` list into tools (it runs that file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tools module not found: {path}")
    spec = importlib.util.spec_from_file_location(f"weakwater_user_tools_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = getattr(module, "TOOLS", None)
    if not isinstance(functions, (list, tuple)) or not functions:
        raise ValueError(f"{path}: define TOOLS = [function, ...] listing the functions the model may call")
    return [tool_from_function(fn, f"{path}: TOOLS[{i}]") for i, fn in enumerate(functions)]


def resolve_tools(spec: str, world: str | Path | None = None) -> list[Tool]:
    """Tools from a comma-separated ``spec``: ``builtin`` (calculator, and lookup when ``world`` is given),
    ``calculator``, ``lookup`` (needs ``world``, a ``world.json``), or paths to Python modules."""
    tools: list[Tool] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in ("builtin", "calculator"):
            tools.append(CALCULATOR)
        if part in ("builtin", "lookup") and world is not None:
            tools.append(world_lookup(json.loads(Path(world).read_text(encoding="utf-8"))))
        elif part == "lookup":
            raise ValueError("the lookup tool needs the world's facts: pass --world runs/demo/data/world.json")
        if part not in ("builtin", "calculator", "lookup"):
            tools += load_tools_module(part)
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two tools share the name(s) {', '.join(duplicates)}")
    if not tools:
        raise ValueError("no tools given (builtin, calculator, lookup and/or a module path)")
    return tools
