"""Large-data benchmarks: ``weakwater prepare`` and tokenizer training on a generated JSONL corpus.

The corpus is synthetic (random Chinese and English words with Zipf-like frequencies, every line
distinct so deduplication keeps it) and lives in a temporary directory removed afterwards. Each tool
runs as its own ``python -m weakwater ...`` process, exactly as a user runs it, while this process
samples the resident memory of the whole process tree (prepare uses a pool of worker processes, so
the tree's total is what must stay bounded) and its CPU time, giving wall time, throughput, peak RSS
and the average number of busy cores.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from weakwater.bench.common import environment, format_table

_CJK_START, _CJK_SIZE = 0x4E00, 3500  # the most common block of CJK ideographs


def _zipf(n: int) -> list[float]:
    """Cumulative 1/rank weights for ``random.choices``: a few words are common, most are rare."""
    cum, total = [], 0.0
    for rank in range(1, n + 1):
        total += 1.0 / rank
        cum.append(total)
    return cum


def write_corpus(path: str | Path, target_bytes: int, seed: int = 0) -> dict[str, Any]:
    """Write about ``target_bytes`` of ``{"text": ...}`` JSONL lines, each a document of 8-60 clauses.

    Chinese clauses are runs of 1-3 character words written without spaces (as real Chinese text is,
    which gives the tokenizer's pre-tokenizer long, mostly distinct pieces); English clauses are
    space-separated words. Every line starts with its number, so none is a duplicate.
    """
    rng = random.Random(seed)
    zh_words = [
        "".join(chr(_CJK_START + rng.randrange(_CJK_SIZE)) for _ in range(rng.randint(1, 3))) for _ in range(8000)
    ]
    en_words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4000)]
    zh_cum, en_cum = _zipf(len(zh_words)), _zipf(len(en_words))
    written = docs = 0
    start = time.perf_counter()
    with open(path, "w", encoding="utf-8") as f:
        while written < target_bytes:
            lines = []
            for _ in range(256):
                clauses = [str(docs)]
                for _ in range(rng.randint(8, 60)):
                    if rng.random() < 0.7:
                        clauses.append("".join(rng.choices(zh_words, cum_weights=zh_cum, k=rng.randint(3, 12))))
                        clauses.append(rng.choice("，。；"))
                    else:
                        clauses.append(" " + " ".join(rng.choices(en_words, cum_weights=en_cum, k=rng.randint(3, 10))))
                        clauses.append(rng.choice(",. "))
                lines.append(json.dumps({"text": "".join(clauses)}, ensure_ascii=False))
                docs += 1
            block = "\n".join(lines) + "\n"
            f.write(block)
            written += len(block.encode("utf-8"))
    return {"bytes": written, "docs": docs, "seconds": time.perf_counter() - start}


def run_measured(cmd: list[str], cores: int | None = None, interval: float = 0.1) -> dict[str, Any]:
    """Run ``cmd``, sampling the summed RSS of its process tree; CPU time from rusage; fail loudly on error.

    ``cores`` pins the process (and so its children) to that many CPUs and tells the Rust thread
    pools, for measurements "on N cores".
    """
    env = dict(os.environ)
    preexec = None
    if cores is not None:
        available = sorted(os.sched_getaffinity(0))
        if cores > len(available):
            raise ValueError(f"--cores {cores} but only {len(available)} CPUs are available")
        env["RAYON_NUM_THREADS"] = str(cores)
        chosen = set(available[:cores])

        def preexec() -> None:
            os.sched_setaffinity(0, chosen)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        root = psutil.Process(proc.pid)
        peak_tree = 0
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    continue
            peak_tree = max(peak_tree, rss)
            time.sleep(interval)
        wall = time.perf_counter() - start
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed with exit code {proc.returncode}:\n{text[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # every descendant has been waited for by now
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": wall,
        "peak_rss_tree_mb": peak_tree / 2**20,
        "cpu_s": cpu_seconds,
        "avg_busy_cores": cpu_seconds / wall if wall > 0 else 0.0,
        "output_tail": text[-1500:],
    }


def _weakwater(*args: str) -> list[str]:
    return [sys.executable, "-m", "weakwater", *args]


def bench_tokenizer(
    corpus: Path,
    workdir: Path,
    vocab_size: int = 6400,
    max_bytes: int | None = None,
    cores: int | None = 2,
) -> dict[str, Any]:
    """``weakwater tokenizer train`` on ``corpus`` (its default ``--max-bytes`` sample unless given)."""
    out = workdir / "tokenizer"
    cmd = _weakwater("tokenizer", "train", "--data", str(corpus), "--out", str(out), "--vocab-size", str(vocab_size))
    if max_bytes is not None:
        cmd += ["--max-bytes", str(max_bytes)]
    run = run_measured(cmd, cores=cores)
    summary = json.loads(run["output_tail"][run["output_tail"].index("{") :])
    size = corpus.stat().st_size
    return {
        "benchmark": "tokenizer",
        "input_mb": size / 1e6,
        "cores": cores or os.cpu_count(),
        "vocab_size": summary["vocab_size"],
        "trained_on_mb": summary["train_bytes"] / 1e6,
        "trained_on_docs": summary["train_docs"],
        "wall_s": run["wall_s"],
        "input_mb_per_s": size / 1e6 / run["wall_s"],
        "peak_rss_tree_mb": run["peak_rss_tree_mb"],
        "avg_busy_cores": run["avg_busy_cores"],
        "tokenizer_dir": str(out),
    }


def bench_prepare(corpus: Path, tokenizer_dir: Path, workdir: Path, workers: int | None = None) -> dict[str, Any]:
    """``weakwater prepare`` of ``corpus`` into token shards with all cores (or ``workers``)."""
    out = workdir / "tokens"
    cmd = _weakwater("prepare", "--data", str(corpus), "--tokenizer", str(tokenizer_dir), "--out", str(out))
    if workers is not None:
        cmd += ["--workers", str(workers)]
    run = run_measured(cmd)
    stats = json.loads((out / "meta.json").read_text(encoding="utf-8"))["stats"]
    size = corpus.stat().st_size
    return {
        "benchmark": "prepare",
        "input_mb": size / 1e6,
        "cpu_count": os.cpu_count(),
        "workers": stats.get("workers"),
        "docs_kept": stats.get("docs_kept"),
        "tokens": stats["tokens"],
        "wall_s": run["wall_s"],
        "input_mb_per_s": size / 1e6 / run["wall_s"],
        "tokens_per_s": stats["tokens"] / run["wall_s"],
        "peak_rss_tree_mb": run["peak_rss_tree_mb"],
        "avg_busy_cores": run["avg_busy_cores"],
    }


def run_data_bench(
    which: tuple[str, ...] = ("tokenizer", "prepare"),
    gb: float = 1.0,
    seed: int = 0,
    cores: int | None = 2,
    max_bytes: int | None = None,
    vocab_size: int = 6400,
    tokenizer: str | None = None,
    workers: int | None = None,
    tmp_dir: str | None = None,
) -> dict[str, Any]:
    """Generate the corpus, run the chosen benchmarks on it, delete everything.

    ``prepare`` needs a tokenizer: ``tokenizer`` if given, else the one the tokenizer benchmark just
    trained, else a small one trained (unmeasured) on a 4 MB sample.
    """
    if gb <= 0:
        raise ValueError(f"--gb must be positive, got {gb}")
    results: dict[str, Any] = {"benchmark": "data", "environment": environment()}
    with tempfile.TemporaryDirectory(prefix="weakwater-bench-", dir=tmp_dir) as tmp:
        work = Path(tmp)
        corpus = work / "corpus.jsonl"
        results["corpus"] = write_corpus(corpus, int(gb * 1e9), seed)
        tok_dir = Path(tokenizer) if tokenizer else None
        if "tokenizer" in which:
            results["tokenizer"] = bench_tokenizer(corpus, work, vocab_size, max_bytes, cores)
            tok_dir = tok_dir or Path(results["tokenizer"].pop("tokenizer_dir"))
        if "prepare" in which:
            if tok_dir is None:
                from weakwater.data.text import iter_texts
                from weakwater.tokenizer.train import train_tokenizer

                tok_dir = work / "tokenizer"
                train_tokenizer(iter_texts([corpus], max_bytes=4 * 2**20, seed=seed), tok_dir, vocab_size=vocab_size)
            results["prepare"] = bench_prepare(corpus, tok_dir, work, workers)
        if "tokenizer" in results:
            results["tokenizer"].pop("tokenizer_dir", None)
    return results


def data_table(result: dict[str, Any]) -> str:
    rows = [result[k] for k in ("tokenizer", "prepare") if k in result]
    cols = [
        ("benchmark", "benchmark"),
        ("input_mb", "input MB"),
        ("wall_s", "wall s"),
        ("input_mb_per_s", "MB/s"),
        ("tokens_per_s", "tokens/s"),
        ("peak_rss_tree_mb", "peak RSS MiB (tree)"),
        ("avg_busy_cores", "busy cores"),
    ]
    corpus = result["corpus"]
    head = (
        f"data: synthetic corpus {corpus['bytes'] / 1e6:.0f} MB, {corpus['docs']:,} docs "
        f"(generated in {corpus['seconds']:.0f} s)"
    )
    return f"{head}\n{format_table(rows, cols)}"
