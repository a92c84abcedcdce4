"""The generic adversarial trainer.

One training step draws a latent batch, generates images once, then updates

1. the discriminator (and every regularizer module, such as a recognition
   head) on real images and on the generated images detached from the
   generator, minimising the adversarial discriminator loss plus every
   regularizer's discriminator-side term;
2. the generator, through the just-updated discriminator, minimising the
   adversarial generator loss plus every regularizer's generator-side term.

The trainer has no code for any particular regularizer. InfoGAN's
mutual-information term and others arrive through plugins.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from genlatent.config import ExperimentConfig
from genlatent.data import scale_images
from genlatent.distributed import all_ranks
from genlatent.errors import CheckpointError, DivergenceError
from genlatent.latent import LatentSpec
from genlatent.losses import AdversarialLoss
from genlatent.nn import Architecture
from genlatent.regularizers import GeneratedBatch, Regularizer, RegularizerTerm

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Stop parameter gradients of ``modules`` while gradients still flow
    through them to earlier layers. Saves the weight-gradient work of the
    discriminator in the generator update."""
    parameters = [p for module in modules for p in module.parameters()]
    states = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, state in zip(parameters, states, strict=True):
            parameter.requires_grad_(state)


def _sum_terms(
    base: torch.Tensor,
    terms: Sequence[tuple[str, RegularizerTerm | None]],
    metrics: dict[str, torch.Tensor | float],
    side: str,
) -> torch.Tensor:
    total = base
    for name, term in terms:
        if term is None:
            continue
        total = total + term.loss
        metrics[f"{side}_loss/{name}"] = term.loss.detach()
        metrics.update(term.metrics)
    return total


