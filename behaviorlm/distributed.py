"""What a pipeline process needs to know when it is one of several: its rank, and how to split and gather work.

    single process (launcher=local):   LOCAL — rank 0 of 1; every helper below is a no-op
    torchrun / accelerate workers:     Dist.from_accelerator(Accelerator()) in `behaviorlm.worker`

The engines do the heavy lifting: `accelerate.Accelerator` sets up the process group (gloo on CPU, NCCL on GPU)
and wraps the model for DDP, FSDP or DeepSpeed as its launch config says. This module only adds the two things
the pipeline's own loops need — a strided shard of a sample list padded to equal length (every rank must run the
same number of forwards, or a collective inside FSDP/ZeRO-3 would wait forever) and the inverse gather.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    accelerator: Optional[Any] = None  # accelerate.Accelerator in a multi-process run

    @classmethod
    def from_accelerator(cls, accelerator) -> "Dist":
        return cls(accelerator.process_index, accelerator.num_processes, accelerator)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def engine(self) -> str:
        """What wraps the model: NO (one process), MULTI_CPU / MULTI_GPU (DDP), FSDP or DEEPSPEED."""
        return str(self.accelerator.distributed_type).split(".")[-1] if self.enabled else "NO"

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: parameters or optimizer states live in pieces across ranks."""
        return self.engine in ("FSDP", "DEEPSPEED")

    def shard_indices(self, n: int) -> list[int]:
        """Rank r takes items r, r + world, ...; short shards repeat the last item so all have equal length."""
        per_rank = -(-n // self.world) if n else 0
        return [min(self.rank + self.world * j, n - 1) for j in range(per_rank)]

    def shard(self, items: Sequence) -> list:
        return [items[i] for i in self.shard_indices(len(items))] if self.enabled else list(items)

    def gather(self, local: Sequence, n: int) -> list:
        """Inverse of `shard`: every rank gets all n results in the original order."""
        if not self.enabled:
            return list(local)
        import torch.distributed as torch_dist

        shards: list[Any] = [None] * self.world
        torch_dist.all_gather_object(shards, list(local))
        return [shards[i % self.world][i // self.world] for i in range(n)]

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        if not self.enabled:
            return local
        rows = self.gather(list(local), n)
        return np.stack(rows) if rows else local[:0]

    def sum(self, value: float) -> float:
        """Sum of a scalar over ranks (loss and token totals)."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as torch_dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        torch_dist.all_reduce(tensor)
        return float(tensor.item())

    def agree(self, value: Any) -> Any:
        """Rank 0's value on every rank (so a cache hit on one rank cannot diverge from a miss on another)."""
        if not self.enabled:
            return value
        import torch.distributed as torch_dist

        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            self.accelerator.wait_for_everyone()

    def no_sync(self, model, skip: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulation group."""
        if self.enabled and skip:
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()


LOCAL = Dist()
