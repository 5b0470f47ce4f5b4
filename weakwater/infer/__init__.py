"""Inference: KV-cache generation, terminal chat and the OpenAI-compatible server."""

from weakwater.infer.generate import BatchDecoder, Generator, TextStream, chat_stop_ids
from weakwater.infer.sampling import SamplingParams

__all__ = ["BatchDecoder", "Generator", "SamplingParams", "TextStream", "chat_stop_ids"]
