"""Adversarial losses.

A loss turns the discriminator's real/fake logits into the discriminator's and
the generator's objectives, both to be minimised.
"""

from __future__ import annotations

import abc

import torch
from torch.nn import functional as F


class AdversarialLoss(abc.ABC):
    """Objectives of the two players, from ``(batch,)`` real/fake logits."""

    name: str
    description: str = ""

    @abc.abstractmethod
    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss the discriminator minimises."""

    @abc.abstractmethod
    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Scalar loss the generator minimises."""


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
