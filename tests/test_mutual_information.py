"""The mutual-information term: its graph, where its gradient goes, and what
it trains."""

from __future__ import annotations

import pytest
import torch
from genlatent_infogan import MutualInformation

from genlatent.data import scale_images
from genlatent.plugins import load_plugins
from genlatent.regularizers import GeneratedBatch
from genlatent.run import build_trainer, resolve_config
from genlatent.trainer import AdversarialTrainer


def mnist_trainer(*overrides: str) -> AdversarialTrainer:
    plugins = load_plugins()
    config = resolve_config(
        "infogan-mnist",
        ["trainer.batch_size=8", "wandb.mode=disabled", *overrides],
        plugins=plugins,
    )
    torch.manual_seed(0)
    return build_trainer(config, plugins, torch.device("cpu"))


def mi_module(trainer: AdversarialTrainer) -> MutualInformation:
    module = trainer.regularizers["mi"]
    assert isinstance(module, MutualInformation)
    return module


def zero_grads(trainer: AdversarialTrainer) -> None:
    for module in (trainer.generator, trainer.discriminator, trainer.regularizers):
        module.zero_grad(set_to_none=True)


def generated(trainer: AdversarialTrainer, *, detach: bool) -> GeneratedBatch:
    latent = trainer.sample_latent(8)
    images = trainer.generator(latent)
    if detach:
        images = images.detach()
    _, features = trainer.discriminator(images)
    return GeneratedBatch(latent, images, features)


def assert_all_nonzero(module: torch.nn.Module, what: str) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{what}.{name} has no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{what}.{name} not finite"
        assert parameter.grad.norm() > 0, f"{what}.{name} gradient is zero"


def assert_all_absent_or_zero(module: torch.nn.Module, what: str) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is None or torch.all(parameter.grad == 0), (
            f"{what}.{name} received a gradient"
        )


# -- a term rebuilt from detached numbers would never train G or Q -------------


def test_mi_loss_reaches_generator_head():
    trainer = mnist_trainer()
    mi = mi_module(trainer)
    zero_grads(trainer)
    loss, _ = mi.loss(generated(trainer, detach=False))
    assert loss.requires_grad
    assert loss.grad_fn is not None
    loss.backward()
    assert_all_nonzero(trainer.generator, "generator")
    assert_all_nonzero(mi.recognition_head, "recognition_head")


def test_mi_alone_lowers_categorical_nll():
    trainer = mnist_trainer()
    mi = mi_module(trainer)
    spec = trainer.latent_spec
    fixed_latent = spec.sample(8, generator=torch.Generator().manual_seed(99))
    parameters = [*trainer.generator.parameters(), *mi.recognition_head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def categorical_nll() -> float:
        with torch.no_grad():
            images = trainer.generator(fixed_latent)
            _, features = trainer.discriminator(images)
            posterior = mi.recognition_head(features)
            return (
                spec.negative_log_likelihoods(posterior, fixed_latent)["c1"]
                .mean()
                .item()
            )

    before = categorical_nll()
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        images = trainer.generator(fixed_latent)
        _, features = trainer.discriminator(images)
        loss, _ = mi.loss(GeneratedBatch(fixed_latent, images, features))
        loss.backward()
        optimizer.step()
    after = categorical_nll()
    assert before - after > 1e-3


# -- L_I reaches G, Q and the shared trunk, never the real/fake output layer ---


def test_mi_gradient_reaches_trunk_not_adversarial_head():
    trainer = mnist_trainer()
    mi = mi_module(trainer)
    zero_grads(trainer)
    loss, _ = mi.loss(generated(trainer, detach=False))
    loss.backward()
    assert_all_nonzero(trainer.generator, "generator")
    assert_all_nonzero(mi.recognition_head, "recognition_head")
    assert_all_nonzero(trainer.discriminator.trunk, "trunk")
    assert_all_absent_or_zero(
        trainer.discriminator.adversarial_head, "adversarial_head"
    )


def test_discriminator_term_trains_trunk_and_head_only():
    trainer = mnist_trainer()
    mi = mi_module(trainer)
    zero_grads(trainer)
    term = mi.discriminator_term(generated(trainer, detach=True))
    term.loss.backward()
    assert_all_nonzero(trainer.discriminator.trunk, "trunk")
    assert_all_nonzero(mi.recognition_head, "recognition_head")
    assert_all_absent_or_zero(trainer.generator, "generator")
    assert_all_absent_or_zero(
        trainer.discriminator.adversarial_head, "adversarial_head"
    )


def test_full_step_under_anomaly_detection():
    trainer = mnist_trainer()
    real = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    with torch.autograd.set_detect_anomaly(True):
        metrics = trainer.train_step(real)
    for key in ("d_loss", "g_loss", "mi/c1", "mi/c2", "mi/c3"):
        assert torch.isfinite(torch.as_tensor(metrics[key])), key


def test_update_generator_false_keeps_mi_from_generator():
    trainer = mnist_trainer("mi.update_generator=false")
    mi = mi_module(trainer)
    zero_grads(trainer)
    batch = generated(trainer, detach=False)
    assert mi.generator_term(batch) is None
    # The discriminator-side term uses detached images, as in the trainer.
    _, features = trainer.discriminator(batch.images.detach())
    term = mi.discriminator_term(
        GeneratedBatch(batch.latent_input, batch.images.detach(), features)
    )
    term.loss.backward()
    assert_all_absent_or_zero(trainer.generator, "generator")
    assert_all_nonzero(mi.recognition_head, "recognition_head")
    assert_all_nonzero(trainer.discriminator.trunk, "trunk")


def gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: parameter.grad.clone()
        for name, parameter in module.named_parameters()
        if parameter.grad is not None
    }


