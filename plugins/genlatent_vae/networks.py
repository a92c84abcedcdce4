"""Networks of the InfoVAE model: an encoder, a decoder and a separate
recognition network Q."""

from __future__ import annotations

import abc

from genlatent_infogan.networks import MNISTNetworks
from torch import nn

from genlatent.nn import Architecture


class VAEArchitecture(Architecture):
    """An architecture with an encoder and a recognition network of its own.

    ``build_generator`` builds the decoder. ``build_recognition_trunk`` and
    the inherited ``build_recognition_head`` make Q, which shares no layer
    with the encoder.
    """

    @abc.abstractmethod
    def build_encoder(self, num_outputs: int) -> nn.Module:
        """Map ``(batch, *image_shape)`` images to ``(batch, num_outputs)``
        posterior parameters."""

    def build_recognition_trunk(self) -> nn.Module:
        """Map images to ``(batch, feature_dim)`` features for Q's head."""
        return self.build_trunk()


class MNISTVAENetworks(VAEArchitecture, MNISTNetworks):
    """The InfoGAN paper's MNIST layers as a VAE, for 28x28 gray images.

    Decoder: the MNIST generator (FC 1024, FC 7x7x128, two 4x4 up-convolutions,
    sigmoid), so images lie in [0, 1]. Encoder: the discriminator trunk
    (4x4 conv 64 lReLU stride 2; 4x4 conv 128 lReLU stride 2 BN; FC 1024 lReLU
    BN) and FC to the posterior parameters. Q: another instance of that trunk
    with the MNIST Q head (FC 128 BN lReLU, FC outputs).
    """

    name = "infovae-mnist"
    description = "InfoGAN MNIST layers as encoder, decoder and a separate Q"

    def build_encoder(self, num_outputs: int) -> nn.Module:
        return nn.Sequential(
            self.build_trunk(), nn.Linear(self.feature_dim, num_outputs)
        )
