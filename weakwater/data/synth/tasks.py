"""Question/answer builders for SFT, R1, DPO, LoRA-domain data and their held-out eval sets.

Replies are short and exact-matchable ("Varan.", "teacher.", "1987年。", "34 yuan."); the expected eval answer is
the bare value, so a correct reply starts with it after normalisation. Values keep the exact spelling and case
they have in the pretraining text, so a tiny model only has to recall the fact, not also re-case it.
"""

from __future__ import annotations

import random
import re

from weakwater.data.synth.arith import addition_steps, forgets_carry, taught_sum
from weakwater.data.synth.corpus import article
from weakwater.data.synth.world import PLANET, Creature, Person, Product

QUESTIONS: dict[tuple[str, str], list[str]] = {
    ("en", "city"): ["Which city does {n} live in?", "Where does {n} live?", "In which city is {n}'s home?",
                     "Name the city where {n} lives."],
    ("en", "job"): ["What is {n}'s job?", "What does {n} do for a living?", "What is the profession of {n}?",
                    "What work does {n} do?"],
    ("en", "birth_year"): ["In which year was {n} born?", "When was {n} born?", "What is {n}'s birth year?",
                           "What year was {n} born in?"],
    ("en", "colour"): ["What is {n}'s favourite colour?", "Which colour does {n} like best?",
                       "What colour does {n} prefer?", "What is the favourite colour of {n}?"],
    ("en", "maker"): ["Who makes the {n}?", "Which company produces the {n}?", "Who is the maker of the {n}?",
                      "Which company makes the {n}?"],
    ("en", "price"): ["How much does the {n} cost?", "What is the price of the {n}?", "How many yuan is the {n}?",
                      "What does the {n} sell for?"],
    ("zh", "city"): ["{n}住在哪个城市？", "{n}的家在哪里？", "{n}生活在哪座城市？", "{n}住在哪里？"],
    ("zh", "job"): ["{n}的职业是什么？", "{n}是做什么工作的？", "{n}从事什么职业？", "{n}做什么工作？"],
    ("zh", "birth_year"): ["{n}是哪一年出生的？", "{n}出生于哪一年？", "{n}的出生年份是哪年？", "{n}哪年出生？"],
    ("zh", "colour"): ["{n}最喜欢什么颜色？", "{n}最爱哪种颜色？", "{n}偏爱的颜色是什么？", "{n}最喜欢的颜色是什么？"],
    ("zh", "maker"): ["{n}是哪家公司生产的？", "谁制造了{n}？", "{n}的制造商是谁？", "哪家公司制造{n}？"],
    ("zh", "price"): ["{n}多少钱？", "{n}的价格是多少？", "{n}卖多少元？", "{n}售价多少？"],
    # The LoRA domain (creatures of the planet Ossira).
    ("en", "creature_colour"): ["What colour is the {n}?", "What is the colour of the {n}?"],
    ("en", "legs"): ["How many legs does the {n} have?", "How many legs does the {n} walk on?"],
    ("en", "food"): ["What does the {n} eat?", "What does the {n} feed on?"],
    ("en", "region"): ["Where on Ossira does the {n} live?", "Which region of Ossira is home to the {n}?"],
    ("zh", "creature_colour"): ["{n}是什么颜色的？", "{n}的颜色是什么？"],
    ("zh", "legs"): ["{n}有几条腿？", "{n}用几条腿走路？"],
    ("zh", "food"): ["{n}吃什么？", "{n}以什么为食？"],
    ("zh", "region"): ["{n}生活在奥西拉星的哪里？", "{n}的家在哪里？"],
}  # fmt: skip

ARITH_QUESTIONS = {
    "en": ["What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.", "{a} + {b} = ?"],
    "zh": ["{a}加{b}等于多少？", "计算{a} + {b}。", "{a} + {b}等于几？", "{a}加上{b}是多少？"],
}
SYSTEM_PROMPTS = ["You are WeakWater, a helpful assistant.", "你是WeakWater，一个乐于助人的助手。"]
MUL_QUESTIONS = {
    "en": [
        "What is {a} * {b}?",
        "Compute {a} × {b}.",
        "Multiply {a} by {b}.",
        "{a} * {b} = ?",
        "What is {a} times {b}?",
    ],
    "zh": ["{a}乘以{b}等于多少？", "计算{a} × {b}。", "{a}乘{b}是多少？", "{a} * {b}等于几？"],
}


def end(text: str, lang: str) -> str:
    return text + ("." if lang == "en" else "。")


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


class QA:
    """One question with its expected answer (eval) and its ideal concise reply (training)."""

    def __init__(self, question: str, answer: str, reply: str, lang: str, task: str, kind: str) -> None:
        self.question, self.answer, self.reply, self.lang = question, answer, reply, lang
        self.task = task  # eval task name written to eval rows
        self.kind = kind  # what is asked: an attribute name, "sum" or "problem" (wrong answers keep the kind)

    def eval_row(self) -> dict:
        return {"messages": [user(self.question)], "answer": self.answer, "task": self.task, "lang": self.lang}


