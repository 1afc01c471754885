"""Data-parallel training under torchrun: which process this is, and the process group.

`torchrun --standalone --nproc_per_node=N -m hashing train ...` starts N copies of the
command and tells each its place through environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `environment()` reads them without importing torch.
With no torchrun, or WORLD_SIZE=1, nothing here starts a process group and training is the
plain one-process loop.

- Backend: NCCL when training on CUDA (each rank on cuda:LOCAL_RANK), Gloo on CPU.
- Timeout: every collective gives up after HASHING_DIST_TIMEOUT seconds (default 300), so
  a rank that stalls makes the others fail, and torchrun then stops the whole job, instead
  of a job that waits forever. A rank that dies is noticed at once: its sockets close and
  torchrun's agent stops the other ranks.
- `Group.gather` is differentiable (torch's functional collectives): a contrastive loss on
  it sees every rank's codes as negatives, and its gradient flows back to the rank that made
  each code (backward sums the gradients of all ranks: a reduce-scatter). DDP then averages the weight gradients over ranks, so the step is that of one
  process on the whole global batch (SimCLR's practice; Chen et al. 2020, section 2.2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TypeVar

from hashing.core.errors import HashingError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
TIMEOUT_ENV = "HASHING_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
# Rank 0 may decode a large image folder into the cache while the others wait for it: that
# one wait gets a day, not the collectives' timeout.
LOAD_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    def gather(self, x: "torch.Tensor") -> "torch.Tensor":
        """(B, ...) on every rank -> (world * B, ...), rank r's rows at r * B; differentiable.
        Every rank must pass the same B."""
        if not self.distributed:
            return x
        import torch.distributed as dist
        # What torch.distributed.nn.functional.all_gather's deprecation points to; its backward
        # reduce-scatters (sums) the gradients, on Gloo as on NCCL.
        from torch.distributed._functional_collectives import all_gather_single_autograd

        return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)

    def mean(self, x: "torch.Tensor") -> "torch.Tensor":
        """The average of `x` over ranks (no gradient): losses for the history, the same on every rank."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        x = x.detach().clone()
        dist.all_reduce(x)
        return x / self.world

    def main_first(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0, then on the other ranks (loading data that rank 0 may cache)."""
        if not self.distributed:
            return work()
        import torch.distributed as dist

        if not self.main:
            dist.barrier(group=_load_group())
        try:
            return work()
        finally:
            if self.main:
                dist.barrier(group=_load_group())


def environment() -> Group:
    """The rank, world size and local rank torchrun set (rank 0 of 1 when it did not)."""
    def number(name: str, default: int) -> int:
        text = os.environ.get(name)
        if text is None or text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise HashingError(f"environment variable {name}={text!r} is not an integer") from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local = number("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise HashingError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a process "
                           "group: launch with torchrun, or without these variables")
    return Group(rank, world, local)


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise HashingError(f"{TIMEOUT_ENV}={text!r}: give a positive number of seconds")
    return seconds


def start(device_type: str) -> Group:
    """Join the process group torchrun describes (no-op for one process); NCCL on cuda, else Gloo."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    group = environment()
    if not group.distributed or dist.is_initialized():
        return group
    timeout = timedelta(seconds=timeout_seconds())
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise HashingError(f"WORLD_SIZE={group.world} but {' and '.join(missing)} not set: launch with "
                           "torchrun (it sets them), or unset WORLD_SIZE for one process")
    try:
        if device_type == "cuda":
            if group.local_rank >= torch.cuda.device_count():
                raise HashingError(f"LOCAL_RANK {group.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                                   "use --nproc_per_node at most the number of GPUs")
            torch.cuda.set_device(group.local_rank)
            dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", group.local_rank))
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except (RuntimeError, ValueError) as e:          # the rendezvous failed or timed out
        raise HashingError(f"rank {group.rank} of {group.world} could not join the process group at "
                           f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: "
                           f"{str(e).splitlines()[0][:200]}") from None
    return group


def stop() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    global _LOAD_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _LOAD_GROUP = None


_LOAD_GROUP = None


def _load_group():
    """A Gloo group over all ranks with the long timeout, for the data-loading wait only."""
    from datetime import timedelta

    import torch.distributed as dist

    global _LOAD_GROUP
    if _LOAD_GROUP is None:
        _LOAD_GROUP = dist.new_group(backend="gloo", timeout=timedelta(seconds=LOAD_TIMEOUT_S))
    return _LOAD_GROUP


def is_collective_error(error: BaseException) -> bool:
    """Whether `error` is a failed collective: a peer that died, or the timeout."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed",
                                                                      "Timed out", "timed out"))
