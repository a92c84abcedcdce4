"""Entry point of the VAE plugin: registers the ``vae`` model, its networks
and the ``infovae-mnist`` experiment."""

from __future__ import annotations

from genlatent.hookspecs import Register, hookimpl
from genlatent_vae.experiments import infovae_mnist
from genlatent_vae.networks import MNISTVAENetworks
from genlatent_vae.vae import VAEModel


@hookimpl
def register_models(register: Register) -> None:
    register(VAEModel())


@hookimpl
def register_architectures(register: Register) -> None:
    register(MNISTVAENetworks())


@hookimpl
def register_experiments(register: Register) -> None:
    register(infovae_mnist())
