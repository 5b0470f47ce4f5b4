"""The demo's report card verdicts (its measurements: tests/eval/test_demo_tasks.py) and the whole pipeline.

The whole pipeline (``weakwater demo --fast``) takes minutes on a shared 2-core machine, so it runs only
with ``WEAKWATER_RUN_DEMO=1``; its stages are covered by the stage tests.
"""

from __future__ import annotations

import copy
import json

import pytest

from weakwater.eval.report import headline_rows, render, write_report


def _task(acc: float, fmt: float = 0.0) -> dict:
    return {"n": 10, "accuracy": acc, "format_rate": fmt, "per_task": {}, "examples": [
        {"prompt": "q", "answer": "a", "generation": "a"}]}  # fmt: skip


RESULTS = {
    "pretrain": {"val_loss": 2.0, "bits_per_byte": 1.5, "unigram_loss": 5.0, "unigram_bits_per_byte": 3.5,
                 "samples": ["Su Ming lives in Varan."]},
    "sft": {"facts": {"before": _task(0.0), "after": _task(0.4)}, "arith": {"before": _task(0.1), "after": _task(0.1)}},
    "distill": {"reasoning": {"before": _task(0.2, 0.0), "after": _task(0.5, 0.97)}},
    "dpo": {"preference": {"before": {"accuracy": 0.9, "mean_margin": 0.1},
                           "after": {"accuracy": 0.9, "mean_margin": 2.0}},
            "preference_per_token": {
                "before": {"accuracy": 0.6, "mean_margin": 0.1, "per_kind": {"ramble": 0.2, "wrong": 1.0}},
                "after": {"accuracy": 0.8, "mean_margin": 0.5, "per_kind": {"ramble": 0.6, "wrong": 1.0}}},
            "implicit_reward": {"accuracy": 0.95, "mean_margin": 1.9},
            "behaviour": {"before": {"rate": 0.3, "concise": 0.4, "ramble_sampled": 0.05, "samples": 160,
                                     "samples_per_prompt": 16},
                          "after": {"rate": 0.7, "concise": 0.9, "ramble_sampled": 0.01, "samples": 160,
                                    "samples_per_prompt": 16}}},
    "lora": {"domain": {"before": _task(0.0), "after": _task(0.6)},
             "general": {"before": _task(0.4), "after": _task(0.25)},
             "general_arith": {"before": _task(0.1), "after": _task(0.1)},
             "probe": {"recall": 0.75, "chance": 0.16}},
    "tools": {"before": {"well_formed": 0.0, "accuracy": 0.0, "no_tools_accuracy": 0.02},
              "after": {"well_formed": 0.98, "right_calls": 0.93, "accuracy": 0.9, "no_tools_accuracy": 0.0,
                        "examples": [{"prompt": "12 * 345 = ?", "answer": "4140", "call": "<tool_call>x</tool_call>",
                                      "generation": "4140."}]},
              "api": {"n": 40, "tool_calls": 1.0, "accuracy": 0.85, "no_tools_accuracy": 0.025}},
    "times_s": {"pretrain": 300.0, "total": 900.0},
}  # fmt: skip


