"""``generate()``: build the world, claim every held-out item first, then write the training files around them."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from weakwater.data.synth.arith import Holdout, WordProblem, add_key, draw, mul_key, operands
from weakwater.data.synth.corpus import pretrain_docs
from weakwater.data.synth.longctx import corpus_sentences, longctx_rows
from weakwater.data.synth.tasks import (
    QA,
    QUESTIONS,
    SYSTEM_PROMPTS,
    addition_problem,
    arith_qa,
    assistant,
    creature_qa,
    describe_creature,
    end,
    fact_qa,
    mul_qa,
    r1_content,
    ramble,
    tool_conversation,
    user,
    word_problem,
)
from weakwater.data.synth.world import (
    CREATURE_ATTRS,
    PERSON_ATTRS,
    PLANET,
    PRODUCT_ATTRS,
    SIZES,
    Person,
    Product,
    SizeSpec,
    World,
    build_world,
)
from weakwater.tools import CALCULATOR

# The tool the demo's tool stage learns to call: exactly the built-in calculator's schema, so that
# ``weakwater chat --tools calculator`` and an OpenAI client sending it show the model the prompt it trained on.
CALCULATOR_SCHEMA = CALCULATOR.schema()


LANGS = ("en", "zh")

GUARANTEES = [
    "eval_facts.jsonl asks only about held-out people/products (world.json 'heldout': true); their names appear "
    "in no SFT, R1, DPO or LoRA-domain file, and every asked fact is stated in pretrain.jsonl.",
    "eval_arith.jsonl, eval_dpo.jsonl and eval_reasoning.jsonl additions are claimed before any training text is "
    "written; pretrain, SFT, R1, RL and DPO training draw only unclaimed operand pairs (either order).",
    "eval_reasoning.jsonl word problems (buyer, products, budget) never occur in r1.jsonl, rl.jsonl or dpo.jsonl.",
    "eval_dpo.jsonl fact questions use phrasings reserved from sft.jsonl and dpo.jsonl; dpo_eval.jsonl pairs are "
    "built only on eval_dpo.jsonl and eval_reasoning.jsonl prompts.",
    "eval_tools.jsonl multiplications are claimed before tools.jsonl is drawn; tools.jsonl uses only unclaimed "
    "operand pairs (either order).",
    "eval_domain.jsonl asks, per creature, the one attribute that lora_domain.jsonl states only in descriptions, "
    "never in a question/answer pair; no other training file states a fact of Ossira (pretrain.jsonl's index "
    "pages only name its regions, creatures and foods, so LoRA meets known words).",
    "longctx.jsonl pass keys never equal the needle evaluation's keys at its default seed (demo and default "
    "lengths); its sentences come from pretrain.jsonl minus any naming a held-out person/product, Ossira or a "
    "creature, and never the evaluation's filler.",
]

FILE_INFO = {
    "pretrain.jsonl": ('{"text"}', "pretraining corpus: encyclopedia, stories, city pages, catalogues, arithmetic"),
    "pretrain_val.jsonl": ('{"text"}', "held-out pretraining documents for validation loss"),
    "sft.jsonl": ('{"conversations"}', "SFT: facts of non-held-out entities, arithmetic, multi-turn"),
    "r1.jsonl": ('{"conversations"} R1', "reasoning distillation: column additions and two-step shopping problems"),
    "rl.jsonl": ('{"prompt", "answer"}', "RL prompts: training problems of the R1 kinds with their true answers"),
    "dpo.jsonl": ('{"chosen", "rejected", "kind"}', "DPO pairs: concise correct vs wrong / rambling / untagged"),
    "dpo_eval.jsonl": ('{"chosen", "rejected", "kind"}', "held-out DPO pairs for preference accuracy"),
    "lora_domain.jsonl": ('{"conversations"}', "LoRA domain: the creatures of the planet Ossira"),
    "tools.jsonl": (
        '{"conversations"} + tools',
        "tool use: multiplications via calculator calls, facts answered directly",
    ),
    "longctx.jsonl": (
        '{"conversations"}',
        "long context: pass keys hidden in corpus sentences, and copying text back (the demo's long-context stage)",
    ),
    "eval_facts.jsonl": ("eval", "held-out facts known only from pretraining (task 'facts')"),
    "eval_arith.jsonl": ("eval", "held-out two-digit additions (task 'arith')"),
    "eval_reasoning.jsonl": ("eval", "held-out multi-step problems, answer = final number (task 'reasoning')"),
    "eval_dpo.jsonl": ("eval", "prompts for the DPO targeted behaviour: correct and concise (task 'concise')"),
    "eval_domain.jsonl": ("eval", "held-out Ossira questions (task 'domain')"),
    "eval_tools.jsonl": ("eval + tools", "held-out 3-4 digit multiplications, calculator offered (task 'tools')"),
}


def _rng(seed: int, part: str) -> random.Random:
    """One independent stream per part, so resizing one file never reshuffles the others."""
    return random.Random(f"weakwater-synth/{seed}/{part}")


class _Builder:
    """Holds the world and the held-out claims while the files are assembled in a fixed order."""

    def __init__(self, seed: int, spec: SizeSpec) -> None:
        self.seed, self.spec = seed, spec
        self.world: World = build_world(_rng(seed, "world"), spec)
        self.holdout = Holdout()
        self.reserved_prompts: set[str] = set()

    def rng(self, part: str) -> random.Random:
        return _rng(self.seed, part)

    # -- held-out sets (built first) -------------------------------------------------------------------------

    def eval_facts(self) -> list[QA]:
        rng = self.rng("eval_facts")
        items: list[tuple[Person | Product, tuple[str, ...]]] = [(p, PERSON_ATTRS) for p in self.world.eval_people()]
        items += [(p, PRODUCT_ATTRS) for p in self.world.eval_products()]
        out = [
            fact_qa(subject, attr, lang, rng.choice(QUESTIONS[(lang, attr)]))
            for subject, attrs in items
            for attr in attrs
            for lang in LANGS
        ]
        rng.shuffle(out)  # any prefix (an eval --limit) then mixes entities, attributes and languages
        return out

    def _claim_sum(self, rng: random.Random, digits: int) -> tuple[int, int]:
        return draw(rng, lambda r: operands(r, digits), lambda ab: self.holdout.claim(add_key(*ab)), "held-out sum")

    def eval_arith(self) -> list[QA]:
        rng = self.rng("eval_arith")
        return [arith_qa(rng, *self._claim_sum(rng, 2), rng.choice(LANGS)) for _ in range(self.spec.eval_arith)]

    def eval_reasoning(self) -> list[tuple[QA, list[str]]]:
        """Held-out multi-step problems with their think lines (the lines feed dpo_eval pairs)."""
        rng = self.rng("eval_reasoning")
        out = []
        for i in range(self.spec.eval_reasoning):
            lang = rng.choice(LANGS)
            if i % 4 != 3:  # mostly column additions (2-3 digits): steps a tiny model can learn to copy
                question, think, result = addition_problem(rng, *self._claim_sum(rng, 2 + i % 2), lang)
            else:
                wp = draw(rng, self._word_problem, self._claim_word, "held-out word problem")
                question, think, result = self._render_word(wp, lang)
            out.append((QA(question, str(result), r1_content(think, str(result)), lang, "reasoning", "problem"), think))
        return out

    def eval_dpo(self) -> list[QA]:
        """Half fact questions about SFT entities in reserved phrasings, half held-out additions."""
        rng = self.rng("eval_dpo")
        subjects = [(p, PERSON_ATTRS) for p in self.world.sft_people()]
        subjects += [(p, PRODUCT_ATTRS) for p in self.world.sft_products()]
        out: list[QA] = []
        seen: set[str] = set()
        for i in range(self.spec.eval_dpo):
            lang = rng.choice(LANGS)
            if i % 2 == 0:
                subject, attrs = rng.choice(subjects)
                attr = rng.choice(attrs)
                qa = fact_qa(subject, attr, lang, rng.choice(QUESTIONS[(lang, attr)]))
                if qa.question in seen:
                    qa = arith_qa(rng, *self._claim_sum(rng, 2), lang)
            else:
                qa = arith_qa(rng, *self._claim_sum(rng, 2), lang)
            seen.add(qa.question)
            out.append(QA(qa.question, qa.answer, qa.reply, lang, "concise", qa.kind))
        self.reserved_prompts |= seen
        return out

    # -- training sets ---------------------------------------------------------------------------------------

    def _train_sum(self, rng: random.Random, digits: int) -> tuple[int, int]:
        return draw(rng, lambda r: operands(r, digits), lambda ab: add_key(*ab) not in self.holdout, "training sum")

    def _word_problem(self, rng: random.Random) -> WordProblem:
        """Buyers and products come from the non-held-out side: R1/DPO text must not name held-out entities."""
        kind = rng.choice(("change", "total3"))
        products = [i for i, p in enumerate(self.world.products) if p.name.en not in self.world.heldout_products]
        items = tuple(rng.sample(products, 2 if kind == "change" else 3))
        budget = 0
        if kind == "change":
            budget = 100 if sum(self.world.products[i].price for i in items) < 100 else 200
        return WordProblem(kind, rng.choice(self.world.sft_people()).name.en, items, budget)

    def _word_keys(self, wp: WordProblem) -> list[tuple]:
        """The problem's own key plus the additions its worked solution writes out."""
        prices = [self.world.products[i].price for i in wp.items]
        keys = [wp.key, add_key(prices[0], prices[1])]
        if wp.kind == "total3":
            keys.append(add_key(prices[0] + prices[1], prices[2]))
        return keys

    def _free_word(self, wp: WordProblem) -> bool:
        return not any(k in self.holdout for k in self._word_keys(wp))

    def _claim_word(self, wp: WordProblem) -> bool:
        if not self._free_word(wp):
            return False
        for k in self._word_keys(wp):
            self.holdout.claim(k)
        return True

    def _render_word(self, wp: WordProblem, lang: str) -> tuple[str, list[str], int]:
        buyer = next(p for p in self.world.people if p.name.en == wp.buyer)
        return word_problem(wp.kind, buyer, [self.world.products[i] for i in wp.items], wp.budget, lang)

    def _train_problem(self, rng: random.Random, forget_carry: float = 0.0) -> tuple[QA, list[str]]:
        """A training problem (QA.answer: the true result) and its think lines; with probability ``forget_carry`` an
        addition's worked reply is the careless teacher's (see :func:`addition_steps`), wrong if it carried."""
        lang = rng.choice(LANGS)
        if rng.random() < 0.75:
            a, b = self._train_sum(rng, rng.choice((2, 3, 3, 4)))
            sloppy = forget_carry > 0 and rng.random() < forget_carry
            question, think, reached = addition_problem(rng, a, b, lang, sloppy)
            return QA(question, str(a + b), r1_content(think, str(reached)), lang, "reasoning", "problem"), think
        wp = draw(rng, self._word_problem, self._free_word, "training word problem")
        question, think, result = self._render_word(wp, lang)
        return QA(question, str(result), r1_content(think, str(result)), lang, "reasoning", "problem"), think

    def _train_fact_questions(self, rng: random.Random, per_combo: int) -> list[QA]:
        """Questions about non-held-out entities, phrasings drawn outside the reserved eval prompts."""
        out = []
        subjects = [(p, PERSON_ATTRS) for p in self.world.sft_people()]
        subjects += [(p, PRODUCT_ATTRS) for p in self.world.sft_products()]
        for subject, attrs in subjects:
            for attr in attrs:
                for lang in LANGS:
                    qas = [fact_qa(subject, attr, lang, t) for t in QUESTIONS[(lang, attr)]]
                    free = [qa for qa in qas if qa.question not in self.reserved_prompts]
                    out += rng.sample(free, min(per_combo, len(free)))
        return out

    def sft(self) -> list[dict]:
        rng = self.rng("sft")
        convs: list[list[dict]] = []
        for qa in self._train_fact_questions(rng, self.spec.sft_questions):
            reply = ramble(qa, rng) if rng.random() < self.spec.ramble_share else qa.reply
            convs.append([user(qa.question), assistant(reply)])
        for _ in range(self.spec.sft_arith):
            qa = arith_qa(rng, *self._train_sum(rng, rng.choice((1, 2, 2, 2, 3))), rng.choice(LANGS))
            convs.append([user(qa.question), assistant(qa.reply)])
        pool = self._train_fact_questions(rng, 1)
        for _ in range(self.spec.sft_multiturn):
            turns = []
            for _ in range(rng.randint(2, 3)):
                if rng.random() < 0.7:
                    qa = rng.choice(pool)
                else:
                    qa = arith_qa(rng, *self._train_sum(rng, 2), rng.choice(LANGS))
                turns += [user(qa.question), assistant(qa.reply)]
            convs.append(turns)
        for conv in convs:
            if rng.random() < 0.1:
                conv.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        rng.shuffle(convs)
        return [{"conversations": c} for c in convs]

    def r1(self) -> list[dict]:
        rng = self.rng("r1")
        rows = []
        for _ in range(self.spec.r1_train):
            qa, _think = self._train_problem(rng, self.spec.r1_forget_carry)
            rows.append({"conversations": [user(qa.question), assistant(qa.reply)]})
        return rows

    def rl(self) -> list[dict]:
        """RL prompts: training problems of the R1 kinds (none held out) with their true answers."""
        rng = self.rng("rl")
        rows = []
        for _ in range(self.spec.rl_prompts):
            qa, _think = self._train_problem(rng)
            rows.append({"prompt": qa.question, "answer": qa.answer})
        return rows

    @staticmethod
    def _off_by(rng: random.Random, n: int) -> int:
        """A plausible wrong number (a slip of one or ten), never negative."""
        d = rng.choice((-10, -1, 1, 10))
        return n + d if n + d >= 0 else n - d

    def _wrong_reply(self, rng: random.Random, qa: QA, pool: list[QA]) -> str:
        """A concise but wrong reply: another entity's value for the same question type, or an off sum."""
        if qa.kind == "sum":
            return end(str(self._off_by(rng, int(qa.answer))), qa.lang)
        return rng.choice([o.reply for o in pool if o.kind == qa.kind and o.lang == qa.lang and o.answer != qa.answer])

    def _pair(self, rng: random.Random, qa: QA, pool: list[QA], think: list[str] | None) -> dict:
        """chosen = the ideal reply; rejected = one targeted failure, named in the row's ``kind``."""
        if think is None:
            kind = rng.choice(("wrong", "ramble"))
            rejected = self._wrong_reply(rng, qa, pool) if kind == "wrong" else ramble(qa, rng)
        else:
            kind = rng.choice(("no_tags", "wrong", "repetition"))
            if kind == "no_tags":
                tail = f"The answer is {qa.answer}." if qa.lang == "en" else f"答案是{qa.answer}。"
                rejected = "\n".join([*think, tail])
            elif kind == "wrong":
                rejected = r1_content(think[:-1], str(self._off_by(rng, int(qa.answer))))
            else:
                rejected = r1_content(think[:1] * rng.randint(4, 6), qa.answer)
        prompt = user(qa.question)
        return {"chosen": [prompt, assistant(qa.reply)], "rejected": [prompt, assistant(rejected)], "kind": kind}

    def dpo(self) -> list[dict]:
        rng = self.rng("dpo")
        facts = self._train_fact_questions(rng, 1)
        rows = []
        for _ in range(self.spec.dpo_train):
            roll = rng.random()
            if roll < 0.4:
                rows.append(self._pair(rng, rng.choice(facts), facts, None))
            elif roll < 0.7:
                qa = arith_qa(rng, *self._train_sum(rng, 2), rng.choice(LANGS))
                rows.append(self._pair(rng, qa, facts, None))
            else:
                qa, think = self._train_problem(rng)
                rows.append(self._pair(rng, qa, facts, think))
        return rows

    def dpo_eval(self, eval_dpo: list[QA], reasoning: list[tuple[QA, list[str]]]) -> list[dict]:
        rng = self.rng("dpo_eval")
        pool = self._train_fact_questions(self.rng("dpo_eval_pool"), 1)
        items = [(qa, None) for qa in eval_dpo] + list(reasoning)
        rng.shuffle(items)
        return [self._pair(rng, qa, pool, think) for qa, think in items[: self.spec.dpo_eval]]

    def domain(self) -> tuple[list[dict], list[QA]]:
        """LoRA training conversations and the held-out domain questions."""
        rng = self.rng("domain")
        convs: list[list[dict]] = []
        evals: list[QA] = []
        for c in self.world.creatures:
            held = self.world.heldout_creature_attr[c.name.en]
            for lang in LANGS:
                convs += [describe_creature(rng, c, lang) for _ in range(self.spec.domain_descriptions)]
                for attr in CREATURE_ATTRS:
                    templates = QUESTIONS[(lang, "creature_colour" if attr == "colour" else attr)]
                    if attr == held:
                        evals.append(creature_qa(c, attr, lang, rng.choice(templates)))
                    else:
                        for template in templates:
                            qa = creature_qa(c, attr, lang, template)
                            convs.append([user(qa.question), assistant(qa.reply)])
        rng.shuffle(convs)
        rng.shuffle(evals)
        return [{"conversations": c} for c in convs], evals

    # -- tool use (the demo's tool stage) --------------------------------------------------------------------

    def _mul(self, rng: random.Random, claim: bool) -> tuple[int, int]:
        def make(r: random.Random) -> tuple[int, int]:
            return r.randint(100, 9999), r.randint(10, 999)

        if claim:
            return draw(rng, make, lambda ab: self.holdout.claim(mul_key(*ab)), "held-out product")
        return draw(rng, make, lambda ab: mul_key(*ab) not in self.holdout, "training product")

    def eval_tools(self) -> list[dict]:
        rng = self.rng("eval_tools")
        rows = []
        for _ in range(self.spec.eval_tools):
            row = mul_qa(rng, *self._mul(rng, claim=True), rng.choice(LANGS)).eval_row()
            rows.append({**row, "tools": [CALCULATOR_SCHEMA]})
        return rows

    def tools(self) -> list[dict]:
        """Calculator conversations, and a share of fact questions with the tool offered but not needed."""
        rng = self.rng("tools")
        rows = []
        for _ in range(self.spec.tool_train):
            a, b = self._mul(rng, claim=False)
            qa = mul_qa(rng, a, b, rng.choice(LANGS))
            rows.append(tool_conversation(qa, f"{a} * {b}", str(a * b)))
        facts = self._train_fact_questions(rng, 1)
        for qa in rng.sample(facts, min(len(facts), self.spec.tool_train // 4)):
            rows.append([user(qa.question), assistant(qa.reply)])
        rng.shuffle(rows)
        return [{"conversations": [{"role": "system", "content": "", "tools": [CALCULATOR_SCHEMA]}, *c]} for c in rows]

    def longctx(self, docs: list[str]) -> list[dict]:
        """Pass-key and copy rows from the pretraining documents' sentences (see :mod:`.longctx`)."""
        w = self.world
        banned = [p.name for p in w.eval_people()] + [p.name for p in w.eval_products()]
        banned += [c.name for c in w.creatures]
        names = [*PLANET, *(n[lang] for n in banned for lang in LANGS)]
        plain, sentences = corpus_sentences(docs, names, digit_free=True), corpus_sentences(docs, names)
        return longctx_rows(self.rng("longctx"), plain, sentences, self.spec.longctx_rows)


def heldout_problems(seed: int = 0, size: str = "demo") -> list[dict]:
    """The rows of ``eval_reasoning.jsonl`` that ``generate(seed=seed, size=size)`` writes (held out from its
    training files), built without writing anything: the built-in set of ``weakwater eval math``."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    b = _Builder(seed, SIZES[size])
    b.eval_facts(), b.eval_arith()  # the same claims, in the same order, as generate()
    return [qa.eval_row() for qa, _ in b.eval_reasoning()]


def _write_jsonl(path: Path, rows: list[dict]) -> dict:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return {"rows": len(rows), "chars": len(text), "bytes": len(text.encode("utf-8"))}


def generate(out_dir: str | Path, seed: int = 0, size: str | SizeSpec = "demo") -> dict:
    """Write the demo data set into ``out_dir``; returns the manifest (also written as ``manifest.json``)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
        spec, size_name = SIZES[size], size
    else:
        spec, size_name = size, "custom"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    b = _Builder(seed, spec)

    # Held-out items first: every training sampler below draws around their claims.
    facts, arith, reasoning, concise = b.eval_facts(), b.eval_arith(), b.eval_reasoning(), b.eval_dpo()

    train_docs = pretrain_docs(b.rng("pretrain"), b.world, b.holdout, spec)
    seen = set(train_docs)
    val_pool = [d for d in pretrain_docs(b.rng("pretrain_val"), b.world, b.holdout, spec) if d not in seen]
    val_docs = val_pool[: max(1, round(len(train_docs) * spec.val_fraction))]
    lora_rows, domain_evals = b.domain()
    tool_evals = b.eval_tools()  # claims its products; no other file multiplies

    outputs: dict[str, list[dict]] = {
        "pretrain.jsonl": [{"text": d} for d in train_docs],
        "pretrain_val.jsonl": [{"text": d} for d in val_docs],
        "sft.jsonl": b.sft(),
        "r1.jsonl": b.r1(),
        "rl.jsonl": b.rl(),
        "dpo.jsonl": b.dpo(),
        "dpo_eval.jsonl": b.dpo_eval(concise, reasoning),
        "lora_domain.jsonl": lora_rows,
        "tools.jsonl": b.tools(),
        "longctx.jsonl": b.longctx(train_docs),
        "eval_facts.jsonl": [qa.eval_row() for qa in facts],
        "eval_arith.jsonl": [qa.eval_row() for qa in arith],
        "eval_reasoning.jsonl": [qa.eval_row() for qa, _ in reasoning],
        "eval_dpo.jsonl": [qa.eval_row() for qa in concise],
        "eval_domain.jsonl": [qa.eval_row() for qa in domain_evals],
        "eval_tools.jsonl": tool_evals,
    }
    files = {}
    for name, rows in outputs.items():
        fmt, purpose = FILE_INFO[name]
        files[name] = {**_write_jsonl(out / name, rows), "format": fmt, "purpose": purpose}
    world_text = json.dumps(b.world.to_dict(), ensure_ascii=False, indent=1) + "\n"
    (out / "world.json").write_text(world_text, encoding="utf-8")

    manifest = {
        "generator": "weakwater data synth",
        "seed": seed,
        "size": size_name,
        "spec": dataclasses.asdict(spec),
        "world": {
            "people": len(b.world.people),
            "heldout_people": len(b.world.heldout_people),
            "cities": len(b.world.cities),
            "companies": len(b.world.companies),
            "products": len(b.world.products),
            "heldout_products": len(b.world.heldout_products),
            "creatures": len(b.world.creatures),
        },
        "files": files,
        "guarantees": GUARANTEES,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest
