"""The encoder's posterior over the latent input, its KL to the prior and its
reparameterised samples.

The encoder returns one flat ``(batch, encoder_dim)`` vector per image, laid
out per code in the order of the latent specification:

- a categorical code of K categories: K logits of ``q(c | x)``;
- a continuous code or noise of dimension d: d means, then d log-variances of
  a diagonal Gaussian ``q(z | x)``.

The KL to the prior is exact for both kinds, in nats per image: for a
Gaussian ``0.5 * sum(mean^2 + var - 1 - log var)`` against N(0, I), and for a
categorical ``log K - H(q)`` against the uniform prior. The sample fed to the
decoder is the reparameterised Gaussian ``mean + std * eps``, and for a
categorical code a Gumbel-softmax (concrete) relaxation of a one-hot sample
(Jang et al., 2017; Maddison et al., 2017), whose gradient reaches the
logits. This pairing of an exact categorical KL with a relaxed sample is the
one JointVAE uses (Dupont, 2018). Samples from the prior, used for
generation and for the mutual-information term, stay exactly one-hot.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from genlatent.errors import ConfigError
from genlatent.latent import CategoricalCode, ContinuousCode, LatentCode, NoiseCode

# Temperature of the Gumbel-softmax relaxation: 2/3, the value Maddison et
# al. (2017) recommend and JointVAE uses.
TEMPERATURE = 2.0 / 3.0


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, from ``(batch, d)``
    means and log-variances; returns ``(batch,)``."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def categorical_kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || Uniform(K)) = log K - H(q) in nats, from
    ``(batch, K)`` logits; returns ``(batch,)``."""
    log_probs = F.log_softmax(logits, dim=-1)
    negative_entropy = (log_probs.exp() * log_probs).sum(dim=-1)
    return math.log(logits.shape[-1]) + negative_entropy


def relaxed_one_hot(
    logits: torch.Tensor,
    temperature: float = TEMPERATURE,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw a ``(batch, K)`` Gumbel-softmax sample: ``softmax((logits + g) /
    temperature)`` with standard Gumbel noise ``g``. Each row is a point of
    the probability simplex, one-hot in the limit of zero temperature."""
    uniform = torch.rand(
        logits.shape, generator=generator, device=logits.device, dtype=logits.dtype
    )
    # torch.rand lies in [0, 1): clamping away 0 keeps both logarithms finite.
    uniform = uniform.clamp(min=torch.finfo(logits.dtype).tiny)
    gumbel = -torch.log(-torch.log(uniform))
    return F.softmax((logits + gumbel) / temperature, dim=-1)


def encoder_width(code: LatentCode) -> int:
    """Encoder outputs of one code: K logits, or d means and d log-variances."""
    if isinstance(code, CategoricalCode):
        return code.num_categories
    return 2 * code.input_dim


def check_codes(codes: tuple[LatentCode, ...]) -> None:
    """Raise ConfigError for a code whose prior has no closed-form KL here.

    The KL above needs a uniform categorical prior, or a standard Gaussian
    prior for continuous codes and noise.
    """
    for code in codes:
        if isinstance(code, ContinuousCode) and code.prior != "gaussian":
            raise ConfigError(
                f"latent code {code.name!r} has prior {code.prior!r}, but the VAE "
                "needs a standard Gaussian prior for its KL term; set "
                f"latent.{code.name}.prior=gaussian"
            )
        if isinstance(code, NoiseCode) and code.distribution != "gaussian":
            raise ConfigError(
                f"noise {code.name!r} is {code.distribution!r}, but the VAE needs "
                "a standard Gaussian prior for its KL term; set "
                f"latent.{code.name}.distribution=gaussian"
            )
        if not isinstance(code, CategoricalCode | ContinuousCode | NoiseCode):
            raise ConfigError(
                f"latent code {code.name!r} of kind {code.kind!r} has no VAE "
                "posterior; use categorical, continuous or noise codes"
            )


def sample_posterior(
    codes: tuple[LatentCode, ...],
    encoder_output: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    temperature: float = TEMPERATURE,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Draw a reparameterised decoder input from the encoder's posterior.

    Args:
        codes: the latent specification's codes, in input order.
        encoder_output: ``(batch, sum of encoder_width)`` encoder outputs.
        generator: the random stream of the Gaussian and Gumbel noise.
        temperature: the Gumbel-softmax temperature.

    Returns:
        The ``(batch, input_dim)`` decoder input, and the ``(batch,)`` KL to
        the prior in nats per code.
    """
    width = sum(encoder_width(code) for code in codes)
    if encoder_output.ndim != 2 or encoder_output.shape[1] != width:
        raise ValueError(
            f"encoder output must have shape (batch, {width}), got "
            f"{tuple(encoder_output.shape)}"
        )
    parts, kl = [], {}
    start = 0
    for code in codes:
        params = encoder_output[:, start : start + encoder_width(code)]
        start += encoder_width(code)
        if isinstance(code, CategoricalCode):
            kl[code.name] = categorical_kl_to_uniform(params)
            parts.append(relaxed_one_hot(params, temperature, generator=generator))
            continue
        mean, log_var = params.chunk(2, dim=-1)
        kl[code.name] = gaussian_kl(mean, log_var)
        eps = torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        parts.append(mean + (0.5 * log_var).exp() * eps)
    return torch.cat(parts, dim=1), kl
