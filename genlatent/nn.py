"""Network blocks and the architecture interface.

An :class:`Architecture` builds a generator and a discriminator for one image
shape. The discriminator is a shared trunk, mapping images to ``(batch,
feature_dim)`` features, plus a real/fake head; regularizers such as the
mutual-information term put their own heads (a recognition network Q) on the
same features, so the trunk is computed once for every head.
"""

from __future__ import annotations

import abc
import math

import torch
from einops.layers.torch import Rearrange
from torch import nn
from torch.nn import functional as F

# Leaky ReLU slope of the discriminator's hidden layers.
LEAKY_SLOPE = 0.1


class Conv2dSame(nn.Conv2d):
    """A convolution that pads like TensorFlow's ``padding="SAME"``.

    The output has ``ceil(input / stride)`` rows and columns. For an even kernel
    the total padding is odd at stride 1, so the extra row and column go at the
    bottom and right, which PyTorch's symmetric ``padding`` cannot express.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("padding", 0)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
        """Return the (before, after) padding of one spatial axis."""
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        top, bottom = self.same_padding(
            images.shape[-2], self.kernel_size[0], self.stride[0]
        )
        left, right = self.same_padding(
            images.shape[-1], self.kernel_size[1], self.stride[1]
        )
        if top == bottom and left == right:
            # Symmetric padding (every stride-2 layer on even sides) happens
            # inside the convolution kernel, saving a padded copy of the input.
            return F.conv2d(
                images,
                self.weight,
                self.bias,
                self.stride,
                (top, left),
                self.dilation,
                self.groups,
            )
        return super().forward(F.pad(images, (left, right, top, bottom)))


def activation_layer(name: str) -> nn.Module:
    """Build an activation by name: relu, lrelu, tanh, sigmoid or none."""
    layers: dict[str, nn.Module] = {
        "relu": nn.ReLU(inplace=True),
        "lrelu": nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        "tanh": nn.Tanh(),
        "sigmoid": nn.Sigmoid(),
        "none": nn.Identity(),
    }
    if name not in layers:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(layers)}")
    return layers[name]


NORMALIZATIONS = ("batch", "layer", "none")


def normalization_layer(kind: str, num_features: int, *, spatial: bool) -> nn.Module:
    """Build a normalization over ``num_features`` channels or features.

    ``batch`` is batch norm. ``layer`` normalises each sample over all its
    channels and positions, with a learned scale and shift per channel (a
    one-group GroupNorm on feature maps, LayerNorm on feature vectors), so no
    sample's output depends on the others in the batch. ``none`` is the
    identity.
    """
    if kind == "batch":
        return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)
    if kind == "layer":
        return nn.GroupNorm(1, num_features) if spatial else nn.LayerNorm(num_features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(
        f"unknown normalization {kind!r}; known: {', '.join(NORMALIZATIONS)}"
    )


def _norm_kind(batch_norm: bool, norm: str | None) -> str:
    if norm is not None:
        return norm
    return "batch" if batch_norm else "none"


def linear_block(
    in_features: int,
    out_features: int,
    *,
    batch_norm: bool = False,
    activation: str,
    norm: str | None = None,
) -> nn.Sequential:
    """Fully connected layer, optional normalization, activation.

    ``norm`` (batch, layer or none) overrides ``batch_norm``, which is short
    for ``norm="batch"``.
    """
    kind = _norm_kind(batch_norm, norm)
    layers: list[nn.Module] = [
        nn.Linear(in_features, out_features, bias=kind == "none")
    ]
    if kind != "none":
        layers.append(normalization_layer(kind, out_features, spatial=False))
    layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    stride: int,
    batch_norm: bool = False,
    activation: str,
    kernel_size: int = 4,
    norm: str | None = None,
) -> nn.Sequential:
    """Convolution with TensorFlow-style SAME padding, optional normalization,
    activation. Stride 2 halves each spatial size; stride 1 keeps it.

    ``norm`` (batch, layer or none) overrides ``batch_norm``, which is short
    for ``norm="batch"``.
    """
    kind = _norm_kind(batch_norm, norm)
    layers: list[nn.Module] = [
        Conv2dSame(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            bias=kind == "none",
        )
    ]
    if kind != "none":
        layers.append(normalization_layer(kind, out_channels, spatial=True))
    layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


def upconv_block(
    in_channels: int,
    out_channels: int,
    *,
    stride: int,
    batch_norm: bool,
    activation: str,
    kernel_size: int = 4,
) -> nn.Sequential:
    """Up-convolution, optional batch norm, activation.

    Stride 2 doubles each spatial size exactly (a 4x4 transposed convolution
    with padding 1). Stride 1 keeps it, which a transposed convolution with an
    even kernel cannot do with symmetric padding; at stride 1 a transposed
    convolution is a convolution, so a SAME-padded one is used.
    """
    conv: nn.Module
    if stride == 1:
        conv = Conv2dSame(
            in_channels, out_channels, kernel_size, stride=1, bias=not batch_norm
        )
    elif stride == 2 and kernel_size == 4:
        conv = nn.ConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=2,
            padding=1,
            bias=not batch_norm,
        )
    else:
        raise ValueError(
            f"upconv_block supports stride 1, or stride 2 with a 4x4 kernel; "
            f"got stride {stride} and kernel {kernel_size}"
        )
    layers: list[nn.Module] = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


def unflatten(channels: int, height: int, width: int) -> nn.Module:
    """Reshape ``(batch, channels * height * width)`` to an image tensor."""
    return Rearrange("b (c h w) -> b c h w", c=channels, h=height, w=width)


def flatten() -> nn.Module:
    """Reshape ``(batch, channels, height, width)`` to ``(batch, features)``."""
    return Rearrange("b c h w -> b (c h w)")


class Discriminator(nn.Module):
    """A shared trunk with a real/fake head.

    ``forward`` returns ``(logits, features)``: real/fake logits of shape
    ``(batch,)`` and the trunk's ``(batch, feature_dim)`` features, on which
    regularizer heads are evaluated.
    """

    def __init__(self, trunk: nn.Module, adversarial_head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.adversarial_head = adversarial_head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(images)
        logits = self.adversarial_head(features).squeeze(-1)
        return logits, features


class Architecture(abc.ABC):
    """The networks of one experiment family for one image shape.

    Attributes:
        name: the registry name.
        image_shape: ``(channels, height, width)`` of generated and real images.
        output_range: ``(low, high)`` of the generator's output activation; real
            images are scaled to the same range.
        feature_dim: width of the discriminator trunk's features.
        discriminator_norms: normalizations :meth:`build_trunk` accepts; an
            architecture that lists more than ``batch`` takes the chosen one
            as ``build_trunk(norm)``.
    """

    name: str
    image_shape: tuple[int, int, int]
    output_range: tuple[float, float]
    feature_dim: int
    description: str = ""
    discriminator_norms: tuple[str, ...] = ("batch",)

    @abc.abstractmethod
    def build_generator(self, latent_dim: int) -> nn.Module:
        """Map ``(batch, latent_dim)`` inputs to ``(batch, *image_shape)`` images."""

    @abc.abstractmethod
    def build_trunk(self) -> nn.Module:
        """Map ``(batch, *image_shape)`` images to ``(batch, feature_dim)``
        with the architecture's own normalization (``batch``)."""

    def build_adversarial_head(self) -> nn.Module:
        """Map trunk features to one real/fake logit per image."""
        return nn.Linear(self.feature_dim, 1)

    @abc.abstractmethod
    def build_recognition_head(self, num_outputs: int) -> nn.Module:
        """Map trunk features to ``num_outputs`` recognition-network outputs."""

    def build_discriminator(self, norm: str = "batch") -> Discriminator:
        """Build the trunk, with normalization ``norm``, and the real/fake head.

        Raises:
            ValueError: ``norm`` is not one of ``discriminator_norms``.
        """
        if norm not in self.discriminator_norms:
            raise ValueError(
                f"architecture {self.name!r} builds its discriminator with "
                f"{', '.join(self.discriminator_norms)} normalization, not {norm!r}"
            )
        trunk = self.build_trunk() if norm == "batch" else self.build_trunk(norm)  # type: ignore[call-arg]
        return Discriminator(trunk, self.build_adversarial_head())


def initialize_weights(module: nn.Module, std: float = 0.02) -> None:
    """Draw conv and linear weights from N(0, std) and zero their biases;
    batch-norm scales from N(1, std). This is the DCGAN initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)