def person_answer(p: Person, attr: str, lang: str) -> tuple[str, str]:
    """(expected answer, concise reply) for a person fact."""
    if attr == "birth_year":
        return str(p.birth_year), (f"{p.birth_year}." if lang == "en" else f"{p.birth_year}年。")
    value = getattr(p, attr)[lang]
    return value, end(value, lang)


def product_answer(p: Product, attr: str, lang: str) -> tuple[str, str]:
    if attr == "price":
        value = f"{p.price} yuan" if lang == "en" else f"{p.price}元"
        return value, end(value, lang)
    return p.maker[lang], end(p.maker[lang], lang)


def creature_answer(c: Creature, attr: str, lang: str) -> tuple[str, str]:
    if attr == "legs":
        return str(c.legs), (f"{c.legs} legs." if lang == "en" else f"{c.legs}条腿。")
    value = getattr(c, attr)[lang]
    return value, end(value, lang)


def fact_qa(subject: Person | Product, attr: str, lang: str, template: str) -> QA:
    answer, reply = (person_answer if isinstance(subject, Person) else product_answer)(subject, attr, lang)
    return QA(template.format(n=subject.name[lang]), answer, reply, lang, "facts", attr)


def creature_qa(c: Creature, attr: str, lang: str, template: str) -> QA:
    answer, reply = creature_answer(c, attr, lang)
    return QA(template.format(n=c.name[lang]), answer, reply, lang, "domain", attr)


def arith_qa(rng: random.Random, a: int, b: int, lang: str, task: str = "arith") -> QA:
    question = rng.choice(ARITH_QUESTIONS[lang]).format(a=a, b=b)
    return QA(question, str(a + b), end(str(a + b), lang), lang, task, "sum")


def mul_qa(rng: random.Random, a: int, b: int, lang: str) -> QA:
    """A multiplication too big to do in a tiny model's head: the tool stage answers it with the calculator."""
    question = rng.choice(MUL_QUESTIONS[lang]).format(a=a, b=b)
    return QA(question, str(a * b), end(str(a * b), lang), lang, "tools", "product")


def tool_conversation(qa: QA, expression: str, result: str) -> list[dict]:
    """user -> assistant calls ``calculator`` -> tool result -> assistant states it (OpenAI message shape)."""
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}
    return [
        user(qa.question),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": result},
        assistant(qa.reply),
    ]


# The filler a rambling reply repeats after its answer, per language (then "{answer}." / "{answer}。").
RAMBLE_FILLER = {"en": " I repeat, the answer is ", "zh": "我再说一遍，答案是"}


def ramble(qa: QA, rng: random.Random) -> str:
    """The targeted bad behaviour: the right answer, then the same filler repeated (SFT noise DPO removes)."""
    stop = "." if qa.lang == "en" else "。"
    return qa.reply + f"{RAMBLE_FILLER[qa.lang]}{qa.answer}{stop}" * rng.randint(3, 5)


def is_ramble(generation: str) -> bool:
    """Whether a reply shows the targeted behaviour: it contains the rambling filler (in either language)."""
    return any(filler.strip() in generation for filler in RAMBLE_FILLER.values())


def is_concise(generation: str, answer: str, slack: int = 6) -> bool:
    """The DPO demo's targeted behaviour (used with ``is_correct``): the reply is the answer, not a ramble.

    True when the stripped reply (its ``<answer>`` part if tagged) is at most ``slack`` characters longer than
    the expected answer, e.g. "Varan." or "1987年。" for "Varan"/"1987"; repeating filler fails it.
    """
    text = generation
    if "</think>" in text:
        text = text.split("</think>", 1)[1]
    text = text.replace("<answer>", "").replace("</answer>", "").strip()
    return len(text) <= len(answer.strip()) + slack


# --- R1-format reasoning ----------------------------------------------------------------------------------


def r1_content(think_lines: list[str], answer: str) -> str:
    return "<think>\n" + "\n".join(think_lines) + "\n</think>\n<answer>\n" + answer + "\n</answer>"


def addition_problem(
    rng: random.Random, a: int, b: int, lang: str, forget_carry: bool = False
) -> tuple[str, list[str], int]:
    """(question, think lines, result) for a column addition; ``result`` is the sum the think lines reach (with
    ``forget_carry``, a wrong one when there was a carry to forget: see :func:`addition_steps`)."""
    if lang == "en":
        question = rng.choice(["What is {a} + {b}? Think step by step.", "Add {a} and {b} step by step."])
    else:
        question = rng.choice(["{a}加{b}等于多少？请一步一步地算。", "请按列计算{a} + {b}。"])
    return question.format(a=a, b=b), addition_steps(a, b, lang, forget_carry), taught_sum(a, b, forget_carry)


