"""Data: conversations, token shards (``weakwater prepare``), packed windows and a resumable loader.

Modules are imported directly (``weakwater.data.chat``, ``.prepare``, ``.pretrain``, ``.loader``...) so that
importing one stage's data code never pulls in another's dependencies. JSONL reading, which the tokenizer
and evaluation share, is :mod:`weakwater.jsonl`.
"""
