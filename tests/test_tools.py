"""Tools: the calculator's own parser (exact, bounded, never eval), world lookup, user modules, reading calls."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weakwater.tools import (
    CALCULATOR,
    CallStream,
    ToolError,
    calculate,
    call_text,
    load_tools_module,
    parse_calls,
    resolve_tools,
    world_lookup,
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("347 * 2891", "1003177"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-(3 + 4) * 2", "-14"),
        ("2 ^ 10", "1024"),
        ("2 ** 3 ** 2", "512"),  # right-associative, as in mathematics
        ("-2 ** 2", "4"),  # unary minus binds tighter here: documented by this test
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("-7 % 3", "2"),
        ("10 / 4", "2.5"),
        ("1 / 3", "0.333333333333"),
        ("0.1 + 0.2", "0.3"),  # exact: fractions, not floats
        ("2 ** -2", "0.25"),
        ("3 × 4 ÷ 2", "6"),
        ("（1＋2）＊3", "9"),
    ],
)
def test_calculator_values(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("(1 + 2", "incomplete"),
        ("1 + 2)", "unexpected ')'"),
        ("", "empty"),
        ("__import__('os').system('true')", "unexpected character '_'"),
        ("2 ** 0.5", "whole-number powers"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 1000", "too large"),
        ("(" * 60 + "1" + ")" * 60, "nested too deeply"),
        ("1" * 201, "longer than"),
    ],
)
def test_calculator_refuses(expression, message):
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expression)
    assert "error" in json.loads(CALCULATOR.run({"expression": expression}))


@settings(max_examples=60, deadline=None)
@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from(["+", "-", "*"]))
def test_calculator_matches_integer_arithmetic(a, b, op):
    want = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert calculate(f"{a} {op} ({b})") == str(want)
    assert Fraction(calculate(f"{a} / 7")) == pytest.approx(Fraction(a, 7), rel=1e-11)


def test_tool_run_reports_bad_arguments_as_results():
    assert json.loads(CALCULATOR.run({}))["error"] == "missing argument(s) expression"
    assert "unknown argument(s) x" in json.loads(CALCULATOR.run({"expression": "1", "x": 2}))["error"]
    assert CALCULATOR.run({"expression": "1+1"}) == "2"


WORLD = {
    "people": [
        {
            "name": {"en": "Su Mingyao", "zh": "苏明瑶"},
            "city": {"en": "Varan", "zh": "瓦兰"},
            "birth_year": 1987,
            "heldout": True,
        }
    ],
    "products": [{"name": {"en": "Zeno lamp", "zh": "泽诺台灯"}, "price": 34, "maker": {"en": "Dalu", "zh": "达路"}}],
    "creatures": [],
}


def test_world_lookup():
    tool = world_lookup(WORLD)
    assert tool.run({"name": "Su Mingyao", "attribute": "city"}) == "Varan"
    assert tool.run({"name": "苏明瑶", "attribute": "city"}) == "瓦兰"
    assert tool.run({"name": "su mingyao", "attribute": "birth year"}) == "1987"
    assert tool.run({"name": "Zeno lamp", "attribute": "price"}) == "34"
    assert "no person" in json.loads(tool.run({"name": "Nobody", "attribute": "city"}))["error"]
    assert "has no attribute 'legs'" in json.loads(tool.run({"name": "Su Mingyao", "attribute": "legs"}))["error"]
    assert "error" in json.loads(tool.run({"name": "Su Mingyao", "attribute": "heldout"}))  # bookkeeping, no fact


def test_user_module_tools(tmp_path):
    module = tmp_path / "my_tools.py"
    module.write_text(
        "def weather(city: str, days: int = 1) -> dict:\n"
        '    """Forecast for a city.\n\n    Longer text."""\n'
        "    return {'city': city, 'days': days, 'sky': 'clear'}\n"
        "TOOLS = [weather]\n"
    )
    (tool,) = load_tools_module(module)
    assert tool.schema() == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
    assert json.loads(tool.run({"city": "Varan"})) == {"city": "Varan", "days": 1, "sky": "clear"}
    names = [t.name for t in resolve_tools(f"calculator,{module}")]
    assert names == ["calculator", "weather"]
    (tmp_path / "bad.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="define TOOLS"):
        load_tools_module(tmp_path / "bad.py")
    with pytest.raises(ValueError, match="share the name"):
        resolve_tools("calculator,builtin")
    with pytest.raises(ValueError, match="needs the world"):
        resolve_tools("lookup")


CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2 * 3"}}\n</tool_call>'


def test_parse_calls_keeps_malformed_blocks_as_text():
    parsed = parse_calls("Sure.\n" + CALL, ["calculator"])
    assert parsed.content == "Sure." and parsed.malformed == 0
    assert [(c.name, c.arguments) for c in parsed.calls] == [("calculator", {"expression": "2 * 3"})]
    bad = [
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>',  # unknown tool
        '<tool_call>\n{"name": "calculator", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "calculator", "arguments": {"expression"',  # cut off
    ]
    for text in bad:
        parsed = parse_calls(text, ["calculator"])
        assert parsed.calls == [] and parsed.malformed == 1 and parsed.content == text.strip()
    wire = parse_calls('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>')
    assert wire.calls[0].arguments == {"expression": "1"}  # arguments as a JSON string are read too


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_call_stream_equals_parse_calls_for_any_split(cuts):
    text = "Let me compute. " + CALL + " and " + "<tool_call>\nbroken</tool_call>" + " done <tool_c"
    pieces, pos = [], 0
    for n in cuts * 20:
        if pos >= len(text):
            break
        pieces.append(text[pos : pos + n])
        pos += n
    pieces.append(text[pos:])
    stream = CallStream()
    events = [e for p in pieces for e in stream.push(p)] + stream.finish()
    rebuilt = "".join(call_text(body) if kind == "call" else body for kind, body in events)
    assert rebuilt == text
    assert [body for kind, body in events if kind == "call"] == [CALL[11:-12], "\nbroken"]
