"""Multi-process training with torch.distributed, as launched by torchrun.

torchrun starts one process per rank and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`setup_process_group`
reads them and joins the process group: NCCL when training on CUDA, gloo on
CPU. With one process (no torchrun, or ``--nproc_per_node=1``) nothing here
creates a process group or a wrapper, and every helper is a no-op.

In a world of N ranks:

- each rank trains on ``trainer.batch_size`` images, so the global batch is
  ``batch_size * N``; :class:`genlatent.data.BatchStream` gives rank r the r-th
  slice of each global batch of the shared per-epoch permutation;
- the generator and the discriminator-side objective (the discriminator and
  every regularizer module, all trained by the discriminator's optimizer) are
  wrapped in separate DistributedDataParallel modules, see :func:`replicate`;
- rank r seeds Python, NumPy, torch and the latent sampler with
  :func:`rank_seed`, so ranks draw different latent codes, while DDP copies
  rank 0's initial weights to every rank;
- rank 0 alone writes the run folder; the other ranks' random streams and
  metric sums reach its checkpoints through :func:`gather_objects`.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genlatent.config import TrainerConfig
from genlatent.errors import CheckpointError, ConfigError, GenlatentError

if TYPE_CHECKING:
    from genlatent.trainer import AdversarialTrainer, Trainer

logger = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.frozen
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes the run folder."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def launched_world() -> World:
    """The world that torchrun's environment variables describe; one process
    without them."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise ConfigError(
            f"invalid torchrun environment ({error}); launch with torchrun, which "
            "sets RANK, WORLD_SIZE and LOCAL_RANK"
        ) from None
    return World(rank, world_size, local_rank)


