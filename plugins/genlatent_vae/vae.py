"""A variational autoencoder trained with the mutual-information term.

The decoder takes the latent input of the experiment's
:class:`genlatent.latent.LatentSpec` (codes plus noise). Each step

1. encodes the real images, draws a reparameterised decoder input from the
   posterior (:mod:`genlatent_vae.posterior`) and computes the negative ELBO:
   the Bernoulli reconstruction loss summed over pixels plus the KL to the
   prior, both in nats per image;
2. decodes one latent batch drawn from the prior;
3. updates the recognition network Q (its trunk and every regularizer's
   modules) on those samples detached from the decoder, with every
   regularizer's recognition-side term (``discriminator_term``);
4. updates the encoder and the decoder on the negative ELBO plus every
   regularizer's decoder-side term (``generator_term``) through the
   just-updated Q, whose parameters stay fixed in that update.

With the ``mi`` regularizer, step 3 maximises the lower bound L_I for Q and
step 4 for the decoder; ``mi.update_generator=false`` drops step 4's term, so
Q still learns to read the codes but no MI gradient reaches the decoder.
``optim.generator`` configures the encoder and decoder's Adam and
``optim.discriminator`` Q's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from genlatent.config import ExperimentConfig
from genlatent.data import scale_images
from genlatent.errors import ConfigError
from genlatent.latent import LatentSpec
from genlatent.models import Model, build_regularizers
from genlatent.regularizers import GeneratedBatch, Regularizer
from genlatent.trainer import (
    Metrics,
    RecognitionNetwork,
    Trainer,
    find_recognition_head,
    frozen,
    sum_terms,
)
from genlatent_vae.networks import VAEArchitecture
from genlatent_vae.posterior import check_codes, encoder_width, sample_posterior

if TYPE_CHECKING:
    from genlatent.plugins import PluginHost


class VAETrainer(Trainer):
    """Encoder, decoder, recognition network and optimizers of one VAE run.

    Args:
        config: the resolved experiment.
        architecture: builds the encoder, the decoder and Q's trunk.
        latent_spec: the decoder's input.
        regularizers: terms on decoder samples from the prior; their modules
            train with Q's optimizer.
        device: where the networks live.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        architecture: VAEArchitecture,
        latent_spec: LatentSpec,
        regularizers: Sequence[Regularizer],
        device: torch.device,
    ) -> None:
        super().__init__(
            config, architecture=architecture, latent_spec=latent_spec, device=device
        )
        check_codes(latent_spec.codes)
        width = sum(encoder_width(code) for code in latent_spec.codes)
        self.generator = architecture.build_generator(latent_spec.input_dim).to(device)
        self.encoder = architecture.build_encoder(width).to(device)
        self.recognition_trunk = architecture.build_recognition_trunk().to(device)
        self.regularizers = nn.ModuleDict(
            {regularizer.name: regularizer for regularizer in regularizers}
        ).to(device)
        self._regularizers: list[Regularizer] = list(regularizers)

        optim = config.optim
        self.generator_optimizer = self.adam(
            [*self.encoder.parameters(), *self.generator.parameters()],
            optim.generator,
        )
        self.recognition_optimizer = self.adam(
            [*self.recognition_trunk.parameters(), *self.regularizers.parameters()],
            optim.discriminator,
        )

    def networks(self) -> dict[str, nn.Module]:
        return {
            "generator": self.generator,
            "encoder": self.encoder,
            "recognition_trunk": self.recognition_trunk,
            "regularizers": self.regularizers,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "generator_optimizer": self.generator_optimizer,
            "recognition_optimizer": self.recognition_optimizer,
        }

    def recognition_head(self) -> nn.Module | None:
        """Return the ``mi`` term's Q head or another regularizer's, or None."""
        return find_recognition_head(self._regularizers)

    def recognition_network(self) -> RecognitionNetwork | None:
        head = self.recognition_head()
        if head is None:
            return None
        trunk = self.recognition_trunk

        def recognize(images: torch.Tensor) -> torch.Tensor:
            return head(trunk(images))

        return recognize

    def layer_tables(self, batch: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
        shape = self.architecture.image_shape
        images = torch.zeros(batch, *shape)
        size = "x".join(map(str, shape))
        tables = super().layer_tables(batch)
        tables[0] = (f"decoder (input {self.latent_spec.input_dim})", *tables[0][1:])
        tables.append((f"encoder (input {size})", self.encoder, images))
        tables.append(
            (f"recognition trunk (input {size})", self.recognition_trunk, images)
        )
        head = self.recognition_head()
        if head is not None:
            width = self.architecture.feature_dim
            tables.append(
                (
                    f"recognition head Q (input {width} features)",
                    head,
                    torch.zeros(batch, width),
                )
            )
        return tables

    def negative_elbo(self, real: torch.Tensor, metrics: Metrics) -> torch.Tensor:
        """Mean negative ELBO of ``real`` images in [0, 1], in nats per image;
        records ``elbo``, ``reconstruction``, ``kl`` and ``kl/CODE``."""
        latent, kl = sample_posterior(
            self.latent_spec.codes, self.encoder(real), generator=self.latent_generator
        )
        reconstruction = self.generator(latent)
        # Bernoulli log-likelihood of each pixel's gray level, summed over
        # pixels: the usual VAE objective for MNIST-like data in [0, 1].
        nll = F.binary_cross_entropy(reconstruction, real, reduction="none")
        reconstruction_loss = nll.flatten(start_dim=1).sum(dim=1).mean()
        kl_means = {name: value.mean() for name, value in kl.items()}
        kl_total = torch.stack(list(kl_means.values())).sum()
        loss = reconstruction_loss + kl_total
        metrics["elbo"] = -loss.detach()
        metrics["reconstruction"] = reconstruction_loss.detach()
        metrics["kl"] = kl_total.detach()
        for name, value in kl_means.items():
            metrics[f"kl/{name}"] = value.detach()
        return loss

    def train_step(self, real_images: torch.Tensor) -> Metrics:
        """Run one recognition-network update and one encoder and decoder
        update (see the module docstring).

        Args:
            real_images: ``(batch, *image_shape)`` uint8 images on the device.

        Returns:
            Detached metrics: ``elbo``, ``reconstruction``, ``kl``, ``kl/CODE``
            and ``vae_loss`` in nats per image, and every regularizer's
            metrics, such as ``mi/CODE``.

        Raises:
            DivergenceError: a loss is not finite and ``trainer.on_divergence``
                is ``stop``. No update of that step reaches the weights.
        """
        real = scale_images(real_images, self.architecture.output_range, torch.float32)
        step = self.step + 1
        metrics: Metrics = {}
        prior_latent = self.sample_latent(real.shape[0])
        samples = self.generator(prior_latent)
        if self.recognition_update(step, prior_latent, samples, metrics):
            self.model_update(step, real, prior_latent, samples, metrics)
        self.step = step
        return metrics

    def recognition_update(
        self,
        step: int,
        prior_latent: torch.Tensor,
        samples: torch.Tensor,
        metrics: Metrics,
    ) -> bool:
        """Update Q on decoder samples detached from the decoder; False if
        skipped."""
        if not self._regularizers:
            return True
        detached = samples.detach()
        batch = GeneratedBatch(prior_latent, detached, self.recognition_trunk(detached))
        terms = [
            (regularizer.name, regularizer.discriminator_term(batch))
            for regularizer in self._regularizers
        ]
        total = sum_terms(torch.zeros((), device=self.device), terms, metrics, "q")
        if not self.check_finite(step, "recognition", total, metrics):
            return False
        if total.requires_grad:
            self.recognition_optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.recognition_optimizer.step()
        return True

    def model_update(
        self,
        step: int,
        real: torch.Tensor,
        prior_latent: torch.Tensor,
        samples: torch.Tensor,
        metrics: Metrics,
    ) -> bool:
        """Update the encoder and decoder through the current Q; False if
        skipped."""
        with frozen(self.recognition_trunk, self.regularizers):
            loss = self.negative_elbo(real, metrics)
            batch = GeneratedBatch(
                prior_latent, samples, self.recognition_trunk(samples)
            )
            terms = [
                (regularizer.name, regularizer.generator_term(batch))
                for regularizer in self._regularizers
            ]
            total = sum_terms(loss, terms, metrics, "vae")
            metrics["vae_loss"] = total.detach()
            if not self.check_finite(step, "encoder and decoder", total, metrics):
                return False
            self.generator_optimizer.zero_grad(set_to_none=True)
            total.backward()
        self.generator_optimizer.step()
        return True


class VAEModel(Model):
    """The ``vae`` model: :class:`VAETrainer` on a :class:`VAEArchitecture`."""

    name = "vae"
    description = "variational autoencoder; regularizers act on prior samples"

    def _architecture(
        self, config: ExperimentConfig, plugins: PluginHost
    ) -> VAEArchitecture:
        architecture = plugins.get("architectures", config.architecture)
        if not isinstance(architecture, VAEArchitecture):
            raise ConfigError(
                f"model=vae needs an architecture with an encoder (a "
                f"VAEArchitecture), but {config.architecture!r} has none; use "
                "architecture=infovae-mnist"
            )
        return architecture

    def check_config(self, config: ExperimentConfig, plugins: PluginHost) -> None:
        self._architecture(config, plugins)
        check_codes(LatentSpec.from_config(config.latent).codes)

    def build_trainer(
        self, config: ExperimentConfig, plugins: PluginHost, device: torch.device
    ) -> VAETrainer:
        architecture = self._architecture(config, plugins)
        latent_spec = LatentSpec.from_config(config.latent)
        return VAETrainer(
            config,
            architecture=architecture,
            latent_spec=latent_spec,
            regularizers=build_regularizers(
                config, plugins, architecture, latent_spec, device
            ),
            device=device,
        )
