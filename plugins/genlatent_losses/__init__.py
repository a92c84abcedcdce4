"""Adversarial losses for genlatent beyond the standard GAN loss: the
Wasserstein loss with gradient penalty (WGAN-GP) and the hinge loss,
registered as a genlatent plugin."""

from genlatent_losses.losses import (
    HingeLoss,
    WassersteinGPConfig,
    WassersteinGPLoss,
    gradient_penalty,
)

__all__ = ["HingeLoss", "WassersteinGPConfig", "WassersteinGPLoss", "gradient_penalty"]
