"""Built-in demo data: a deterministic, bilingual (Chinese + English) synthetic world with checkable facts.

``weakwater data synth --out DIR [--seed N] [--size small|demo|large]`` (or ``generate(out_dir, seed, size)``)
writes everything the pipeline needs with no downloads, in seconds, byte-identical for a given seed and size.
``size`` may also be a ``SizeSpec`` (e.g. ``dataclasses.replace(SIZES["demo"], people=60)``) to tune a demo.
Each file draws from its own seeded stream, so changing one count never reshuffles the other files.

The world (``world.json``): invented people (``Su Mingyao`` / ``苏明瑶``) with a city, job, birth year and
favourite colour; invented cities, companies and products (maker, price in yuan); and, for LoRA only, the
creatures of the planet Ossira (colour, legs, food, region). A share of people and products
(``heldout_fraction``) is *held out*: pretraining describes them like everyone else, but no training
conversation ever names them.

Files (JSONL, UTF-8, one object per line):

- ``pretrain.jsonl`` ``{"text"}``: encyclopedia paragraphs (each fact in several paraphrase templates per
  language), two-person stories, city resident lists, product catalogues, sums ("23 + 58 = 81.", "23加58等于81。")
  and worked column additions.
- ``pretrain_val.jsonl`` ``{"text"}``: a fresh sample of the same generators (other template draws and
  instances), with any document identical to a training one dropped; for validation loss.
- ``sft.jsonl`` (MiniMind ``{"conversations": [{"role": "system"|"user"|"assistant", "content"}]}``):
  short-answer questions about non-held-out people/products in both languages, addition questions,
  multi-turn mixes, ~10% with a system prompt. ``ramble_share`` of fact replies deliberately carry the
  targeted bad behaviour (the right answer followed by repeated filler) as realistic SFT noise for DPO.
- ``r1.jsonl`` (MiniMind R1): assistant content is exactly ``<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>``;
  column additions with every carry written out, and two-step shopping problems (prices from the world). The
  teacher is careless: in ``r1_forget_carry`` of the additions whose units column carries, it writes the carry
  down but leaves it out of the tens column, so the reply ends 10 short (what the demo's RL stage unlearns).
- ``rl.jsonl`` ``{"prompt", "answer"}``: RL prompts, problems of the R1 kinds (none held out), true answers.
- ``dpo.jsonl`` ``{"chosen": [user, assistant], "rejected": [user, assistant], "kind"}``, same prompt in both;
  chosen = the concise correct reply (R1 format for reasoning prompts); rejected ``kind`` is ``wrong``
  (concise but wrong), ``ramble`` (right answer + repeated filler), ``no_tags`` (reasoning without the
  think/answer tags) or ``repetition`` (a think block that loops).
- ``dpo_eval.jsonl``: pairs built the same way on held-out prompts, for held-out preference accuracy.
- ``lora_domain.jsonl`` (SFT format): Ossira creature descriptions (all four facts) and Q&A on three of them.
- ``longctx.jsonl`` (SFT format): pass keys hidden among corpus sentences with the needle evaluation's wording,
  and "repeat this text exactly" turns, half each, for the demo's long-context stage (see ``longctx.py``).
- Eval files, rows ``{"messages": [user], "answer", "task", "lang"}``, scored by ``weakwater.answers.is_correct``
  (numbers compared as numbers, strings normalised; a reply may continue after the answer):
  ``eval_facts.jsonl`` (task ``facts``): every attribute of every held-out person/product, both languages;
  ``eval_arith.jsonl`` (``arith``): two-digit additions; ``eval_reasoning.jsonl`` (``reasoning``): three-digit
  additions and shopping problems, answer = final number; ``eval_dpo.jsonl`` (``concise``): see below;
  ``eval_domain.jsonl`` (``domain``): for each creature, the attribute only its descriptions state.
- ``world.json``: the full fact table and split; ``manifest.json``: files, rows, chars, seed, size, spec and the
  disjointness guarantees.

How train and held-out stay disjoint (by construction; ``tests/data/test_synth.py`` checks each):
held-out entities are chosen with the world and skipped by every conversation builder; every eval
addition/word problem is claimed in a registry *before* any training text is drawn and all training samplers
reject claimed keys (additions keyed by their unordered operands); ``eval_dpo`` fact phrasings are reserved
before SFT/DPO questions are drawn; the held-out creature attribute is never asked in ``lora_domain.jsonl``.

The DPO targeted behaviour: on ``eval_dpo.jsonl`` prompts (fact questions about SFT-known entities in unseen
phrasings, and held-out additions), the *concise-correct rate* is the share of greedy replies that are both
``is_correct`` and ``is_concise`` (no more than a few characters beyond the answer, so the repeated filler
fails). SFT learns to ramble on about ``ramble_share`` of fact answers, so the demo also samples replies at
temperature 1 and counts those with the filler (``is_ramble``): DPO should push that share down.
"""

from weakwater.data.synth.generate import GUARANTEES, generate
from weakwater.data.synth.tasks import is_concise, is_ramble
from weakwater.data.synth.world import SIZES, SizeSpec

__all__ = ["GUARANTEES", "SIZES", "SizeSpec", "generate", "is_concise", "is_ramble"]
