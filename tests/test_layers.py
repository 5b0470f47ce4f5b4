"""The package layers: lower packages never import higher ones, so each can be read (and reused) alone.

The imports are read from the source (every ``import`` and ``from ... import``, lazy ones inside functions
included), not from ``sys.modules``, so an import hidden in a function body cannot create a cycle unseen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "weakwater"

# package (or top-level module) -> what it must never import. Command-line modules (``cli.py``) wire
# packages together and may import more (``weakwater tokenizer train`` reads JSONL through data/).
FORBIDDEN = {
    "jsonl": {"*"},
    "answers": {"*"},
    "device": {"*"},
    "console": {"*"},
    "tools": {"*"},
    "model": {"data", "train", "eval", "infer", "rl", "export", "bench", "tokenizer", "demo"},
    "tokenizer": {"data", "train", "eval", "infer", "rl", "model", "export", "bench", "demo"},
    "data": {"train", "eval", "infer", "rl", "export", "bench", "demo"},
    "infer": {"train", "eval", "rl", "export", "bench", "demo"},
    "eval": {"train", "rl", "export", "bench", "demo"},
    "rl": {"train", "eval", "export", "bench", "demo"},
    "export": {"train", "data", "eval", "infer", "rl", "bench", "demo"},
}


def imported_parts(path: Path) -> set[str]:
    """The first component under ``weakwater.`` of every module ``path`` imports."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(module[: len(module) - node.level])
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return {n.split(".")[1] for n in names if n.startswith("weakwater.")}


def own_part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(part):
    forbidden = FORBIDDEN[part]
    files = [p for p in PACKAGE.rglob("*.py") if own_part(p) == part and p.name != "cli.py"]
    assert files, f"no module for {part}"
    bad = {}
    for path in files:
        parts = imported_parts(path) - {part}
        hits = parts if "*" in forbidden else parts & forbidden
        if hits:
            bad[str(path.relative_to(PACKAGE))] = sorted(hits)
    assert not bad, f"{part} must not import {sorted(forbidden)}: {bad}"


def test_the_checker_sees_lazy_imports():
    # data/prompts.py imports the answer checker inside a function only.
    assert "answers" in imported_parts(PACKAGE / "data" / "prompts.py")
    assert imported_parts(PACKAGE / "__main__.py") == {"cli"}
