"""Models: named trainer factories that plugins register.

A model turns a resolved experiment into a :class:`genlatent.trainer.Trainer`.
The training loop, checkpoints, resume, sampling, traversals and the
inspection commands use only the trainer's interface, so a new kind of model
(a VAE, say) is a plugin that registers a :class:`Model` through the
``register_models`` hook; ``ExperimentConfig.model`` selects it by name. The
core registers ``gan``, the adversarial trainer.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import torch

from genlatent.config import ExperimentConfig
from genlatent.errors import ConfigError
from genlatent.latent import LatentSpec
from genlatent.losses import AdversarialLoss
from genlatent.nn import Architecture
from genlatent.regularizers import Regularizer, RegularizerContext
from genlatent.trainer import AdversarialTrainer, Trainer

if TYPE_CHECKING:
    from genlatent.plugins import PluginHost


class Model(abc.ABC):
    """A named trainer factory.

    Subclasses set ``name`` (the registry name, the value of
    ``ExperimentConfig.model``) and implement :meth:`build_trainer`.
    """

    name: str
    description: str = ""

    def check_config(self, config: ExperimentConfig, plugins: PluginHost) -> None:
        """Raise ConfigError for a config this model cannot train. Called
        before any file of a run is written; accepts every config unless
        overridden."""
        return None

    @abc.abstractmethod
    def build_trainer(
        self, config: ExperimentConfig, plugins: PluginHost, device: torch.device
    ) -> Trainer:
        """Build the networks, regularizers and optimizers of ``config``."""


def build_regularizers(
    config: ExperimentConfig,
    plugins: PluginHost,
    architecture: Architecture,
    latent_spec: LatentSpec,
    device: torch.device,
) -> list[Regularizer]:
    """Build every regularizer that ``config`` names, with its config."""
    context = RegularizerContext(
        architecture=architecture, latent_spec=latent_spec, device=device
    )
    return [
        plugins.get("regularizers", name)(regularizer_config, context)
        for name, regularizer_config in config.regularizers.items()
    ]


def discriminator_norm(config: ExperimentConfig, plugins: PluginHost) -> str:
    """Resolve ``config.discriminator_norm`` for the configured loss.

    ``auto`` is layer norm for a loss that differentiates the critic per
    sample, as Gulrajani et al. (2017) recommend for WGAN-GP, and batch norm
    otherwise.

    Raises:
        ConfigError: batch norm with such a loss, or a normalization the
            architecture cannot build.
    """
    loss: AdversarialLoss = plugins.get("losses", config.loss)
    architecture: Architecture = plugins.get("architectures", config.architecture)
    norm = config.discriminator_norm
    if norm == "auto":
        norm = "layer" if loss.needs_per_sample_critic else "batch"
    if norm == "batch" and loss.needs_per_sample_critic:
        raise ConfigError(
            f"discriminator_norm=batch cannot be used with loss={config.loss}: its "
            "penalty needs each sample's critic gradient, and batch norm mixes "
            "the samples of a batch; set discriminator_norm=layer, none or auto"
        )
    if norm not in architecture.discriminator_norms:
        raise ConfigError(
            f"discriminator_norm={norm} (for loss={config.loss}) is not available "
            f"in architecture {architecture.name!r}, which supports "
            f"{', '.join(architecture.discriminator_norms)}; choose one of those "
            "or another loss"
        )
    return norm


class GANModel(Model):
    """The adversarial model: :class:`AdversarialTrainer` with the configured
    loss, discriminator normalization and regularizers."""

    name = "gan"
    description = "adversarial training: generator against a discriminator"

    def check_config(self, config: ExperimentConfig, plugins: PluginHost) -> None:
        discriminator_norm(config, plugins)

    def build_trainer(
        self, config: ExperimentConfig, plugins: PluginHost, device: torch.device
    ) -> AdversarialTrainer:
        latent_spec = LatentSpec.from_config(config.latent)
        architecture: Architecture = plugins.get("architectures", config.architecture)
        loss: AdversarialLoss = plugins.get("losses", config.loss)
        return AdversarialTrainer(
            config,
            architecture=architecture,
            latent_spec=latent_spec,
            loss=loss.configured(config.loss_config),
            regularizers=build_regularizers(
                config, plugins, architecture, latent_spec, device
            ),
            device=device,
            discriminator_norm=discriminator_norm(config, plugins),
        )