def test_report_verdicts(tmp_path):
    verdicts = {(stage, metric): ok for stage, metric, _, _, ok in headline_rows(RESULTS)}
    assert verdicts[("pretrain", "val bits/byte (unigram baseline -> model)")]
    assert not verdicts[("sft", "exact match, held-out additions")]  # no change is not an improvement
    assert not verdicts[("lora", "general: facts (should drop little)")]  # a 15-point drop is flagged
    assert all(ok for (stage, _), ok in verdicts.items() if stage in ("distill", "dpo"))
    path = write_report(tmp_path, RESULTS)
    text = path.read_text()
    assert "| sft | exact match, pretraining-only facts | 0.0% | 40.0% | yes |" in text
    assert "| dpo | held-out preference accuracy (per-token log-prob) | 60.0% | 80.0% | yes |" in text
    assert "before: ramble 20.0%, wrong 100.0%; after: ramble 60.0%, wrong 100.0%" in text
    assert "| dpo | targeted behaviour: rambling replies, sampled (lower is better) | 5.0% | 1.0% | yes |" in text
    assert "correct and concise 30.0% before, 70.0% after" in text
    assert "| tools | well-formed tool calls, held-out prompts (target >= 95%) | 0.0% | 98.0% | yes |" in text
    assert "| tools | 3-4 digit products: no tools -> with the calculator | 2.0% | 90.0% | yes |" in text
    assert "| tools | same via the OpenAI API: no `tools` -> `tools` (40 prompts) | 2.5% | 85.0% | yes |" in text
    assert "93.0% of its calls return the right product" in text
    assert "- tools: `12 * 345 = ?` -> `'<tool_call>x</tool_call>'` -> `'4140.'` (expected `4140`)" in text
    rl = copy.deepcopy(RESULTS) | {"rl": {"reasoning": {"before": _task(0.37, 1.0), "after": _task(0.5, 0.96)}}}
    assert [ok for stage, *_, ok in headline_rows(rl) if stage == "rl"] == [True, True]
    assert "| rl | multi-step accuracy (target +10 points or >= 90%) | 37.0% | 50.0% | yes |" in render(rl)
    rl["rl"]["reasoning"]["after"] = _task(0.46, 0.94)  # +9 points, format below 95%
    assert [ok for stage, *_, ok in headline_rows(rl) if stage == "rl"] == [False, False]
    rl["rl"]["reasoning"] = {"before": _task(0.85, 1.0), "after": _task(0.9, 1.0)}  # reaching 90% is enough
    assert [ok for stage, *_, ok in headline_rows(rl) if stage == "rl"] == [True, True]
    assert "rl/reward.png" in render(rl) and "rl/reward.png" not in text
    rl["rl"]["carry"] = {"before": {"carry": 0.1, "no_carry": 0.9}, "after": {"carry": 0.8, "no_carry": None}}
    assert "with a units carry: 10.0% right after distillation, 80.0% after RL; without one: 90.0% and -." in render(rl)
    worse = copy.deepcopy(RESULTS)
    worse["tools"]["after"] |= {"well_formed": 0.9, "accuracy": 0.3}
    assert [ok for stage, *_, ok in headline_rows(worse) if stage == "tools"] == [False, False, True]
    worse["tools"]["api"]["accuracy"] = 0.1  # the API must do what the model does in-process
    assert [ok for stage, *_, ok in headline_rows(worse) if stage == "tools"][2] is False
    for zero in ("after", "api"):  # calls made but every answer wrong: nothing is "far above" no tools
        none_right = copy.deepcopy(RESULTS)
        none_right["tools"][zero]["accuracy"] = 0.0
        assert [ok for stage, *_, ok in headline_rows(none_right) if stage == "tools"][1:] == [
            zero != "after",
            zero != "api",
        ]
    in_head = copy.deepcopy(RESULTS)
    in_head["tools"]["after"]["no_tools_accuracy"] = 0.6  # the tool model could do it without the calculator
    assert [ok for stage, *_, ok in headline_rows(in_head) if stage == "tools"][1:] == [False, False]
    assert "among 160 sampled at temperature 1 (16 per held-out prompt)" in text
    assert "would score 16.0%" in text and "correctly in 75.0% of cases" in text
    more_rambling = copy.deepcopy(RESULTS)
    more_rambling["dpo"]["behaviour"]["after"]["ramble_sampled"] = 0.05  # no drop is no improvement
    assert "| dpo | targeted behaviour: rambling replies, sampled (lower is better) | 5.0% | 5.0% | NO |" in render(
        more_rambling
    )
    assert json.loads((tmp_path / "report.json").read_text())["times_s"]["total"] == 900.0
    broken = copy.deepcopy(RESULTS)
    broken["pretrain"]["bits_per_byte"] = 4.0
    assert "| pretrain | val bits/byte (unigram baseline -> model) | 3.500 | 4.000 | NO |" in render(broken)


