"""Shared fixtures: the real third-party reference files kept beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    """``WEAKWATER_REFERENCE`` or ``../shared/reference`` next to the checkout."""
    return Path(os.environ.get("WEAKWATER_REFERENCE", REPO.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if not (path / "data" / "pretrain.jsonl").exists():
        pytest.skip(f"reference data not found at {path} (set WEAKWATER_REFERENCE)")
    return path


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Tests run on small CPUs; keep torch from oversubscribing them."""
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory) -> Path:
    """A small bilingual byte-level BPE tokenizer directory in our layout (special tokens 0-6, ChatML template),
    trained in well under a second so model-format tests need neither the reference data nor a trained tokenizer."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from weakwater.tokenizer.pretokenize import pre_tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<answer>", "</answer>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()  # what `weakwater tokenizer train` uses
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "The river flows east to the sea. 河水向东流入大海。",
        "Small models learn fast on small data. 小模型在小数据上学得很快。",
        "What is 12 + 35? The answer is 47. 十二加三十五等于四十七。",
        "今天天气很好，我们去公园散步吧！It's a sunny day, let's walk in the park.",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    out = tmp_path_factory.mktemp("bpe_tokenizer")
    tok.save(str(out / "tokenizer.json"))
    template = (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (out / "chat_template.jinja").write_text(template)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def make_model_dir(bpe_tokenizer_dir):
    """Factory for a tiny random saved model using ``bpe_tokenizer_dir``: ``make_model_dir(out, **config)``.

    The large init (std 0.3) keeps logits far from ties, so greedy decoding is comparable across runtimes.
    With ``qk_norm=True`` the q/k gains are drawn from U(0.5, 2) instead of all ones, so an exporter that
    drops, swaps or misplaces them changes the logits."""
    import json

    import torch

    from weakwater.model import ModelConfig, Transformer, save_model

    def make(out: Path, seed: int = 0, **overrides) -> Path:
        torch.manual_seed(seed)
        vocab = json.loads((bpe_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
        shape = dict(vocab_size=len(vocab), dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128, init_std=0.3)
        model = Transformer(ModelConfig(**{**shape, **overrides}))
        if model.config.qk_norm:
            with torch.no_grad():
                for layer in model.layers:
                    layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
                    layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
        return save_model(model, out, tokenizer_dir=bpe_tokenizer_dir)

    return make


TOOL_QUESTIONS = {"What is 347 * 2891?": "347 * 2891", "Compute 56 × 78.": "56 * 78"}


@pytest.fixture(scope="session")
def tool_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model fine-tuned (our SFT stage) to call the calculator for two questions, then state its result:
    the real behaviour the tool-calling server paths need, from a model that fits in a test."""
    import json

    import torch

    from weakwater.data.synth.tasks import tool_conversation
    from weakwater.model import ModelConfig, Transformer, save_model
    from weakwater.tokenizer import load_tokenizer
    from weakwater.tokenizer.tokenizer import CHAT_TEMPLATE, _compile
    from weakwater.tokenizer.train import train_tokenizer
    from weakwater.tools import CALCULATOR, calculate
    from weakwater.train.stages.sft import SFTConfig, SFTStage
    from weakwater.train.trainer import Trainer

    out = tmp_path_factory.mktemp("toolbot")
    rows = []
    for question, expression in TOOL_QUESTIONS.items():
        result = calculate(expression)
        qa = type("QA", (), {"question": question, "reply": f"{result}."})
        conv = [
            {"role": "system", "content": "", "tools": [CALCULATOR.schema()]},
            *tool_conversation(qa, expression, result),
        ]
        rows.append({"conversations": conv})
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 8))
    text = [_compile(CHAT_TEMPLATE).render(messages=r["conversations"], tools=None) for r in rows]
    train_tokenizer(text * 20, out / "tok", vocab_size=1000)
    tok = load_tokenizer(out / "tok")
    torch.manual_seed(0)
    shape = dict(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=320)
    init = save_model(Transformer(ModelConfig(**shape)), out / "init", tokenizer_dir=out / "tok")
    cfg = SFTConfig(data=str(out / "sft.jsonl"), init=str(init), out=str(out / "run"), max_steps=120, lr=3e-3,
                    warmup_steps=5, batch_size=4, seq_len=319, eval_every=0, save_every=0, log_every=50,
                    device="cpu")  # fmt: skip
    return Trainer(cfg, SFTStage(cfg, tok), tokenizer=tok).fit()


@pytest.fixture(scope="session")
def tool_generator(tool_model_dir: Path):
    from weakwater.infer import Generator
    from weakwater.model import load_model
    from weakwater.tokenizer import load_tokenizer

    return Generator(load_model(tool_model_dir), load_tokenizer(tool_model_dir))
