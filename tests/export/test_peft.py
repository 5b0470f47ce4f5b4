"""An adapter we save loads with ``peft.PeftModel.from_pretrained`` on the HF export and gives our logits."""

from __future__ import annotations

import pytest
import torch

from weakwater.export.hf import export_hf
from weakwater.model import load_model
from weakwater.model.lora import apply_lora, save_adapter

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def test_peft_loads_our_adapter(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    hf_dir = export_hf(model_dir, tmp_path / "hf")
    ours = load_model(model_dir)
    apply_lora(
        ours, rank=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
    g = torch.Generator().manual_seed(3)
    for name, p in ours.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    ours.eval()
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(hf_dir))

    base = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    x = torch.tensor([[1, 5, 9, 33, 60, 2, 100, 400, 7]])
    with torch.no_grad():
        expected, got = ours(x), peft_model(x).logits
        with peft_model.disable_adapter():
            plain = peft_model(x).logits
    assert (plain - expected).abs().max() > 1e-2  # the adapter really changes the output
    diff = (got - expected).abs().max().item()
    assert diff < 1e-4, f"max abs logit diff {diff}"