def current_world() -> World:
    """The world of the initialized process group, or one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), launched_world().local_rank)


def setup_process_group(settings: TrainerConfig, device: torch.device) -> World:
    """Join the process group that torchrun describes, once per process.

    Returns the single-process world, and creates nothing, unless
    ``WORLD_SIZE`` is above 1. ``device`` is the device that
    :func:`genlatent.run.select_device` resolved; on CUDA each rank is pinned
    to GPU ``LOCAL_RANK``.

    Raises:
        ConfigError: the device cannot be shared out among ranks.
    """
    world = launched_world()
    if not world.is_distributed:
        return world
    if dist.is_initialized():
        return current_world()
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"trainer.device={device} under torchrun: each rank uses GPU "
                "LOCAL_RANK; set trainer.device=cuda or auto"
            )
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {world.rank} has LOCAL_RANK={world.local_rank} but this "
                f"node has {torch.cuda.device_count()} GPUs; lower "
                "--nproc_per_node to the number of GPUs"
            )
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"trainer.device={device.type} cannot train with several processes; "
            "use trainer.device=cuda or cpu under torchrun"
        )
    dist.init_process_group(
        backend,
        timeout=datetime.timedelta(seconds=settings.process_group_timeout_s),
    )
    logger.info(
        "rank %d of %d joined the %s process group",
        world.rank,
        world.world_size,
        backend,
    )
    return world


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s random streams in a run seeded with ``seed``.

    Rank 0 keeps the run seed, so a run of one process and rank 0 of a
    larger run draw the same numbers. Other ranks get a SeedSequence hash of
    ``(seed, rank)``, a 63-bit integer.
    """
    if rank == 0:
        return seed
    entropy = [seed % 2**64, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def uses_sync_batch_norm(settings: TrainerConfig, device: torch.device) -> bool:
    """Resolve ``trainer.sync_batch_norm`` for a world of several ranks.

    Raises:
        ConfigError: it is true on a device without SyncBatchNorm kernels.
    """
    requested = settings.sync_batch_norm
    # torch.nn.SyncBatchNorm rejects CPU inputs in training mode, and torch
    # 2.14.1 has no CPU kernels for the batch_norm_stats ops it calls.
    supported = device.type == "cuda"
    if requested and not supported:
        raise ConfigError(
            f"trainer.sync_batch_norm=true needs CUDA, but the device is "
            f"{device.type}: torch.nn.SyncBatchNorm supports only GPU inputs; set "
            "trainer.sync_batch_norm=false to keep per-rank batch statistics"
        )
    if requested is None and not supported:
        logger.warning(
            "batch-norm statistics are per rank on %s: torch.nn.SyncBatchNorm "
            "supports only GPU inputs (trainer.sync_batch_norm=false)",
            device.type,
        )
        return False
    return requested is not False


class _DiscriminatorObjective(nn.Module):
    """The discriminator-side loss as one module, so one DDP wrapper covers
    every parameter that the discriminator's optimizer updates: the
    discriminator's and the regularizers' (such as the recognition head)."""

    def __init__(self, trainer: AdversarialTrainer) -> None:
        super().__init__()
        self.discriminator = trainer.discriminator
        self.regularizers = trainer.regularizers
        self.compute_loss = trainer.discriminator_loss

    def forward(
        self, real: torch.Tensor, latent: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return self.compute_loss(real, latent, fake)


def replicate(trainer: Trainer, world: World) -> None:
    """Wrap the trainer's networks in DistributedDataParallel, in place.

    The generator gets one wrapper, and the discriminator-side objective
    another, so each update's backward pass all-reduces exactly the gradients
    its optimizer applies. The generator update calls the bare
    discriminator with its parameters frozen, outside any wrapper, because
    no gradient of the discriminator is reduced there. Buffers are not
    broadcast: with synchronised batch norm every rank computes the same
    running statistics, and without it rank 0's are the ones saved and used
    for samples. The wrappers copy rank 0's parameters to every rank.

    Raises:
        ConfigError: ``trainer.sync_batch_norm=true`` on a device without
            SyncBatchNorm kernels.
    """
    if not world.is_distributed:
        return
    from genlatent.trainer import AdversarialTrainer

    if not isinstance(trainer, AdversarialTrainer):
        raise ConfigError(
            f"model={trainer.config.model} does not support multi-process "
            "training yet; run it in one process (without torchrun)"
        )
    if uses_sync_batch_norm(trainer.config.trainer, trainer.device):
        convert = nn.SyncBatchNorm.convert_sync_batchnorm
        # The converted layers keep the same parameter and buffer tensors, so
        # the optimizers built before still hold the right parameters.
        trainer.generator = convert(trainer.generator)
        trainer.discriminator = convert(trainer.discriminator)
        trainer.regularizers = convert(trainer.regularizers)
    device_ids = [world.local_rank] if trainer.device.type == "cuda" else None
    trainer.training_generator = DistributedDataParallel(
        trainer.generator, device_ids=device_ids, forward_sync_buffers=False
    )
    trainer.discriminator_objective = DistributedDataParallel(
        _DiscriminatorObjective(trainer),
        device_ids=device_ids,
        forward_sync_buffers=False,
    )


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_ranks(flag: torch.Tensor | bool) -> bool:
    """True when ``flag`` is true on every rank; ``flag`` itself in one
    process. Every rank must call it at the same point."""
    if not dist.is_initialized():
        return bool(flag)
    value = torch.as_tensor(flag, device=_collective_device()).to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value)


def reduce_any(flag: torch.Tensor) -> torch.Tensor:
    """Return a device tensor that is true where ``flag`` is true on some rank,
    without reading it on the host; ``flag`` itself in one process. Every rank
    must call it at the same point, with ``flag`` on its training device."""
    if not dist.is_initialized():
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.bool()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on some rank; ``flag`` itself in one
    process. Every rank must call it at the same point."""
    return not all_ranks(not flag)


def average_metrics(record: dict[str, float]) -> dict[str, float]:
    """Average each metric over ranks; ``record`` itself in one process.

    Every rank must pass the same keys in the same order.
    """
    if not dist.is_initialized() or not record:
        return record
    keys = list(record)
    values = torch.tensor(
        [record[key] for key in keys], dtype=torch.float64, device=_collective_device()
    )
    dist.all_reduce(values)
    means = (values / dist.get_world_size()).tolist()
    return dict(zip(keys, means, strict=True))


def gather_objects(value: T) -> list[T]:
    """Every rank's ``value``, by rank; ``[value]`` in one process."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait until every rank reaches this point; returns at once in one process."""
    if not dist.is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def on_main_rank(function: Callable[[], T]) -> T | None:
    """Run ``function`` on rank 0 only, then continue on every rank together.

    A GenlatentError that ``function`` raises on rank 0 is raised on every
    rank with the same type and message, so all ranks stop with rank 0's
    error instead of waiting for it in the next collective. Returns
    ``function``'s result on rank 0 and None elsewhere.
    """
    if not dist.is_initialized():
        return function()
    result: T | None = None
    failure: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            result = function()
        except GenlatentError as error:
            failure = [(type(error), str(error))]
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        error_type, message = failure[0]
        raise error_type(message)
    return result


def rank_checkpoint_state(
    world: World, state: dict[str, Any], saved: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Pick this rank's random streams and metric sums out of a checkpoint.

    ``saved`` is the checkpoint's ``ranks`` list, one entry per rank of the
    run that wrote it, or None for a single-process run.

    Raises:
        CheckpointError: the checkpoint comes from a run of another world size.
    """
    saved_size = 1 if saved is None else len(saved)
    if saved_size != world.world_size:
        raise CheckpointError(
            f"the checkpoint was written by a run of {saved_size} processes but "
            f"this run has {world.world_size}; resume with torchrun "
            f"--nproc_per_node (times --nnodes) giving {saved_size} processes, "
            "since each rank's random streams are restored"
        )
    if saved is None:
        return state
    return {**state, **saved[world.rank]}


def destroy_process_group() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
