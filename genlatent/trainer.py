"""Trainers: the protocol every model's trainer follows, and the adversarial one.

:class:`Trainer` is what the training loop, checkpoints, resume and the
inspection commands use, so a model plugin provides a subclass and none of them
changes. :class:`AdversarialTrainer` is the ``gan`` model. One training step
draws a latent batch, generates images once, then updates

1. the discriminator (and every regularizer module, such as a recognition
   head) on real images and on the generated images detached from the
   generator, minimising the adversarial discriminator loss, the loss's
   critic penalty (if any) and every regularizer's discriminator-side term;
2. every ``trainer.n_critic``-th step, the generator, through the just-updated
   discriminator, minimising the adversarial generator loss plus every
   regularizer's generator-side term.

The trainers have no code for any particular regularizer. InfoGAN's
mutual-information term and others arrive through plugins.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from genlatent.config import AdamConfig, ExperimentConfig
from genlatent.data import scale_images
from genlatent.distributed import all_ranks, reduce_any
from genlatent.errors import CheckpointError, ConfigError, DivergenceError
from genlatent.latent import LatentSpec
from genlatent.losses import AdversarialLoss
from genlatent.nn import Architecture
from genlatent.regularizers import GeneratedBatch, Regularizer, RegularizerTerm

logger = logging.getLogger(__name__)

Metrics = dict[str, torch.Tensor | float]


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Stop parameter gradients of ``modules`` while gradients still flow
    through them to earlier layers. Saves the weight-gradient work of the
    discriminator in the generator update."""
    parameters = [p for module in modules for p in module.parameters()]
    states = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, state in zip(parameters, states, strict=True):
            parameter.requires_grad_(state)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype of ``trainer.precision`` on ``device``, or
    None for fp32."""
    if precision == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if use_bf16 else None
    return torch.bfloat16 if precision == "bf16" else None


# Adam settings that a resumed run takes from its config rather than from the
# checkpoint. The others (fused, foreach) stay as saved, because they decide
# where the loaded state tensors live.
CONFIGURED_HYPERPARAMETERS = ("lr", "betas")

# Device types with a fused Adam kernel in torch 2.4 and later.
FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps")


def build_adam(
    parameters: Iterable[nn.Parameter], settings: AdamConfig, *, fused: bool
) -> torch.optim.Adam:
    """Build Adam with one network's learning rate and betas."""
    return torch.optim.Adam(
        parameters,
        lr=settings.lr,
        betas=(settings.beta1, settings.beta2),
        fused=fused or None,
    )


def sum_terms(
    base: torch.Tensor,
    terms: Sequence[tuple[str, RegularizerTerm | None]],
    metrics: Metrics,
    side: str,
) -> torch.Tensor:
    """Add regularizer terms to ``base`` and record each as ``SIDE_loss/NAME``
    in ``metrics``, with the term's own metrics."""
    total = base
    for name, term in terms:
        if term is None:
            continue
        total = total + term.loss
        metrics[f"{side}_loss/{name}"] = term.loss.detach()
        metrics.update(term.metrics)
    return total


def find_recognition_head(regularizers: Sequence[Regularizer]) -> nn.Module | None:
    """Return the ``recognition_head`` of the first regularizer that has one,
    such as the ``mi`` term's Q head, or None."""
    for regularizer in regularizers:
        head = getattr(regularizer, "recognition_head", None)
        if isinstance(head, nn.Module):
            return head
    return None


