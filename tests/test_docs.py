"""Every code block in README.md and docs/*.md runs, as written, in a prepared directory.

Conventions (kept simple on purpose, so whoever edits the docs sees them):

- ```bash / ```sh blocks run with ``bash -xeuo pipefail``, ```python blocks with this Python; one test per
  block, named ``<file>:<line of the fence>``. The blocks of one markdown file run in order in one
  directory, so a later block may use what an earlier one wrote, like a reader following the page (two
  files run side by side); after a failure the rest of that file is skipped.
- A block whose first line is a comment naming a path (``# tasks/x.yaml``, ``# my_rewards.py``) is a file the
  reader is asked to create: it is written there (without that line; Python is also compiled) before the
  next blocks run. Other blocks of other languages (diagrams, ```text, a Modelfile) are not run.
- ``<!-- skip-test: why -->`` on the line right before a fence skips that block, visibly, with its reason
  (downloads, GPUs, programs that are not installed). Keep these rare.

The directory starts as a miniature of what ``make demo`` leaves in ``runs/demo`` (tiny random models on a
tokenizer trained on the small synthetic data set, that data set, a LoRA adapter), plus small stand-ins for
files the docs expect readers to bring (``gsm8k_train.jsonl``, ``gsm8k_test.jsonl``, ``prompts.txt``).
``weakwater`` on PATH runs this checkout's ``weakwater.cli.main`` with the long-running commands cut to test
size by appending flags (``CUTS``; later flags win): training stops after 1-2 steps, generation after a few
tokens, ``serve`` is started, asked ``/v1/models`` and stopped, ``chat`` reads an empty input. Everything
else runs exactly as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
SKIP = re.compile(r"<!--\s*skip-test:\s*(.*?)\s*-->")
FILE_LINE = re.compile(r"^\s*(?:#|//)\s*([\w./-]+\.\w+)\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None

    @property
    def where(self) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{path}:{self.line}"

    @property
    def runs(self) -> bool:
        return RUN_LANGS.get(self.lang) is not None and self.skip is None


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, each with the skip marker right before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, lang, start = fence.group(1), fence.group(2), fence.group(3).lower(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent) :])
            i += 1
        i += 1
        marker = SKIP.search(lines[start - 1]) if start else None
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marker.group(1) if marker else None))
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
CODE = [b for b in ALL if b.lang in RUN_LANGS]

# Flags appended per command (argparse: the last occurrence wins), to cut long commands to test size.
QUIET = ["--eval-every", "0", "--save-every", "0", "--no-plot"]
ONLINE = ["--max-steps", "1", "--batch-size", "2", "--group-size", "2", "--max-new-tokens", "4", *QUIET]
CUTS = {
    ("pretrain",): ["--max-steps", "2", "--batch-size", "2", "--seq-len", "32", *QUIET],
    ("sft",): ["--max-steps", "2", "--batch-size", "2", *QUIET],
    ("distill",): ["--max-steps", "2", "--batch-size", "2", *QUIET],
    ("dpo",): ["--max-steps", "2", "--batch-size", "2", *QUIET],
    ("rl",): ONLINE,
    ("online-dpo",): ONLINE,
    ("data", "synth"): ["--size", "small"],
    ("tokenizer", "train"): ["--max-bytes", "200000"],
    ("bench", "train"): ["--batch", "1", "--seq", "32", "--steps", "1", "--warmup", "0"],
    ("bench", "gpu"): ["--presets", "tiny", "--seq", "32", "--pretrain-seconds", "1", "--budget", "20", "--no-compile"],
    ("doctor",): ["--skip-compile"],
    ("eval", "suite"): ["--limit", "1", "--samples", "0", "--max-new-tokens", "4", "--needle-lengths", "32,64"],
    ("eval", "math"): ["--limit", "2", "--max-new-tokens", "8"],
    ("eval", "repetition"): ["--limit", "2", "--max-new-tokens", "8"],
    ("eval", "needle"): ["--lengths", "32,64", "--trials", "2"],
    ("eval", "tasks"): ["--limit", "2", "--max-new-tokens", "8"],
    ("eval", "ppl"): ["--max-docs", "8"],
}

SHIM = '''#!{python}
"""`weakwater` as the docs test runs it: this checkout, long commands cut to test size (tests/test_docs.py)."""
import socket, subprocess, sys, time, urllib.request

sys.path.insert(0, {repo!r})
CUTS = {cuts!r}


def serve(args):
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "weakwater", *args, "--port", str(port)])
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{{port}}/v1/models", timeout=5).read()
                return 0
            except OSError:
                if proc.poll() is not None:
                    return proc.returncode or 1
                time.sleep(0.5)
        return "serve did not answer"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":  # worker processes (prepare, tokenizer training) import this file again
    args = sys.argv[1:]
    words = [a for a in args if not a.startswith("-")]
    for key, extra in CUTS.items():
        if tuple(words[: len(key)]) == key and "--help" not in args:
            args += extra
    if args and args[0] == "chat":
        sys.stdin = open("/dev/null")  # a reader's chat ends at the end of input; the test's at once
    if args and args[0] == "serve":
        sys.exit(serve(args))
    from weakwater.cli import main

    sys.exit(main(args))
'''


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> Path:
    """A miniature ``runs/demo`` (see the module docstring) and the ``weakwater`` command, built once."""
    import torch

    from weakwater.data.synth import generate
    from weakwater.model import ModelConfig, Transformer, save_model
    from weakwater.model.lora import apply_lora, save_adapter
    from weakwater.tokenizer import load_tokenizer
    from weakwater.tokenizer.train import train_tokenizer

    root = tmp_path_factory.mktemp("docs_world")
    demo = root / "runs" / "demo"
    generate(demo / "data", seed=0, size="small")
    tok_dir = demo / "tokenizer"
    lines = (demo / "data" / "pretrain.jsonl").read_text(encoding="utf-8").splitlines()
    train_tokenizer([json.loads(line)["text"] for line in lines], tok_dir, vocab_size=800)
    shape = dict(
        vocab_size=load_tokenizer(tok_dir).vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256
    )
    for i, stage in enumerate(("pretrain", "sft", "distill", "dpo", "tools")):
        torch.manual_seed(i)
        save_model(Transformer(ModelConfig(**shape)), demo / stage / "final", tok_dir, {"stage": stage})
    torch.manual_seed(9)
    save_adapter(apply_lora(Transformer(ModelConfig(**shape)), 4, 8.0), demo / "lora" / "adapter")
    # Files the docs expect the reader to bring: GSM8K-format train/test files and a prompt list.
    gsm8k = [{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
             {"question": "A box holds 12 eggs. How many in 2 boxes?", "answer": "12 * 2 = 24\n#### 24"}]  # fmt: skip
    for name in ("gsm8k_train.jsonl", "gsm8k_test.jsonl"):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in gsm8k))
    (root / "prompts.txt").write_text("Tell me about the river.\n讲一个故事。\n", encoding="utf-8")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "weakwater"
    shim.write_text(SHIM.format(python=sys.executable, repo=str(REPO), cuts=CUTS))
    shim.chmod(0o755)
    return root


def _env(demo_world: Path) -> dict[str, str]:
    path = os.pathsep.join([str(demo_world / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WEAKWATER_NO_PROGRESS": "1",
        "PS4": "+ [${SECONDS}s] ",  # bash -x: which command failed, and when
    }


def _execute(block: Block, work: Path, env: dict[str, str]) -> str | None:
    """Run one block; None when it succeeded, else what to report."""
    if block.lang in ("python", "py"):
        cmd = [sys.executable, "-c", block.text]
    else:
        cmd = ["bash", "-xeuo", "pipefail", "-c", block.text]
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr)
        return f"{block.where} ({block.lang}) ran over 900 s\n--- stderr (tail)\n{err[-3000:]}"
    if proc.returncode == 0:
        return None
    return (
        f"{block.where} ({block.lang}) exited {proc.returncode}\n--- block\n{block.text}"
        f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}"
    )


def run_doc(doc: Path, work: Path, env: dict[str, str]) -> dict[int, tuple[str, str]]:
    """Every block of ``doc`` in order in ``work``: {fence line: ("ok" | "failed" | "skipped", detail)}."""
    results: dict[int, tuple[str, str]] = {}
    failed = None
    for block in blocks(doc):
        first, _, rest = block.text.partition("\n")
        target = FILE_LINE.match(first)
        if block.skip is not None:
            continue
        if failed is not None:
            results[block.line] = ("skipped", f"an earlier block of this file failed ({failed})")
        elif target:  # a file the reader creates, in any language
            dest = work / target.group(1)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(rest, encoding="utf-8")
            try:
                if block.lang in ("python", "py"):
                    compile(rest, block.where, "exec")  # a Python file must at least be valid Python
                results[block.line] = ("ok", f"wrote {target.group(1)}")
            except SyntaxError as e:
                failed, results[block.line] = block.where, ("failed", f"{block.where}: {e}")
        elif block.runs:
            start = time.perf_counter()
            error = _execute(block, work, env)
            took = f"{block.where} ran in {time.perf_counter() - start:.1f}s"
            if error is None:
                results[block.line] = ("ok", took)
            else:
                failed, results[block.line] = block.where, ("failed", f"{took}\n{error}")
    return results


@pytest.fixture(scope="session")
def doc_results(request, demo_world, tmp_path_factory) -> dict[Path, Future]:
    """The blocks of every markdown file with a selected block, two files at a time (2 CPU cores; each
    file's blocks in order), the longest file first."""
    wanted = {
        item.callspec.params["block"].path
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_code_block_runs"
    }
    env = _env(demo_world)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}
    for doc in sorted(wanted, key=lambda d: -sum(len(b.text) for b in blocks(d) if b.runs)):
        work = tmp_path_factory.mktemp("doc_" + doc.stem)
        for name in ("runs", "gsm8k_train.jsonl", "gsm8k_test.jsonl", "prompts.txt"):
            src = demo_world / name
            shutil.copytree(src, work / name) if src.is_dir() else shutil.copy(src, work / name)
        futures[doc] = pool.submit(run_doc, doc, work, env)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_blocks_are_found_and_markers_parse(tmp_path):
    """The extractor itself, and the markers: each names its reason and sits right before a fence."""
    assert any(b.lang == "bash" for b in CODE) and any(b.lang == "python" for b in CODE)
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            marker = SKIP.search(line)
            if marker:
                where = f"{doc.relative_to(REPO)}:{i + 1}"
                assert len(marker.group(1)) > 5, f"{where}: say why the block cannot run"
                assert i + 1 < len(lines) and lines[i + 1].lstrip().startswith("```"), f"{where}: not before a fence"
    sample = tmp_path / "sample.md"
    sample.write_text("x\n<!-- skip-test: needs a GPU here -->\n```bash\nnvidia-smi\n```\n\n```python\nprint(1)\n```\n")
    assert [(b.line, b.lang, b.skip, b.text) for b in blocks(sample)] == [
        (3, "bash", "needs a GPU here", "nvidia-smi\n"),
        (7, "python", None, "print(1)\n"),
    ]


