"""Entry point of the losses plugin: registers WGAN-GP and the hinge loss."""

from __future__ import annotations

from genlatent.hookspecs import Register, hookimpl
from genlatent_losses.losses import HingeLoss, WassersteinGPLoss


@hookimpl
def register_adversarial_losses(register: Register) -> None:
    register(WassersteinGPLoss())
    register(HingeLoss())
