"""The InfoGAN paper's experiments as genlatent configs."""

from __future__ import annotations

from genlatent.config import (
    AdamConfig,
    DataConfig,
    ExperimentConfig,
    OptimConfig,
    TrainerConfig,
)
from genlatent.latent import CategoricalCode, ContinuousCode, NoiseCode
from genlatent_infogan.mutual_information import MutualInformationConfig


def mnist_latent() -> list[dict[str, object]]:
    """One 10-way categorical code, two Unif(-1, 1) codes, 62 noise values: 74."""
    codes = [
        CategoricalCode("c1", 10),
        ContinuousCode("c2"),
        ContinuousCode("c3"),
        NoiseCode("z", 62),
    ]
    return [code.to_config() for code in codes]


def mnist_like(name: str, dataset: str, description: str) -> ExperimentConfig:
    """InfoGAN's MNIST recipe on a 28x28 gray data set.

    Adam with beta1 0.5, learning rate 2e-4 for D and Q and 1e-3 for G,
    lambda 1, batch 128, 5000 steps.
    """
    return ExperimentConfig(
        name=name,
        description=description,
        architecture="infogan-mnist",
        latent=mnist_latent(),
        data=DataConfig(dataset=dataset),
        optim=OptimConfig(
            discriminator=AdamConfig(lr=2e-4, beta1=0.5),
            generator=AdamConfig(lr=1e-3, beta1=0.5),
        ),
        trainer=TrainerConfig(max_steps=5000, batch_size=128),
        regularizers={"mi": MutualInformationConfig(lambda_disc=1.0, lambda_cont=1.0)},
    )


def experiments() -> list[ExperimentConfig]:
    """Every experiment this plugin registers."""
    return [
        mnist_like(
            "infogan-mnist",
            "mnist",
            "InfoGAN on MNIST: 1 categorical(10) + 2 continuous codes, 62 noise",
        ),
        mnist_like(
            "infogan-fashion-mnist",
            "fashion-mnist",
            "InfoGAN on Fashion-MNIST with the MNIST networks and codes",
        ),
    ]