def generator_update_gradients(
    trainer: AdversarialTrainer,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Return G's gradients from the non-saturating loss alone, and from the
    trainer's real generator update of the same latent batch, with that
    update's metrics."""
    latent = trainer.sample_latent(8)
    # Batch norm uses batch statistics in training mode, so a second forward
    # pass of the same latent batch gives the same images and logits.
    zero_grads(trainer)
    logits, _ = trainer.discriminator(trainer.generator(latent))
    trainer.loss.generator_loss(logits).backward()
    adversarial = gradients(trainer.generator)

    zero_grads(trainer)
    metrics: dict = {}
    assert trainer.generator_update(1, latent, trainer.generator(latent), metrics)
    # Adam's step leaves .grad as the update's backward pass wrote it.
    return adversarial, gradients(trainer.generator), metrics


def test_generator_update_without_mi_is_adversarial_only():
    trainer = mnist_trainer("mi.update_generator=false")
    adversarial, updated, metrics = generator_update_gradients(trainer)
    assert "g_loss/mi" not in metrics
    assert updated.keys() == adversarial.keys()
    assert len(updated) == len(list(trainer.generator.parameters()))
    for name, gradient in updated.items():
        difference = (gradient - adversarial[name]).abs().max().item()
        assert difference <= 1e-7, name


def test_generator_update_with_mi_differs():
    # The check above can fail: with the MI term on, G's gradient changes.
    trainer = mnist_trainer()
    adversarial, updated, metrics = generator_update_gradients(trainer)
    assert "g_loss/mi" in metrics
    largest = max(
        (updated[name] - adversarial[name]).abs().max().item() for name in updated
    )
    assert largest > 1e-4


def test_discriminator_update_without_mi_trains_q_and_trunk():
    trainer = mnist_trainer("mi.update_generator=false")
    mi = mi_module(trainer)
    real = scale_images(
        torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),
        trainer.architecture.output_range,
        torch.float32,
    )
    latent = trainer.sample_latent(8)
    with torch.no_grad():
        fake = trainer.generator(latent)

    # Reference: the trunk's gradient from the adversarial loss alone.
    zero_grads(trainer)
    real_logits, _ = trainer.discriminator(real)
    fake_logits, _ = trainer.discriminator(fake)
    trainer.loss.discriminator_loss(real_logits, fake_logits).backward()
    adversarial = gradients(trainer.discriminator.trunk)

    zero_grads(trainer)
    metrics: dict = {}
    assert trainer.discriminator_update(1, real, latent, fake, metrics)
    assert "d_loss/mi" in metrics
    # Only L_I reaches Q's head, so a nonzero gradient there is L_I's.
    assert_all_nonzero(mi.recognition_head, "recognition_head")
    # L_I's share of the trunk gradient: the update's minus the adversarial.
    for name, gradient in gradients(trainer.discriminator.trunk).items():
        share = (gradient - adversarial[name]).norm().item()
        assert share > 0, f"trunk.{name} gets no L_I gradient"


@pytest.mark.parametrize(
    ("overrides", "weights"),
    [
        ((), {"c1": 1.0, "c2": 1.0, "c3": 1.0}),
        (
            ("mi.lambda_disc=2.0", "mi.lambda_cont=0.05"),
            {"c1": 2.0, "c2": 0.05, "c3": 0.05},
        ),
    ],
)
def test_lambdas_weight_codes_by_kind(overrides, weights):
    trainer = mnist_trainer(*overrides)
    mi = mi_module(trainer)
    batch = generated(trainer, detach=True)
    loss, metrics = mi.loss(batch)
    expected = -sum(weights[name] * metrics[f"mi/{name}"] for name in weights)
    assert mi.weights == weights
    assert loss.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
