"""Tool-use scoring: the in-process loop and the same loop through the OpenAI API agree on a model that calls."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TOOL_QUESTIONS
from weakwater.eval.tooluse import api_tool_task, tool_task
from weakwater.tools import CALCULATOR, calculate

pytestmark = pytest.mark.slow  # uses the tiny tool-calling model (trained once per session)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tooleval") / "eval_tools.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}], "answer": calculate(e), "task": "tools",
         "tools": [CALCULATOR.schema()]}
        for q, e in TOOL_QUESTIONS.items()
    ]  # fmt: skip
    rows.append({**rows[0], "answer": "1"})  # a wrong gold answer: the scorer must not call it right
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tool_task_scores_calls_and_answers(tool_generator, eval_file):
    model, tok = tool_generator.model, tool_generator.tokenizer
    result = tool_task(model, tok, eval_file, [CALCULATOR])
    assert result["n"] == 3 and result["well_formed"] == 1.0
    assert result["right_calls"] == pytest.approx(2 / 3)  # the call for the wrong gold answer returns another number
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["no_tools_accuracy"] == 0.0  # the tiny model cannot multiply in its head
    assert result["examples"][0]["call"].startswith("<tool_call>\n{")
    api = api_tool_task(model, tok, eval_file, [CALCULATOR])
    assert api == {"n": 3, "tool_calls": 1.0, "accuracy": pytest.approx(2 / 3), "no_tools_accuracy": 0.0}
