"""One rank of a test run under torchrun, through genlatent's real run path.

Usage: ``torchrun ... tests/distributed_worker.py MODE OUT_DIR [KEY=VALUE ...]``
with MODE ``run``, ``resume``, ``fail`` or ``signal``. The run folder is
``OUT_DIR/run``. Each rank writes ``OUT_DIR/<MODE>_rank<R>.pt`` with its
parameters before and after the DistributedDataParallel setup, the latent
input of its first step, its final networks and optimizer states, and the
step it stopped at, so a test can compare ranks. ``fail`` makes rank 1 raise
in its second step; ``signal`` makes rank 1 send itself SIGTERM in its second
step.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn

import genlatent.run
from genlatent.hookspecs import Register, hookimpl
from genlatent.nn import Architecture, flatten, unflatten
from genlatent.plugins import PluginHost, load_plugins
from genlatent.regularizers import GeneratedBatch, Regularizer, RegularizerTerm
from genlatent.trainer import AdversarialTrainer

EXPERIMENT = "infogan-fashion-mnist"


@attrs.define
class RecordConfig:
    fail_on_rank: int = -1
    fail_at_step: int = 0
    signal_on_rank: int = -1
    signal_at_step: int = 0


class RecordLatents(Regularizer):
    """Keeps the latent input of the first step; raises, or sends its own
    process SIGTERM, on one rank and step when configured to."""

    name = "record"
    config_class = RecordConfig

    def __init__(self, config: RecordConfig, context: Any) -> None:
        super().__init__(config, context)
        self.first_latent: torch.Tensor | None = None
        self.calls = 0

    def discriminator_term(self, batch: GeneratedBatch) -> RegularizerTerm | None:
        self.calls += 1
        if self.first_latent is None:
            self.first_latent = batch.latent_input.detach().clone()
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == self.config.fail_on_rank and self.calls == self.config.fail_at_step:
            raise RuntimeError(f"injected failure on rank {rank} at step {self.calls}")
        if (
            rank == self.config.signal_on_rank
            and self.calls == self.config.signal_at_step
        ):
            os.kill(os.getpid(), signal.SIGTERM)
        return None


class LinearNetworks(Architecture):
    """Small fully connected networks without batch norm, so that a step's
    result does not depend on how the batch is split over ranks."""

    name = "test-linear"
    image_shape = (1, 28, 28)
    output_range = (0.0, 1.0)
    feature_dim = 32

    def build_generator(self, latent_dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(latent_dim, 64),
            nn.ReLU(),
            nn.Linear(64, 28 * 28),
            nn.Sigmoid(),
            unflatten(1, 28, 28),
        )

    def build_trunk(self) -> nn.Module:
        return nn.Sequential(flatten(), nn.Linear(28 * 28, 32), nn.LeakyReLU(0.1))

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Linear(32, num_outputs)


class WorkerPlugin:
    @hookimpl
    def register_regularizers(self, register: Register) -> None:
        register(RecordLatents)

    @hookimpl
    def register_architectures(self, register: Register) -> None:
        register(LinearNetworks())


def worker_plugins() -> PluginHost:
    return load_plugins(extra=[WorkerPlugin()])


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def all_parameters(trainer: AdversarialTrainer) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "generator": parameters(trainer.generator),
        "discriminator": parameters(trainer.discriminator),
        "regularizers": parameters(trainer.regularizers),
    }


class ReplicateSpy:
    """Wraps genlatent.run.replicate to keep the trainer it sets up and its
    parameters just before and after the DistributedDataParallel setup."""

    def __init__(self) -> None:
        self.original = genlatent.run.replicate
        self.trainer: AdversarialTrainer | None = None
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def __call__(self, trainer: AdversarialTrainer, world: Any) -> None:
        self.trainer = trainer
        self.before = all_parameters(trainer)
        self.original(trainer, world)
        self.after = all_parameters(trainer)


def experiment_config(plugins: PluginHost) -> Any:
    config = plugins.experiment(EXPERIMENT)
    config.regularizers["record"] = RecordConfig()
    return config


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    overrides = sys.argv[3:]
    plugins = worker_plugins()
    spy = ReplicateSpy()
    genlatent.run.replicate = spy  # type: ignore[assignment]
    run_dir = out / "run"
    if mode == "resume":
        result = genlatent.run.resume_run(run_dir, overrides, plugins=plugins)
    else:
        if mode == "fail":
            overrides = [*overrides, "record.fail_on_rank=1", "record.fail_at_step=2"]
        if mode == "signal":
            overrides = [
                *overrides,
                "record.signal_on_rank=1",
                "record.signal_at_step=2",
            ]
        config = experiment_config(plugins)
        result = genlatent.run.run_experiment(
            config, overrides, out=run_dir, plugins=plugins
        )
    trainer = spy.trainer
    assert trainer is not None
    record = trainer.regularizers["record"]
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(
        {
            "before_setup": spy.before,
            "after_setup": spy.after,
            "first_latent": record.first_latent,
            "final": all_parameters(trainer),
            "discriminator_optimizer": trainer.discriminator_optimizer.state_dict(),
            "generator_optimizer": trainer.generator_optimizer.state_dict(),
            "latent_generator": trainer.latent_generator.get_state(),
            "steps": result.steps,
            "interrupted": result.interrupted,
        },
        out / f"{mode}_rank{rank}.pt",
    )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
