"""torchrun / DistributedDataParallel plumbing: NCCL on GPUs, gloo on CPUs; rank 0 logs and saves."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group that torchrun describes in the environment (a no-op otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(rank=int(os.environ["RANK"]), world_size=world_size,
                  local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def device_for(env: DistEnv, device: torch.device) -> torch.device:
    if device.type == "cuda" and env.enabled:
        return torch.device("cuda", env.local_rank)
    return device


def gather_with_grad(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """All ranks' rows, in rank order; gradients flow back to the rank that owns each row."""
    if not env.enabled:
        return tensor
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(tensor), dim=0)


def gather_objects(obj, env: DistEnv) -> list:
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """Rank 0's decision (e.g. early stop), shared with every rank."""
    if not env.enabled:
        return flag
    holder = [flag]
    dist.broadcast_object_list(holder, src=0)
    return bool(holder[0])


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_tensor(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """All ranks' rows without gradient (labels, indices); ranks may hold different counts."""
    if not env.enabled:
        return tensor
    parts = gather_objects(tensor.cpu(), env)
    return torch.cat(parts).to(tensor.device)


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any (a stop request, say)."""
    if not env.enabled:
        return flag
    holder = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(holder, op=dist.ReduceOp.MAX)
    return bool(holder.item())


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
