"""The Wasserstein loss with gradient penalty and the hinge loss.

Both treat the discriminator's ``(batch,)`` output as an unbounded critic
value rather than a logit of a probability.
"""

from __future__ import annotations

import attrs
import torch
from torch.nn import functional as F

from genlatent.config import non_negative
from genlatent.losses import AdversarialLoss, Critic


def gradient_penalty(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` over random interpolates.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ Unif(0, 1)``
    per sample (Gulrajani et al., 2017, Algorithm 1). The gradient norm is
    taken per sample over all pixels, and the graph is kept
    (``create_graph=True``), so minimising the penalty trains the critic.

    Args:
        critic: maps ``(batch, *image_shape)`` images to ``(batch,)`` values.
        real: ``(batch, *image_shape)`` real images.
        fake: ``(batch, *image_shape)`` generated images of the same shape,
            detached from the generator.
        generator: the random stream of ``eps``; torch's default when None.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake images must have the same shape for the gradient "
            f"penalty, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(
        eps_shape, generator=generator, device=real.device, dtype=real.dtype
    )
    interpolates = (eps * real + (1 - eps) * fake).requires_grad_(True)
    values = critic(interpolates)
    (gradients,) = torch.autograd.grad(values.sum(), interpolates, create_graph=True)
    norms = gradients.flatten(start_dim=1).norm(2, dim=1)
    return (norms - 1).square().mean()


@attrs.define
class WassersteinGPConfig:
    """Settings of the WGAN-GP loss.

    Attributes:
        lambda_gp: weight of the gradient penalty; 10 in Gulrajani et al.
            (2017) for every experiment they report.
    """

    lambda_gp: float = attrs.field(default=10.0, validator=non_negative)


class WassersteinGPLoss(AdversarialLoss):
    """The Wasserstein GAN loss with gradient penalty (Gulrajani et al., 2017).

    The critic minimises ``E[D(fake)] - E[D(real)] + lambda_gp *
    E[(||grad_x D(x_hat)||_2 - 1)^2]`` and the generator ``-E[D(fake)]``. The
    penalty differentiates the critic per sample, so the critic must not use
    batch norm; ``discriminator_norm=auto`` picks layer norm for this loss.
    The paper's recipe also takes Adam with learning rate 1e-4 and betas
    (0, 0.9), and five critic updates per generator update
    (``trainer.n_critic=5``); the ``infowgan-gp-mnist`` experiment sets them.
    """

    name = "wgan-gp"
    description = "Wasserstein loss with gradient penalty (loss_config.lambda_gp)"
    config_class = WassersteinGPConfig
    needs_per_sample_critic = True
    config: WassersteinGPConfig = WassersteinGPConfig()

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def critic_penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        if self.config.lambda_gp == 0:
            return None
        return self.config.lambda_gp * gradient_penalty(critic, real, fake)


class HingeLoss(AdversarialLoss):
    """The hinge loss (Lim and Ye, 2017; as in SN-GAN and SAGAN).

    The discriminator minimises ``mean(relu(1 - D(real))) + mean(relu(1 +
    D(fake)))`` and the generator ``-mean(D(fake))``.
    """

    name = "hinge"
    description = "hinge loss, generator maximises the critic value"

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()
