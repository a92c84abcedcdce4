"""The InfoVAE model: its KL terms, its updates, the Q-only ablation, exact
state round trips, and training on real Fashion-MNIST."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
from genlatent_vae import VAETrainer
from genlatent_vae.posterior import (
    categorical_kl_to_uniform,
    gaussian_kl,
    relaxed_one_hot,
    sample_posterior,
)

from genlatent.checkpoint import list_checkpoints, load_checkpoint
from genlatent.errors import ConfigError, UnknownNameError
from genlatent.latent import CategoricalCode, ContinuousCode, NoiseCode
from genlatent.plugins import load_plugins
from genlatent.run import build_trainer, resolve_config, resume_run, run_experiment

from .conftest import requires_fashion_mnist

# -- exact values ---------------------------------------------------------------


def test_gaussian_kl_exact():
    mean = torch.tensor([[1.0, 2.0]])
    log_var = torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - log 4))
    expected = 0.5 * (1.0 + 7.0 - math.log(4.0))
    assert gaussian_kl(mean, log_var).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).tolist() == [0.0] * 3


def test_categorical_kl_is_log_k_minus_entropy():
    probabilities = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.1))
    kl = categorical_kl_to_uniform(probabilities.log())
    assert kl.item() == pytest.approx(math.log(4.0) - entropy, rel=1e-6)
    assert categorical_kl_to_uniform(torch.zeros(2, 10)).abs().max() < 1e-6
    confident = torch.tensor([[100.0, 0.0, 0.0]])
    assert categorical_kl_to_uniform(confident).item() == pytest.approx(math.log(3))


def test_relaxed_one_hot_on_simplex_with_gradient():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    logits.requires_grad_(True)
    sample = relaxed_one_hot(logits, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sample.sum(dim=1), torch.ones(6))
    assert (sample >= 0).all()
    sample[:, 0].sum().backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0


def test_relaxed_one_hot_low_temperature_is_gumbel_argmax():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    soft = relaxed_one_hot(logits, 1e-3, generator=torch.Generator().manual_seed(1))
    uniform = torch.rand(8, 4, generator=torch.Generator().manual_seed(1))
    gumbel = -torch.log(-torch.log(uniform))
    assert torch.equal(soft.argmax(dim=1), (logits + gumbel).argmax(dim=1))
    assert soft.max(dim=1).values.min() > 0.99


def test_sample_posterior_layout_and_kl():
    codes = (CategoricalCode("c", 3), ContinuousCode("u", 2, prior="gaussian"))
    codes += (NoiseCode("z", 1),)
    # Logits 0 (uniform), then the Gaussians N(0, 1): every KL is 0.
    output = torch.zeros(4, 3 + 4 + 2)
    latent, kl = sample_posterior(codes, output, generator=torch.Generator())
    assert latent.shape == (4, 3 + 2 + 1)
    assert set(kl) == {"c", "u", "z"}
    for name, value in kl.items():
        assert value.shape == (4,), name
        assert value.abs().max() < 1e-6, name
    with pytest.raises(ValueError, match=r"shape \(batch, 9\)"):
        sample_posterior(codes, torch.zeros(4, 8))


# -- config ---------------------------------------------------------------------


def test_vae_rejects_uniform_prior():
    with pytest.raises(ConfigError) as error:
        resolve_config("infovae-mnist", ["latent.c2.prior=uniform"])
    assert "latent code 'c2'" in str(error.value)
    assert "latent.c2.prior=gaussian" in str(error.value)


def test_vae_rejects_uniform_noise():
    with pytest.raises(ConfigError, match=r"latent.z.distribution=gaussian"):
        resolve_config("infovae-mnist", ["latent.z.distribution=uniform"])


def test_vae_rejects_gan_architecture():
    with pytest.raises(ConfigError, match=r"model=vae needs an architecture"):
        resolve_config("infovae-mnist", ["architecture=infogan-mnist"])


def test_unknown_model_rejected():
    with pytest.raises(UnknownNameError, match=r"unknown model 'vea'.*'vae'"):
        resolve_config("infovae-mnist", ["model=vea"])


# -- the training step ------------------------------------------------------------


def vae_trainer(*overrides: str, seed: int = 0) -> VAETrainer:
    plugins = load_plugins()
    config = resolve_config(
        "infovae-mnist",
        ["trainer.batch_size=8", "wandb.mode=disabled", *overrides],
        plugins=plugins,
    )
    torch.manual_seed(seed)
    trainer = build_trainer(config, plugins, torch.device("cpu"))
    assert isinstance(trainer, VAETrainer)
    return trainer


def real_batch(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=generator)


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def test_vae_step_metrics():
    trainer = vae_trainer()
    metrics = trainer.train_step(real_batch())
    assert trainer.step == 1
    for key in ("elbo", "reconstruction", "kl", "kl/c1", "kl/z", "mi/c1"):
        assert math.isfinite(float(metrics[key])), key
    assert float(metrics["elbo"]) == pytest.approx(
        -(float(metrics["reconstruction"]) + float(metrics["kl"])), rel=1e-6
    )
    kl_parts = sum(float(metrics[f"kl/{name}"]) for name in ("c1", "c2", "c3", "z"))
    assert float(metrics["kl"]) == pytest.approx(kl_parts, rel=1e-5)


def test_q_shares_no_parameter_with_encoder():
    trainer = vae_trainer()
    q_parameters = {id(p) for p in trainer.recognition_trunk.parameters()}
    q_parameters |= {id(p) for p in trainer.regularizers.parameters()}
    model_parameters = {id(p) for p in trainer.encoder.parameters()}
    model_parameters |= {id(p) for p in trainer.generator.parameters()}
    assert not q_parameters & model_parameters
    q_group = trainer.recognition_optimizer.param_groups[0]["params"]
    assert {id(p) for p in q_group} == q_parameters


def test_recognition_update_trains_only_q():
    trainer = vae_trainer()
    latent = trainer.sample_latent(8)
    samples = trainer.generator(latent)
    model_before = parameters(trainer.encoder) | parameters(trainer.generator)
    q_before = parameters(trainer.regularizers)
    assert trainer.recognition_update(1, latent, samples, {})
    model_after = parameters(trainer.encoder) | parameters(trainer.generator)
    for name, value in model_before.items():
        assert torch.equal(value, model_after[name]), name
    q_after = parameters(trainer.regularizers)
    assert any(not torch.equal(q_before[name], q_after[name]) for name in q_before)
    for name, parameter in trainer.generator.named_parameters():
        assert parameter.grad is None, name


def test_model_update_leaves_q():
    trainer = vae_trainer()
    latent = trainer.sample_latent(8)
    samples = trainer.generator(latent)
    q_before = parameters(trainer.recognition_trunk) | parameters(trainer.regularizers)
    real = real_batch().float() / 255
    assert trainer.model_update(1, real, latent, samples, {})
    q_after = parameters(trainer.recognition_trunk) | parameters(trainer.regularizers)
    for name, value in q_before.items():
        assert torch.equal(value, q_after[name]), name


def decoder_mi_gradients(trainer: VAETrainer) -> list[torch.Tensor]:
    """Decoder gradients of the MI term's decoder-side loss alone."""
    mi = trainer.regularizers["mi"]
    latent = trainer.sample_latent(8)
    samples = trainer.generator(latent)
    from genlatent.regularizers import GeneratedBatch

    trainer.generator.zero_grad(set_to_none=True)
    term = mi.generator_term(
        GeneratedBatch(latent, samples, trainer.recognition_trunk(samples))
    )
    if term is not None:
        term.loss.backward()
    return [
        torch.zeros_like(p) if p.grad is None else p.grad
        for p in trainer.generator.parameters()
    ]


