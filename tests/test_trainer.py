"""The adversarial trainer's update rules, losses and divergence guard."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from genlatent_infogan.networks import MNISTNetworks

from genlatent.checkpoint import list_checkpoints, load_checkpoint
from genlatent.config import ExperimentConfig
from genlatent.errors import ConfigError, DivergenceError
from genlatent.hookspecs import Register, hookimpl
from genlatent.losses import StandardGANLoss
from genlatent.plugins import PluginHost, load_plugins
from genlatent.regularizers import GeneratedBatch, Regularizer, RegularizerTerm
from genlatent.run import build_trainer, resolve_config, run_experiment
from genlatent.trainer import AdversarialTrainer

from .conftest import requires_fashion_mnist


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {
        name for name, value in before.items() if not torch.equal(value, after[name])
    }


def trainer_for(
    *overrides: str,
    plugins: PluginHost | None = None,
    experiment: str = "infogan-mnist",
) -> AdversarialTrainer:
    plugins = plugins or load_plugins()
    config = resolve_config(
        experiment,
        ["trainer.batch_size=16", "wandb.mode=disabled", *overrides],
        plugins=plugins,
    )
    torch.manual_seed(0)
    return build_trainer(config, plugins, torch.device("cpu"))


def real_batch(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=generator
    )


def step_inputs(
    trainer: AdversarialTrainer,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    latent = trainer.sample_latent(16)
    real = real_batch().float() / 255
    return real, latent, trainer.generator(latent)


# -- update rules -------------------------------------------------------------


def test_discriminator_update_leaves_generator():
    trainer = trainer_for()
    real, latent, fake = step_inputs(trainer)
    generator_before = snapshot(trainer.generator)
    discriminator_before = snapshot(trainer.discriminator)
    head_before = snapshot(trainer.regularizers)
    assert trainer.discriminator_update(1, real, latent, fake, {})
    assert changed(generator_before, trainer.generator) == set()
    trunk_weights = {name for name in discriminator_before if name.endswith("weight")}
    assert trunk_weights <= changed(discriminator_before, trainer.discriminator)
    assert changed(head_before, trainer.regularizers)


def test_generator_update_leaves_discriminator_and_head():
    trainer = trainer_for()
    _, latent, fake = step_inputs(trainer)
    generator_before = snapshot(trainer.generator)
    parameters_before = {
        name: p.detach().clone()
        for name, p in [
            *trainer.discriminator.named_parameters(),
            *trainer.regularizers.named_parameters(),
        ]
    }
    assert trainer.generator_update(1, latent, fake, {})
    weights = {name for name in generator_before if name.endswith("weight")}
    assert weights <= changed(generator_before, trainer.generator)
    for name, parameter in [
        *trainer.discriminator.named_parameters(),
        *trainer.regularizers.named_parameters(),
    ]:
        assert torch.equal(parameter, parameters_before[name]), name


def test_generator_update_computes_no_discriminator_grads():
    trainer = trainer_for()
    _, latent, fake = step_inputs(trainer)
    trainer.discriminator.zero_grad(set_to_none=True)
    trainer.regularizers.zero_grad(set_to_none=True)
    trainer.generator_update(1, latent, fake, {})
    for name, parameter in trainer.discriminator.named_parameters():
        assert parameter.grad is None, name
        assert parameter.requires_grad, name


def test_optimizers_use_per_network_settings():
    trainer = trainer_for(
        "optim.discriminator.lr=4e-4",
        "optim.discriminator.beta1=0.4",
        "optim.generator.lr=3e-4",
    )
    (d_group,) = trainer.discriminator_optimizer.param_groups
    (g_group,) = trainer.generator_optimizer.param_groups
    assert d_group["lr"] == 4e-4
    assert d_group["betas"] == (0.4, 0.999)
    assert g_group["lr"] == 3e-4
    assert g_group["betas"] == (0.5, 0.999)
    head = {id(p) for p in trainer.regularizers.parameters()}
    assert head <= {id(p) for p in d_group["params"]}
    assert not head & {id(p) for p in g_group["params"]}


def test_step_counts_and_metrics():
    trainer = trainer_for()
    metrics = trainer.train_step(real_batch())
    assert trainer.step == 1
    assert {"d_loss", "g_loss", "mi/c1", "mi/c2", "mi/c3"} <= set(metrics)


def test_standard_loss_exact_values():
    loss = StandardGANLoss()
    zeros = torch.zeros(4)
    assert loss.discriminator_loss(zeros, zeros).item() == pytest.approx(
        2 * math.log(2)
    )
    assert loss.generator_loss(zeros).item() == pytest.approx(math.log(2))
    confident = torch.full((4,), 100.0)
    assert loss.discriminator_loss(confident, -confident).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert math.isfinite(loss.generator_loss(-confident).item())


def test_same_seed_same_step():
    first = trainer_for().train_step(real_batch())
    second = trainer_for().train_step(real_batch())
    for key in ("d_loss", "g_loss", "mi/c1"):
        assert torch.equal(torch.as_tensor(first[key]), torch.as_tensor(second[key]))


# -- divergence guard -----------------------------------------------------------


LEARNED_STD = ("latent.c2.fixed_std=none", "latent.c3.fixed_std=none")


class CollapsedStdNetworks(MNISTNetworks):
    """MNIST networks whose recognition head starts with log-std bias -60."""

    name = "collapsed-std"

    def build_recognition_head(self, num_outputs: int) -> torch.nn.Module:
        head = super().build_recognition_head(num_outputs)
        output = head[-1]
        assert isinstance(output, torch.nn.Linear)
        with torch.no_grad():
            # With learned stds, Q's outputs are 10 logits, then c2's mean and
            # log-std, then c3's mean and log-std.
            output.bias[11] = -60.0
            output.bias[13] = -60.0
        return head


class CollapsedStdPlugin:
    __name__ = "collapsed_std_plugin"

    @hookimpl
    def register_architectures(self, register: Register) -> None:
        register(CollapsedStdNetworks())


def test_collapsed_std_stops_at_first_step():
    trainer = trainer_for(
        *LEARNED_STD,
        "architecture=collapsed-std",
        plugins=load_plugins(extra=[CollapsedStdPlugin()]),
    )
    before = {
        n: p.detach().clone() for n, p in trainer.discriminator.named_parameters()
    }
    with pytest.raises(DivergenceError) as error:
        trainer.train_step(real_batch())
    message = str(error.value)
    assert "step 1" in message
    assert "discriminator loss is inf" in message
    for name, parameter in trainer.discriminator.named_parameters():
        assert torch.equal(parameter, before[name]), name
    for parameter in [
        *trainer.generator.parameters(),
        *trainer.discriminator.parameters(),
    ]:
        assert torch.isfinite(parameter).all()


@requires_fashion_mnist
def test_collapsed_std_run_stops_with_message(tmp_path):
    plugins = load_plugins(extra=[CollapsedStdPlugin()])
    with pytest.raises(DivergenceError) as error:
        run_experiment(
            "infogan-fashion-mnist",
            [
                *LEARNED_STD,
                "architecture=collapsed-std",
                "trainer.max_steps=50",
                "trainer.batch_size=16",
                "trainer.checkpoint_every=10",
                "trainer.progress=false",
                "wandb.mode=disabled",
            ],
            out=tmp_path / "run",
            plugins=plugins,
        )
    assert str(error.value).startswith("step 1: the discriminator loss is inf")
    assert "d_loss/mi=inf" in str(error.value)
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


@attrs.define
class NanAtStepConfig:
    step: int = 25


class NanAtStep(Regularizer):
    """Adds NaN to the discriminator objective at one step."""

    name = "nan_at_step"
    config_class = NanAtStepConfig

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self.calls = 0

    def discriminator_term(self, batch: GeneratedBatch) -> RegularizerTerm:
        self.calls += 1
        value = math.nan if self.calls == self.config.step else 0.0
        return RegularizerTerm(torch.tensor(value))


class NanPlugin:
    __name__ = "nan_plugin"

    @hookimpl
    def register_regularizers(self, register: Register) -> None:
        register(NanAtStep)


def nan_experiment(plugins: PluginHost) -> ExperimentConfig:
    config = plugins.experiment("infogan-fashion-mnist")
    config.regularizers["nan_at_step"] = NanAtStepConfig(step=25)
    return config


def test_deferred_check_skips_update_on_device():
    trainer = trainer_for(
        *LEARNED_STD,
        "architecture=collapsed-std",
        "trainer.divergence_check=deferred",
        plugins=load_plugins(extra=[CollapsedStdPlugin()]),
    )
    before = {
        n: p.detach().clone() for n, p in trainer.discriminator.named_parameters()
    }
    trainer.train_step(real_batch())
    for name, parameter in trainer.discriminator.named_parameters():
        assert torch.equal(parameter, before[name]), name
    with pytest.raises(DivergenceError) as error:
        trainer.raise_on_divergence()
    assert str(error.value).startswith("step 1: the discriminator loss is inf")


def test_deferred_check_needs_fused_adam():
    with pytest.raises(ConfigError, match=r"trainer\.divergence_check=deferred needs"):
        trainer_for("trainer.divergence_check=deferred", "optim.fused=false")


@pytest.mark.parametrize("divergence_check", ["step", "deferred"])
@requires_fashion_mnist
def test_divergence_keeps_last_good_checkpoint(tmp_path, divergence_check):
    plugins = load_plugins(extra=[NanPlugin()])
    overrides = [
        f"trainer.divergence_check={divergence_check}",
        "trainer.batch_size=16",
        "trainer.max_steps=50",
        "trainer.checkpoint_every=10",
        "trainer.sample_every=1000",
        "trainer.progress=false",
        "wandb.mode=disabled",
    ]
    with pytest.raises(
        DivergenceError, match=r"step 25: the discriminator loss is nan"
    ):
        run_experiment(
            nan_experiment(plugins), overrides, out=tmp_path / "run", plugins=plugins
        )
    checkpoints = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [path.name for path in checkpoints] == [
        "step_00000010.pt",
        "step_00000020.pt",
    ]
    state = load_checkpoint(checkpoints[-1])
    assert state["step"] == 20
    for name, value in state["discriminator"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("divergence_check", ["step", "deferred"])
@requires_fashion_mnist
def test_divergence_skip_option(tmp_path, divergence_check):
    plugins = load_plugins(extra=[NanPlugin()])
    result = run_experiment(
        nan_experiment(plugins),
        [
            f"trainer.divergence_check={divergence_check}",
            "trainer.batch_size=16",
            "trainer.max_steps=30",
            "trainer.on_divergence=skip",
            "trainer.progress=false",
            "wandb.mode=disabled",
        ],
        out=tmp_path / "run",
        plugins=plugins,
    )
    assert result.steps == 30
    state = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert state["skipped_steps"] == 1
    for name, value in state["generator"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
