"""The KV-cache engine against a naive full-recompute decoder, batching and streaming."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from weakwater.infer import Generator, SamplingParams, TextStream


@pytest.fixture(scope="module")
def gen(generator) -> Generator:
    return generator


def naive_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Reference decoder: recompute the whole sequence for every new token, no cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


PROMPTS = [[5, 17, 300, 42], [900, 12], [7, 8, 9, 10, 11, 12, 13, 14, 15], [1000]]


def test_kv_cache_greedy_equals_full_recompute(gen):
    for prompt in PROMPTS:
        assert gen.generate([prompt], SamplingParams(max_new_tokens=20)) == [naive_greedy(gen.model, prompt, 20)]


def test_batched_equals_one_at_a_time_greedy(gen):
    params = SamplingParams(max_new_tokens=20)
    alone = [gen.generate([p], params)[0] for p in PROMPTS]
    assert gen.generate(PROMPTS, params) == alone


def test_batched_equals_one_at_a_time_sampled_with_mixed_params(gen):
    params = [
        SamplingParams(max_new_tokens=15, temperature=0.9, top_k=50, seed=1),
        SamplingParams(max_new_tokens=5),
        SamplingParams(max_new_tokens=12, temperature=1.2, top_p=0.8, repetition_penalty=1.3, seed=2),
        SamplingParams(max_new_tokens=15, temperature=0.7, seed=3),
    ]
    alone = [gen.generate([p], sp)[0] for p, sp in zip(PROMPTS, params)]
    assert gen.generate(PROMPTS, params) == alone
    assert [len(a) for a in alone] == [15, 5, 12, 15]


def test_stop_token_ends_and_is_excluded(gen):
    prompt = PROMPTS[0]
    free = gen.generate([prompt], SamplingParams(max_new_tokens=20))[0]
    stop = free[5]
    first = free.index(stop)
    out = gen.generate([prompt], SamplingParams(max_new_tokens=20, stop_token_ids=(stop,)))[0]
    assert out == free[:first]


def test_context_limit_caps_new_tokens(gen):
    prompt = list(range(10, 10 + gen.max_seq_len - 3))
    assert len(gen.generate([prompt], SamplingParams(max_new_tokens=50))[0]) == 3
    with pytest.raises(ValueError, match="context"):
        gen.generate([list(range(gen.max_seq_len))], SamplingParams())


def test_stream_matches_generate_and_stop_string_cuts_text(gen, tokenizer):
    prompt = tokenizer.encode("hello world")
    params = SamplingParams(max_new_tokens=25)
    assert list(gen.stream(prompt, params)) == gen.generate([prompt], params)[0]
    full = "".join(gen.stream_text(prompt, params))
    assert full == tokenizer.decode(gen.generate([prompt], params)[0])
    stop = full[8:11]
    cut = "".join(gen.stream_text(prompt, SamplingParams(max_new_tokens=25, stop=(stop,))))
    assert cut == full[: full.index(stop)]


def test_text_stream_holds_back_partial_characters_and_stop_prefixes(tokenizer):
    ids = tokenizer.encode("你好世界 END tail")
    stream = TextStream(lambda t: tokenizer.decode(t), stop=("END",))
    deltas = [stream.push(i) for i in ids]
    deltas.append(stream.finish())
    assert "".join(deltas) == "你好世界 "
    assert all("\ufffd" not in d for d in deltas)


def test_zero_new_tokens_and_empty_prompt(gen):
    assert gen.generate([[1, 2]], SamplingParams(max_new_tokens=0)) == [[]]
    with pytest.raises(ValueError, match="empty"):
        gen.generate([[]], SamplingParams())


def test_chat_renders_and_stops_at_end_of_turn(gen, tokenizer):
    messages = [{"role": "user", "content": "你好"}]
    reply = gen.chat(messages, SamplingParams(max_new_tokens=10))
    ids = gen.chat_prompt(messages)
    assert "<|im_start|>assistant\n" in tokenizer.decode(ids)
    assert "<|im_end|>" not in reply and "<|endoftext|>" not in reply


def test_fast_decoder_equals_model_forward_and_follows_weight_updates(gen, tokenizer):
    slow = Generator(gen.model, tokenizer, fast=False)
    assert gen.fast and not slow.fast
    params = SamplingParams(max_new_tokens=20)
    assert gen.generate(PROMPTS, params) == slow.generate(PROMPTS, params)
    prompt = [PROMPTS[0]]
    before = gen.generate(prompt, params)
    weight = gen.model.layers[0].mlp.up_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(-3.0)  # an in-place update, as an optimizer step makes
    try:
        after = gen.generate(prompt, params)
        assert after == slow.generate(prompt, params) and after != before
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert gen.generate(prompt, params) == before


def test_joining_a_running_batch_changes_nobody_s_output(gen):
    """Continuous batching: sequences merged mid-run (shorter and longer than the running cache)
    produce what they would alone, and so do the sequences already running."""
    first = [PROMPTS[0], PROMPTS[1]]
    first_params = [SamplingParams(max_new_tokens=6), SamplingParams(max_new_tokens=25)]
    later = [list(range(50, 80)), [3], PROMPTS[2]]
    later_params = [
        SamplingParams(max_new_tokens=10),
        SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=4),
        SamplingParams(max_new_tokens=7),
    ]
    dec = gen.decoder(first, first_params)
    out: dict[int, list[int]] = {}
    for _ in range(4):
        dec.step()
    indices = dec.merge(gen.decoder(later, later_params))
    for _ in range(3):
        dec.step()
    indices.append(dec.merge(gen.decoder([PROMPTS[3]], [SamplingParams(max_new_tokens=9)]))[0])
    while not dec.done:
        dec.step()
    out = {r.index: r.tokens for r in dec.finished}
    everyone = list(zip(first, first_params)) + list(zip(later, later_params))
    everyone.append((PROMPTS[3], SamplingParams(max_new_tokens=9)))
    alone = [gen.generate([p], sp)[0] for p, sp in everyone]
    assert [out[i] for i in [0, 1, *indices]] == alone


def test_int8_decoder_logits_track_fp32(gen):
    """int8 weights and activations: logits within a few percent of fp32 over a prefill (about 2%
    for the demo's trained models), and greedy decoding runs through the same engine."""
    from weakwater.infer.fast import FastDecoder
    from weakwater.model.llama import KVCache

    model = gen.model
    ids = torch.tensor([PROMPTS[2] * 3])
    with torch.inference_mode():
        want = model(ids)
        cache = KVCache(model.config, 1, ids.shape[1], "cpu", torch.float32)
        got = FastDecoder(model, "int8")(ids, kv_cache=cache)
    err = (got - want).norm() / want.norm()
    assert err < 0.1, err  # 0.07 here (deliberately peaky random weights); a wrong scale gives ~1
    int8 = Generator(model, weights="int8")
    out = int8.generate(PROMPTS, SamplingParams(max_new_tokens=8))
    assert [len(o) for o in out] == [8] * len(PROMPTS)
    assert out[3] == int8.generate([PROMPTS[3]], SamplingParams(max_new_tokens=8))[0]


def test_int8_needs_the_fast_path_on_cpu(gen):
    from weakwater.infer.fast import FastDecoder
    from weakwater.model.lora import apply_lora

    with pytest.raises(ValueError, match="weights must be one of"):
        FastDecoder(gen.model, "int4")
    lora_model = apply_lora(copy.deepcopy(gen.model), rank=2, alpha=4, targets=("q_proj",))
    with pytest.raises(ValueError, match="merge LoRA adapters"):
        Generator(lora_model, weights="int8")


def test_fast_decoder_runs_its_layer_loop_compiled_on_cpu(gen):
    """The TorchScript loop is what makes CPU decoding fast; a silent fallback to eager would not
    change any output, so check it is really in use and gives the eager loop's logits exactly."""
    from weakwater.infer.fast import FastDecoder, decode_layers
    from weakwater.model.llama import KVCache

    fast = FastDecoder(gen.model)
    assert isinstance(fast.layers, torch.jit.ScriptFunction)
    ids = torch.tensor([PROMPTS[2]])
    outputs = []
    for layers in (fast.layers, decode_layers):
        fast.layers = layers
        outputs.append(fast(ids, kv_cache=KVCache(gen.model.config, 1, ids.shape[1], "cpu", torch.float32)))
    assert torch.equal(outputs[0], outputs[1])


class Scripted:
    """A stand-in forward pass that makes greedy decoding emit ``script`` token by token."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.calls = script, vocab, 0

    def __call__(self, ids, attention_mask=None, position_ids=None, kv_cache=None):
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 10.0
        self.calls += 1
        return logits


def scripted_generator(tiny_model_dir, tokenizer, script: list[int]) -> Generator:
    from weakwater.model import load_model

    gen = Generator(load_model(tiny_model_dir), tokenizer, fast=False)
    forward = Scripted(script, gen.model.config.vocab_size)
    gen._forward = lambda: forward
    return gen


@pytest.mark.parametrize("special", ["<|im_start|>", "<|endoftext|>", "<|im_end|>", "<|vision_start|>"])
def test_every_special_token_ends_a_reply_in_chat_and_raw_mode(tiny_model_dir, tokenizer, special):
    """A small model often writes the next turn's <|im_start|> instead of <|im_end|>, or <|endoftext|>
    in raw mode: the reply ends there (MiniMind-3's vision/audio tokens too), while reasoning tags
    stay in the text."""
    from weakwater.infer import end_token_ids

    script = tokenizer.encode("好的") + [tokenizer.token_to_id(special)] + tokenizer.encode("user\nmore")
    chat = scripted_generator(tiny_model_dir, tokenizer, script).chat(
        [{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=12)
    )
    raw = scripted_generator(tiny_model_dir, tokenizer, script).complete("hi", SamplingParams(max_new_tokens=12))
    assert chat == raw == "好的"
    think = tokenizer.encode("<think>x</think>ok")
    assert tokenizer.token_to_id("<think>") in think and not set(think) & set(end_token_ids(tokenizer))
    reply = scripted_generator(tiny_model_dir, tokenizer, think + [tokenizer.im_end_id]).chat(
        [{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=12)
    )
    assert reply == "<think>x</think>ok"


def test_our_tokenizer_stops_at_control_tokens_but_not_reasoning_tags(bpe_tokenizer_dir):
    from weakwater.infer import end_token_ids
    from weakwater.tokenizer import load_tokenizer

    tok = load_tokenizer(bpe_tokenizer_dir)
    names = {tok.id_to_token(i) for i in end_token_ids(tok)}
    assert names == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}


def test_streamed_text_never_shows_a_partial_character(tokenizer):
    """Byte-level tokens split rare CJK characters and emoji; no delta may carry U+FFFD for them."""
    text = "龘靐齉爨 🐉🎉 𠀀 ok"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text)  # really split into byte pieces
    stream = TextStream(lambda t: tokenizer.decode(t))
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)


@pytest.fixture(scope="module")
def qk_gen(gen, tokenizer) -> Generator:
    """The tiny model's shape with QK-norm (gains away from 1, so misapplying them shows), fast engine."""
    from weakwater.model import Transformer

    torch.manual_seed(1)
    model = Transformer(dataclasses.replace(gen.model.config, qk_norm=True)).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
            layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
    return Generator(model, tokenizer)


def test_fast_decoder_handles_qk_norm(qk_gen, tokenizer):
    """The fused fp32 loop (compiled and eager) computes the QK-norm model's forward: same greedy
    tokens as the model's own cached decoding and as full recomputation, logits equal."""
    from weakwater.infer.fast import FastDecoder, decode_layers
    from weakwater.model.llama import KVCache

    model = qk_gen.model
    assert qk_gen.fast
    params = SamplingParams(max_new_tokens=20)
    fast = qk_gen.generate(PROMPTS, params)
    assert fast == Generator(model, tokenizer, fast=False).generate(PROMPTS, params)
    assert fast[2] == naive_greedy(model, PROMPTS[2], 20)
    decoder = FastDecoder(model)
    assert isinstance(decoder.layers, torch.jit.ScriptFunction)
    ids = torch.tensor([PROMPTS[2] * 3])
    outputs = []
    for layers in (decoder.layers, decode_layers):
        decoder.layers = layers
        outputs.append(decoder(ids, kv_cache=KVCache(model.config, 1, ids.shape[1], "cpu", torch.float32)))
    assert torch.equal(outputs[0], outputs[1])
    with torch.inference_mode():
        assert (outputs[0] - model(ids)).abs().max() < 1e-4


def test_int8_decoder_handles_qk_norm(qk_gen):
    from weakwater.infer.fast import FastDecoder
    from weakwater.model.llama import KVCache

    model = qk_gen.model
    ids = torch.tensor([PROMPTS[2] * 3])
    with torch.inference_mode():
        want = model(ids)
        got = FastDecoder(model, "int8")(ids, kv_cache=KVCache(model.config, 1, ids.shape[1], "cpu", torch.float32))
    assert (got - want).norm() / want.norm() < 0.1  # int8 rounding only; dropping the q/k gains gives ~1
