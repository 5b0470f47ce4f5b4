"""Reference decoding shared by the export tests."""

import torch

from weakwater.model import Transformer


def greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """Plain greedy decoding by full recomputation: the reference every runtime must match."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]
