"""Tool use on held-out prompts: are the calls well-formed, and does the answer come out right?

Eval rows are the usual ``{"messages", "answer", "task"}`` plus ``tools`` (OpenAI function schemas).
:func:`tool_task` runs the whole loop in-process, batched and greedy: the model's first reply is read
with :func:`weakwater.tools.parse_calls`, the calls run (the real tools, e.g. the calculator),
their results go back as ``tool`` turns, and the second reply is scored with ``is_correct``.
:func:`api_tool_task` does the same through the OpenAI-compatible server over HTTP (the tools arrive
in the request's ``tools``, the calls come back as ``tool_calls``), as any OpenAI client would.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from weakwater.answers import is_correct
from weakwater.data.chat import attach_tools, normalize_tools
from weakwater.eval.tasks import generate_answers, load_eval
from weakwater.tools import Tool, parse_calls


def _call_turns(calls: Sequence[Any], tools: dict[str, Tool]) -> list[dict[str, Any]]:
    """The assistant turn making ``calls`` and one ``tool`` turn per call with its result."""
    made = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    return [{"role": "assistant", "content": "", "tool_calls": made}] + [
        {"role": "tool", "content": tools[c.name].run(c.arguments)} for c in calls
    ]


@torch.no_grad()
def tool_task(
    model: torch.nn.Module,
    tokenizer: Any,
    eval_jsonl: str | Path,
    tools: Sequence[Tool],
    limit: int | None = None,
    max_new_tokens: int = 48,
    samples: int = 2,
) -> dict[str, Any]:
    """``well_formed``: share of prompts whose first reply makes only well-formed calls, at least one;
    ``right_calls``: share whose calls return the right answer (the operands copied correctly into the call);
    ``accuracy``: share answered right after the tool results came back (a reply without a call is scored
    as it is); ``no_tools_accuracy``: the same prompts without tools, answered in one reply."""
    rows = load_eval(eval_jsonl)[:limit]
    by_name = {t.name: t for t in tools}
    convs = [attach_tools(list(r["messages"]), normalize_tools(r["tools"])) for r in rows]
    first = generate_answers(model, tokenizer, convs, max_new_tokens)
    parsed = [parse_calls(text, list(by_name)) for text in first]
    follow = [i for i, p in enumerate(parsed) if p.calls]
    turns = {i: _call_turns(parsed[i].calls, by_name) for i in follow}
    second = generate_answers(model, tokenizer, [convs[i] + turns[i] for i in follow], max_new_tokens)
    final = dict(enumerate(first)) | dict(zip(follow, second))
    plain = generate_answers(model, tokenizer, [r["messages"] for r in rows], max_new_tokens)
    n = len(rows)
    return {
        "n": n,
        "well_formed": sum(bool(p.calls) and not p.malformed for p in parsed) / n,
        "right_calls": sum(
            any(is_correct(t["content"], rows[i]["answer"]) for t in turns[i] if t["role"] == "tool") for i in follow
        )
        / n,
        "accuracy": sum(is_correct(final[i], r["answer"]) for i, r in enumerate(rows)) / n,
        "no_tools_accuracy": sum(is_correct(g, r["answer"]) for g, r in zip(plain, rows)) / n,
        "examples": [
            {"prompt": r["messages"][-1]["content"], "answer": r["answer"], "call": first[i], "generation": final[i]}
            for i, r in enumerate(rows[:samples])
        ],
    }


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def api_tool_task(
    model: torch.nn.Module,
    tokenizer: Any,
    eval_jsonl: str | Path,
    tools: Sequence[Tool],
    limit: int | None = None,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """:func:`tool_task`'s loop through ``/v1/chat/completions`` with ``tools``, greedy (temperature 0).

    ``accuracy``: share answered right at the end of the loop; ``no_tools_accuracy``: the same requests
    without ``tools`` (the model answering in its head), so the API shows the tools' effect on the task;
    ``tool_calls``: share of first replies that came back as ``tool_calls``."""
    from weakwater.infer import Generator
    from weakwater.infer.server import ServerConfig, create_app, serve_in_thread

    rows = load_eval(eval_jsonl)[:limit]
    by_name = {t.name: t for t in tools}
    device = str(next(model.parameters()).device)
    app = create_app(Generator(model, tokenizer, device=device), ServerConfig(model_name="eval"))
    calls_made, correct, plain_correct = 0, 0, 0
    with serve_in_thread(app) as url:
        for row in rows:
            messages = list(row["messages"])
            plain = {"messages": messages, "temperature": 0, "max_tokens": max_new_tokens}
            answer = _post(url + "/v1/chat/completions", plain)["choices"][0]["message"].get("content") or ""
            plain_correct += is_correct(answer, row["answer"])
            request = {**plain, "tools": row["tools"]}
            choice = _post(url + "/v1/chat/completions", request)["choices"][0]
            reply = choice["message"]
            if choice["finish_reason"] == "tool_calls":
                calls_made += 1
                messages.append(reply)
                for call in reply["tool_calls"]:
                    result = by_name[call["function"]["name"]].run(json.loads(call["function"]["arguments"]))
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
                reply = _post(url + "/v1/chat/completions", {**request, "messages": messages})["choices"][0]["message"]
            correct += is_correct(reply.get("content") or "", row["answer"])
    n = len(rows)
    return {"n": n, "tool_calls": calls_made / n, "accuracy": correct / n, "no_tools_accuracy": plain_correct / n}