def units_carry(question: str) -> bool | None:
    """For an addition question of :func:`addition_problem`: whether its units column carries into the tens (where
    the careless R1 teacher slips, :func:`.arith.forgets_carry`); None for other questions (shopping problems name
    prices and a buyer, not two operands)."""
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if len(nums) != 2 or "yuan" in question or "元" in question:
        return None
    return forgets_carry(nums[0], nums[1], True)


def word_problem(kind: str, buyer: Person, items: list[Product], budget: int, lang: str) -> tuple[str, list, int]:
    """(question, think lines, result) for a two-step shopping problem."""
    b = buyer.name[lang]
    prices = [p.price for p in items]
    names = [p.name[lang] for p in items]
    s1 = prices[0] + prices[1]
    if kind == "change":
        result = budget - s1
        if lang == "en":
            question = (
                f"{b} has {budget} yuan and buys {article(names[0])} ({prices[0]} yuan) and {article(names[1])} "
                f"({prices[1]} yuan). How many yuan does {b} have left?"
            )
            think = [
                f"The {names[0]} costs {prices[0]} yuan and the {names[1]} costs {prices[1]} yuan.",
                f"{prices[0]} + {prices[1]} = {s1}",
                f"{budget} - {s1} = {result}",
                f"{b} has {result} yuan left.",
            ]
        else:
            question = (
                f"{b}有{budget}元，买了一个{names[0]}（{prices[0]}元）和一个{names[1]}（{prices[1]}元）。"
                f"{b}还剩多少元？"
            )
            think = [
                f"{names[0]}的价格是{prices[0]}元，{names[1]}的价格是{prices[1]}元。",
                f"{prices[0]} + {prices[1]} = {s1}",
                f"{budget} - {s1} = {result}",
                f"{b}还剩{result}元。",
            ]
        return question, think, result
    result = s1 + prices[2]
    if lang == "en":
        question = (
            f"{b} buys {article(names[0])} for {prices[0]} yuan, {article(names[1])} for {prices[1]} yuan and "
            f"{article(names[2])} for {prices[2]} yuan. How many yuan does {b} spend in total?"
        )
        think = [f"{prices[0]} + {prices[1]} = {s1}", f"{s1} + {prices[2]} = {result}", f"{b} spends {result} yuan."]
    else:
        question = (
            f"{b}花{prices[0]}元买了一个{names[0]}，花{prices[1]}元买了一个{names[1]}，又花{prices[2]}元买了一个"
            f"{names[2]}。{b}一共花了多少元？"
        )
        think = [f"{prices[0]} + {prices[1]} = {s1}", f"{s1} + {prices[2]} = {result}", f"{b}一共花了{result}元。"]
    return question, think, result


# --- LoRA domain --------------------------------------------------------------------------------------------

DESCRIBE_PROMPTS = {
    "en": ["Tell me about the {n}.", "Describe the {n} of Ossira.", "What do you know about the {n}?"],
    "zh": ["介绍一下{n}。", "请描述奥西拉星的{n}。", "关于{n}你知道什么？"],
}
CREATURE_FACTS = {
    ("en", "colour"): ["The {n} is {v} in colour.", "The colour of the {n} is {v}."],
    ("en", "legs"): ["The {n} has {v} legs.", "The {n} walks on {v} legs."],
    ("en", "food"): ["The {n} eats {v}.", "The {n} feeds on {v}."],
    ("en", "region"): ["The {n} lives in {v}.", "The home of the {n} is {v}."],
    ("zh", "colour"): ["{n}是{v}的。", "{n}的颜色是{v}。"],
    ("zh", "legs"): ["{n}有{v}条腿。", "{n}用{v}条腿走路。"],
    ("zh", "food"): ["{n}吃{v}。", "{n}以{v}为食。"],
    ("zh", "region"): ["{n}生活在{v}。", "{n}的家在{v}。"],
}


def describe_creature(rng: random.Random, c: Creature, lang: str) -> list[dict]:
    """A conversation whose reply states all four facts (the only place held-out domain facts appear)."""
    attrs = ["colour", "legs", "food", "region"]
    rng.shuffle(attrs)
    facts = []
    for attr in attrs:
        value = str(c.legs) if attr == "legs" else getattr(c, attr)[lang]
        facts.append(rng.choice(CREATURE_FACTS[(lang, attr)]).format(n=c.name[lang], v=value))
    if lang == "en":
        text = f"The {c.name.en} is a creature of the planet {PLANET[0]}. " + " ".join(facts)
    else:
        text = f"{c.name.zh}是{PLANET[1]}星上的一种生物。" + "".join(facts)
    return [user(rng.choice(DESCRIBE_PROMPTS[lang]).format(n=c.name[lang])), assistant(text)]
