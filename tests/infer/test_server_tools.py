"""OpenAI tools through our server with the official ``openai`` client: a full round trip (call -> ``tool``
message -> final answer), streamed and not; ``tool_choice``; malformed calls come back as text."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import TOOL_QUESTIONS
from weakwater.infer import SamplingParams
from weakwater.infer.server import ServerConfig, create_app
from weakwater.tools import CALCULATOR, calculate

from .conftest import live_server

pytestmark = pytest.mark.slow  # trains the tiny tool-calling model once (~30 s on 2 cores)

TOOLS = [CALCULATOR.schema()]
QUESTION, EXPRESSION = next(iter(TOOL_QUESTIONS.items()))


@pytest.fixture(scope="module")
def tool_server(tool_generator):
    app = create_app(tool_generator, ServerConfig(model_name="toolbot", tools=[CALCULATOR]))
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(tool_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server + "/v1", api_key="unused", timeout=120, max_retries=0)


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="toolbot", messages=messages, temperature=0, max_tokens=40, **kwargs)


def test_round_trip_non_stream(client):
    messages = [{"role": "user", "content": QUESTION}]
    first = ask(client, messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": EXPRESSION}
    assert choice.message.content is None
    result = CALCULATOR.run(json.loads(call.function.arguments))
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    final = ask(client, messages, tools=TOOLS).choices[0]
    assert final.finish_reason == "stop" and final.message.content == f"{calculate(EXPRESSION)}."
    assert not final.message.tool_calls


def test_round_trip_stream_chunk_format(client, tool_server):
    """The exact chunks: role first, then per call one delta with index/id/type/name and empty arguments,
    then the arguments, then finish_reason "tool_calls"; the official client's accumulation agrees."""
    body = {"model": "toolbot", "messages": [{"role": "user", "content": QUESTION}], "tools": TOOLS,
            "temperature": 0, "max_tokens": 40, "stream": True}  # fmt: skip
    with httpx.stream("POST", tool_server + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    head, args = deltas[1]["tool_calls"][0], deltas[2]["tool_calls"][0]
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "calculator", "arguments": ""}
    assert set(args) == {"index", "function"} and args["index"] == 0
    assert json.loads(args["function"]["arguments"]) == {"expression": EXPRESSION}
    assert deltas[-1] == {} and finishes[-1] == "tool_calls" and not any(finishes[:-1])

    stream = ask(client, [{"role": "user", "content": QUESTION}], tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for part in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += part.function.name or "" if part.function else ""
            call["arguments"] += part.function.arguments or "" if part.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "calculator"
    function = {"name": "calculator", "arguments": calls[0]["arguments"]}
    tool_calls = [{"id": calls[0]["id"], "type": "function", "function": function}]
    assistant = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    result = CALCULATOR.run(json.loads(calls[0]["arguments"]))
    messages = [
        {"role": "user", "content": QUESTION},
        assistant,
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": result},
    ]
    text = "".join(c.choices[0].delta.content or "" for c in ask(client, messages, tools=TOOLS, stream=True))
    assert text == f"{calculate(EXPRESSION)}."


def test_tool_choice(client, tool_generator):
    user = [{"role": "user", "content": QUESTION}]
    # none: the tools are left out of the prompt and nothing is parsed
    none = ask(client, user, tools=TOOLS, tool_choice="none").choices[0]
    plain = tool_generator.chat(user, SamplingParams(max_new_tokens=40))
    assert none.message.tool_calls is None and none.message.content == plain.strip()
    # required / named: the reply is begun with the call, so even a plain prompt yields a call
    for choice in ("required", {"type": "function", "function": {"name": "calculator"}}):
        r = ask(client, user, tools=TOOLS, tool_choice=choice).choices[0]
        assert r.finish_reason == "tool_calls" and r.message.tool_calls[0].function.name == "calculator"
    auto = ask(client, user, tools=TOOLS, tool_choice="auto").choices[0]
    assert auto.finish_reason == "tool_calls"


def test_malformed_call_is_text_never_500(client):
    """A call to a tool the request does not offer is not a call: it comes back verbatim as content."""
    other = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    for stream in (False, True):
        r = ask(client, [{"role": "user", "content": QUESTION}], tools=other, stream=stream)
        if stream:
            chunks = list(r)
            content = "".join(c.choices[0].delta.content or "" for c in chunks)
            assert not any(c.choices[0].delta.tool_calls for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            content, finish = r.choices[0].message.content, r.choices[0].finish_reason
            assert r.choices[0].message.tool_calls is None
        assert '<tool_call>\n{"name": "calculator"' in content and finish == "stop"


@pytest.mark.parametrize(
    ("messages", "extra", "param"),
    [
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "1"}], {}, "messages[1].role"),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": "{nope"}}
                    ],
                },
            ],
            {},
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "a", "type": "function", "function": {"name": "search", "arguments": "{}"}}],
                },
            ],
            {},
            "messages[1].tool_calls[0].function.name",
        ),
        ([{"role": "user", "content": "q"}], {"tool_choice": "required"}, "tool_choice"),
        (
            [{"role": "user", "content": "q"}],
            {"tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
    ],  # fmt: skip
)
def test_bad_tool_requests_are_400_naming_the_field(tool_server, messages, extra, param):
    tools = {} if extra.get("tool_choice") == "required" else {"tools": TOOLS}
    body = {"model": "toolbot", "messages": messages, **tools, **extra}
    r = httpx.post(tool_server + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_server_tools_endpoints(tool_server):
    listed = httpx.get(tool_server + "/v1/tools", timeout=30).json()["data"]
    assert listed == TOOLS
    r = httpx.post(tool_server + "/v1/tools/call", json={"name": "calculator", "arguments": '{"expression": "6*7"}'})
    assert r.json() == {"name": "calculator", "content": "42"}
    bad = httpx.post(tool_server + "/v1/tools/call", json={"name": "calculator", "arguments": {"expression": "1/0"}})
    assert json.loads(bad.json()["content"]) == {"error": "division by zero"}
    assert httpx.post(tool_server + "/v1/tools/call", json={"name": "rm", "arguments": {}}).status_code == 404
