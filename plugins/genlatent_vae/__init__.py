"""A variational autoencoder for genlatent whose decoder takes the latent
specification's codes and noise, trained with the ELBO and, through the
``mi`` regularizer, the mutual-information lower bound on prior samples."""

from genlatent_vae.networks import MNISTVAENetworks, VAEArchitecture
from genlatent_vae.vae import VAEModel, VAETrainer

__all__ = ["MNISTVAENetworks", "VAEArchitecture", "VAEModel", "VAETrainer"]