def test_a_failing_block_fails_and_stops_its_file(tmp_path):
    """The runner can fail: blocks share the directory in order, the first failure is reported with file and
    line, later blocks are skipped, marked blocks never run."""
    doc = tmp_path / "page.md"
    doc.write_text(
        "```bash\necho hi > f.txt\n```\n<!-- skip-test: would fail -->\n```bash\nexit 3\n```\n"
        "```python\nimport pathlib; assert pathlib.Path('f.txt').read_text() == 'hi\\n'\n```\n"
        "```bash\ntest -f f.txt\nfalse\n```\n```python\nprint(1)\n```\n"
    )
    results = run_doc(doc, tmp_path, dict(os.environ))
    assert [(line, status) for line, (status, _) in results.items()] == [
        (1, "ok"), (8, "ok"), (11, "failed"), (15, "skipped")
    ]  # fmt: skip
    assert "page.md:11 (bash) exited 1" in results[11][1] and "+ false" in results[11][1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the first test waits for its whole file (about a minute on 2 idle cores)
@pytest.mark.parametrize("block", CODE, ids=[b.where for b in CODE])
def test_code_block_runs(block, doc_results):
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    status, detail = doc_results[block.path].result().get(block.line, ("skipped", "not a runnable block"))
    print(detail.splitlines()[0])
    if status == "failed":
        pytest.fail(detail, pytrace=False)
    if status == "skipped":
        pytest.skip(detail)