def test_mi_gradient_reaches_decoder():
    gradients = decoder_mi_gradients(vae_trainer())
    assert all(gradient.abs().sum() > 0 for gradient in gradients)


def test_ablation_mi_gradient_on_decoder_is_zero():
    trainer = vae_trainer("mi.update_generator=false")
    gradients = decoder_mi_gradients(trainer)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in gradients)
    metrics = trainer.train_step(real_batch())
    # The decoder-side objective is the negative ELBO alone, while Q still
    # learns from the decoder's samples.
    assert "vae_loss/mi" not in metrics
    assert "q_loss/mi" in metrics
    assert float(metrics["vae_loss"]) == float(-metrics["elbo"])


def test_state_round_trip_continues_exactly():
    trainer = vae_trainer()
    for seed in range(3):
        trainer.train_step(real_batch(seed))
    # A copy, as a checkpoint file gives: Adam's load_state_dict keeps the
    # moment tensors it is given, which the original's next step changes.
    state = copy.deepcopy(trainer.state_dict())
    restored = vae_trainer(seed=123)  # another initialisation, overwritten below
    restored.load_state_dict(state)
    assert restored.step == 3
    first = trainer.train_step(real_batch(3))
    second = restored.train_step(real_batch(3))
    for key in first:
        assert torch.equal(torch.as_tensor(first[key]), torch.as_tensor(second[key])), (
            key
        )
    for key, module in trainer.networks().items():
        other = restored.networks()[key].state_dict()
        for name, value in module.state_dict().items():
            assert torch.equal(value, other[name]), f"{key}.{name}"


