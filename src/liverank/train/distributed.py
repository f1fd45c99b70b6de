"""Data-parallel training across processes: ``torchrun`` + DistributedDataParallel.

One process (rank) per core or GPU; each reads only its own users' rows
(:mod:`liverank.data.partition`) and trains on an equal share of every global batch, so one
step of ``world`` ranks with ``batch_size / world`` rows each averages the same gradient as one
process would over the ``batch_size`` rows (exactly for per-row losses; see
``docs/scaling.md`` for the in-batch ones).

Two kinds of parameters, synchronised two ways:

- **dense** weights (towers, experts, attention) go through :class:`DistributedDataParallel`,
  which all-reduces their gradients bucket by bucket while the backward pass runs;
- **sparse** embedding tables (``Ranker.parameter_groups()[0]``) are left out of DDP and
  synchronised by :func:`sync_sparse_grads`: every rank all-gathers the rows it touched and
  their gradients, and each rank rebuilds the same averaged sparse gradient. DDP's own sparse
  path is avoided on purpose: on gloo it fails when one rank's batch touches only a table's
  padding row (an empty sparse gradient, pytorch#87497) and when a table is unused on a step
  (pytorch#80496); NCCL cannot reduce sparse tensors at all. All-gather of dense index / value
  tensors works on both backends, and an empty or missing gradient is just zero rows.

The optimisers stay SparseAdam + AdamW (:mod:`liverank.train.optim`) on every rank; with equal
averaged gradients every rank applies the same update, so the replicas stay identical.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from liverank.data.batch_order import shuffled_order
from liverank.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group (``world`` ranks, ``rank`` of them is this one)."""

    rank: int
    world: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> DistContext | None:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` / ``MASTER_PORT``); ``None`` when not launched by it.

    The backend is gloo on CPU and NCCL on CUDA (one GPU per local rank).
    """
    if not launched():
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), backend)
    log.info("rank %d of %d (%s)", ctx.rank, ctx.world, backend)
    return ctx


def local_world() -> int:
    """Ranks on this machine (``LOCAL_WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def local_device(device: torch.device) -> torch.device:
    """On CUDA, this rank's GPU (``LOCAL_RANK``); the CPU stays the CPU."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def per_rank_batch(batch_size: int, world: int) -> int:
    """Rows per rank of a global batch: ``train.batch_size`` must divide evenly."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch and must be a multiple of the "
            f"{world} ranks"
        )
    return batch_size // world


def rank_order(
    n_local: int, n_target: int, seed: int, rank: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """``[n_target]`` row order of one rank for one epoch: a permutation of its ``n_local``
    rows drawn from ``(seed, rank)``, continued by a second draw when another rank has more
    rows (so every rank takes the same number of steps, as a DistributedSampler pads). With
    ``groups`` (``[n_local]`` keys) runs of equal keys stay together (``batch_order``)."""
    if n_local < 1:
        raise ValueError(f"rank {rank} has no training rows and cannot take part (too few users?)")
    rng = np.random.default_rng([seed, rank])
    parts, have = [], 0
    while have < n_target:
        p = shuffled_order(n_local, rng, groups)[: n_target - have]
        parts.append(p)
        have += len(p)
    return np.concatenate(parts)


def all_max(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_ints(value: int) -> list[int]:
    """Every rank's ``value``, in rank order."""
    t = torch.tensor([value], dtype=torch.int64)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def all_mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def sparse_param_names(model: nn.Module, sparse: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in sparse}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def wrap_ddp(model: nn.Module, sparse: list[nn.Parameter], device: torch.device) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` for its dense parameters; the ``sparse``
    tables are excluded (synchronised by :func:`sync_sparse_grads`) and set to rank 0's values
    here (DDP broadcasts only what it manages)."""
    DDP = nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, sparse_param_names(model, sparse))
    with torch.no_grad():
        for p in sparse:
            dist.broadcast(p.data, src=0)
    # find_unused_parameters: a module may leave parameters out of a step (an optional input
    # absent from the batch, a switched-off module); DDP then marks them ready itself.
    kwargs: dict[str, Any] = {"find_unused_parameters": True}
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index]
    return DDP(model, **kwargs)


def sync_sparse_grads(params: list[nn.Parameter]) -> None:
    """Average the sparse gradients of ``params`` over all ranks, in place.

    Three collectives for all tables together: the number of touched rows per table and rank,
    then every rank's row indices and gradient values (padded to the longest rank). A table a
    rank did not touch (gradient ``None`` or with no rows, e.g. a batch of padding ids only)
    contributes nothing. Afterwards every rank holds the same coalesced gradient,
    ``sum over ranks / world``, as DDP's mean of dense gradients.
    """
    world = dist.get_world_size()
    if not params:
        return
    device = params[0].device
    grads: list[torch.Tensor | None] = []
    for p in params:
        g = p.grad
        if g is not None and not g.is_sparse:
            raise ValueError(f"sync_sparse_grads got a dense gradient of shape {tuple(g.shape)}")
        grads.append(None if g is None else g.coalesce())
    nnz = torch.tensor(
        [0 if g is None else g._nnz() for g in grads], dtype=torch.int64, device=device
    )
    dims = [int(np.prod(p.shape[1:])) for p in params]
    all_nnz = [torch.empty_like(nnz) for _ in range(world)]
    dist.all_gather(all_nnz, nnz)
    counts = torch.stack(all_nnz).cpu()  # [W, T] touched rows per rank and table
    dims_t = torch.tensor(dims, dtype=torch.int64)
    max_rows = int(counts.sum(1).max())
    max_vals = int((counts * dims_t).sum(1).max())
    if max_rows == 0:
        for p in params:
            p.grad = None
        return
    dtype = params[0].dtype
    idx = torch.zeros(max_rows, dtype=torch.int64, device=device)  # [max rows]
    val = torch.zeros(max_vals, dtype=dtype, device=device)  # [max values]
    r = v = 0
    for g, d in zip(grads, dims, strict=True):
        if g is None or g._nnz() == 0:
            continue
        k = g._nnz()
        idx[r : r + k] = g.indices()[0]
        val[v : v + k * d] = g.values().reshape(-1).to(dtype)
        r, v = r + k, v + k * d
    all_idx = [torch.empty_like(idx) for _ in range(world)]
    all_val = [torch.empty_like(val) for _ in range(world)]
    dist.all_gather(all_idx, idx)
    dist.all_gather(all_val, val)
    for t, p in enumerate(params):
        pieces_i, pieces_v = [], []
        for w in range(world):
            row0 = int(counts[w, :t].sum())
            val0 = int((counts[w, :t] * dims_t[:t]).sum())
            k = int(counts[w, t])
            if k == 0:
                continue
            pieces_i.append(all_idx[w][row0 : row0 + k])
            pieces_v.append(all_val[w][val0 : val0 + k * dims[t]].view(k, *p.shape[1:]))
        if not pieces_i:
            p.grad = None
            continue
        rows = torch.cat(pieces_i).unsqueeze(0)  # [1, nnz]
        values = torch.cat(pieces_v) / world  # [nnz, D]
        p.grad = torch.sparse_coo_tensor(rows, values, p.shape, check_invariants=False).coalesce()


def broadcast_state(model: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``model`` set to rank ``src``'s (no shared disk needed)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (``None`` elsewhere)."""
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
