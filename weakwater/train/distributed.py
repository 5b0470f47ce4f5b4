"""torchrun integration on PyTorch's own stack: process group, ranks, collectives, model wrapping (DDP/FSDP2),
clean exit."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a plain run is rank 0 of 1)."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo otherwise) unless already joined."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **kwargs)


def shutdown(clean: bool = True) -> None:
    """Leave the group. After a normal end: barrier first, so no rank exits while another still needs
    it. After an error: no barrier (the other ranks may be stuck in a collective and would never
    reach it; torchrun then tears them down)."""
    if dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op when not distributed); stays on the device, no host sync."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_sums(
    totals: torch.Tensor, metrics: dict[str, torch.Tensor], n: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum ``[loss, count]`` and the metric sums over ranks in one collective; plain metrics divided by
    ``n`` (micro-batches x ranks), ``(sum, count)`` metrics by their summed count."""
    keys = sorted(metrics)
    packed = torch.cat([totals, *[metrics[k].reshape(-1) for k in keys]])
    all_reduce_sum(packed)
    out, at = {}, 2
    for k in keys:
        if metrics[k].numel() == 2:
            out[k] = packed[at] / packed[at + 1].clamp(min=1e-12)
        else:
            out[k] = packed[at] / n
        at += metrics[k].numel()
    return packed[:2], out


def wrap_model(
    model: torch.nn.Module, info: DistInfo, device: torch.device, fsdp: bool, compile: bool
) -> torch.nn.Module:
    """FSDP2 (in place: every block, then the whole) or DDP around ``model``, then optional torch.compile;
    returns what the forward pass calls (``model`` itself stays the unwrapped module that is saved)."""
    wrapped = model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    elif info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_main() -> bool:
    """True on the process that speaks for the run: rank 0 of the group, or a plain single process."""
    return not dist.is_initialized() or dist.get_rank() == 0
