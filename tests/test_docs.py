"""Every code block in README.md and docs/*.md runs, as written, in a fresh directory.

Conventions (kept simple on purpose, so whoever edits the docs sees them):

- ```bash / ```sh blocks run with ``bash -euo pipefail``; ```python blocks run as scripts. All blocks of
  one markdown file run in order in one temporary directory, so a later block may use what an earlier
  one wrote (like a reader following the page).
- A block of any other language whose first line is a comment naming a path (``# tasks/x.yaml``) is a
  file the reader is asked to create: it is written there (without that line) before the next blocks.
  Other blocks (diagrams, ```text, a Modelfile) are not run.
- ``<!-- skip-test: why -->`` on the line right before a fence skips that block, visibly, with its
  reason (downloads, GPUs, tools that are not installed). Keep these rare.

The directory starts with a miniature of what ``make demo`` leaves in ``runs/demo`` (tiny random models
with a small tokenizer, the small synthetic data set), so the documented paths exist. ``weakwater`` on
PATH is this checkout, with the long-running commands cut to demo size: training stops after 2 steps,
``serve`` is started, asked ``/v1/models`` and stopped, ``eval tasks`` and ``eval ppl`` read a few rows,
``data synth`` writes the small data set and ``tokenizer train`` samples 300 kB.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
SKIP = re.compile(r"<!--\s*skip-test:\s*(.+?)\s*-->")
FILE_LINE = re.compile(r"^\s*(?:#|//)\s*([\w./-]+\.[\w]+)\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    text: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the skip marker of each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        ticks, lang, start = fence.group(2), fence.group(3).lower(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(fence.group(1)) :])
            i += 1
        i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.search(prev)
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marker.group(1) if marker else None))
    return out


SHIM = '''#!{python}
"""`weakwater` as the docs test runs it: this checkout, long commands cut to demo size."""
import os, socket, subprocess, sys, time, urllib.request
sys.path.insert(0, {repo!r})
args = sys.argv[1:]
TRAIN = ("pretrain", "sft", "distill", "dpo")
if args and args[0] in TRAIN and "--help" not in args:
    args += ["--max-steps", "2", "--batch-size", "2", "--eval-every", "0", "--save-every", "0", "--no-plot"]
if args[:2] == ["data", "synth"]:
    args += ["--size", "small"]
if args[:2] == ["tokenizer", "train"]:
    args += ["--max-bytes", "300000"]
if args[:2] == ["bench", "train"]:
    args += ["--batch", "1", "--seq", "32", "--steps", "1", "--warmup", "0"]
if args[:2] == ["eval", "tasks"]:
    args += ["--limit", "2", "--max-new-tokens", "8"]
if args[:2] == ["eval", "ppl"]:
    args += ["--max-docs", "8"]
if args and args[0] == "serve":
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "weakwater", *args, "--port", str(port)])
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{{port}}/v1/models", timeout=5).read()
                sys.exit(0)
            except OSError:
                if proc.poll() is not None:
                    sys.exit(proc.returncode or 1)
                time.sleep(0.5)
        sys.exit("serve did not answer")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
from weakwater.cli import main
sys.exit(main(args))
'''


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory, bpe_tokenizer_dir) -> Path:
    """A miniature ``runs/demo``: tokenizer, small synthetic data, tiny models per stage, a LoRA adapter."""
    import torch

    from weakwater.data.synth import generate
    from weakwater.model import ModelConfig, Transformer, save_model
    from weakwater.model.lora import apply_lora, save_adapter

    root = tmp_path_factory.mktemp("demo_world")
    demo = root / "runs" / "demo"
    shutil.copytree(bpe_tokenizer_dir, demo / "tokenizer")
    generate(demo / "data", seed=0, size="small")
    vocab = len(json.loads((bpe_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    shape = dict(vocab_size=vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)
    for i, stage in enumerate(("pretrain", "sft", "distill", "dpo")):
        torch.manual_seed(i)
        save_model(Transformer(ModelConfig(**shape)), demo / stage / "final", bpe_tokenizer_dir, {"stage": stage})
    torch.manual_seed(9)
    lora = apply_lora(Transformer(ModelConfig(**shape)), 4, 8.0)
    save_adapter(lora, demo / "lora" / "adapter")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "weakwater"
    shim.write_text(SHIM.format(python=sys.executable, repo=str(REPO)))
    shim.chmod(0o755)
    return root


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.text]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block.text]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"{block.where} ({block.lang}) exited {proc.returncode}\n--- block\n{block.text}"
        f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}"
    )


def test_blocks_are_found_and_markers_parse():
    """The extractor itself: fences, languages, skip markers, file blocks."""
    found = {b.where: b for path in DOCS for b in blocks(path)}
    assert any(b.lang == "bash" for b in found.values()) and any(b.lang == "python" for b in found.values())
    for b in found.values():
        if b.skip is not None:
            assert len(b.skip) > 5, f"{b.where}: say why the block cannot run"


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_code_block_runs(doc, demo_world, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(demo_world / "runs", work / "runs")
    env = {
        **os.environ,
        "PATH": f"{demo_world / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WEAKWATER_NO_PROGRESS": "1",
    }
    skipped = []
    for block in blocks(doc):
        if block.skip is not None:
            if block.lang in RUN_LANGS:
                skipped.append(f"{block.where}: {block.skip}")
            continue
        if block.lang in RUN_LANGS:
            start = time.perf_counter()
            run_block(block, work, env)
            print(f"RAN {block.where} in {time.perf_counter() - start:.0f}s")
            continue
        first, _, rest = block.text.partition("\n")
        target = FILE_LINE.match(first)
        if target:
            dest = work / target.group(1)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(rest, encoding="utf-8")
    for line in skipped:  # visible in the test log with -rA / -s
        print(f"SKIPPED BLOCK {line}")