# -- real data ----------------------------------------------------------------------

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
REAL_STEPS = 200


# Two 200-step trainings: minutes on 2 CPU cores.
@pytest.mark.slow
@requires_fashion_mnist
@pytest.mark.realdata
def test_vae_mi_rises_above_ablation(tmp_path):
    steps = f"trainer.max_steps={REAL_STEPS}"
    full = run_experiment("infovae-mnist", [*REAL_RUN, steps], out=tmp_path / "full")
    ablated = run_experiment(
        "infovae-mnist",
        [*REAL_RUN, steps, "mi.update_generator=false"],
        out=tmp_path / "ablated",
    )
    full_mi, ablated_mi = full.metrics["mi/c1"], ablated.metrics["mi/c1"]
    assert full_mi > 1.0, full_mi
    assert full_mi - ablated_mi > 0.5, (full_mi, ablated_mi)
    # The ELBO trains too: a few hundred nats per image, finite.
    assert math.isfinite(full.metrics["elbo"])


DETERMINISTIC = [
    *REAL_RUN,
    "trainer.log_every=1",
    "trainer.checkpoint_every=3",
    "trainer.deterministic=true",
]


@requires_fashion_mnist
@pytest.mark.realdata
def test_vae_resume_matches_straight_run(tmp_path):
    straight = tmp_path / "straight"
    run_experiment(
        "infovae-mnist", [*DETERMINISTIC, "trainer.max_steps=6"], out=straight
    )
    resumed = tmp_path / "resumed"
    run_experiment(
        "infovae-mnist", [*DETERMINISTIC, "trainer.max_steps=3"], out=resumed
    )
    resume_run(resumed, ["trainer.max_steps=6"])
    first = load_checkpoint(list_checkpoints(straight / "checkpoints")[-1])
    second = load_checkpoint(list_checkpoints(resumed / "checkpoints")[-1])
    assert first["step"] == second["step"] == 6
    for key in ("generator", "encoder", "recognition_trunk", "regularizers"):
        for name, value in first[key].items():
            assert torch.equal(value, second[key][name]), f"{key}.{name}"


@requires_fashion_mnist
@pytest.mark.realdata
def test_vae_cli_traverse_and_sample(tmp_path):
    run_dir = tmp_path / "run"
    run_experiment("infovae-mnist", [*REAL_RUN, "trainer.max_steps=2"], out=run_dir)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    for args in (["traverse", "--rows", "2"], ["sample", "--n", "8"]):
        result = subprocess.run(
            [sys.executable, "-m", "genlatent", args[0], str(run_dir), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    for code in ("c1", "c2", "c3"):
        assert (run_dir / "traversals" / f"{code}.png").stat().st_size > 0, code
    assert (run_dir / "samples.png").stat().st_size > 0
