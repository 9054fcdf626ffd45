"""torch.distributed plumbing of the sharded benchmark: this process's rank from torchrun's environment and a barrier.

Only barriers are exchanged (every rank writes its own files, rank 0 merges from disk), so a gloo process group is
enough: it works for CPU and GPU ranks alike and on any number of nodes (``MASTER_ADDR`` / ``MASTER_PORT`` from
torchrun).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from dynamicrafter.errors import UserError

DIST_TIMEOUT = timedelta(hours=24)  # a barrier may wait for the slowest rank's whole shard of generation


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun launch (RANK / WORLD_SIZE / LOCAL_RANK; 0 / 1 / 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    barrier: Callable[[], Any] | None = None

    def sync(self) -> None:
        """Wait for every rank (nothing to wait for without a barrier)."""
        if self.barrier is not None:
            self.barrier()


def env_int(name: str, default: int) -> int:
    """An integer environment variable (``default`` when unset or blank); anything else is a one-line error."""
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got '{value}'") from None


@contextlib.contextmanager
def distributed_context() -> Iterator[DistributedContext]:
    """The rank context from the environment; with ``WORLD_SIZE > 1`` a gloo process group provides the barrier.

    gloo's timeout is set long enough for the slowest rank's shard (NCCL would bring nothing: only barriers are
    exchanged).
    """
    rank, world_size = env_int("RANK", 0), env_int("WORLD_SIZE", 1)
    local_rank = env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        yield DistributedContext()
        return
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=DIST_TIMEOUT)
    try:
        yield DistributedContext(rank, world_size, local_rank, dist.barrier)
    finally:
        dist.destroy_process_group()


__all__ = ["DIST_TIMEOUT", "DistributedContext", "distributed_context", "env_int"]