class AdversarialTrainer:
    """Networks, optimizers and the update rule of one adversarial run.

    Args:
        config: the resolved experiment.
        architecture: builds the generator and the discriminator.
        latent_spec: the generator's input.
        loss: the adversarial loss.
        regularizers: terms added to the objectives; their parameters train
            with the discriminator's optimizer.
        device: where the networks live.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        architecture: Architecture,
        latent_spec: LatentSpec,
        loss: AdversarialLoss,
        regularizers: Sequence[Regularizer],
        device: torch.device,
    ) -> None:
        self.config = config
        self.architecture = architecture
        self.latent_spec = latent_spec
        self.loss = loss
        self.device = device
        self.generator = architecture.build_generator(latent_spec.input_dim).to(device)
        self.discriminator = architecture.build_discriminator().to(device)
        # A ModuleDict moves, saves and restores the regularizers' modules; the
        # typed list is what the step iterates.
        self.regularizers = nn.ModuleDict(
            {regularizer.name: regularizer for regularizer in regularizers}
        ).to(device)
        self._regularizers: list[Regularizer] = list(regularizers)

        optim = config.optim
        self.discriminator_optimizer = torch.optim.Adam(
            [*self.discriminator.parameters(), *self.regularizers.parameters()],
            lr=optim.discriminator.lr,
            betas=(optim.discriminator.beta1, optim.discriminator.beta2),
        )
        self.generator_optimizer = torch.optim.Adam(
            self.generator.parameters(),
            lr=optim.generator.lr,
            betas=(optim.generator.beta1, optim.generator.beta2),
        )
        # What the training step calls: the networks themselves in one
        # process, DistributedDataParallel wrappers under torchrun
        # (genlatent.distributed.replicate).
        self.training_generator: nn.Module = self.generator
        self.discriminator_objective: Callable[
            [torch.Tensor, torch.Tensor, torch.Tensor],
            tuple[torch.Tensor, dict[str, torch.Tensor | float]],
        ] = self.discriminator_loss
        self.latent_generator = torch.Generator(device=device)
        self.latent_generator.manual_seed(config.trainer.seed)
        self.step = 0
        self.skipped_steps = 0

    def sample_latent(self, batch_size: int) -> torch.Tensor:
        """Draw a ``(batch_size, latent_dim)`` input from the training sampler."""
        return self.latent_spec.sample(
            batch_size, generator=self.latent_generator, device=self.device
        )

    def train_step(self, real_images: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """Run one discriminator and one generator update.

        Args:
            real_images: ``(batch, *image_shape)`` uint8 images on the device.

        Returns:
            Detached metrics of this step: ``d_loss``, ``g_loss`` and every
            regularizer's metrics.

        Raises:
            DivergenceError: a loss is not finite and ``trainer.on_divergence``
                is ``stop``. No update of that step reaches the weights.
        """
        real = scale_images(real_images, self.architecture.output_range, torch.float32)
        latent = self.sample_latent(real.shape[0])
        # One generator forward serves both updates: the discriminator update
        # uses it detached, and the generator parameters do not change before
        # the generator update backpropagates through it.
        fake = self.training_generator(latent)
        metrics: dict[str, torch.Tensor | float] = {}
        step = self.step + 1
        if self.discriminator_update(step, real, latent, fake, metrics):
            self.generator_update(step, latent, fake, metrics)
        self.step = step
        return metrics

    def discriminator_update(
        self,
        step: int,
        real: torch.Tensor,
        latent: torch.Tensor,
        fake: torch.Tensor,
        metrics: dict[str, torch.Tensor | float],
    ) -> bool:
        """Update the discriminator and regularizer modules; False if skipped."""
        total, terms = self.discriminator_objective(real, latent, fake)
        metrics.update(terms)
        if not self._check_finite(step, "discriminator", total, metrics):
            return False
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.discriminator_optimizer.step()
        return True

    def discriminator_loss(
        self, real: torch.Tensor, latent: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Return the discriminator-side objective and its detached terms."""
        metrics: dict[str, torch.Tensor | float] = {}
        real_logits, _ = self.discriminator(real)
        fake_logits, fake_features = self.discriminator(fake.detach())
        d_loss = self.loss.discriminator_loss(real_logits, fake_logits)
        batch = GeneratedBatch(latent, fake.detach(), fake_features)
        terms = [
            (regularizer.name, regularizer.discriminator_term(batch))
            for regularizer in self._regularizers
        ]
        total = _sum_terms(d_loss, terms, metrics, "d")
        metrics["d_loss"] = d_loss.detach()
        return total, metrics

    def generator_update(
        self,
        step: int,
        latent: torch.Tensor,
        fake: torch.Tensor,
        metrics: dict[str, torch.Tensor | float],
    ) -> bool:
        """Update the generator through the current discriminator; False if
        skipped."""
        with frozen(self.discriminator, self.regularizers):
            logits, features = self.discriminator(fake)
            g_loss = self.loss.generator_loss(logits)
            batch = GeneratedBatch(latent, fake, features)
            terms = [
                (regularizer.name, regularizer.generator_term(batch))
                for regularizer in self._regularizers
            ]
            total = _sum_terms(g_loss, terms, metrics, "g")
            metrics["g_loss"] = g_loss.detach()
            if not self._check_finite(step, "generator", total, metrics):
                return False
            self.generator_optimizer.zero_grad(set_to_none=True)
            total.backward()
        self.generator_optimizer.step()
        return True

    def _check_finite(
        self,
        step: int,
        side: str,
        total: torch.Tensor,
        metrics: dict[str, torch.Tensor | float],
    ) -> bool:
        # One host synchronisation per update: the price of never letting a
        # non-finite loss reach the weights. Under torchrun the ranks agree
        # first, so that all of them skip or stop together.
        if all_ranks(torch.isfinite(total)):
            return True
        parts = ", ".join(
            f"{key}={float(value):.6g}"
            for key, value in metrics.items()
            if "loss" in key
        )
        value = float(total.detach())
        if math.isfinite(value):
            # Only another rank's loss is not finite; that rank reports it.
            message = (
                f"step {step}: the {side} loss is not finite on another rank; "
                "the update was not applied"
            )
        else:
            message = (
                f"step {step}: the {side} loss is {value} ({parts}); "
                "the update was not applied"
            )
        if self.config.trainer.on_divergence == "stop":
            raise DivergenceError(
                f"{message}. Training stopped; the last checkpoint is kept. Lower "
                "the learning rates, or set trainer.on_divergence=skip to skip "
                "such steps."
            )
        logger.warning("%s (trainer.on_divergence=skip)", message)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        self.generator_optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        return False

    @torch.no_grad()
    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        """Generate images in eval mode (batch-norm running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(latent.to(self.device))
        finally:
            self.generator.train(was_training)

    # -- checkpoint state ---------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly, as tensors and
        plain Python values."""
        numpy_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
        python_state = random.getstate()
        rng: dict[str, Any] = {
            "python": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy": {
                "key": numpy_state[0],
                "state": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "position": int(numpy_state[2]),
                "has_gauss": int(numpy_state[3]),
                "cached_gaussian": float(numpy_state[4]),
            },
            "torch": torch.get_rng_state(),
            "latent": self.latent_generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "regularizers": self.regularizers.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`."""
        try:
            self.generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
            self.regularizers.load_state_dict(state["regularizers"])
            self.discriminator_optimizer.load_state_dict(
                state["discriminator_optimizer"]
            )
            self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint does not fit this experiment's networks: {error}"
            ) from None
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        rng = state["rng"]
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy_state = rng["numpy"]
        np.random.set_state(
            (
                numpy_state["key"],
                numpy_state["state"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(rng["torch"])
        self.latent_generator.set_state(rng["latent"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
