"""The invented bilingual world: people, cities, companies, products and the planet Ossira's creatures.

Every name has an English and a Chinese form built from the same syllables (``Su Mingyao`` = ``苏明瑶``,
``Varan`` = ``瓦兰``), so the two languages describe one world and a model can link them. Attribute values
are ordinary words (jobs, colours, years, prices) so that answers are short and exact-matchable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

# (English, Chinese) pairs. Person names read like pinyin so they stay pronounceable and tokenise well.
SURNAMES = [
    ("Su", "苏"), ("Lin", "林"), ("Tang", "唐"), ("Wei", "魏"), ("Xu", "许"), ("Yao", "姚"), ("Qiao", "乔"),
    ("Ren", "任"), ("Mo", "莫"), ("Shen", "沈"), ("Lu", "陆"), ("Fang", "方"), ("Gu", "顾"), ("Jiang", "江"),
    ("He", "何"), ("Bai", "白"), ("Cao", "曹"), ("Du", "杜"), ("Han", "韩"), ("Kong", "孔"), ("Luo", "罗"),
    ("Meng", "孟"), ("Pan", "潘"), ("Qin", "秦"), ("Song", "宋"), ("Tian", "田"), ("Wen", "温"), ("Xia", "夏"),
    ("Yan", "严"), ("Zhou", "周"),
]  # fmt: skip
GIVEN = [
    ("ming", "明"), ("yao", "瑶"), ("lan", "兰"), ("hui", "慧"), ("jun", "俊"), ("ping", "平"), ("rui", "瑞"),
    ("xin", "欣"), ("yu", "宇"), ("zhen", "真"), ("an", "安"), ("bo", "博"), ("chen", "辰"), ("feng", "峰"),
    ("hao", "浩"), ("jia", "佳"), ("kai", "凯"), ("le", "乐"), ("mei", "梅"), ("ning", "宁"), ("qing", "青"),
    ("shu", "舒"), ("tao", "涛"), ("wei", "薇"), ("xuan", "轩"), ("yi", "怡"), ("ze", "泽"), ("zhi", "志"),
    ("lian", "莲"), ("rong", "蓉"),
]  # fmt: skip
CITY_HEADS = [
    ("Va", "瓦"), ("Ke", "克"), ("Mi", "米"), ("Lo", "洛"), ("Ta", "塔"), ("Re", "雷"), ("So", "索"), ("Ni", "尼"),
    ("Da", "达"), ("Ru", "鲁"), ("Sa", "萨"), ("Ri", "里"), ("Ka", "卡"), ("Le", "勒"), ("Zu", "祖"), ("Bo", "博"),
]  # fmt: skip
CITY_TAILS = [
    ("rin", "琳"), ("dor", "多"), ("vik", "维克"), ("mar", "马尔"), ("lis", "利斯"), ("ton", "顿"), ("nesh", "内什"),
    ("bel", "贝尔"),
]  # fmt: skip
BRANDS = [
    ("Zeno", "泽诺"), ("Kato", "卡托"), ("Lumi", "露米"), ("Bexa", "贝萨"), ("Orin", "奥林"), ("Tivo", "蒂沃"),
    ("Nara", "娜拉"), ("Pexi", "佩西"), ("Rolo", "罗洛"), ("Selu", "瑟露"), ("Vito", "维托"), ("Yuna", "尤娜"),
    ("Dexa", "德萨"), ("Fino", "菲诺"), ("Galo", "加洛"), ("Hemi", "赫米"), ("Juno", "朱诺"), ("Miro", "米罗"),
    ("Quin", "奎因"), ("Wexi", "韦西"),
]  # fmt: skip
PRODUCT_TYPES = [
    ("kettle", "水壶"), ("lamp", "台灯"), ("bicycle", "自行车"), ("umbrella", "雨伞"), ("backpack", "背包"),
    ("radio", "收音机"), ("teapot", "茶壶"), ("clock", "时钟"), ("camera", "相机"), ("fan", "电扇"),
    ("chair", "椅子"), ("notebook", "笔记本"),
]  # fmt: skip
COMPANY_STEMS = [
    ("Dalu", "达路"), ("Hexo", "赫索"), ("Kiran", "基兰"), ("Mobek", "莫贝克"), ("Norda", "诺达"), ("Palo", "帕洛"),
    ("Renko", "仁科"), ("Solvi", "索尔维"), ("Tamra", "塔姆拉"), ("Ulvo", "乌尔沃"), ("Vessa", "维萨"),
    ("Zarn", "扎恩"),
]  # fmt: skip
JOBS = [
    ("teacher", "老师"), ("doctor", "医生"), ("baker", "面包师"), ("farmer", "农民"), ("painter", "画家"),
    ("engineer", "工程师"), ("nurse", "护士"), ("pilot", "飞行员"), ("chef", "厨师"), ("writer", "作家"),
    ("singer", "歌手"), ("tailor", "裁缝"), ("fisher", "渔民"), ("carpenter", "木匠"), ("librarian", "图书管理员"),
    ("gardener", "园丁"),
]  # fmt: skip
COLOURS = [
    ("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("purple", "紫色"),
    ("orange", "橙色"), ("black", "黑色"), ("white", "白色"), ("pink", "粉色"), ("grey", "灰色"),
]  # fmt: skip

# The LoRA domain: a planet that nothing else in the corpus mentions.
PLANET = ("Ossira", "奥西拉")
CREATURE_HEADS = [
    ("Zil", "兹尔"), ("Quor", "夸尔"), ("Brom", "布罗姆"), ("Vesh", "维什"), ("Thul", "图尔"), ("Nix", "尼克斯"),
    ("Ondr", "翁德"), ("Pell", "佩尔"), ("Gorm", "戈姆"), ("Yss", "伊斯"), ("Krel", "克雷尔"), ("Wum", "乌姆"),
]  # fmt: skip
CREATURE_TAILS = [("ap", "阿普"), ("ox", "奥克斯"), ("ek", "埃克"), ("umi", "乌米"), ("orr", "奥尔"), ("ith", "伊思")]
FOODS = [
    ("moss", "苔藓"), ("crystals", "水晶"), ("sand", "沙子"), ("rainwater", "雨水"), ("moonlight", "月光"),
    ("fish", "鱼"), ("berries", "浆果"), ("mushrooms", "蘑菇"),
]  # fmt: skip
REGIONS = [
    ("Ember Valley", "余烬谷"), ("Frost Plain", "霜原"), ("Glass Sea", "玻璃海"), ("Echo Forest", "回声林"),
    ("Salt Cliffs", "盐崖"), ("Mist Marsh", "雾沼"),
]  # fmt: skip
LEG_COUNTS = [2, 4, 6, 8]

PERSON_ATTRS = ("city", "job", "birth_year", "colour")
PRODUCT_ATTRS = ("maker", "price")
CREATURE_ATTRS = ("colour", "legs", "food", "region")


@dataclass(frozen=True)
class Name:
    en: str
    zh: str

    def __getitem__(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


@dataclass(frozen=True)
class Person:
    name: Name
    city: Name
    job: Name
    birth_year: int
    colour: Name


@dataclass(frozen=True)
class Product:
    name: Name
    maker: Name
    price: int  # yuan, two digits so word problems stay two- and three-digit additions


@dataclass(frozen=True)
class Creature:
    name: Name
    colour: Name
    legs: int
    food: Name
    region: Name


@dataclass(frozen=True)
class SizeSpec:
    """How big a world and corpus to build; the named sizes are in ``SIZES``."""

    people: int
    cities: int
    companies: int
    products: int
    creatures: int
    heldout_fraction: float = 0.25  # share of people/products whose facts are never asked in SFT
    bio_docs: int = 4  # encyclopedia paragraphs per person per language
    stories: int = 200  # short two-person stories per language
    catalogue_docs: int = 20  # product catalogue pages per language
    arith_docs: int = 150  # arithmetic documents per language
    index_docs: int = 20  # pages naming the LoRA domain's regions, creatures and foods, per language
    val_fraction: float = 0.05  # pretraining validation docs relative to train docs
    sft_questions: int = 2  # SFT questions per (entity, attribute, language)
    sft_arith: int = 600  # single-turn arithmetic SFT conversations
    sft_multiturn: int = 200
    ramble_share: float = 0.15  # share of SFT fact answers with repetitive filler (what DPO removes)
    r1_train: int = 600
    # Share of R1 additions written by a careless teacher who forgets the units column's carry (the reply then
    # ends in a wrong sum): distillation copies the slip and RL on the true answers (rl.jsonl) unlearns it.
    r1_forget_carry: float = 0.7
    rl_prompts: int = 1000
    dpo_train: int = 600
    domain_descriptions: int = 4  # description conversations per creature per language
    eval_arith: int = 100
    eval_reasoning: int = 100
    eval_dpo: int = 100
    dpo_eval: int = 100
    # Calculator conversations (tools.jsonl), plus up to a quarter as many direct answers: enough distinct products
    # that the tool stage sees each about once, so it learns to copy operands rather than recall pairs.
    tool_train: int = 8000
    eval_tools: int = 100
    # longctx.jsonl: this many pass-key rows and as many copy rows (600 steps of 8 for the demo's stage).
    longctx_rows: int = 3000


SIZES: dict[str, SizeSpec] = {
    # For tests: generates in well under a second.
    "small": SizeSpec(
        people=24, cities=6, companies=4, products=10, creatures=8, bio_docs=2, stories=20, catalogue_docs=4,
        arith_docs=10, val_fraction=0.1, sft_arith=40, sft_multiturn=20, r1_train=40, rl_prompts=40, dpo_train=40,
        domain_descriptions=2, eval_arith=20, eval_reasoning=20, eval_dpo=20, dpo_eval=20, tool_train=40,
        eval_tools=20, longctx_rows=20,
    ),
    # The CPU demo: a ~2-3M parameter model should learn a good share of these facts in minutes. 6000 distinct
    # R1 problems (distillation sees each about twice): with 1500 (8 passes) the distilled model's held-out
    # accuracy swung between 5% and 69% with the seed and the thread count (it memorised sums instead of learning
    # to copy operands into columns); with 6000 it copies them on seeds 0 and 1 (85-92% of the additions without
    # a units carry right).
    "demo": SizeSpec(
        people=120, cities=16, companies=8, products=36, creatures=24, bio_docs=8, stories=400, r1_train=6000,
        domain_descriptions=8, sft_arith=20000,
    ),
    "large": SizeSpec(
        people=400, cities=40, companies=12, products=120, creatures=60, bio_docs=6, stories=1200,
        catalogue_docs=80, arith_docs=600, sft_arith=30000, sft_multiturn=800, r1_train=3000, dpo_train=2000,
        eval_arith=200, eval_reasoning=200, eval_dpo=200, dpo_eval=200,
    ),
}  # fmt: skip


@dataclass
class World:
    people: list[Person]
    cities: list[Name]
    companies: list[Name]
    products: list[Product]
    creatures: list[Creature]
    heldout_people: set[str] = field(default_factory=set)  # English names never asked about in SFT
    heldout_products: set[str] = field(default_factory=set)
    heldout_creature_attr: dict[str, str] = field(default_factory=dict)  # creature -> attribute kept for eval

    def sft_people(self) -> list[Person]:
        return [p for p in self.people if p.name.en not in self.heldout_people]

    def eval_people(self) -> list[Person]:
        return [p for p in self.people if p.name.en in self.heldout_people]

    def sft_products(self) -> list[Product]:
        return [p for p in self.products if p.name.en not in self.heldout_products]

    def eval_products(self) -> list[Product]:
        return [p for p in self.products if p.name.en in self.heldout_products]

    def to_dict(self) -> dict:
        """JSON-able fact table (``world.json``): lets reports and humans check any answer."""

        def name(n: Name) -> dict:
            return {"en": n.en, "zh": n.zh}

        return {
            "people": [
                {"name": name(p.name), "city": name(p.city), "job": name(p.job), "birth_year": p.birth_year,
                 "colour": name(p.colour), "heldout": p.name.en in self.heldout_people}
                for p in self.people
            ],
            "cities": [name(c) for c in self.cities],
            "companies": [name(c) for c in self.companies],
            "products": [
                {"name": name(p.name), "maker": name(p.maker), "price": p.price,
                 "heldout": p.name.en in self.heldout_products}
                for p in self.products
            ],
            "planet": {"en": PLANET[0], "zh": PLANET[1]},
            "creatures": [
                {"name": name(c.name), "colour": name(c.colour), "legs": c.legs, "food": name(c.food),
                 "region": name(c.region), "heldout_attribute": self.heldout_creature_attr[c.name.en]}
                for c in self.creatures
            ],
        }  # fmt: skip


def _unique_names(rng: random.Random, n: int, make: Callable[[random.Random], Name], what: str) -> list[Name]:
    """Draw ``n`` distinct names (distinct in both languages) from a generator of candidates."""
    seen_en: set[str] = set()
    seen_zh: set[str] = set()
    out: list[Name] = []
    for _ in range(n * 200):
        cand = make(rng)
        if cand.en in seen_en or cand.zh in seen_zh:
            continue
        seen_en.add(cand.en)
        seen_zh.add(cand.zh)
        out.append(cand)
        if len(out) == n:
            return out
    raise ValueError(f"cannot draw {n} distinct {what} names; use a smaller size")


def _person_name(rng: random.Random) -> Name:
    sur = rng.choice(SURNAMES)
    given = rng.sample(GIVEN, 2)  # always two syllables: no name is a prefix of another
    en_given = "".join(g[0] for g in given)
    return Name(f"{sur[0]} {en_given[0].upper()}{en_given[1:]}", sur[1] + "".join(g[1] for g in given))


def _joined(heads: list, tails: list) -> Callable[[random.Random], Name]:
    def make(rng: random.Random) -> Name:
        h, t = rng.choice(heads), rng.choice(tails)
        return Name(h[0] + t[0], h[1] + t[1])

    return make


def _product_name(rng: random.Random) -> Name:
    brand, kind = rng.choice(BRANDS), rng.choice(PRODUCT_TYPES)
    return Name(f"{brand[0]} {kind[0]}", brand[1] + kind[1])


def _company_name(rng: random.Random) -> Name:
    stem = rng.choice(COMPANY_STEMS)
    return Name(f"{stem[0]} Works", f"{stem[1]}工坊")


def _pick(rng: random.Random, pairs: list[tuple[str, str]]) -> Name:
    return Name(*rng.choice(pairs))


def build_world(rng: random.Random, spec: SizeSpec) -> World:
    """Draw every entity and fact; the held-out split is drawn here too, so it is fixed by the seed."""
    cities = _unique_names(rng, spec.cities, _joined(CITY_HEADS, CITY_TAILS), "city")
    companies = _unique_names(rng, spec.companies, _company_name, "company")
    people = [
        Person(n, rng.choice(cities), _pick(rng, JOBS), rng.randint(1950, 2005), _pick(rng, COLOURS))
        for n in _unique_names(rng, spec.people, _person_name, "person")
    ]
    products = [
        Product(n, rng.choice(companies), rng.randint(11, 89))
        for n in _unique_names(rng, spec.products, _product_name, "product")
    ]
    creatures = [
        Creature(n, _pick(rng, COLOURS), rng.choice(LEG_COUNTS), _pick(rng, FOODS), _pick(rng, REGIONS))
        for n in _unique_names(rng, spec.creatures, _joined(CREATURE_HEADS, CREATURE_TAILS), "creature")
    ]
    n_people = max(1, round(spec.people * spec.heldout_fraction))
    n_products = max(1, round(spec.products * spec.heldout_fraction))
    world = World(people, cities, companies, products, creatures)
    world.heldout_people = {p.name.en for p in rng.sample(people, n_people)}
    world.heldout_products = {p.name.en for p in rng.sample(products, n_products)}
    # Each creature keeps one attribute out of the LoRA Q&A (rotating, so all attributes get evaluated).
    world.heldout_creature_attr = {
        c.name.en: CREATURE_ATTRS[(i + rng.randrange(4)) % 4] for i, c in enumerate(creatures)
    }
    return world
