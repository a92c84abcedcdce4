"""The InfoGAN paper's experiments as genlatent configs."""

from __future__ import annotations

import attrs

from genlatent.config import (
    AdamConfig,
    DataConfig,
    ExperimentConfig,
    OptimConfig,
    TrainerConfig,
)
from genlatent.latent import CategoricalCode, ContinuousCode, LatentCode, NoiseCode
from genlatent_infogan.mutual_information import MutualInformationConfig

# The InfoGAN paper gives neither batch size nor training length. Batch 128 is
# what the authors' released MNIST launcher (openai/InfoGAN) uses, with 5000
# steps for MNIST. 20,000 steps at batch 128 is about 35 epochs of SVHN's
# 73,257 training images, 13 of CelebA's 202,599 and 30 of the 86,366 chairs
# renders.
BATCH_SIZE = 128
MAX_STEPS = 20_000
MNIST_MAX_STEPS = 5000


def mnist_codes() -> list[LatentCode]:
    """Build the MNIST codes: categorical(10), two Unif(-1, 1) codes and 62
    Unif(-1, 1) noise values, 74 inputs in all.

    As in the authors' released MNIST launcher (openai/InfoGAN,
    run_mnist_exp.py), the continuous codes' posterior std is fixed at 1 and
    the noise is uniform. With a learned std the lower bound of a continuous
    code has no maximum, and on these networks its gradient swamps the
    adversarial one: on Fashion-MNIST the samples were still pixel noise after
    400 steps, against recognisable clothes by step 250 with the std fixed.
    ``latent.c2.fixed_std=none`` restores the learned std.
    """
    codes = [CategoricalCode("c1", 10), continuous_code("c2"), continuous_code("c3")]
    return [*codes, noise(62)]


def mnist_latent() -> list[dict[str, object]]:
    """Return :func:`mnist_codes` as config dicts."""
    return [code.to_config() for code in mnist_codes()]


def mnist_like(name: str, dataset: str, description: str) -> ExperimentConfig:
    """Build InfoGAN's MNIST recipe for a 28x28 gray data set: the defaults of
    :func:`infogan_experiment` for 5000 steps."""
    return infogan_experiment(
        name,
        description=description,
        architecture="infogan-mnist",
        dataset=dataset,
        latent=mnist_codes(),
        max_steps=MNIST_MAX_STEPS,
    )


def continuous_code(name: str) -> ContinuousCode:
    """Build a Unif(-1, 1) code whose posterior std is fixed at 1.

    The InfoGAN paper describes a learned std, but its authors' released MNIST
    launcher fixes it, and every recipe here does too, for the reason given in
    :func:`mnist_codes`. ``latent.NAME.fixed_std=none`` restores the learned
    std.
    """
    return ContinuousCode(name, fixed_std=1.0)


def noise(dim: int) -> NoiseCode:
    """Build Unif(-1, 1) noise, as in the authors' released MNIST launcher.
    The InfoGAN paper does not name the noise distribution."""
    return NoiseCode("z", dim, distribution="uniform")


def infogan_experiment(
    name: str,
    *,
    description: str,
    architecture: str,
    dataset: str,
    latent: list[LatentCode],
    discriminator_lr: float = 2e-4,
    generator_lr: float = 1e-3,
    lambda_disc: float = 1.0,
    lambda_cont: float = 1.0,
    max_steps: int = MAX_STEPS,
) -> ExperimentConfig:
    """Build an InfoGAN experiment with Adam at beta1 0.5.

    The defaults are those the InfoGAN paper uses unless one of its tables
    gives others: learning rate 2e-4 for D and Q, 1e-3 for G, and lambda 1.
    """
    return ExperimentConfig(
        name=name,
        description=description,
        architecture=architecture,
        latent=[code.to_config() for code in latent],
        data=DataConfig(dataset=dataset),
        optim=OptimConfig(
            discriminator=AdamConfig(lr=discriminator_lr, beta1=0.5),
            generator=AdamConfig(lr=generator_lr, beta1=0.5),
        ),
        trainer=TrainerConfig(max_steps=max_steps, batch_size=BATCH_SIZE),
        regularizers={
            "mi": MutualInformationConfig(
                lambda_disc=lambda_disc, lambda_cont=lambda_cont
            )
        },
    )


def svhn_experiment() -> ExperimentConfig:
    """SVHN: four 10-way categorical codes, four Unif(-1, 1) codes and 124
    noise values, 168 in all."""
    categorical = [CategoricalCode(f"c{index}", 10) for index in range(1, 5)]
    continuous = [continuous_code(f"c{index}") for index in range(5, 9)]
    return infogan_experiment(
        "infogan-svhn",
        description="InfoGAN on SVHN: 4 categorical(10) + 4 continuous codes, "
        "124 noise",
        architecture="infogan-svhn",
        dataset="svhn",
        latent=[*categorical, *continuous, noise(124)],
    )


def celeba_experiment() -> ExperimentConfig:
    """CelebA: ten 10-way categorical codes and 128 noise values, 228 in all."""
    categorical = [CategoricalCode(f"c{index}", 10) for index in range(1, 11)]
    return infogan_experiment(
        "infogan-celeba",
        description="InfoGAN on CelebA: 10 categorical(10) codes, 128 noise",
        architecture="infogan-celeba",
        dataset="celeba",
        latent=[*categorical, noise(128)],
    )


