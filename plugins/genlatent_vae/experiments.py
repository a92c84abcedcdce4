"""The InfoVAE experiment: a VAE with InfoGAN's MNIST codes and the
mutual-information term."""

from __future__ import annotations

from genlatent_infogan.mutual_information import MutualInformationConfig

from genlatent.config import (
    AdamConfig,
    DataConfig,
    ExperimentConfig,
    OptimConfig,
    TrainerConfig,
)
from genlatent.latent import CategoricalCode, ContinuousCode, NoiseCode

# Weight of L_I for the categorical code. The negative ELBO is a sum over 784
# pixels, a few hundred nats per image, against at most log 10 = 2.3 nats of
# L_I, so the MI term needs more weight than InfoGAN's 1 to shape the decoder.
LAMBDA_DISC = 10.0


def infovae_mnist() -> ExperimentConfig:
    """Build the InfoVAE experiment on MNIST.

    Codes: c1 categorical(10); c2, c3 continuous with N(0, 1) priors and Q's
    posterior std fixed at 1; 62 Gaussian noise values, 74 inputs in all. The
    VAE's KL term needs Gaussian priors where InfoGAN's recipe draws
    Unif(-1, 1). Adam at 1e-3 with the usual betas (0.9, 0.999) trains the
    encoder and decoder, and Q alike.
    """
    codes = [
        CategoricalCode("c1", 10),
        ContinuousCode("c2", prior="gaussian", fixed_std=1.0),
        ContinuousCode("c3", prior="gaussian", fixed_std=1.0),
        NoiseCode("z", 62, distribution="gaussian"),
    ]
    adam = AdamConfig(lr=1e-3, beta1=0.9, beta2=0.999)
    return ExperimentConfig(
        name="infovae-mnist",
        description="VAE on MNIST with InfoGAN's codes and the MI term on prior "
        "samples, Q separate from the encoder",
        model="vae",
        architecture="infovae-mnist",
        latent=[code.to_config() for code in codes],
        data=DataConfig(dataset="mnist"),
        optim=OptimConfig(
            discriminator=AdamConfig(lr=adam.lr, beta1=adam.beta1, beta2=adam.beta2),
            generator=adam,
        ),
        trainer=TrainerConfig(max_steps=5000, batch_size=128),
        regularizers={
            "mi": MutualInformationConfig(lambda_disc=LAMBDA_DISC, lambda_cont=1.0)
        },
    )
