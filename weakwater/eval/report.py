"""The demo's report card: one table of held-out metrics per stage, this model vs. the previous one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def headline_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """(stage, metric, previous model, this model, improved) rows; "improved" is judged per metric direction."""
    rows: list[tuple[str, str, str, str, bool]] = []
    p = r["pretrain"]
    rows.append(("pretrain", "val bits/byte (unigram baseline -> model)", f"{p['unigram_bits_per_byte']:.3f}",
                 f"{p['bits_per_byte']:.3f}", p["bits_per_byte"] < p["unigram_bits_per_byte"]))  # fmt: skip
    s = r["sft"]
    for key, label in (("facts", "exact match, pretraining-only facts"), ("arith", "exact match, held-out additions")):
        before, after = s[key]["before"]["accuracy"], s[key]["after"]["accuracy"]
        rows.append(("sft", label, _pct(before), _pct(after), after > before))
    d = r["distill"]["reasoning"]
    rows.append(("distill", "well-formed think/answer (target >= 95%)", _pct(d["before"]["format_rate"]),
                 _pct(d["after"]["format_rate"]), d["after"]["format_rate"] > d["before"]["format_rate"]))  # fmt: skip
    rows.append(("distill", "multi-step accuracy", _pct(d["before"]["accuracy"]), _pct(d["after"]["accuracy"]),
                 d["after"]["accuracy"] > d["before"]["accuracy"]))  # fmt: skip
    rows += rl_rows(r)
    dp = r["dpo"]
    before, after = dp["preference_per_token"]["before"]["accuracy"], dp["preference_per_token"]["after"]["accuracy"]
    rows.append(("dpo", "held-out preference accuracy (per-token log-prob)", _pct(before), _pct(after), after > before))
    implicit = dp["implicit_reward"]["accuracy"]
    rows.append(("dpo", "held-out implicit-reward accuracy", "50.0% (chance)", _pct(implicit), implicit > 0.5))
    before, after = dp["behaviour"]["before"]["ramble_sampled"], dp["behaviour"]["after"]["ramble_sampled"]
    rows.append(("dpo", "targeted behaviour: rambling replies, sampled (lower is better)", _pct(before), _pct(after),
                 after < before))  # fmt: skip
    if "repetition_sampled" in dp["behaviour"]["after"]:
        before, after = (dp["behaviour"][k]["repetition_sampled"]["looping"] for k in ("before", "after"))
        rows.append(("dpo", "repetition: sampled replies repeating a 4-gram (lower is better)",
                     _pct(before), _pct(after), after < before))  # fmt: skip
    lo = r["lora"]
    before, after = lo["domain"]["before"]["accuracy"], lo["domain"]["after"]["accuracy"]
    rows.append(("lora", "domain accuracy (Ossira, held-out)", _pct(before), _pct(after), after > before))
    for key, label in (("general", "general: facts (should drop little)"), ("general_arith", "general: additions")):
        before, after = lo[key]["before"]["accuracy"], lo[key]["after"]["accuracy"]
        rows.append(("lora", label, _pct(before), _pct(after), after >= before - 0.10))
    if "tools" in r:
        t = r["tools"]
        before, after = t["before"], t["after"]
        rows.append(("tools", "well-formed tool calls, held-out prompts (target >= 95%)", _pct(before["well_formed"]),
                     _pct(after["well_formed"]), after["well_formed"] >= 0.95))  # fmt: skip
        # "Far above": with the calculator at least 50 points over the best either model does in its head.
        head = max(before["no_tools_accuracy"], after.get("no_tools_accuracy", 0.0))
        rows.append(("tools", "3-4 digit products: no tools -> with the calculator", _pct(before["no_tools_accuracy"]),
                     _pct(after["accuracy"]), after["accuracy"] >= head + 0.5))  # fmt: skip
        api = t["api"]
        # The same task through /v1/chat/completions: requests without `tools` -> with them, on the tool model;
        # it must be far above the no-tools answers and agree with the in-process loop.
        api_head = max(head, api["no_tools_accuracy"])
        rows.append(("tools", f"same via the OpenAI API: no `tools` -> `tools` ({api['n']} prompts)",
                     _pct(api["no_tools_accuracy"]), _pct(api["accuracy"]),
                     api["accuracy"] >= api_head + 0.5 and api["accuracy"] >= after["accuracy"] - 0.1))  # fmt: skip
    rows += longctx_rows(r)
    return rows


def rl_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """RL's rows: held-out greedy multi-step accuracy must rise clearly over the distilled model (by 10 points,
    or to 90%) while the think/answer format stays at 95% or more."""
    if "rl" not in r:
        return []
    before, after = r["rl"]["reasoning"]["before"], r["rl"]["reasoning"]["after"]
    gain = after["accuracy"] >= before["accuracy"] + 0.10 - 1e-9 or (after["accuracy"] >= 0.90 > before["accuracy"])
    return [
        ("rl", "multi-step accuracy (target +10 points or >= 90%)", _pct(before["accuracy"]),
         _pct(after["accuracy"]), gain),
        ("rl", "well-formed think/answer (target >= 95%)", _pct(before["format_rate"]), _pct(after["format_rate"]),
         after["format_rate"] >= 0.95),
    ]  # fmt: skip


def _rl_text(r: dict[str, Any]) -> list[str]:
    carry = r.get("rl", {}).get("carry")
    if not carry:
        return []
    b, a = ({k: "-" if v is None else _pct(v) for k, v in carry[w].items()} for w in ("before", "after"))
    return [
        "RL: the R1 teacher is careless: in most of its worked additions whose units column carries, it writes the "
        "carry down and then leaves it out of the tens column, so its answer is 10 short. Distillation copied the "
        f"slip. Held-out additions with a units carry: {b['carry']} right after distillation, "
        f"{a['carry']} after RL; without one: {b['no_carry']} and {a['no_carry']}. RL samples "
        "replies and rewards only the true answer, so the replies that add the carry win.",
        "",
    ]


def longctx_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """The long-context stage's needle rows: within the start model's context and beyond it (to 2x).

    The start model reads back no key at all, so the stage must add at least 30 points beyond the context it
    was trained on (a few lucky keys are not a gain), and within it as well unless it already reads >= 90%.
    """
    lc = r.get("longctx")
    if not lc:
        return []
    base, new = lc["context"]["before"], lc["context"]["after"]
    b, a = lc["before"], lc["after"]
    return [
        ("longctx", f"needle: pass key read back within the trained context (<= {base} tokens)",
         _pct(b["within"]), _pct(a["within"]), a["within"] >= min(0.9, b["within"] + 0.3)),
        ("longctx", f"needle: beyond the trained context ({base + 1}-{new} tokens, YaRN {base} -> {new})",
         _pct(b["beyond"]), _pct(a["beyond"]), a["beyond"] >= b["beyond"] + 0.3),
    ]  # fmt: skip


def _longctx_text(r: dict[str, Any]) -> list[str]:
    lc = r.get("longctx")
    if not lc:
        return []
    a = lc["after"]
    by_length = ", ".join(
        f"{n} {_pct(sum(row[j] for row in a['accuracy']) / len(a['accuracy']))}" for j, n in enumerate(a["lengths"])
    )
    return [
        "Long context: a side branch from the SFT model, its RoPE stretched to twice the context (YaRN) and trained "
        "on pass keys hidden in corpus sentences and on copying text back. Needle accuracy over "
        f"{len(a['depths'])} depths x {a['trials']} keys per prompt length (tokens), after: {by_length}.",
        "",
        "![longctx](longctx/needle.png)",
        "",
    ]


def _lora_probe_text(lora: dict[str, Any]) -> list[str]:
    probe = lora.get("probe")
    if not probe:
        return []
    return [
        "LoRA's domain questions ask each creature's one attribute that training states only inside descriptions "
        f"of it: guessing a value of the right kind would score {_pct(probe['chance'])}. Asked to describe the "
        f"creature, the LoRA model states that attribute correctly in {_pct(probe['recall'])} of cases (it learnt "
        "the fact; the held-out score is the share it can also answer when asked directly).",
        "",
    ]


def _tools_text(r: dict[str, Any]) -> list[str]:
    t = r.get("tools")
    if not t or "right_calls" not in t["after"]:
        return []
    after, api = t["after"], t["api"]
    return [
        f"Tools: in its head (no tools offered) the tool model answers {_pct(after['no_tools_accuracy'])} of the "
        f"held-out products, the model it started from {_pct(t['before']['no_tools_accuracy'])}. With the "
        f"calculator, {_pct(after['right_calls'])} of its calls return the right product (both operands copied "
        f"exactly into the expression) and {_pct(after['accuracy'])} of its final replies state it. Through the "
        f"OpenAI API, {_pct(api['tool_calls'])} of the first replies come back as `tool_calls`.",
        "",
    ]


def render(r: dict[str, Any]) -> str:
    lines = [
        "# WeakWater demo report card",
        "",
        "Held-out metrics from greedy generations and log-probs of the trained models (DPO's rambling row: "
        "replies sampled at temperature 1). "
        '"previous" is the model the stage started from (for pretraining: the unigram baseline; for LoRA\'s '
        'general rows "ok" means a drop of at most 10 points).',
        "",
        "| stage | metric | previous | this stage | ok |",
        "|---|---|---|---|---|",
    ]
    for stage, metric, before, after, ok in headline_rows(r):
        lines.append(f"| {stage} | {metric} | {before} | {after} | {'yes' if ok else 'NO'} |")
    p, dp = r["pretrain"], r["dpo"]
    behaviour = dp["behaviour"]

    def per_kind(which: str) -> str:
        return ", ".join(f"{k} {_pct(v)}" for k, v in dp["preference_per_token"][which].get("per_kind", {}).items())

    lines += [
        "",
        f"Pretrain validation loss {p['val_loss']:.3f} nats/token (unigram {p['unigram_loss']:.3f}).",
        "",
        "DPO preference accuracy by the rejected reply's failure (per-token log-prob), before: "
        f"{per_kind('before')}; after: {per_kind('after')}. By summed log-prob instead: "
        f"{_pct(dp['preference']['before']['accuracy'])} before, {_pct(dp['preference']['after']['accuracy'])} after "
        "(a sum favours the shorter reply, so rambling and repeated rejects lose before any DPO; the pairs it "
        "misses are wrong numbers the model cannot check).",
        "",
        f"DPO's rambling row counts replies with the repeated filler among {behaviour['after']['samples']} sampled "
        f"at temperature 1 ({behaviour['after']['samples_per_prompt']} per held-out prompt): the habit SFT learnt "
        "from a share of its answers, "
        "which greedy decoding rarely shows. Greedy replies to the same prompts: concise "
        f"{_pct(behaviour['before']['concise'])} before, {_pct(behaviour['after']['concise'])} after; correct and "
        f"concise {_pct(behaviour['before']['rate'])} before, {_pct(behaviour['after']['rate'])} after"
        + (
            " (with greedy replies already concise, this measures correctness, which DPO's wrong-answer pairs "
            "barely move)."
            if behaviour["before"]["concise"] >= 0.95
            else "."
        ),
        "",
        *_rl_text(r),
        *_lora_probe_text(r["lora"]),
        *_tools_text(r),
        *_longctx_text(r),
        "## Loss curves",
        "",
    ]
    lines += [
        f"![{s}]({s}/loss.png)" for s in ("pretrain", "sft", "longctx", "distill", "dpo", "lora", "tools") if s in r
    ]
    if "rl" in r:
        lines += ["", "RL (GRPO): mean reward and sampled training accuracy per step.", "",
                  "![rl](rl/reward.png)"]  # fmt: skip
    lines += ["", "## Pretrained model samples (greedy)", ""]
    lines += [f"- `{s!r}`" for s in p["samples"]]
    lines += ["", "## Example generations", ""]
    for stage, key, which in (
        ("sft", "facts", "after"),
        ("distill", "reasoning", "after"),
        ("lora", "domain", "after"),
    ):
        for ex in r[stage][key][which]["examples"][:2]:
            lines.append(f"- {stage} / {key}: `{ex['prompt']}` -> `{ex['generation']!r}` (expected `{ex['answer']}`)")
    for ex in r.get("tools", {}).get("after", {}).get("examples", [])[:2]:
        lines.append(
            f"- tools: `{ex['prompt']}` -> `{ex['call']!r}` -> `{ex['generation']!r}` (expected `{ex['answer']}`)"
        )
    if "plan" in r:
        plan = ", ".join(f"{k}={v}" for k, v in r["plan"].items())
        lines += ["", "## Settings", "", f"{'--fast ' if r.get('fast') else ''}{plan}"]
    times = r.get("times_s", {})
    if times:
        lines += ["", "## Wall time (s)", "", " | ".join(f"{k}: {v:.0f}" for k, v in times.items())]
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and the raw ``report.json`` into ``out``."""
    out = Path(out)
    (out / "report.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text(render(results), encoding="utf-8")
    return path
