"""The WGAN-GP and hinge losses, the critic normalization they need, n_critic,
and InfoGAN trained with them on real Fashion-MNIST."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from genlatent_losses import HingeLoss, WassersteinGPConfig, WassersteinGPLoss
from genlatent_losses.losses import gradient_penalty

from genlatent.errors import ConfigError, UnknownNameError
from genlatent.plugins import load_plugins
from genlatent.run import build_trainer, resolve_config, run_experiment
from genlatent.trainer import AdversarialTrainer

from .conftest import requires_fashion_mnist

# -- exact values ---------------------------------------------------------------


def linear_critic(weight: torch.Tensor, bias: float):
    """D(x) = w . x + b per image, whose input gradient is w everywhere."""

    def critic(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(start_dim=1) @ weight.flatten() + bias

    return critic


def test_gradient_penalty_linear_critic_exact():
    weight = torch.full((1, 2, 2), 1.5)  # ||w|| = sqrt(4 * 2.25) = 3
    real = torch.rand(5, 1, 2, 2)
    fake = torch.rand(5, 1, 2, 2)
    penalty = gradient_penalty(linear_critic(weight, 0.7), real, fake)
    assert penalty.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-6)


def test_wgan_gp_penalty_scales_with_lambda():
    weight = torch.tensor([[[0.6, 0.0], [0.0, 0.0]]])  # ||w|| = 0.6
    loss = WassersteinGPLoss().configured(WassersteinGPConfig(lambda_gp=10.0))
    real = torch.rand(3, 1, 2, 2)
    penalty = loss.critic_penalty(linear_critic(weight, 0.0), real, real.flip(0))
    assert penalty is not None
    assert penalty.item() == pytest.approx(10.0 * (0.6 - 1.0) ** 2, rel=1e-6)


def test_wgan_gp_zero_lambda_has_no_penalty():
    loss = WassersteinGPLoss().configured(WassersteinGPConfig(lambda_gp=0.0))
    real = torch.rand(3, 1, 2, 2)
    critic = linear_critic(torch.ones(1, 2, 2), 0.0)
    assert loss.critic_penalty(critic, real, real) is None


def test_gradient_penalty_reaches_critic_weights():
    weight = torch.full((1, 2, 2), 1.5, requires_grad=True)
    real = torch.rand(4, 1, 2, 2)
    penalty = gradient_penalty(linear_critic(weight, 0.0), real, torch.rand_like(real))
    penalty.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 2 * 1.5 / 3 = 2 per entry.
    assert weight.grad is not None
    assert torch.allclose(weight.grad, torch.full_like(weight, 2.0), rtol=1e-5)


def test_wgan_losses_exact_values():
    loss = WassersteinGPLoss()
    real = torch.tensor([1.0, 2.0, 3.0])
    fake = torch.tensor([-1.0, 0.5, 0.0])
    assert loss.discriminator_loss(real, fake).item() == pytest.approx((-0.5 / 3) - 2.0)
    assert loss.generator_loss(fake).item() == pytest.approx(0.5 / 3)


def test_hinge_loss_exact_values():
    loss = HingeLoss()
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x): 0, 1, 2
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(
        2.5 / 3 + 3.0 / 3
    )
    assert loss.generator_loss(fake).item() == pytest.approx(1.0 / 3)
    assert loss.critic_penalty(lambda x: x.sum(dim=(1, 2, 3)), fake, fake) is None


# -- config: the critic's normalization and bad input ------------------------------


def trainer_for(experiment: str, *overrides: str) -> AdversarialTrainer:
    plugins = load_plugins()
    config = resolve_config(
        experiment,
        ["trainer.batch_size=8", "wandb.mode=disabled", *overrides],
        plugins=plugins,
    )
    torch.manual_seed(0)
    trainer = build_trainer(config, plugins, torch.device("cpu"))
    assert isinstance(trainer, AdversarialTrainer)
    return trainer


def norm_layers(module: torch.nn.Module) -> set[type]:
    kinds = (
        torch.nn.BatchNorm1d,
        torch.nn.BatchNorm2d,
        torch.nn.LayerNorm,
        torch.nn.GroupNorm,
    )
    return {type(layer) for layer in module.modules() if isinstance(layer, kinds)}


def test_wgan_gp_critic_uses_layer_norm():
    trainer = trainer_for("infogan-mnist", "loss=wgan-gp")
    assert norm_layers(trainer.discriminator) == {
        torch.nn.GroupNorm,
        torch.nn.LayerNorm,
    }
    # Q's head is not differentiated by the penalty and keeps batch norm.
    assert norm_layers(trainer.regularizers) == {torch.nn.BatchNorm1d}


def test_standard_loss_keeps_batch_norm():
    trainer = trainer_for("infogan-mnist")
    assert norm_layers(trainer.discriminator) == {
        torch.nn.BatchNorm1d,
        torch.nn.BatchNorm2d,
    }


def test_discriminator_norm_none_override():
    trainer = trainer_for("infowgan-gp-mnist", "discriminator_norm=none")
    assert norm_layers(trainer.discriminator) == set()


def test_wgan_gp_rejects_batch_norm():
    with pytest.raises(ConfigError) as error:
        resolve_config("infowgan-gp-mnist", ["discriminator_norm=batch"])
    message = str(error.value)
    assert "discriminator_norm=batch" in message
    assert "loss=wgan-gp" in message
    assert "discriminator_norm=layer" in message


def test_negative_lambda_gp_rejected():
    with pytest.raises(ConfigError, match=r"lambda_gp must be a non-negative"):
        resolve_config("infogan-mnist", ["loss=wgan-gp", "loss_config.lambda_gp=-1"])


def test_unknown_loss_rejected():
    with pytest.raises(UnknownNameError, match=r"unknown loss 'wgan'"):
        resolve_config("infogan-mnist", ["loss=wgan"])


def test_loss_override_sets_default_settings():
    config = resolve_config(
        "infogan-mnist", ["loss=wgan-gp", "loss_config.lambda_gp=5"]
    )
    assert config.loss_config == WassersteinGPConfig(lambda_gp=5.0)
    standard = resolve_config("infowgan-gp-mnist", ["loss=standard"])
    assert standard.loss_config is None
    assert resolve_config("infowgan-gp-mnist").loss_config == WassersteinGPConfig()


def test_cli_negative_lambda_gp_one_line():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genlatent",
            "show",
            "infowgan-gp-mnist",
            "loss_config.lambda_gp=-1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genlatent: error: invalid override")
    assert "lambda_gp" in lines[0]


# -- the training step -------------------------------------------------------------


def real_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=generator)


def test_wgan_gp_step_logs_penalty():
    trainer = trainer_for("infowgan-gp-mnist", "trainer.n_critic=1")
    metrics = trainer.train_step(real_batch())
    for key in ("d_loss", "d_loss/penalty", "g_loss", "mi/c1"):
        assert math.isfinite(float(metrics[key])), key
    assert float(metrics["d_loss/penalty"]) > 0


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Batch-norm running statistics change on every forward pass, so only
    # parameters show whether an update happened.
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def test_n_critic_updates_generator_every_fifth_step():
    trainer = trainer_for("infowgan-gp-mnist")
    assert trainer.config.trainer.n_critic == 5
    before = parameters(trainer.generator)
    for step in range(1, 5):
        metrics = trainer.train_step(real_batch())
        assert "g_loss" not in metrics, step
        assert "d_loss" in metrics, step
    after_critic_steps = parameters(trainer.generator)
    for name, value in before.items():
        assert torch.equal(value, after_critic_steps[name]), name
    metrics = trainer.train_step(real_batch())
    assert "g_loss" in metrics
    weight = "0.0.weight"
    assert not torch.equal(before[weight], parameters(trainer.generator)[weight])


@pytest.mark.parametrize("experiment", ["infowgan-gp-mnist", "infogan-hinge-mnist"])
def test_ablation_keeps_mi_from_generator(experiment):
    trainer = trainer_for(experiment, "trainer.n_critic=1", "mi.update_generator=false")
    metrics = trainer.train_step(real_batch())
    assert "d_loss/mi" in metrics
    assert "g_loss/mi" not in metrics
    full = trainer_for(experiment, "trainer.n_critic=1")
    assert "g_loss/mi" in full.train_step(real_batch())


# -- real data: MI above the Q-only ablation, and traversals ------------------------

# Settings measured to separate the full model from the ablation within a few
# hundred steps on a 2-core CPU; n_critic=1 so that every step trains the
# generator.
REAL_RUN = [
    "data.dataset=fashion-mnist",
    "trainer.batch_size=16",
    "trainer.log_every=20",
    "trainer.sample_every=100000",
    "trainer.checkpoint_every=100000",
    "trainer.progress=false",
    "trainer.device=cpu",
    "wandb.mode=disabled",
]
REAL_STEPS = {"infowgan-gp-mnist": 200, "infogan-hinge-mnist": 200}
EXTRA = {"infowgan-gp-mnist": ["trainer.n_critic=1"], "infogan-hinge-mnist": []}


def final_mi(experiment: str, out: Path, *overrides: str) -> float:
    result = run_experiment(
        experiment,
        [
            *REAL_RUN,
            f"trainer.max_steps={REAL_STEPS[experiment]}",
            *EXTRA[experiment],
            *overrides,
        ],
        out=out,
    )
    return result.metrics["mi/c1"]


# Two 200-step trainings: minutes on 2 CPU cores.
@pytest.mark.slow
@requires_fashion_mnist
@pytest.mark.realdata
@pytest.mark.parametrize("experiment", ["infowgan-gp-mnist", "infogan-hinge-mnist"])
def test_mi_rises_above_ablation(experiment, tmp_path):
    full = final_mi(experiment, tmp_path / "full")
    ablated = final_mi(experiment, tmp_path / "ablated", "mi.update_generator=false")
    # L_I of a 10-way code is at most log 10 = 2.303 nats.
    assert full > 1.0, full
    assert full - ablated > 0.5, (full, ablated)


@requires_fashion_mnist
@pytest.mark.realdata
@pytest.mark.parametrize("experiment", ["infowgan-gp-mnist", "infogan-hinge-mnist"])
def test_cli_traverse_writes_grids(experiment, tmp_path):
    run_dir = tmp_path / "run"
    run_experiment(experiment, [*REAL_RUN, "trainer.max_steps=2"], out=run_dir)
    result = subprocess.run(
        [sys.executable, "-m", "genlatent", "traverse", str(run_dir), "--rows", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for code in ("c1", "c2", "c3"):
        assert (run_dir / "traversals" / f"{code}.png").stat().st_size > 0, code
