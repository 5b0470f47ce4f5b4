"""A deterministic, resumable, rank-sharded batch iterator.

Why not ``torch.utils.data.DataLoader`` + ``DistributedSampler``: resuming mid-epoch needs the exact batch
position, and we want a 2-process run with batch b to see exactly what a 1-process run with batch 2b sees
(so the DDP loss trajectory can be tested against a single process). Both are simple to guarantee here:
the order depends only on ``(seed, epoch)``, and each global batch is split into contiguous per-rank slices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class BatchLoader:
    """Infinite iterator of collated batches over epochs.

    Global batch ``j`` of an epoch holds permutation entries ``[j*G, (j+1)*G)`` with ``G = batch_size *
    world_size``; rank ``r`` takes entries ``[r*batch_size, (r+1)*batch_size)`` of it. An incomplete final
    global batch is dropped, so every rank does the same number of steps per epoch.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        collate: Callable[[list], Any],
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate = collate
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = len(dataset) // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"dataset has {len(dataset)} items, fewer than one global batch of {self.global_batch} "
                f"(batch_size {batch_size} x world_size {world_size}): use more data or a smaller batch"
            )
        self.epoch = 0
        self.position = 0  # batches already yielded in the current epoch
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            n = len(self.dataset)
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(n) if self.shuffle else np.arange(n)
        return self._order

    def indices(self) -> list[int]:
        """Dataset indices of this rank's next batch (without advancing)."""
        start = self.position * self.global_batch + self.rank * self.batch_size
        return [int(i) for i in self._epoch_order()[start : start + self.batch_size]]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        batch = self.collate([self.dataset[i] for i in self.indices()])
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at the next batch not yet seen when ``state`` was saved.

        The order depends only on ``(seed, epoch)``, so any process count with the same global batch
        continues exactly. With another global batch the position is converted through the number of
        samples already taken (rounded down: at most one new batch's worth is seen again)."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        saved_global = int(state.get("global_batch", self.global_batch))
        self.position = int(state["position"]) * saved_global // self.global_batch
        self._order = None
