"""Each speed-up of the training step leaves its result equal to the plain step.

The plain step is the one ``benchmarks/throughput.py`` times as its baseline:
two generator forward passes, discriminator weight gradients in the generator
update and torch's default Adam, on the trainer's own networks. The trainer's
step skips that work or fuses it, which may change float rounding but not the
math: the structural savings give bitwise equal parameters, and the fused
optimizer agrees with torch's default Adam to float32 rounding. The networks'
convolutions pad inside the kernel where the padding is symmetric. Tests below
compare them with convolutions of an explicitly padded copy of the input, per
layer and over a whole step.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from genlatent.config import AdamConfig
from genlatent.nn import Conv2dSame
from genlatent.plugins import load_plugins
from genlatent.run import build_trainer, resolve_config
from genlatent.trainer import AdversarialTrainer, build_adam

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_throughput_module():
    spec = importlib.util.spec_from_file_location(
        "throughput", BENCHMARKS / "throughput.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("throughput", module)
    spec.loader.exec_module(module)
    return module


def build(*overrides: str, experiment: str = "infogan-mnist") -> AdversarialTrainer:
    plugins = load_plugins()
    config = resolve_config(
        experiment,
        ["trainer.batch_size=32", "wandb.mode=disabled", *overrides],
        plugins=plugins,
    )
    torch.manual_seed(0)
    return build_trainer(config, plugins, torch.device("cpu"))


def real_batches(trainer: AdversarialTrainer, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = trainer.architecture.image_shape
    return [
        torch.randint(0, 256, (32, *shape), dtype=torch.uint8, generator=generator)
        for _ in range(count)
    ]


def parameters_of(trainer: AdversarialTrainer) -> dict[str, torch.Tensor]:
    # Parameters only: the plain step runs the generator twice per step, so its
    # batch-norm running statistics move twice as often, which does not change
    # any training-mode output.
    modules = {
        "generator": trainer.generator,
        "discriminator": trainer.discriminator,
        "regularizers": trainer.regularizers,
    }
    return {
        f"{prefix}.{name}": parameter.detach().clone()
        for prefix, module in modules.items()
        for name, parameter in module.named_parameters()
    }


def max_difference(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]
) -> float:
    assert first.keys() == second.keys()
    return max(float((first[key] - second[key]).abs().max()) for key in first)


@pytest.mark.parametrize("size", [7, 8, 14, 15, 28, 32])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_padding_in_kernel_equals_padded_copy(size: int, stride: int) -> None:
    torch.manual_seed(size)
    conv = Conv2dSame(3, 4, 4, stride=stride)
    images = torch.randn(2, 3, size, size, requires_grad=True)
    top, bottom = Conv2dSame.same_padding(size, 4, stride)
    reference_images = images.detach().clone().requires_grad_()
    reference = F.conv2d(
        F.pad(reference_images, (top, bottom, top, bottom)),
        conv.weight,
        conv.bias,
        stride=stride,
    )
    output = conv(images)
    torch.testing.assert_close(output, reference, rtol=0, atol=1e-6)
    gradient = torch.randn_like(output)
    output.backward(gradient)
    reference.backward(gradient)
    assert images.grad is not None and reference_images.grad is not None
    torch.testing.assert_close(images.grad, reference_images.grad, rtol=0, atol=1e-6)


def test_fused_adam_matches_unfused_on_equal_gradients() -> None:
    # Gradient magnitudes span 1e-12 to 1, so some lie below Adam's eps
    # (1e-8), where the update is most sensitive to rounding.
    torch.manual_seed(0)
    initial = [0.05 * torch.randn(300, 200), 0.05 * torch.randn(64)]
    fused = [tensor.clone().requires_grad_() for tensor in initial]
    unfused = [tensor.clone().requires_grad_() for tensor in initial]
    settings = AdamConfig(lr=1e-3, beta1=0.5, beta2=0.999)
    fused_adam = build_adam(fused, settings, fused=True)
    unfused_adam = build_adam(unfused, settings, fused=False)
    assert fused_adam.defaults["fused"] and not unfused_adam.defaults["fused"]
    for _ in range(5):
        for first, second in zip(fused, unfused, strict=True):
            exponent = torch.empty_like(first).uniform_(-12, 0)
            gradient = torch.randn_like(first) * 10**exponent
            first.grad, second.grad = gradient.clone(), gradient.clone()
        fused_adam.step()
        unfused_adam.step()
    for first, second in zip(fused, unfused, strict=True):
        # A few float32 ulps of parameters near 0.1, about 1e-4 of one step.
        torch.testing.assert_close(first, second, rtol=0, atol=1e-7)


@pytest.mark.parametrize("experiment", ["infogan-mnist", "infogan-svhn"])
def test_trainer_step_equals_plain_step(experiment: str) -> None:
    # With the same Adam on both sides, skipping the second generator pass and
    # the discriminator's weight gradients runs the same kernels on the same
    # values, so the parameters are bitwise equal. Training a GAN amplifies any
    # rounding difference within a few steps (Adam's first updates are about
    # lr * sign(gradient), even for gradients below eps), which is why the
    # fused optimizer is compared on equal gradients above instead.
    throughput = load_throughput_module()
    trainer = build("optim.fused=false", experiment=experiment)
    baseline = build(experiment=experiment)
    before = parameters_of(trainer)
    assert max_difference(before, parameters_of(baseline)) == 0.0
    step = throughput.plain_step(baseline)
    for batch in real_batches(trainer, 3):
        trainer.train_step(batch)
        step(batch)
    after = parameters_of(trainer)
    assert all(not torch.equal(before[key], after[key]) for key in before)
    assert max_difference(after, parameters_of(baseline)) == 0.0


class ExplicitlyPaddedConv2d(Conv2dSame):
    """Conv2dSame that always pads a copy of its input with F.pad and then
    runs an unpadded convolution, as Conv2dSame does for asymmetric padding."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        top, bottom = self.same_padding(
            images.shape[-2], self.kernel_size[0], self.stride[0]
        )
        left, right = self.same_padding(
            images.shape[-1], self.kernel_size[1], self.stride[1]
        )
        padded = F.pad(images, (left, right, top, bottom))
        return F.conv2d(
            padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


def pad_explicitly(trainer: AdversarialTrainer) -> int:
    """Switch every Conv2dSame of the trainer's networks to explicit padding,
    keeping its parameters; return how many layers were switched."""
    switched = 0
    for network in (trainer.generator, trainer.discriminator, trainer.regularizers):
        for layer in network.modules():
            if type(layer) is Conv2dSame:
                layer.__class__ = ExplicitlyPaddedConv2d
                switched += 1
    return switched


def step_results(
    *overrides: str, explicit_padding: bool = False
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Losses and parameter gradients of one training step.

    Learning rates of 1e-12 keep the discriminator the generator update sees
    equal, to float32 precision, to the one before the step, so gradients of
    two configurations compare directly instead of through Adam's update.
    """
    trainer = build(
        "optim.discriminator.lr=1e-12", "optim.generator.lr=1e-12", *overrides
    )
    if explicit_padding:
        assert pad_explicitly(trainer) > 0
    metrics = trainer.train_step(real_batches(trainer, 1)[0])
    modules = {
        "generator": trainer.generator,
        "discriminator": trainer.discriminator,
        "regularizers": trainer.regularizers,
    }
    gradients = {}
    for prefix, module in modules.items():
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None, f"{prefix}.{name} has no gradient"
            gradients[f"{prefix}.{name}"] = parameter.grad.detach().clone()
    losses = {key: float(value) for key, value in metrics.items() if "loss" in key}
    return losses, gradients


def test_padding_in_kernel_step_matches_explicit() -> None:
    losses, gradients = step_results()
    padded_losses, padded_gradients = step_results(explicit_padding=True)
    # The same products summed in another order: float32 rounding only.
    assert padded_losses == pytest.approx(losses, rel=1e-5)
    for key, gradient in gradients.items():
        torch.testing.assert_close(
            padded_gradients[key], gradient, rtol=1e-4, atol=1e-6, msg=key
        )


def test_channels_last_step_matches_default() -> None:
    losses, gradients = step_results()
    nhwc_losses, nhwc_gradients = step_results("trainer.channels_last=true")
    assert nhwc_losses == pytest.approx(losses, rel=1e-5)
    for key, gradient in gradients.items():
        torch.testing.assert_close(
            nhwc_gradients[key], gradient, rtol=1e-4, atol=1e-6, msg=key
        )


def test_bf16_step_matches_fp32() -> None:
    # bf16 keeps 8 significant bits. The losses agree to about 0.3% here, but
    # the error grows through each layer's backward pass to about 20% of the
    # deepest gradients' norm, so gradients are compared by direction.
    losses, gradients = step_results("trainer.precision=fp32")
    bf16_losses, bf16_gradients = step_results("trainer.precision=bf16")
    assert bf16_losses == pytest.approx(losses, rel=1e-2)
    for key, gradient in gradients.items():
        cosine = F.cosine_similarity(
            bf16_gradients[key].float().flatten(), gradient.flatten(), dim=0
        )
        assert cosine > 0.95, key


def test_deferred_divergence_check_equals_step_check() -> None:
    immediate = build("trainer.divergence_check=step")
    deferred = build("trainer.divergence_check=deferred")
    for batch in real_batches(immediate, 3):
        immediate.train_step(batch)
        deferred.train_step(batch)
    deferred.raise_on_divergence()
    assert max_difference(parameters_of(immediate), parameters_of(deferred)) == 0.0


@pytest.mark.slow
def test_compiled_step_matches_eager() -> None:
    losses, gradients = step_results()
    compiled_losses, compiled_gradients = step_results("trainer.compile=true")
    assert compiled_losses == pytest.approx(losses, rel=1e-5)
    for key, gradient in gradients.items():
        torch.testing.assert_close(
            compiled_gradients[key], gradient, rtol=1e-4, atol=1e-6, msg=key
        )
