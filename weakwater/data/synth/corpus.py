"""Pretraining text: encyclopedia paragraphs, short stories, city pages, catalogues, arithmetic, and index
pages that name the LoRA domain's words without stating any of its facts.

Each fact has several paraphrase templates per language, and every document draws its templates and fact
order at random, so the model sees each fact in many surface forms (it has to learn the fact, not a sentence).
"""

from __future__ import annotations

import random

from weakwater.data.synth.arith import Holdout, add_key, addition_steps, draw, operands
from weakwater.data.synth.world import FOODS, PLANET, REGIONS, Person, Product, SizeSpec, World


def article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


# One list of sentence templates per (language, attribute); {n} is the subject, {v} the value.
FACT_TEMPLATES: dict[tuple[str, str], list[str]] = {
    ("en", "city"): [
        "{n} lives in {v}.", "{n} has lived in the city of {v} for many years.", "The home of {n} is in {v}.",
        "{n} makes a home in {v}.", "Every morning {n} walks through the streets of {v}, the city {n} lives in.",
    ],
    ("en", "job"): [
        "{n} works as {a}.", "By profession, {n} is {a}.", "{n} earns a living as {a}.",
        "{n} has always worked as {a}.", "The job of {n} is {v}.",
    ],
    ("en", "birth_year"): [
        "{n} was born in {v}.", "The birth year of {n} is {v}.", "{n} came into the world in {v}.",
        "Records show that {n} was born in the year {v}.",
    ],
    ("en", "colour"): [
        "{n}'s favourite colour is {v}.", "{n} likes {v} more than any other colour.",
        "Of all colours, {n} prefers {v}.", "The favourite colour of {n} is {v}.",
    ],
    ("zh", "city"): [
        "{n}住在{v}。", "{n}的家在{v}。", "{n}多年来一直生活在{v}。",
        "{n}每天早上都在{v}的街道上散步，那是{n}居住的城市。",
    ],
    ("zh", "job"): ["{n}是一名{v}。", "{n}的职业是{v}。", "{n}以当{v}为生。", "{n}一直从事{v}的工作。"],
    ("zh", "birth_year"): [
        "{n}出生于{v}年。", "{n}生于{v}年。", "{n}的出生年份是{v}年。", "记录显示，{n}在{v}年出生。",
    ],
    ("zh", "colour"): ["{n}最喜欢的颜色是{v}。", "{n}最爱{v}。", "在所有颜色中，{n}最喜欢{v}。", "{n}偏爱{v}。"],
    ("en", "maker"): ["The {n} is made by {v}.", "{v} produces the {n}.", "The maker of the {n} is {v}."],
    ("en", "price"): ["The {n} costs {v} yuan.", "The price of the {n} is {v} yuan.", "One {n} sells for {v} yuan."],
    ("zh", "maker"): ["{n}由{v}制造。", "{v}生产{n}。", "{n}的制造商是{v}。"],
    ("zh", "price"): ["{n}的价格是{v}元。", "{n}卖{v}元。", "{n}售价{v}元。"],
}  # fmt: skip


def person_value(p: Person, attr: str, lang: str) -> str:
    value = getattr(p, attr)
    return str(value) if attr == "birth_year" else value[lang]


def product_value(p: Product, attr: str, lang: str) -> str:
    return str(p.price) if attr == "price" else p.maker[lang]


def fact_sentence(rng: random.Random, lang: str, attr: str, subject: str, value: str) -> str:
    template = rng.choice(FACT_TEMPLATES[(lang, attr)])
    return template.format(n=subject, v=value, a=article(value) if lang == "en" else value)


def person_bio(rng: random.Random, p: Person, lang: str) -> str:
    """An encyclopedia paragraph stating all four facts in a random order and wording."""
    attrs = ["city", "job", "birth_year", "colour"]
    rng.shuffle(attrs)
    if lang == "en":
        heads = [f"{p.name.en} ({p.name.zh}) is a resident of {p.city.en}.", f"About {p.name.en}.", f"{p.name.en}."]
    else:
        heads = [f"{p.name.zh}（{p.name.en}）是{p.city.zh}的居民。", f"关于{p.name.zh}。", f"{p.name.zh}。"]
    body = [fact_sentence(rng, lang, a, p.name[lang], person_value(p, a, lang)) for a in attrs]
    sep = " " if lang == "en" else ""
    return sep.join([rng.choice(heads), *body])


