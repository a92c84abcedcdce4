"""Adversarial losses.

A loss turns the discriminator's real/fake logits into the discriminator's and
the generator's objectives, both to be minimised. A loss may also add a
penalty on the critic that needs the critic itself and the images, not only
their logits, such as WGAN-GP's gradient penalty: the trainer passes it
through :meth:`AdversarialLoss.critic_penalty`.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

# The discriminator as a function: ``(batch, *image_shape)`` images to
# ``(batch,)`` real/fake logits or critic values.
Critic = Callable[[torch.Tensor], torch.Tensor]


class AdversarialLoss(abc.ABC):
    """Objectives of the two players, from ``(batch,)`` real/fake logits.

    Subclasses set ``name`` and may set ``config_class``, an attrs class whose
    fields are overridable as ``loss_config.FIELD=value``; the trainer then
    receives a copy made by :meth:`configured`, with ``config`` set.

    Attributes:
        needs_per_sample_critic: the loss differentiates the critic per
            sample, so the critic must not use batch norm, which couples the
            samples of a batch.
    """

    name: str
    description: str = ""
    config_class: ClassVar[type | None] = None
    needs_per_sample_critic: ClassVar[bool] = False
    config: Any = None

    @abc.abstractmethod
    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss the discriminator minimises."""

    @abc.abstractmethod
    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Scalar loss the generator minimises."""

    def critic_penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        """Scalar penalty the discriminator minimises besides its loss, or None.

        Args:
            critic: the discriminator's forward pass to the logits.
            real: ``(batch, *image_shape)`` real images.
            fake: ``(batch, *image_shape)`` generated images, detached from
                the generator.
        """
        return None

    def configured(self, config: Any) -> AdversarialLoss:
        """Return a copy of this loss with ``config`` set, for one run."""
        loss = copy.copy(self)
        loss.config = config
        return loss


class StandardGANLoss(AdversarialLoss):
    """The original GAN loss with the non-saturating generator objective.

    The discriminator minimises ``-log D(x) - log(1 - D(G(z)))`` and the
    generator ``-log D(G(z))``, both as binary cross-entropy on logits, which
    stays finite for any logit.
    """

    name = "standard"
    description = "binary cross-entropy GAN loss, non-saturating generator"

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        )
        fake = F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
        return real + fake

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            fake_logits, torch.ones_like(fake_logits)
        )
