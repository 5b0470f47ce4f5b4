"""Data: robust JSONL reading, token shards (``weakwater prepare``), packed windows and a resumable loader.

Modules are imported directly (``weakwater.data.jsonl``, ``.prepare``, ``.pretrain``, ``.loader``...) so that
importing one stage's data code never pulls in another's dependencies.
"""
