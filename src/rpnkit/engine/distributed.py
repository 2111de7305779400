"""Where this process stands in a torchrun job, read once from its environment."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..modeling.proposal_model import ProposalModel
from .device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and writes the run folder."""
        return self.rank == 0

    def device(self, default: torch.device | str) -> torch.device:
        """Under torchrun on GPUs each process takes its local GPU; otherwise ``default``."""
        if self.world > 1 and torch.cuda.is_available():
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            return device
        return resolve_device(default)


def world_size() -> int:
    """How many processes torchrun started (1 without it), without starting a group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_context() -> DistributedContext:
    """torchrun's rank, world size and local rank (initialising the process group on first
    use); a single process without it."""
    world = world_size()
    if world <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistributedContext(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def main_process() -> bool:
    """Whether this process reports (rank 0, or no torchrun), without starting a group."""
    return int(os.environ.get("RANK", "0")) == 0


def buffers_drift(model: nn.Module) -> bool:
    """Whether ``model``'s buffers may differ between processes during training, so that
    DistributedDataParallel must broadcast them from rank 0 before every forward. They do not
    when every buffer is a known constant: frozen batch norms' statistics, the model's pixel
    mean and std, and SyncBatchNorm's statistics (already the whole batch's). Any other
    buffer (a learning batch norm's running statistics, a custom module's) may drift. For
    constants the broadcast is a collective, a flatten and a copy back into every buffer on
    every rank, each step, for nothing."""
    for module in model.modules():
        for name, _ in module.named_buffers(recurse=False):
            steady = isinstance(module, (FrozenBatchNorm2d, nn.SyncBatchNorm)) or (
                isinstance(module, ProposalModel) and name in ("pixel_mean", "pixel_std")
            )
            if not steady:
                return True
    return False


def ddp_buffer_options(model: nn.Module) -> dict:
    """DistributedDataParallel's buffer synchronisation for ``model``: before every forward
    only where ``buffers_drift``. PyTorch 2.13 on names it ``forward_sync_buffers`` (and
    still syncs buffers at construction); before, ``broadcast_buffers=False`` also skips that
    first sync, which the constants do not need: every process builds them alike (the same
    seed, the same weights file or checkpoint)."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    name = "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
    return {name: buffers_drift(model)}