def story(rng: random.Random, world: World, lang: str) -> str:
    """Two people meet and shop: restates some of their facts and a product's maker and price."""
    a, b = rng.sample(world.people, 2)
    prod = rng.choice(world.products)
    if lang == "en":
        parts = [
            f"One day {a.name.en}, {article(a.job.en)} from {a.city.en}, travelled to {b.city.en} to visit "
            f"{b.name.en}.",
            fact_sentence(rng, "en", "job", b.name.en, b.job.en),
            f"{b.name.en} wore something {b.colour.en}, because {b.name.en}'s favourite colour is {b.colour.en}.",
            f"Together they bought {article(prod.name.en)} made by {prod.maker.en} for {prod.price} yuan.",
            fact_sentence(rng, "en", "birth_year", a.name.en, str(a.birth_year)),
        ]
        return " ".join(parts[:1] + rng.sample(parts[1:], 3))
    parts = [
        f"有一天，来自{a.city.zh}的{a.job.zh}{a.name.zh}去{b.city.zh}拜访{b.name.zh}。",
        fact_sentence(rng, "zh", "job", b.name.zh, b.job.zh),
        f"{b.name.zh}穿了一件{b.colour.zh}的衣服，因为{b.name.zh}最喜欢的颜色是{b.colour.zh}。",
        f"他们一起花{prod.price}元买了一个{prod.maker.zh}制造的{prod.name.zh}。",
        fact_sentence(rng, "zh", "birth_year", a.name.zh, str(a.birth_year)),
    ]
    return "".join(parts[:1] + rng.sample(parts[1:], 3))


def city_page(rng: random.Random, world: World, city_index: int, lang: str) -> str | None:
    """Lists (some of) a city's residents with their jobs: the city fact seen from the other side."""
    city = world.cities[city_index]
    residents = [p for p in world.people if p.city == city]
    if not residents:
        return None
    shown = rng.sample(residents, min(len(residents), 6))
    if lang == "en":
        who = "; ".join(f"{p.name.en}, {article(p.job.en)}" for p in shown)
        return f"{city.en} is a city. People who live in {city.en} include {who}."
    who = "；".join(f"{p.job.zh}{p.name.zh}" for p in shown)
    return f"{city.zh}是一座城市。住在{city.zh}的人有{who}。"


def catalogue(rng: random.Random, world: World, lang: str) -> str:
    shown = rng.sample(world.products, min(len(world.products), 5))
    head = "Product catalogue." if lang == "en" else "产品目录。"
    sep = " " if lang == "en" else ""
    lines = [head]
    for p in shown:
        for attr in rng.sample(["maker", "price"], 2):
            lines.append(fact_sentence(rng, lang, attr, p.name[lang], product_value(p, attr, lang)))
    return sep.join(lines)


def arithmetic_doc(rng: random.Random, holdout: Holdout, lang: str) -> str:
    """Either a list of sums or one worked column addition (the same step format R1 data uses)."""

    def pair(digits: int) -> tuple[int, int]:
        return draw(rng, lambda r: operands(r, digits), lambda ab: add_key(*ab) not in holdout, "training sum")

    if rng.random() < 0.5:
        sums = [pair(rng.choice((1, 2, 2, 3))) for _ in range(6)]
        if lang == "en":
            return " ".join(f"{a} + {b} = {a + b}." for a, b in sums)
        return "".join(f"{a}加{b}等于{a + b}。" for a, b in sums)
    a, b = pair(rng.choice((2, 3, 3, 4)))
    steps = addition_steps(a, b, lang)
    if lang == "en":
        return f"Let us add {a} and {b} column by column.\n" + "\n".join(steps)
    return f"我们按列计算{a}加{b}。\n" + "\n".join(steps)


def planet_index(rng: random.Random, world: World, lang: str) -> str:
    """Names Ossira's regions, creatures and foods in separate lists, never one creature's attribute.

    LoRA trains no embeddings, so the domain's words must be tokens the base model has learnt; a base model
    knows the words of a new topic, it is the facts that are new (those stay in lora_domain.jsonl alone).
    """

    def shuffled(names: list[str]) -> list[str]:
        return rng.sample(names, len(names))

    regions = shuffled([r[0 if lang == "en" else 1] for r in REGIONS])
    creatures = shuffled([c.name[lang] for c in world.creatures])
    foods = shuffled([f[0 if lang == "en" else 1] for f in FOODS])
    if lang == "en":
        return (
            f"An index of the planet {PLANET[0]}. Its regions: {', '.join(regions)}. "
            f"Its creatures: {', '.join('the ' + c for c in creatures)}. What they eat: {', '.join(foods)}."
        )
    return f"{PLANET[1]}星索引。地区：{'、'.join(regions)}。生物：{'、'.join(creatures)}。食物：{'、'.join(foods)}。"


def pretrain_docs(rng: random.Random, world: World, holdout: Holdout, spec: SizeSpec) -> list[str]:
    """All pretraining documents of one sample of the corpus, shuffled."""
    docs: list[str] = []
    for lang in ("en", "zh"):
        for p in world.people:
            docs += [person_bio(rng, p, lang) for _ in range(spec.bio_docs)]
        docs += [story(rng, world, lang) for _ in range(spec.stories)]
        for i in range(len(world.cities)):
            docs += [d for _ in range(2) if (d := city_page(rng, world, i, lang))]
        docs += [catalogue(rng, world, lang) for _ in range(spec.catalogue_docs)]
        docs += [arithmetic_doc(rng, holdout, lang) for _ in range(spec.arith_docs)]
        docs += [planet_index(rng, world, lang) for _ in range(spec.index_docs)]
    rng.shuffle(docs)
    return docs
