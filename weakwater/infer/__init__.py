"""Inference: KV-cache generation, terminal chat and the OpenAI-compatible server."""

from weakwater.infer.generate import BatchDecoder, Generator, TextStream, end_token_ids
from weakwater.infer.sampling import SamplingParams

__all__ = ["BatchDecoder", "Generator", "SamplingParams", "TextStream", "end_token_ids"]
