"""The regularizer interface.

A regularizer adds terms to the discriminator-side and generator-side
objectives of a training step. It may own modules, such as a recognition head
on the discriminator's trunk; those train with the discriminator's optimizer.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from genlatent.latent import LatentSpec
from genlatent.nn import Architecture


@attrs.frozen
class GeneratedBatch:
    """Generated images of one step and the discriminator's view of them.

    Attributes:
        latent_input: ``(batch, latent_dim)`` generator input.
        images: ``(batch, *image_shape)`` generator output. Detached from the
            generator in the discriminator update.
        features: ``(batch, feature_dim)`` discriminator trunk features of
            ``images``.
    """

    latent_input: torch.Tensor
    images: torch.Tensor
    features: torch.Tensor


@attrs.frozen
class RegularizerTerm:
    """A scalar loss to minimise and the detached metrics to log with it."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = attrs.field(factory=dict)


@attrs.frozen
class RegularizerContext:
    """Inputs a regularizer builds its modules from."""

    architecture: Architecture
    latent_spec: LatentSpec
    device: torch.device


class Regularizer(nn.Module, abc.ABC):
    """A term added to the adversarial objectives.

    Subclasses set ``name`` (the registry name and config section) and
    ``config_class`` (an attrs class whose fields are overridable as
    ``NAME.field=value``). The trainer calls :meth:`discriminator_term` in the
    discriminator update, with images detached from the generator, and
    :meth:`generator_term` in the generator update. Either may return None.
    Parameters of the regularizer module itself train with the
    discriminator's optimizer.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    description: ClassVar[str] = ""

    def __init__(self, config: Any, context: RegularizerContext) -> None:
        super().__init__()
        self.config = config
        self.context = context

    def discriminator_term(self, batch: GeneratedBatch) -> RegularizerTerm | None:
        """Term added to the discriminator-side objective."""
        return None

    def generator_term(self, batch: GeneratedBatch) -> RegularizerTerm | None:
        """Term added to the generator's objective."""
        return None
