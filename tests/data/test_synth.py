"""The synthetic demo data: deterministic, well-formed, arithmetically right, and train/eval disjoint."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
import torch

from weakwater.cli import main
from weakwater.data.synth import SIZES, generate, is_concise, is_ramble
from weakwater.data.synth.tasks import QUESTIONS

R1_RE = re.compile(r"^<think>\n.*\n</think>\n<answer>\n.*\n</answer>$", re.DOTALL)
SUM_RE = re.compile(r"(\d+)(?: ?\+ ?| ?加上? ?| and )(\d+)")
TRAIN_FILES = ("pretrain.jsonl", "sft.jsonl", "r1.jsonl", "dpo.jsonl", "lora_domain.jsonl", "tools.jsonl",
               "longctx.jsonl")  # fmt: skip
MUL_RE = re.compile(r"(\d+) ?(?:\*|×|乘以?|by|times) ?(\d+)")


@pytest.fixture(scope="module", params=[("small", 0), ("demo", 5)], ids=lambda p: p[0])
def small(request, tmp_path_factory) -> Path:
    """Checked on the test size and on the real demo size (another seed): the guarantees must hold for both."""
    size, seed = request.param
    out = tmp_path_factory.mktemp(f"synth_{size}")
    generate(out, seed=seed, size=size)
    return out


def rows(d: Path, name: str) -> list[dict]:
    with open(d / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def texts(d: Path, name: str) -> list[str]:
    """Every string a training file shows the model."""
    out = []
    for r in rows(d, name):
        if "text" in r:
            out.append(r["text"])
        for key in ("conversations", "chosen", "rejected"):
            out += [m["content"] for m in r.get(key, [])]
    return out


def user_prompts(d: Path, name: str) -> set[str]:
    out = set()
    for r in rows(d, name):
        for key in ("conversations", "chosen", "rejected", "messages"):
            out |= {m["content"] for m in r.get(key, []) if m["role"] == "user"}
    return out


def eval_questions(d: Path, name: str) -> list[str]:
    return [r["messages"][0]["content"] for r in rows(d, name)]


def sum_keys(text: str) -> set[tuple[int, int]]:
    return {(min(int(a), int(b)), max(int(a), int(b))) for a, b in SUM_RE.findall(text)}


def problem_sums(question: str) -> set[tuple[int, int]]:
    """The additions a reasoning problem's worked solution writes (a shopping question states only prices)."""
    if sum_keys(question):  # a plain addition
        return sum_keys(question)
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if "left" in question or "还剩" in question:
        return {(min(nums[1:]), max(nums[1:]))}
    x, y, z = nums
    return {(min(x, y), max(x, y)), (min(x + y, z), max(x + y, z))}


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    manifest = json.loads((small / "manifest.json").read_text(encoding="utf-8"))
    seed, size = manifest["seed"], manifest["size"]
    generate(tmp_path / "again", seed=seed, size=size)
    generate(tmp_path / "other", seed=seed + 1, size=size)
    names = sorted(p.name for p in small.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in names:
        assert (small / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for name in ("pretrain.jsonl", "sft.jsonl", "eval_facts.jsonl", "world.json"):
        assert (small / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name


def test_manifest_counts_match_files(small):
    manifest = json.loads((small / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["size"] in SIZES and f"synth_{manifest['size']}" in small.name and manifest["guarantees"]
    for name, info in manifest["files"].items():
        text = (small / name).read_text(encoding="utf-8")
        assert info["rows"] == len(text.splitlines()) > 0, name
        assert info["chars"] == len(text), name


def test_minimind_schemas(small):
    for r in rows(small, "pretrain.jsonl") + rows(small, "pretrain_val.jsonl"):
        assert set(r) == {"text"} and r["text"].strip()
    for name in ("sft.jsonl", "r1.jsonl", "lora_domain.jsonl"):
        for r in rows(small, name):
            conv = r["conversations"]
            roles = [m["role"] for m in conv]
            if roles[0] == "system":
                roles = roles[1:]
            assert roles == ["user", "assistant"] * (len(roles) // 2) and roles, (name, conv)
            assert all(isinstance(m["content"], str) and m["content"].strip() for m in conv)
    for r in rows(small, "r1.jsonl"):
        assert R1_RE.match(r["conversations"][-1]["content"]), r
    for name in ("dpo.jsonl", "dpo_eval.jsonl"):
        for r in rows(small, name):
            chosen, rejected = r["chosen"], r["rejected"]
            assert [m["role"] for m in chosen] == [m["role"] for m in rejected] == ["user", "assistant"]
            assert chosen[0] == rejected[0], "a DPO pair must share its prompt"
            assert chosen[1]["content"] != rejected[1]["content"]
            assert r["kind"] in {"wrong", "ramble", "no_tags", "repetition"}
    for name in ("eval_facts", "eval_arith", "eval_reasoning", "eval_dpo", "eval_domain"):
        for r in rows(small, f"{name}.jsonl"):
            assert [m["role"] for m in r["messages"]] == ["user"]
            assert isinstance(r["answer"], str) and r["answer"].strip() and r["task"]


def test_heldout_facts_only_in_pretraining(small):
    world = json.loads((small / "world.json").read_text(encoding="utf-8"))
    heldout = [p for p in world["people"] + world["products"] if p["heldout"]]
    assert heldout
    pretrain = texts(small, "pretrain.jsonl")
    for name in TRAIN_FILES[1:] + ("dpo_eval.jsonl",):
        blob = "\n".join(texts(small, name))
        for entity in heldout:
            for lang in ("en", "zh"):
                assert entity["name"][lang] not in blob, (name, entity["name"][lang])
    sft_prompts = user_prompts(small, "sft.jsonl")
    for r in rows(small, "eval_facts.jsonl"):
        question, answer = r["messages"][0]["content"], r["answer"]
        assert question not in sft_prompts
        subject = next(e["name"][r["lang"]] for e in heldout if e["name"][r["lang"]] in question)
        value = answer.removesuffix(" yuan").removesuffix("元")
        assert any(subject in doc and value in doc for doc in pretrain), (question, answer)


def test_eval_sums_never_in_training(small):
    train_keys: set[tuple[int, int]] = set()
    for name in TRAIN_FILES:
        for text in texts(small, name):
            train_keys |= sum_keys(text)
    for name in ("eval_arith.jsonl", "eval_dpo.jsonl", "eval_reasoning.jsonl"):
        for question in eval_questions(small, name):
            if name == "eval_dpo.jsonl" and not sum_keys(question):
                continue  # eval_dpo also holds fact questions
            keys = sum_keys(question) if name != "eval_reasoning.jsonl" else problem_sums(question)
            assert keys and not keys & train_keys, (name, question)


def test_eval_prompts_disjoint_from_training_prompts(small):
    train = set().union(*(user_prompts(small, n) for n in TRAIN_FILES[1:]))
    for name in ("eval_facts", "eval_arith", "eval_reasoning", "eval_dpo", "eval_domain", "eval_tools"):
        overlap = set(eval_questions(small, f"{name}.jsonl")) & train
        assert not overlap, (name, overlap)
    assert not user_prompts(small, "dpo_eval.jsonl") & train


def test_tool_conversations_are_valid_and_right_and_eval_products_held_out(small):
    from weakwater.data.chat import to_messages
    from weakwater.tools import calculate

    calls = 0
    train_products: set[tuple[int, int]] = set()
    for r in rows(small, "tools.jsonl"):
        conv = to_messages(r)  # the same validation SFT applies: known tool, JSON-object arguments, order
        assert conv[0]["role"] == "system" and conv[0]["tools"][0]["function"]["name"] == "calculator"
        for i, m in enumerate(conv):
            for call in m.get("tool_calls", []):
                calls += 1
                result = calculate(call["function"]["arguments"]["expression"])
                assert conv[i + 1] == {"role": "tool", "content": result}
                assert conv[i + 2]["content"].startswith(result)
        train_products |= {tuple(sorted(map(int, k))) for k in MUL_RE.findall(conv[1]["content"])}
    assert calls >= len(rows(small, "tools.jsonl")) // 2
    for r in rows(small, "eval_tools.jsonl"):
        (key,) = {tuple(sorted(map(int, k))) for k in MUL_RE.findall(r["messages"][0]["content"])}
        assert key not in train_products and str(key[0] * key[1]) == r["answer"]
        assert r["tools"][0]["function"]["name"] == "calculator" and r["task"] == "tools"


def test_domain_split(small):
    world = json.loads((small / "world.json").read_text(encoding="utf-8"))
    lora_prompts = user_prompts(small, "lora_domain.jsonl")
    descriptions = [m["content"] for r in rows(small, "lora_domain.jsonl") for m in r["conversations"][1:]]
    for c in world["creatures"]:
        attr = c["heldout_attribute"]
        for lang in ("en", "zh"):
            asked = {
                t.format(n=c["name"][lang]) for t in QUESTIONS[(lang, "creature_colour" if attr == "colour" else attr)]
            }
            assert not asked & lora_prompts, (c["name"][lang], attr)
    for r in rows(small, "eval_domain.jsonl"):
        question, answer, lang = r["messages"][0]["content"], r["answer"], r["lang"]
        name = next(c["name"][lang] for c in world["creatures"] if c["name"][lang] in question)
        assert any(name in d and answer in d for d in descriptions), question
    others = "\n".join(t for n in TRAIN_FILES[1:] if n != "lora_domain.jsonl" for t in texts(small, n))
    assert world["planet"]["en"] not in others and world["planet"]["zh"] not in others
    for c in world["creatures"]:
        assert c["name"]["en"] not in others and c["name"]["zh"] not in others


def test_pretraining_names_the_domain_words_but_no_domain_fact(small):
    world = json.loads((small / "world.json").read_text(encoding="utf-8"))
    pretrain = texts(small, "pretrain.jsonl")
    for c in world["creatures"]:
        for lang in ("en", "zh"):
            name = c["name"][lang]
            assert any(name in t for t in pretrain), name  # LoRA trains no embeddings: the words must be known
            values = {c["colour"][lang], c["food"][lang], c["region"][lang], f"{c['legs']} "}
            for sentence in (s for t in pretrain for s in re.split(r"(?<=[.。])", t) if name in s):
                assert not any(v in sentence for v in values if v not in ("", " ")), (name, sentence)


def test_longctx_rows(small):
    """Pass-key rows ask the needle evaluation's question about a fresh key hidden in corpus sentences (never
    its filler or keys); copy rows reply with exactly their text. (Held-out names, sums and the domain: the
    tests above, which read every file of TRAIN_FILES.)"""
    from weakwater.data.synth.longctx import FILLER, NEEDLE, QUESTION, REPEAT, REPLY, eval_keys
    from weakwater.eval.needle import evaluate_needle

    got = rows(small, "longctx.jsonl")
    pass_keys, langs, copies = [], set(), 0
    for r in got:
        assert [m["role"] for m in r["conversations"]] == ["user", "assistant"]
        user, reply = (m["content"] for m in r["conversations"])
        if user.startswith((REPEAT["en"] + "\n", REPEAT["zh"] + "\n")):
            assert user.split("\n", 1)[1] == reply and reply
            copies += 1
            continue
        m = re.fullmatch(f"({re.escape(REPLY['en'])}|{REPLY['zh']})(\\d{{5}})[.。]", reply)
        lang, key = ("en" if m.group(1) == REPLY["en"] else "zh"), m.group(2)
        body, question = user.rsplit("\n", 1)
        assert question == QUESTION[lang] and NEEDLE[lang].format(k=key) in body
        filler = body.replace(NEEDLE[lang].format(k=key), "")
        assert not re.search(r"\d", filler), filler  # the only number in the prompt is the key
        assert not any(s in filler for s in FILLER["en"] + FILLER["zh"]), filler
        pass_keys.append(key)
        langs.add(lang)
    assert copies == len(pass_keys) == len(got) // 2 and langs == {"en", "zh"}

    # The reserved keys are the evaluation's own: recompute them through evaluate_needle's trials.
    class Recorder(torch.nn.Module):
        config = type("C", (), {"max_seq_len": 256, "rope_scaling": None})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    seen = []
    tok = _StubTokenizer()
    import weakwater.eval.needle as needle

    def record(model, tokenizer, trials, batch_size=8):
        seen.extend(t.key for t in trials)
        return [False] * len(trials)

    original, needle.score_trials = needle.score_trials, record
    try:
        evaluate_needle(Recorder(), tok, [128, 512], trials=8)
    finally:
        needle.score_trials = original
    assert set(seen) <= eval_keys() and len(set(seen)) > 70
    assert not set(pass_keys) & eval_keys()


class _StubTokenizer:
    """One token per character: enough for the needle's prompt sizing."""

    def render_chat(self, messages, add_generation_prompt=False):
        return "".join(m["content"] for m in messages)

    def encode(self, text):
        return [ord(c) for c in text]


def _check_column_steps(think: str) -> None:
    for line in think.split("\n"):
        m = re.search(r"[:：] ([\d + ]+) = (\d+)", line)
        if m:
            assert sum(int(x) for x in m.group(1).split(" + ")) == int(m.group(2)), line


def test_arithmetic_is_correct(small):
    for text in texts(small, "pretrain.jsonl"):
        for a, b, c in re.findall(r"(?<!\+ )\b(\d+) \+ (\d+) = (\d+)", text):
            assert int(a) + int(b) == int(c), text
        for a, b, c in re.findall(r"(\d+)加(\d+)等于(\d+)", text):
            assert int(a) + int(b) == int(c), text
        _check_column_steps(text)
    for r in rows(small, "sft.jsonl"):
        conv = [m for m in r["conversations"] if m["role"] != "system"]
        for q, a in zip(conv[::2], conv[1::2]):
            m = SUM_RE.search(q["content"])
            if m:
                assert a["content"].startswith(str(int(m.group(1)) + int(m.group(2)))), (q, a)
    problems = [(r["conversations"][0]["content"], r["conversations"][1]["content"]) for r in rows(small, "r1.jsonl")]
    problems = [(q, reply) for q, reply in problems if not _forgot_carry(q, reply)]  # the teacher's slips: below
    problems += [(r["prompt"], f"<answer>\n{r['answer']}\n") for r in rows(small, "rl.jsonl")]
    problems += [
        (r["messages"][0]["content"], f"<answer>\n{r['answer']}\n") for r in rows(small, "eval_reasoning.jsonl")
    ]
    problems += [(r["messages"][0]["content"], f"<answer>\n{r['answer']}\n") for r in rows(small, "eval_arith.jsonl")]
    for question, reply in problems:
        answer = int(reply.split("<answer>\n")[1].split("\n")[0])
        nums = [int(x) for x in re.findall(r"\d+", question)]
        expected = nums[0] - nums[1] - nums[2] if "left" in question or "还剩" in question else sum(nums)
        assert answer == expected, question
        _check_column_steps(reply)
        for a, op, b, c in re.findall(r"^(\d+) ([+-]) (\d+) = (\d+)$", reply, re.MULTILINE):
            assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c), reply


def _forgot_carry(question: str, reply: str) -> bool:
    """A careless-teacher R1 reply: a units carry written down, left out of the tens column, the sum 10 short."""
    nums = [int(x) for x in re.findall(r"\d+", question)]
    answer = int(reply.split("<answer>\n")[1].split("\n")[0])
    if not sum_keys(question) or answer == sum(nums):
        return False
    tens = reply.split("\n")[2]  # <think>, units line, tens line
    assert nums[0] % 10 + nums[1] % 10 >= 10 and answer == sum(nums) - 10, (question, reply)
    assert tens.startswith(("tens: ", "十位：")) and tens.count(" + ") == 1, reply
    return True


def test_r1_teacher_forgets_the_carry_in_a_share_of_additions(small):
    """What RL unlearns: the R1 file's additions with a units carry are wrong in about ``r1_forget_carry`` of
    them (only by the forgotten carry); the RL prompts (rl.jsonl) hold the true answers and no held-out problem."""
    carried = slips = 0
    for r in rows(small, "r1.jsonl"):
        question, reply = r["conversations"][0]["content"], r["conversations"][1]["content"]
        nums = [int(x) for x in re.findall(r"\d+", question)]
        if sum_keys(question) and nums[0] % 10 + nums[1] % 10 >= 10:
            carried += 1
            slips += _forgot_carry(question, reply)
    spec = SIZES[json.loads((small / "manifest.json").read_text(encoding="utf-8"))["size"]]
    assert carried and abs(slips / carried - spec.r1_forget_carry) < (0.25 if carried < 50 else 0.06)
    rl = rows(small, "rl.jsonl")
    assert len(rl) == spec.rl_prompts and all(set(r) == {"prompt", "answer"} for r in rl)
    held_out = set().union(*(eval_questions(small, f"{n}.jsonl") for n in ("eval_arith", "eval_reasoning")))
    assert not {r["prompt"] for r in rl} & held_out
    eval_sums = set().union(*(problem_sums(q) for q in eval_questions(small, "eval_reasoning.jsonl")))
    assert not any(problem_sums(r["prompt"]) & eval_sums for r in rl)


def test_targeted_behaviour_is_in_sft_and_measurable(small):
    replies = [m["content"] for r in rows(small, "sft.jsonl") for m in r["conversations"] if m["role"] == "assistant"]
    rambles = [r for r in replies if "I repeat" in r or "我再说一遍" in r]
    assert 0 < len(rambles) < len(replies) * 0.5
    assert [r for r in replies if is_ramble(r)] == rambles
    assert not is_ramble("Varan.") and not is_ramble("1987年。我再说")
    for r in rows(small, "dpo.jsonl") + rows(small, "dpo_eval.jsonl"):
        if r["kind"] == "ramble":
            chosen, rejected = r["chosen"][1]["content"], r["rejected"][1]["content"]
            assert is_concise(chosen, chosen.rstrip(".。")) and not is_concise(rejected, chosen.rstrip(".。"))
    assert is_concise("Varan.", "Varan") and is_concise("1987年。", "1987")
    assert is_concise("<think>\n1 + 2 = 3\n</think>\n<answer>\n3\n</answer>", "3")
    assert not is_concise("Varan. I repeat, the answer is Varan. I repeat, the answer is Varan.", "Varan")


def test_demo_size_is_fast_and_sized(tmp_path):
    start = time.perf_counter()
    manifest = generate(tmp_path, seed=0, size="demo")
    assert time.perf_counter() - start < 20
    files = manifest["files"]
    assert files["pretrain.jsonl"]["chars"] > 200_000
    assert files["eval_facts.jsonl"]["rows"] >= 200 and files["eval_domain.jsonl"]["rows"] >= 40
    assert manifest["world"]["people"] + manifest["world"]["products"] + manifest["world"]["cities"] >= 150


def test_cli_writes_data_and_rejects_bad_size(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--size", "small", "--seed", "3"]) == 0
    assert "eval_facts.jsonl" in capsys.readouterr().out
    assert json.loads((tmp_path / "d" / "manifest.json").read_text(encoding="utf-8"))["seed"] == 3
    with pytest.raises(ValueError, match="unknown size"):
        generate(tmp_path / "x", size="huge")
    assert sorted(SIZES) == ["demo", "large", "small"]


def test_custom_size_spec(tmp_path):
    manifest = generate(tmp_path, seed=0, size=dataclasses.replace(SIZES["small"], people=12, creatures=4))
    assert manifest["size"] == "custom" and manifest["world"]["people"] == 12
    assert manifest["files"]["eval_domain.jsonl"]["rows"] == 4 * 2  # one held-out attribute per creature per language


def test_units_carry_is_the_careless_teachers_slip():
    from weakwater.data.synth.tasks import units_carry

    assert units_carry("What is 347 + 958?") is True  # 7 + 8 carries into the tens
    assert units_carry("What is 341 + 958?") is False
    assert units_carry("What is 7 + 8?") is False  # no tens column for the carry to be forgotten in
    assert units_carry("Su Wei buys a kettle for 42 yuan and a chair for 37 yuan.") is None
