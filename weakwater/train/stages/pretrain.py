"""Pretraining: next-token prediction on packed fixed-length windows of token shards."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from weakwater.train.config import TrainConfig
from weakwater.train.losses import token_nll
from weakwater.train.stage import Metrics


class PretrainStage:
    """Next-token negative log-likelihood over every position of ``seq_len + 1``-token windows."""

    name = "pretrain"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        from weakwater.data.pretrain import PackedWindows, read_meta

        cfg = self.cfg
        if not Path(cfg.data).is_dir():
            raise FileNotFoundError(f"--data {cfg.data}: no such directory (make one with `weakwater prepare`)")
        train = PackedWindows(cfg.data, split="train", seq_len=cfg.seq_len)
        val_dir = cfg.val_data or cfg.data
        val_files = read_meta(val_dir)["splits"].get("val", {}).get("files")
        val = PackedWindows(val_dir, split="val", seq_len=cfg.seq_len) if val_files else None
        return train, val

    def collate(self, samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        from weakwater.data.pretrain import collate_windows

        return collate_windows(samples)

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        total, count = token_nll(model(batch["input_ids"]), batch["labels"])
        return total, count, {}