def first_line(error: BaseException) -> str:
    """Return the first non-empty line of an exception's message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "no tensor" if shape is None else f"shape {tuple(shape)}"


def describe_mismatch(expected: dict[str, Any], saved: dict[str, Any]) -> str | None:
    """Return a one-line description of how a module's ``expected`` state dict
    and a ``saved`` one differ, or None when they fit.

    Names the first key, in the module's order, that ``saved`` lacks or has
    with another shape. Otherwise it names the first extra key of ``saved``.
    """
    problems = []
    for name, value in expected.items():
        if name not in saved:
            problems.append(f"{name} is missing from the checkpoint")
        elif _shape(saved[name]) != _shape(value):
            problems.append(
                f"{name} has {_shape(saved[name])} in the checkpoint but "
                f"{_shape(value)} in the experiment"
            )
    problems.extend(
        f"the checkpoint has {name}, which the experiment's network lacks"
        for name in saved
        if name not in expected
    )
    if not problems:
        return None
    more = len(problems) - 1
    return problems[0] + (f" ({more} more mismatching keys)" if more else "")


# A network applied to images for inspection: maps ``(batch, *image_shape)``
# images in the architecture's output range to ``(batch, posterior_dim)``
# recognition outputs.
RecognitionNetwork = Callable[[torch.Tensor], torch.Tensor]


class Trainer(abc.ABC):
    """The networks, optimizers and update rule of one run of some model.

    The training loop calls :meth:`train_step` once per batch and reads
    :attr:`step`; checkpoints store :meth:`state_dict`, which a resumed run
    passes to :meth:`load_state_dict`; sample grids, traversals and
    ``genlatent sample/traverse/eval`` call :meth:`generate` on
    :meth:`sample_latent` or hand-built latent inputs, and load only the
    modules of :meth:`networks`. Subclasses build their networks and
    optimizers in ``__init__`` and implement :meth:`train_step`,
    :meth:`networks` and :meth:`optimizers`.

    Attributes:
        generator: the image-producing network (a GAN's generator, a VAE's
            decoder), mapping ``(batch, latent_spec.input_dim)`` inputs to
            ``(batch, *architecture.image_shape)`` images.
        step: training steps taken.
        skipped_steps: steps whose update was skipped for a non-finite loss.
        latent_generator: the random stream of training latent draws, saved
            with the checkpoint.
    """

    generator: nn.Module

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        architecture: Architecture,
        latent_spec: LatentSpec,
        device: torch.device,
    ) -> None:
        self.config = config
        self.architecture = architecture
        self.latent_spec = latent_spec
        self.device = device
        self.latent_generator = torch.Generator(device=device)
        self.latent_generator.manual_seed(config.trainer.seed)
        self.step = 0
        self.skipped_steps = 0
        settings = config.trainer
        self.autocast_dtype = autocast_dtype(settings.precision, device)
        self.deferred_divergence_check = settings.divergence_check == "deferred" or (
            settings.divergence_check == "auto" and device.type == "cuda"
        )
        if self.deferred_divergence_check and not (
            config.optim.fused and device.type in FUSED_ADAM_DEVICES
        ):
            raise ConfigError(
                f"trainer.divergence_check={settings.divergence_check} needs fused "
                f"Adam, which is off (optim.fused={config.optim.fused}) or missing "
                f"on {device.type}; set optim.fused=true or "
                "trainer.divergence_check=step"
            )
        # The first non-finite update since the last host check, on the
        # device: its step (0 for none), side and loss, and how many there were.
        self._nonfinite_updates = torch.zeros((), dtype=torch.int64, device=device)
        self._first_nonfinite_step = torch.zeros((), dtype=torch.int64, device=device)
        self._first_nonfinite_side = torch.zeros((), dtype=torch.int64, device=device)
        self._first_nonfinite_loss = torch.zeros((), device=device)
        self._sides: list[str] = []

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Return the autocast context of the forward passes (``trainer.precision``)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def adam(
        self, parameters: Iterable[nn.Parameter], settings: AdamConfig
    ) -> torch.optim.Adam:
        """Build Adam for one network, fused when ``optim.fused`` is set and
        the device has the kernel."""
        fused = self.config.optim.fused and self.device.type in FUSED_ADAM_DEVICES
        return build_adam(parameters, settings, fused=fused)

    @abc.abstractmethod
    def train_step(self, real_images: torch.Tensor) -> Metrics:
        """Run one training step on ``(batch, *image_shape)`` uint8 images on
        the device and return its detached metrics."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Modules by checkpoint key; ``generator`` among them."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by checkpoint key."""

    def recognition_network(self) -> RecognitionNetwork | None:
        """Q applied to images, or None when the model has no recognition
        network."""
        return None

    def layer_tables(self, batch: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
        """``(title, module, example input)`` of each network that
        ``genlatent show`` lists, with a ``batch``-image example."""
        dim = self.latent_spec.input_dim
        return [(f"generator (input {dim})", self.generator, torch.zeros(batch, dim))]

    def sample_latent(self, batch_size: int) -> torch.Tensor:
        """Draw a ``(batch_size, latent_dim)`` input from the training sampler."""
        return self.latent_spec.sample(
            batch_size, generator=self.latent_generator, device=self.device
        )

    @torch.no_grad()
    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        """Generate images in eval mode (batch-norm running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(latent.to(self.device))
        finally:
            self.generator.train(was_training)

    def check_finite(
        self,
        step: int,
        side: str,
        total: torch.Tensor,
        metrics: Metrics,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> bool:
        """Return True when ``total`` is finite. Otherwise raise
        DivergenceError, or with ``trainer.on_divergence=skip`` clear every
        gradient, count the skipped step and return False.

        With the deferred check and the ``optimizer`` about to apply this
        update, always return True: the fused Adam kernel skips the update on
        the device when ``total`` is not finite, and
        :meth:`raise_on_divergence` reports it later.
        """
        if self.deferred_divergence_check and optimizer is not None:
            self._flag_nonfinite(step, side, total, optimizer)
            return True
        # One host synchronisation per update: the price of never letting a
        # non-finite loss reach the weights. Under torchrun the ranks agree
        # first, so that all of them skip or stop together.
        if all_ranks(torch.isfinite(total)):
            return True
        value = float(total.detach())
        if math.isfinite(value):
            # Only another rank's loss is not finite; that rank reports it.
            message = (
                f"step {step}: the {side} loss is not finite on another rank; "
                "the update was not applied"
            )
        else:
            parts = ", ".join(
                f"{key}={float(metric):.6g}"
                for key, metric in metrics.items()
                if "loss" in key
            )
            message = (
                f"step {step}: the {side} loss is {value} ({parts}); "
                "the update was not applied"
            )
        if self.config.trainer.on_divergence == "stop":
            raise DivergenceError(
                f"{message}. Training stopped; the last checkpoint is kept. Lower "
                "the learning rates, or set trainer.on_divergence=skip to skip "
                "such steps."
            )
        logger.warning("%s (trainer.on_divergence=skip)", message)
        for optimizer in self.optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        return False

    def _flag_nonfinite(
        self,
        step: int,
        side: str,
        total: torch.Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        # Under torchrun every rank skips when any rank's loss is not finite,
        # because the all-reduced gradients carry that rank's non-finite values.
        nonfinite = reduce_any(~torch.isfinite(total.detach()))
        # Fused Adam reads found_inf, the flag torch.amp.GradScaler also sets,
        # skips the update when it is nonzero and leaves the step count as is.
        optimizer.found_inf = nonfinite.to(torch.float32)  # type: ignore[attr-defined]
        if side not in self._sides:
            self._sides.append(side)
        first = nonfinite & (self._first_nonfinite_step == 0)
        self._first_nonfinite_step = torch.where(
            first, step, self._first_nonfinite_step
        )
        self._first_nonfinite_side = torch.where(
            first, self._sides.index(side), self._first_nonfinite_side
        )
        self._first_nonfinite_loss = torch.where(
            first, total.detach().float(), self._first_nonfinite_loss
        )
        self._nonfinite_updates += nonfinite

    def raise_on_divergence(self) -> None:
        """Report the non-finite updates that the deferred check skipped since
        its last call: raise DivergenceError naming the first, or with
        ``trainer.on_divergence=skip`` log it and count the skipped updates.
        Without the deferred check every update was checked already, and this
        does nothing.
        """
        if not self.deferred_divergence_check:
            return
        count = int(self._nonfinite_updates)
        if count == 0:
            return
        step = int(self._first_nonfinite_step)
        side = self._sides[int(self._first_nonfinite_side)]
        loss = float(self._first_nonfinite_loss)
        self._nonfinite_updates.zero_()
        self._first_nonfinite_step.zero_()
        message = (
            f"step {step}: the {side} loss is {loss}; that update and "
            f"{count - 1} later non-finite ones were not applied"
        )
        if self.config.trainer.on_divergence == "stop":
            raise DivergenceError(
                f"{message}. Training stopped; the last checkpoint is kept. Lower "
                "the learning rates, or set trainer.on_divergence=skip to skip "
                "such steps."
            )
        logger.warning("%s (trainer.on_divergence=skip)", message)
        self.skipped_steps += count

    # -- checkpoint state ---------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly, as tensors and
        plain Python values.

        Raises:
            DivergenceError: a network's parameter or buffer is not finite
                (see :meth:`check_finite_weights`), so that a diverged run
                never replaces its last good checkpoint.
        """
        self.check_finite_weights()
        numpy_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
        python_state = random.getstate()
        rng: dict[str, Any] = {
            "python": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy": {
                "key": numpy_state[0],
                "state": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "position": int(numpy_state[2]),
                "has_gauss": int(numpy_state[3]),
                "cached_gaussian": float(numpy_state[4]),
            },
            "torch": torch.get_rng_state(),
            "latent": self.latent_generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state: dict[str, Any] = {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
        }
        for key, module in self.networks().items():
            state[key] = module.state_dict()
        for key, optimizer in self.optimizers().items():
            state[key] = optimizer.state_dict()
        state["rng"] = rng
        return state

    def check_finite_weights(self) -> None:
        """Raise DivergenceError naming the step and the first parameter or
        buffer of :meth:`networks` that contains a NaN or an infinity.

        The loss checks cannot see a non-finite value that the last update
        wrote, nor one in a buffer such as a batch-norm running variance.
        Costs one kernel per tensor and one host synchronisation; under
        torchrun the ranks agree first, so that all of them raise together.
        ``trainer.on_divergence=skip`` does not apply, since no update is left
        to skip.
        """
        named = [
            (f"{key}.{name}", tensor)
            for key, module in self.networks().items()
            for name, tensor in itertools.chain(
                module.named_parameters(), module.named_buffers()
            )
            if tensor.is_floating_point()
        ]
        if not named:
            return
        finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named])
        if all_ranks(finite.all()):
            return
        flags = finite.tolist()
        bad = [
            (name, tensor)
            for (name, tensor), ok in zip(named, flags, strict=True)
            if not ok
        ]
        if bad:
            name, tensor = bad[0]
            count = int((~torch.isfinite(tensor)).sum())
            found = f"{name} has {count} non-finite values of {tensor.numel()}"
            if len(bad) > 1:
                found += f" ({len(bad) - 1} more tensors are not finite)"
        else:
            found = "a parameter or buffer is not finite on another rank"
        raise DivergenceError(
            f"step {self.step}: {found}. The checkpoint of this step was not "
            "written, so the last checkpoint is kept; lower the learning rates "
            "and resume from it."
        )

    def load_networks(self, state: dict[str, Any]) -> None:
        """Restore the modules of :meth:`networks` from a checkpoint state.

        Raises:
            CheckpointError: the state lacks a network or its tensors do not
                fit; the one-line message names the network, the first
                mismatching key and both shapes.
        """
        for key, module in self.networks().items():
            if key not in state:
                raise CheckpointError(
                    f"checkpoint has no {key!r} network, so it was not written "
                    "by this experiment's model"
                )
            mismatch = describe_mismatch(module.state_dict(), state[key])
            if mismatch is not None:
                raise CheckpointError(
                    f"checkpoint does not fit this experiment's {key} network: "
                    f"{mismatch}"
                )
            try:
                module.load_state_dict(state[key])
            except (RuntimeError, ValueError) as error:
                raise CheckpointError(
                    f"checkpoint does not fit this experiment's {key} network: "
                    f"{first_line(error)}"
                ) from None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`.

        Optimizer hyperparameters (learning rate, betas) come from this
        trainer's config, not from the checkpoint, so that a resume with
        ``optim.generator.lr=...`` trains with the new value. With an
        unchanged config they are equal, and the resume is exact.
        """
        self.load_networks(state)
        for key, optimizer in self.optimizers().items():
            configured = [
                {name: group[name] for name in CONFIGURED_HYPERPARAMETERS}
                for group in optimizer.param_groups
            ]
            try:
                optimizer.load_state_dict(state[key])
            except KeyError:
                raise CheckpointError(
                    f"checkpoint has no {key!r} state, so it was not written by "
                    "this experiment's model"
                ) from None
            except (RuntimeError, ValueError) as error:
                raise CheckpointError(
                    f"checkpoint does not fit this experiment's {key}: "
                    f"{first_line(error)}"
                ) from None
            for group, settings in zip(optimizer.param_groups, configured, strict=True):
                group.update(settings)
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        rng = state["rng"]
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy_state = rng["numpy"]
        np.random.set_state(
            (
                numpy_state["key"],
                numpy_state["state"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(rng["torch"])
        self.latent_generator.set_state(rng["latent"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


class AdversarialTrainer(Trainer):
    """Networks, optimizers and the update rule of one adversarial run.

    Args:
        config: the resolved experiment.
        architecture: builds the generator and the discriminator.
        latent_spec: the generator's input.
        loss: the adversarial loss, configured for this run.
        regularizers: terms added to the objectives; their parameters train
            with the discriminator's optimizer.
        device: where the networks live.
        discriminator_norm: normalization of the discriminator trunk, one of
            the architecture's ``discriminator_norms``.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        architecture: Architecture,
        latent_spec: LatentSpec,
        loss: AdversarialLoss,
        regularizers: Sequence[Regularizer],
        device: torch.device,
        discriminator_norm: str = "batch",
    ) -> None:
        super().__init__(
            config, architecture=architecture, latent_spec=latent_spec, device=device
        )
        self.loss = loss
        self.generator = architecture.build_generator(latent_spec.input_dim).to(device)
        self.discriminator = architecture.build_discriminator(discriminator_norm).to(
            device
        )
        # A ModuleDict moves, saves and restores the regularizers' modules; the
        # typed list is what the step iterates.
        self.regularizers = nn.ModuleDict(
            {regularizer.name: regularizer for regularizer in regularizers}
        ).to(device)
        self._regularizers: list[Regularizer] = list(regularizers)

        optim = config.optim
        self.discriminator_optimizer = self.adam(
            [*self.discriminator.parameters(), *self.regularizers.parameters()],
            optim.discriminator,
        )
        self.generator_optimizer = self.adam(
            self.generator.parameters(), optim.generator
        )
        # What the training step calls: the networks themselves in one
        # process, DistributedDataParallel wrappers under torchrun
        # (genlatent.distributed.replicate).
        self.training_generator: nn.Module = self.generator
        self.discriminator_objective: Callable[
            [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Metrics]
        ] = self.discriminator_loss
        if config.trainer.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        if config.trainer.compile:
            # Module.compile keeps the state_dict keys, so checkpoints of
            # compiled and eager runs are interchangeable.
            self.generator.compile()
            self.discriminator.compile()

    def networks(self) -> dict[str, nn.Module]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "regularizers": self.regularizers,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "discriminator_optimizer": self.discriminator_optimizer,
            "generator_optimizer": self.generator_optimizer,
        }

    def recognition_head(self) -> nn.Module | None:
        """Return InfoGAN's Q head or another regularizer's, or None."""
        return find_recognition_head(self._regularizers)

    def recognition_network(self) -> RecognitionNetwork | None:
        head = self.recognition_head()
        if head is None:
            return None
        discriminator = self.discriminator

        def recognize(images: torch.Tensor) -> torch.Tensor:
            _, features = discriminator(images)
            return head(features)

        return recognize

    def layer_tables(self, batch: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
        shape = self.architecture.image_shape
        tables = super().layer_tables(batch)
        tables.append(
            (
                f"discriminator (input {'x'.join(map(str, shape))})",
                self.discriminator,
                torch.zeros(batch, *shape),
            )
        )
        head = self.recognition_head()
        if head is not None:
            width = self.architecture.feature_dim
            tables.append(
                (
                    f"recognition head Q (input {width} features)",
                    head,
                    torch.zeros(batch, width),
                )
            )
        return tables

    def train_step(self, real_images: torch.Tensor) -> Metrics:
        """Run one discriminator update and, every ``trainer.n_critic``-th
        step, one generator update.

        Args:
            real_images: ``(batch, *image_shape)`` uint8 images on the device.

        Returns:
            Detached metrics of this step: ``d_loss``, ``g_loss`` (on steps
            with a generator update), the loss's ``d_loss/penalty`` if it has
            one, and every regularizer's metrics.

        Raises:
            DivergenceError: a loss is not finite and ``trainer.on_divergence``
                is ``stop``. No update of that step reaches the weights.
        """
        real = scale_images(real_images, self.architecture.output_range, torch.float32)
        latent = self.sample_latent(real.shape[0])
        step = self.step + 1
        update_generator = step % self.config.trainer.n_critic == 0
        # One generator forward serves both updates: the discriminator update
        # uses it detached, and the generator parameters do not change before
        # the generator update backpropagates through it. A critic-only step
        # needs no graph through the generator.
        if self.config.trainer.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(update_generator), self.autocast():
            fake = self.training_generator(latent)
        metrics: Metrics = {}
        if (
            self.discriminator_update(step, real, latent, fake, metrics)
            and update_generator
        ):
            self.generator_update(step, latent, fake, metrics)
        self.step = step
        return metrics

    def discriminator_update(
        self,
        step: int,
        real: torch.Tensor,
        latent: torch.Tensor,
        fake: torch.Tensor,
        metrics: Metrics,
    ) -> bool:
        """Update the discriminator and regularizer modules; False if skipped."""
        total, terms = self.discriminator_objective(real, latent, fake)
        metrics.update(terms)
        if not self.check_finite(
            step, "discriminator", total, metrics, self.discriminator_optimizer
        ):
            return False
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.discriminator_optimizer.step()
        return True

    def discriminator_loss(
        self, real: torch.Tensor, latent: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, Metrics]:
        """Return the discriminator-side objective and its detached terms."""
        metrics: Metrics = {}
        with self.autocast():
            real_logits, _ = self.discriminator(real)
            fake_logits, fake_features = self.discriminator(fake.detach())
            d_loss = self.loss.discriminator_loss(real_logits, fake_logits)
            penalty = self.loss.critic_penalty(self.critic_output, real, fake.detach())
            batch = GeneratedBatch(latent, fake.detach(), fake_features)
            terms = [
                (regularizer.name, regularizer.discriminator_term(batch))
                for regularizer in self._regularizers
            ]
        if penalty is not None:
            terms.insert(0, ("penalty", RegularizerTerm(penalty)))
        total = sum_terms(d_loss, terms, metrics, "d")
        metrics["d_loss"] = d_loss.detach()
        return total, metrics

    def critic_output(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's ``(batch,)`` real/fake logits (critic values)."""
        logits, _ = self.discriminator(images)
        return logits

    def generator_update(
        self,
        step: int,
        latent: torch.Tensor,
        fake: torch.Tensor,
        metrics: Metrics,
    ) -> bool:
        """Update the generator through the current discriminator; False if
        skipped."""
        with frozen(self.discriminator, self.regularizers):
            with self.autocast():
                logits, features = self.discriminator(fake)
                g_loss = self.loss.generator_loss(logits)
                batch = GeneratedBatch(latent, fake, features)
                terms = [
                    (regularizer.name, regularizer.generator_term(batch))
                    for regularizer in self._regularizers
                ]
            total = sum_terms(g_loss, terms, metrics, "g")
            metrics["g_loss"] = g_loss.detach()
            if not self.check_finite(
                step, "generator", total, metrics, self.generator_optimizer
            ):
                return False
            self.generator_optimizer.zero_grad(set_to_none=True)
            total.backward()
        self.generator_optimizer.step()
        return True