def _needle(accuracy: list[list[float]], within: float, beyond: float) -> dict:
    return {"lengths": [128, 256, 384, 512], "depths": [0.0, 1.0], "trials": 4, "accuracy": accuracy,
            "within": within, "beyond": beyond}  # fmt: skip


def test_longctx_verdicts(tmp_path):
    assert not [row for row in headline_rows(RESULTS) if row[0] == "longctx"]  # no stage, no rows
    r = copy.deepcopy(RESULTS)
    r["longctx"] = {
        "context": {"before": 256, "after": 512},
        "before": _needle([[0.0] * 4, [0.0] * 4], 0.0, 0.0),
        "after": _needle([[1.0, 1.0, 0.75, 0.5], [1.0, 0.75, 0.75, 0.25]], 0.9375, 0.5625),
    }
    rows = [row for row in headline_rows(r) if row[0] == "longctx"]
    assert rows == [
        ("longctx", "needle: pass key read back within the trained context (<= 256 tokens)", "0.0%", "93.8%", True),
        ("longctx", "needle: beyond the trained context (257-512 tokens, YaRN 256 -> 512)", "0.0%", "56.2%", True),
    ]
    text = write_report(tmp_path, r).read_text()
    assert (
        "| longctx | needle: beyond the trained context (257-512 tokens, YaRN 256 -> 512) | 0.0% | 56.2% | yes |"
        in text
    )
    assert "after: 128 100.0%, 256 87.5%, 384 75.0%, 512 37.5%." in text
    assert "![longctx](longctx/needle.png)" in text
    r["longctx"]["after"] |= {"within": 0.25, "beyond": 0.25}  # a few lucky keys are no gain
    assert [ok for stage, *_, ok in headline_rows(r) if stage == "longctx"] == [False, False]
    r["longctx"]["before"] |= {"within": 0.95}  # a start model that already reads keys must not drop below 90%
    r["longctx"]["after"] |= {"within": 0.9, "beyond": 0.55}
    assert [ok for stage, *_, ok in headline_rows(r) if stage == "longctx"] == [True, True]
    r["longctx"]["after"]["within"] = 0.85
    assert [ok for stage, *_, ok in headline_rows(r) if stage == "longctx"][0] is False


def test_needle_lengths_fit_their_context_and_keep_their_keys_out_of_training():
    from weakwater.data.synth.longctx import KEY_DIGITS, RESERVED_LENGTHS
    from weakwater.demo import NEEDLE_LENGTHS, Plan

    base = Plan().model["max_seq_len"]
    for context in (base, 2 * base):  # prompt + key (<= one token per digit) within the context it counts in
        assert max(n for n in NEEDLE_LENGTHS if n <= context) + KEY_DIGITS <= context
    assert set(NEEDLE_LENGTHS) <= set(RESERVED_LENGTHS)


@pytest.mark.slow
def test_fast_demo_end_to_end(tmp_path):
    from weakwater.demo import run_demo

    report = run_demo(tmp_path / "demo", fast=True)
    text = report.read_text()
    assert text.count("\n| ") >= 12
    for stage in ("pretrain", "sft", "longctx", "distill", "rl", "dpo", "lora"):
        assert (tmp_path / "demo" / stage / "final" / "config.json").exists()
        assert (tmp_path / "demo" / stage / "loss.png").exists()
    assert (tmp_path / "demo" / "longctx" / "needle.png").exists()
    assert "| longctx | needle: beyond the trained context (257-512 tokens, YaRN 256 -> 512) |" in text
    config = json.loads((tmp_path / "demo" / "longctx" / "final" / "config.json").read_text())
    assert config["model"]["max_seq_len"] == 512 and config["model"]["rope_scaling"]["kind"] == "yarn"
