"""The mutual-information regularizer of InfoGAN.

A recognition network Q, a head on the discriminator's shared trunk, returns
posterior parameters for every latent code. The variational lower bound

    L_I(G, Q) = H(c) + E_{c ~ P(c), x ~ G(z, c)} [log Q(c | x)]

is estimated per code on each step's generated batch, and ``-lambda * L_I`` is
added to both objectives: on the discriminator side (images detached from G)
it trains Q's head and the shared trunk; on the generator side it trains G.
The real/fake output layer never sees it.
"""

from __future__ import annotations

import attrs
import torch

from genlatent.config import non_negative
from genlatent.latent import CategoricalCode
from genlatent.regularizers import (
    GeneratedBatch,
    Regularizer,
    RegularizerContext,
    RegularizerTerm,
)


@attrs.define
class MutualInformationConfig:
    """Weights of the mutual-information term.

    Attributes:
        lambda_disc: weight of L_I for categorical codes.
        lambda_cont: weight of L_I for every other scored code.
        update_generator: pass the term to the generator. False trains only Q
            and the trunk on it (the "sleep" update of wake-sleep), which gives
            the plain-GAN baseline that InfoGAN is compared with.
    """

    lambda_disc: float = attrs.field(default=1.0, validator=non_negative)
    lambda_cont: float = attrs.field(default=1.0, validator=non_negative)
    update_generator: bool = True


class MutualInformation(Regularizer):
    """InfoGAN's L_I term with its recognition head."""

    name = "mi"
    config_class = MutualInformationConfig
    description = "InfoGAN mutual-information lower bound with a recognition head Q"

    def __init__(
        self, config: MutualInformationConfig, context: RegularizerContext
    ) -> None:
        super().__init__(config, context)
        spec = context.latent_spec
        self.latent_spec = spec
        self.recognition_head = context.architecture.build_recognition_head(
            spec.posterior_dim
        )
        self.weights = {
            code.name: (
                config.lambda_disc
                if isinstance(code, CategoricalCode)
                else config.lambda_cont
            )
            for code in spec.scored_codes
        }

    def lower_bounds(self, batch: GeneratedBatch) -> dict[str, torch.Tensor]:
        """L_I per scored code, in nats, on ``batch``."""
        posterior_params = self.recognition_head(batch.features)
        return self.latent_spec.mutual_information(posterior_params, batch.latent_input)

    def loss(
        self, batch: GeneratedBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-sum(lambda * L_I)`` over codes and the detached L_I per code."""
        bounds = self.lower_bounds(batch)
        loss = -sum(
            (self.weights[name] * bound for name, bound in bounds.items()),
            start=torch.zeros((), device=batch.features.device),
        )
        metrics = {f"mi/{name}": bound.detach() for name, bound in bounds.items()}
        return loss, metrics

    def discriminator_term(self, batch: GeneratedBatch) -> RegularizerTerm:
        loss, metrics = self.loss(batch)
        return RegularizerTerm(loss, dict(metrics))

    def generator_term(self, batch: GeneratedBatch) -> RegularizerTerm | None:
        if not self.config.update_generator:
            return None
        loss, _ = self.loss(batch)
        return RegularizerTerm(loss)
