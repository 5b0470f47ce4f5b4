"""Run outputs: metrics.jsonl, optional experiment trackers (all offline), and the loss/lr plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from weakwater.train.config import ConfigError


class MetricsLog:
    """Append-only JSON lines, one record per log/eval/event, flushed at once (survives kills)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: forget records a killed run wrote after the checkpoint it resumes from."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


class Tracker:
    """One of tensorboard / wandb / swanlab, imported only when asked for, never touching the network."""

    def __init__(self, kind: str, out: Path, run_name: str, config: dict[str, Any]) -> None:
        self.kind = kind
        self._run: Any = None
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._run = SummaryWriter(log_dir=str(out / "tensorboard"))
        elif kind == "wandb":
            import wandb

            self._run = wandb.init(
                project="weakwater", name=run_name, dir=str(out), mode="offline", config=config, reinit=True
            )
        elif kind == "swanlab":
            import swanlab

            self._run = swanlab.init(
                project="weakwater",
                experiment_name=run_name,
                logdir=str(out / "swanlog"),
                mode="offline",
                config=config,
            )

    def log(self, values: dict[str, float], step: int) -> None:
        if self._run is None:
            return
        if self.kind == "tensorboard":
            for key, value in values.items():
                self._run.add_scalar(key, value, step)
        else:
            self._run.log(values, step=step)

    def close(self) -> None:
        if self._run is None:
            return
        if self.kind == "tensorboard":
            self._run.close()
        else:
            self._run.finish()
        self._run = None


def open_tracker(kind: str, out: Path, config: dict[str, Any]) -> Tracker:
    """``Tracker(kind, ...)`` for the run in ``out``, or a clear error naming the package it needs."""
    try:
        return Tracker(kind, out, out.name, config)
    except ImportError as e:
        raise ConfigError(f"--tracker {kind}: {e.name} is not installed (pip install 'weakwater[tracking]')") from e


def plot_curves(records: list[dict[str, Any]], png: Path, title: str) -> Path | None:
    """Train/val loss (log scale) and the learning rate against steps, as a PNG."""
    fig = loss_figure(records, title)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def loss_figure(records: list[dict[str, Any]], title: str) -> Any:
    """The figure :func:`plot_curves` saves (None without any loss record)."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lrs = [(r["step"], r["lr"]) for r in records if "lr" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogLabels(LogFormatterSciNotation):
        """Label the ticks matplotlib would label, as plain numbers: losses live within a decade or two,
        where the default reads 8×10⁰, 3×10⁰."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogLabels())
    ax.yaxis.set_minor_formatter(PlainLogLabels(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if lrs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lrs), label="lr", color="tab:green", alpha=0.6)
        ax2.set_ylabel("learning rate")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
        ax.legend(lines, labels, loc="upper right")
    else:
        ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
