"""The networks of the InfoGAN paper (Chen et al., 2016, appendix C), one
Architecture per data set.

Discriminator hidden layers use leaky ReLU with slope 0.1 and generator hidden
layers ReLU. Batch norm sits exactly where the paper's architecture tables put
it. Every 4x4 convolution pads like TensorFlow's SAME padding.

Every discriminator trunk can also be built with layer norm or no
normalization in the batch-norm positions (``build_trunk(norm)``), for losses
such as WGAN-GP whose gradient penalty needs each sample's critic gradient on
its own; Gulrajani et al. (2017) recommend layer norm there.
"""

from __future__ import annotations

from torch import nn

from genlatent.nn import (
    NORMALIZATIONS,
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
    discriminator_norms = NORMALIZATIONS
    # Side of the 128-channel feature maps between the FC and conv layers: a
    # quarter of the image side.
    base_size = 7

    def build_generator(self, latent_dim: int) -> nn.Module:
        size = self.base_size
        return nn.Sequential(
            linear_block(latent_dim, 1024, batch_norm=True, activation="relu"),
            linear_block(1024, size * size * 128, batch_norm=True, activation="relu"),
            unflatten(128, size, size),
            upconv_block(128, 64, stride=2, batch_norm=True, activation="relu"),
            upconv_block(64, 1, stride=2, batch_norm=False, activation="sigmoid"),
        )

    def build_trunk(self, norm: str = "batch") -> nn.Module:
        size = self.base_size
        return nn.Sequential(
            conv_block(1, 64, stride=2, batch_norm=False, activation="lrelu"),
            conv_block(64, 128, stride=2, norm=norm, activation="lrelu"),
            flatten(),
            linear_block(128 * size * size, 1024, norm=norm, activation="lrelu"),
        )

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Sequential(
            linear_block(self.feature_dim, 128, batch_norm=True, activation="lrelu"),
            nn.Linear(128, num_outputs),
        )


class SVHNNetworks(Architecture):
    """Networks for 32x32 color images (SVHN), as in Table 2 of the InfoGAN
    paper.

    D/Q trunk: 4x4 conv 64 lReLU stride 2; 4x4 conv 128 lReLU stride 2 BN;
    4x4 conv 256 lReLU stride 2 BN; flattened to 256*4*4 features. D head:
    FC 1 on those features. Q head: FC 128 BN lReLU, FC outputs.
    G: FC 2x2x448 ReLU BN; 4x4 upconv 256 ReLU stride 2 BN; 4x4 upconv 128
    ReLU stride 2; 4x4 upconv 64 ReLU stride 2; 4x4 upconv 3 Tanh stride 2, so
    images lie in [-1, 1]. The table gives the two middle up-convolutions no
    batch norm, and neither do these networks.
    """

    name = "infogan-svhn"
    image_shape = (3, 32, 32)
    output_range = (-1.0, 1.0)
    feature_dim = 256 * 4 * 4
    description = "InfoGAN SVHN networks, 32x32 color, tanh output"
    discriminator_norms = NORMALIZATIONS

    def build_generator(self, latent_dim: int) -> nn.Module:
        return nn.Sequential(
            linear_block(latent_dim, 2 * 2 * 448, batch_norm=True, activation="relu"),
            unflatten(448, 2, 2),
            upconv_block(448, 256, stride=2, batch_norm=True, activation="relu"),
            upconv_block(256, 128, stride=2, batch_norm=False, activation="relu"),
            upconv_block(128, 64, stride=2, batch_norm=False, activation="relu"),
            upconv_block(64, 3, stride=2, batch_norm=False, activation="tanh"),
        )

    def build_trunk(self, norm: str = "batch") -> nn.Module:
        return nn.Sequential(
            conv_block(3, 64, stride=2, batch_norm=False, activation="lrelu"),
            conv_block(64, 128, stride=2, norm=norm, activation="lrelu"),
            conv_block(128, 256, stride=2, norm=norm, activation="lrelu"),
            flatten(),
        )

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Sequential(
            linear_block(self.feature_dim, 128, batch_norm=True, activation="lrelu"),
            nn.Linear(128, num_outputs),
        )


class CelebANetworks(SVHNNetworks):
    """Networks for 32x32 color face images (CelebA): Table 3 of the InfoGAN
    paper lists the same layers as Table 2, so these are the SVHN networks."""

    name = "infogan-celeba"
    description = "InfoGAN CelebA networks (the SVHN layers), 32x32 color, tanh output"


class FacesNetworks(MNISTNetworks):
    """Networks for 32x32 gray images (3D faces), as in Table 4 of the InfoGAN
    paper.

    D/Q trunk: 4x4 conv 64 lReLU stride 2; 4x4 conv 128 lReLU stride 2 BN;
    FC 1024 lReLU BN. D and Q share the whole network, so each head is one
    output layer on those features.
    G: FC 1024 ReLU BN; FC 8x8x128 ReLU BN; 4x4 upconv 64 ReLU stride 2 BN;
    4x4 upconv 1 channel sigmoid, so images lie in [0, 1]. The table gives the
    last up-convolution no stride, as Table 1 does for MNIST; stride 2 is the
    one that reaches 32x32, and the authors' released MNIST code
    (openai/InfoGAN, whose deconvolutions default to stride 2) uses it there.
    """

    name = "infogan-faces"
    image_shape = (1, 32, 32)
    description = "InfoGAN 3D faces networks, 32x32 gray, sigmoid output"
    base_size = 8

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Linear(self.feature_dim, num_outputs)


class ChairsNetworks(Architecture):
    """Networks for 64x64 gray images (3D chairs), as in Table 6 of the InfoGAN
    paper.

    D/Q trunk: 4x4 conv 64 lReLU stride 2; 4x4 conv 128 lReLU stride 2 BN;
    4x4 conv 256 lReLU stride 2 BN; two 4x4 conv 256 lReLU BN at stride 1;
    FC 1024 lReLU BN. D and Q share the whole network, so each head is one
    output layer on those features.
    G: FC 1024 ReLU BN; FC 8x8x256 ReLU BN; two 4x4 upconv 256 ReLU BN at
    stride 1; 4x4 upconv 128 ReLU stride 2 BN; 4x4 upconv 64 ReLU stride 2 BN;
    4x4 upconv 1 channel sigmoid. Images lie in [0, 1].

    The table gives no stride for the stride-1 layers, which keep the 8x8 size
    through SAME padding (one row and column more at the bottom and right). It
    gives none for the last up-convolution either, where stride 2 is the one
    that reaches 64x64.
    """

    name = "infogan-chairs"
    image_shape = (1, 64, 64)
    output_range = (0.0, 1.0)
    feature_dim = 1024
    description = "InfoGAN 3D chairs networks, 64x64 gray, sigmoid output"
    discriminator_norms = NORMALIZATIONS

    def build_generator(self, latent_dim: int) -> nn.Module:
        return nn.Sequential(
            linear_block(latent_dim, 1024, batch_norm=True, activation="relu"),
            linear_block(1024, 8 * 8 * 256, batch_norm=True, activation="relu"),
            unflatten(256, 8, 8),
            upconv_block(256, 256, stride=1, batch_norm=True, activation="relu"),
            upconv_block(256, 256, stride=1, batch_norm=True, activation="relu"),
            upconv_block(256, 128, stride=2, batch_norm=True, activation="relu"),
            upconv_block(128, 64, stride=2, batch_norm=True, activation="relu"),
            upconv_block(64, 1, stride=2, batch_norm=False, activation="sigmoid"),
        )

    def build_trunk(self, norm: str = "batch") -> nn.Module:
        return nn.Sequential(
            conv_block(1, 64, stride=2, batch_norm=False, activation="lrelu"),
            conv_block(64, 128, stride=2, norm=norm, activation="lrelu"),
            conv_block(128, 256, stride=2, norm=norm, activation="lrelu"),
            conv_block(256, 256, stride=1, norm=norm, activation="lrelu"),
            conv_block(256, 256, stride=1, norm=norm, activation="lrelu"),
            flatten(),
            linear_block(256 * 8 * 8, 1024, norm=norm, activation="lrelu"),
        )

    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        return nn.Linear(self.feature_dim, num_outputs)
