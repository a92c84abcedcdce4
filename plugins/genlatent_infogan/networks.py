"""The networks of the InfoGAN paper (Chen et al., 2016, appendix C), one
Architecture per data set.

Discriminator hidden layers use leaky ReLU with slope 0.1 and generator hidden
layers ReLU. Batch norm sits exactly where the paper's architecture tables put
it. Every 4x4 convolution pads like TensorFlow's SAME padding.
"""

from __future__ import annotations

from torch import nn

from genlatent.nn import (
    Architecture,
    conv_block,
    flatten,
    linear_block,
    unflatten,
    upconv_block,
)


class MNISTNetworks(Architecture):
    """Networks for 28x28 gray images (MNIST, Fashion-MNIST).

    D/Q trunk: 4x4 conv 64 lReLU stride 2; 4x4 conv 128 lReLU stride 2 BN;
    FC 1024 lReLU BN. D head: FC 1. Q head: FC 128 BN lReLU, FC outputs.
    G: FC 1024 ReLU BN; FC 7x7x128 ReLU BN; 4x4 upconv 64 ReLU stride 2 BN;
    4x4 upconv 1 channel stride 2, sigmoid, so images lie in [0, 1].
    """

    name = "infogan-mnist"
    image_shape = (1, 28, 28)
    output_range = (0.0, 1.0)
    feature_dim = 1024
    description = "InfoGAN MNIST networks, 28x28 gray, sigmoid output"

    def build_generator(self, latent_dim: int) -> nn.Module:
        return nn.Sequential(
            linear_block(latent_dim, 1024, batch_norm=True, activation="relu"),
            linear_block(1024, 7 * 7 * 128, batch_norm=True, activation="relu"),
            unflatten(128, 7, 7),
            upconv_block(128, 64, stride=2, batch_norm=True, activation="relu"),
            upconv_block(64, 1, stride=2, batch_norm=False, activation="sigmoid"),
        )

    def build_trunk(self) -> nn.Module:
        return nn.Sequential(
            conv_block(1, 64, stride=2, batch_norm=False, activation="lrelu"),
            conv_block(64, 128, stride=2, batch_norm=True, activation="lrelu"),
            flatten(),
            linear_block(128 * 7 * 7, 1024, batch_norm=True, activation="lrelu"),
        )

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Sequential(
            linear_block(self.feature_dim, 128, batch_norm=True, activation="lrelu"),
            nn.Linear(128, num_outputs),
        )