def faces_experiment(
    variation: str,
    *,
    discriminator_lr: float,
    generator_lr: float,
    mi_weight: float,
    description: str,
) -> ExperimentConfig:
    """3D faces: five Unif(-1, 1) codes and 128 noise values, 133 in all.

    The InfoGAN paper trains one configuration per variation it reports.
    Which of c1..c5 learns that variation is up to training, so the codes are
    numbered rather than named.
    """
    continuous = [continuous_code(f"c{index}") for index in range(1, 6)]
    return infogan_experiment(
        f"infogan-faces-{variation}",
        description=description,
        architecture="infogan-faces",
        dataset="faces",
        latent=[*continuous, noise(128)],
        discriminator_lr=discriminator_lr,
        generator_lr=generator_lr,
        # The InfoGAN paper gives one lambda for the faces runs, so it weights
        # categorical codes too, should an override add one.
        lambda_disc=mi_weight,
        lambda_cont=mi_weight,
    )


def chairs_experiment(
    variation: str, *, lambda_cont: float, lambda_disc: float
) -> ExperimentConfig:
    """3D chairs: one Unif(-1, 1) code, three 20-way categorical codes and 128
    noise values, 189 in all.

    The continuous code is named after the variation it learns in the InfoGAN
    paper's run with these weights: rotation, or width.
    """
    latent: list[LatentCode] = [continuous_code(variation)]
    latent += [CategoricalCode(f"c{index}", 20) for index in range(1, 4)]
    latent.append(noise(128))
    return infogan_experiment(
        f"infogan-chairs-{variation}",
        description=f"InfoGAN on 3D chairs, tuned for {variation}: 1 continuous + "
        "3 categorical(20) codes, 128 noise",
        architecture="infogan-chairs",
        dataset="chairs",
        latent=latent,
        lambda_disc=lambda_disc,
        lambda_cont=lambda_cont,
    )


def paper_experiments() -> list[ExperimentConfig]:
    """Build the SVHN, CelebA, 3D faces and 3D chairs experiments of the
    InfoGAN paper, with the learning rates and lambdas of its Tables 5 and 7."""
    return [
        svhn_experiment(),
        celeba_experiment(),
        # Faces learning rates (D and Q / G) and lambda per variation.
        faces_experiment(
            "azimuth",
            discriminator_lr=2e-4,
            generator_lr=5e-4,
            mi_weight=0.2,
            description="InfoGAN on 3D faces, tuned for azimuth (pose): "
            "5 continuous codes, 128 noise",
        ),
        faces_experiment(
            "elevation",
            discriminator_lr=4e-4,
            generator_lr=3e-4,
            mi_weight=0.1,
            description="InfoGAN on 3D faces, tuned for elevation: "
            "5 continuous codes, 128 noise",
        ),
        faces_experiment(
            "lighting",
            discriminator_lr=8e-4,
            generator_lr=3e-4,
            mi_weight=0.1,
            description="InfoGAN on 3D faces, tuned for lighting; another code "
            "learns wide or narrow faces: 5 continuous codes, 128 noise",
        ),
        # The chairs runs use the default learning rates. The InfoGAN paper
        # found separate lambdas for continuous and categorical codes necessary.
        chairs_experiment("rotation", lambda_cont=10.0, lambda_disc=1.0),
        chairs_experiment("width", lambda_cont=0.05, lambda_disc=2.0),
    ]


# Adam settings of the WGAN-GP recipe (Gulrajani et al., 2017, Algorithm 1),
# for the critic and the generator alike.
WGAN_GP_ADAM = AdamConfig(lr=1e-4, beta1=0.0, beta2=0.9)
WGAN_GP_N_CRITIC = 5


def wgan_gp_mnist() -> ExperimentConfig:
    """Build InfoGAN's MNIST networks and codes trained with WGAN-GP.

    The loss, its penalty weight 10, Adam at 1e-4 with betas (0, 0.9) and five
    critic updates per generator update follow Gulrajani et al. (2017). The
    critic trunk uses layer norm in place of batch norm (chosen by
    ``discriminator_norm=auto`` for this loss), as the paper recommends, and
    Q's head keeps batch norm, since the penalty does not pass through it.
    ``max_steps`` counts critic updates, so 25,000 steps give the 5000
    generator updates of the MNIST recipe.
    """
    config = mnist_like(
        "infowgan-gp-mnist",
        "mnist",
        "InfoGAN on MNIST with the WGAN-GP loss: layer-norm critic, n_critic 5",
    )
    config.loss = "wgan-gp"
    config.optim = OptimConfig(
        discriminator=attrs.evolve(WGAN_GP_ADAM), generator=attrs.evolve(WGAN_GP_ADAM)
    )
    config.trainer.n_critic = WGAN_GP_N_CRITIC
    config.trainer.max_steps = MNIST_MAX_STEPS * WGAN_GP_N_CRITIC
    return config


def hinge_mnist() -> ExperimentConfig:
    """Build InfoGAN's MNIST recipe with the hinge loss in place of the
    standard one; networks, learning rates and batch norm are unchanged."""
    config = mnist_like(
        "infogan-hinge-mnist",
        "mnist",
        "InfoGAN on MNIST with the hinge loss",
    )
    config.loss = "hinge"
    return config


def experiments() -> list[ExperimentConfig]:
    """Build every experiment this plugin registers."""
    return [
        wgan_gp_mnist(),
        hinge_mnist(),
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
        *paper_experiments(),
    ]
